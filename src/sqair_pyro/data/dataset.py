"""Torch dataset over a moving multi-MNIST data file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .moving_mnist import MovingMNISTConfig, load_npz, read_metadata, validate_arrays

__all__ = ["MovingMNISTDataset"]


class MovingMNISTDataset(Dataset):
    """Sequences from a ``.npz`` written by :func:`~sqair_pyro.data.moving_mnist.save_npz`.

    An item is a float32 tensor ``[T, H, W]`` with values ``images / 255`` in ``[0, 1]``. The
    frames stay in memory as uint8 and are converted per item (or per batch with
    :meth:`get_batch`), so no float copy of the whole set is ever made.

    Args:
        path_or_arrays: path of the data file, or the dict returned by ``generate``/``load_npz``.
        num_frames: keep only the first ``num_frames`` frames (``None``: all), e.g. for a
            sequence-length curriculum. The ground-truth arrays are cropped the same way.

    Attributes:
        images: uint8 ``[N, T, H, W]``.
        counts: int64 ``[N, T]`` number of visible digits per frame.
        boxes: float32 ``[N, T, M, 4]`` visible ``(x, y, w, h)`` per digit slot, zeros if hidden.
        visible: bool ``[N, T, M]``.
        labels: int64 ``[N, M]`` digit classes, -1 for empty slots.
        config: the :class:`MovingMNISTConfig` the data was generated with.
        metadata: the parsed ``config`` JSON (seed, source, format version, config).
        path: the file path, or ``None`` when built from arrays.
    """

    def __init__(
        self,
        path_or_arrays: str | os.PathLike | Mapping[str, np.ndarray],
        num_frames: int | None = None,
    ) -> None:
        if isinstance(path_or_arrays, Mapping):
            arrays = {k: np.asarray(v) for k, v in path_or_arrays.items()}
            validate_arrays(arrays)
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
        self.counts: np.ndarray = arrays["counts"][:, :t]
        self.boxes: np.ndarray = arrays["boxes"][:, :t]
        self.visible: np.ndarray = arrays["visible"][:, :t]
        self.labels: np.ndarray = arrays["labels"]
        self.metadata: dict[str, Any] = read_metadata(arrays)
        self.config: MovingMNISTConfig = self.metadata["config"]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])  # type: ignore[return-value]

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
        """Ground truth of one sequence: counts, boxes, visible, labels."""
        return {
            "counts": self.counts[index],
            "boxes": self.boxes[index],
            "visible": self.visible[index],
            "labels": self.labels[index],
        }


def check_frames(images: np.ndarray, image_size: tuple[int, int]) -> None:
    """Raise a clear ``ValueError`` unless ``images`` is a non-empty [N, T, H, W] stack of
    frames of ``image_size`` (what a model built for that size can read)."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, T, H, W], got shape {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(image_size):
        raise ValueError(
            f"frames are {images.shape[2]}x{images.shape[3]} pixels but the model was built "
            f"for {image_size[0]}x{image_size[1]}"
        )
    if len(images) == 0:
        raise ValueError("the data file holds no sequences")
