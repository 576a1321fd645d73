"""Torch dataset over a data file of any video (:mod:`sqair_pyro.data.format`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .format import load_npz, normalise_arrays, read_metadata

__all__ = ["VideoDataset", "check_frames"]


class VideoDataset(Dataset):
    """Sequences of a data file. An item is a float32 tensor ``[T, H, W]`` (``[T, H, W, C]``
    for colour) with values ``images / 255`` in ``[0, 1]``.

    The frames stay in memory as uint8 and are converted per item (or per batch with
    :meth:`get_batch`), so no float copy of the whole set is ever made.

    Args:
        path_or_arrays: path of the data file, or a dict of its arrays.
        num_frames: keep only the first ``num_frames`` frames (``None``: all), e.g. for a
            sequence-length curriculum. The ground-truth arrays are cropped the same way.

    Attributes:
        images: uint8 ``[N, T, H, W]`` or ``[N, T, H, W, C]``.
        ground_truth: the optional arrays the file has (``counts``, ``boxes``, ``visible``,
            ``labels``), cropped to ``num_frames``.
        metadata: the parsed ``metadata`` JSON (``{}`` when there is none).
        path: the file path, or ``None`` when built from arrays.
    """

    def __init__(
        self,
        path_or_arrays: str | os.PathLike | Mapping[str, np.ndarray],
        num_frames: int | None = None,
    ) -> None:
        if isinstance(path_or_arrays, Mapping):
            arrays = normalise_arrays(path_or_arrays)
            self.path: Path | None = None
        else:
            self.path = Path(path_or_arrays)
            arrays = load_npz(self.path)
        total = arrays["images"].shape[1]
        if num_frames is None:
            num_frames = total
        if not 1 <= num_frames <= total:
            raise ValueError(f"num_frames must be in 1..{total}, got {num_frames}")
        self.num_frames = int(num_frames)
        t = self.num_frames
        # Views, not copies: slicing the time axis keeps the uint8 buffer shared.
        self.images: np.ndarray = arrays["images"][:, :t]
        self.ground_truth: dict[str, np.ndarray] = {
            key: arrays[key] if key == "labels" else arrays[key][:, :t]
            for key in ("counts", "boxes", "visible", "labels")
            if key in arrays
        }
        self.metadata: dict[str, Any] = read_metadata(arrays)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """``(H, W)``, or ``(H, W, C)`` for colour."""
        return tuple(self.images.shape[2:])

    @staticmethod
    def _to_float(frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._to_float(self.images[index])

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float32 ``[B, T, H, W]`` for many sequences at once (one conversion)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        return self._to_float(self.images[np.asarray(indices, dtype=np.int64)])

    def targets(self, index: int) -> dict[str, np.ndarray]:
        """The ground truth of one sequence (only the arrays the file has)."""
        return {key: value[index] for key, value in self.ground_truth.items()}


def check_frames(images: np.ndarray, image_size: tuple[int, int]) -> None:
    """Raise a clear ``ValueError`` unless ``images`` is a non-empty [N, T, H, W] stack of
    grey frames of ``image_size`` (what a model built for that size can read)."""
    if images.ndim == 5:
        raise ValueError(
            f"frames have {images.shape[-1]} colour channels but the model reads grey frames "
            "(import them with `sqair-pyro import-frames` without `--colour`)"
        )
    if images.ndim != 4:
        raise ValueError(f"images must be [N, T, H, W], got shape {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(image_size):
        raise ValueError(
            f"frames are {images.shape[2]}x{images.shape[3]} pixels but the model was built "
            f"for {image_size[0]}x{image_size[1]}"
        )
    if len(images) == 0:
        raise ValueError("the data file holds no sequences")
