"""Any video as a data file: frames of a video file or of a folder of images, without ground
truth, cut into sequences (:mod:`sqair_pyro.data.format`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .format import metadata_array, save_npz

__all__ = ["IMAGE_SUFFIXES", "frame_size", "import_frames", "read_frames", "to_sequences"]

#: Image files a folder of frames may hold (read in name order; other files are ignored).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open it as a video")
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def _folder_frames(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"{path}: OpenCV cannot read it as an image")
        yield frame


def frame_size(source: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the frames of a video file or a folder of images, as stored."""
    source = Path(source)
    if source.is_dir():
        first = next(_folder_frames(_image_files(source)))
        return first.shape[0], first.shape[1]
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise ValueError(f"{source}: OpenCV cannot open it as a video")
        size = capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH)
    finally:
        capture.release()
    return int(size[0]), int(size[1])


def read_frames(
    source: str | os.PathLike, size: tuple[int, int], grey: bool = True, every: int = 1
) -> np.ndarray:
    """Every ``every``-th frame of a video file or of a folder of images (name order), resized
    to ``size = (height, width)`` (area interpolation), as uint8 ``[F, H, W]`` (grey) or
    ``[F, H, W, 3]`` (RGB)."""
    source = Path(source)
    height, width = size
    if min(height, width) < 1 or every < 1:
        raise ValueError(f"size must be >= 1 pixel and every >= 1, got {size}, {every}")
    if source.is_dir():
        files = _image_files(source)
        frames, total = _folder_frames(files[::every]), len(files[::every])
    elif source.is_file():
        frames = (f for i, f in enumerate(_video_frames(source)) if i % every == 0)
        capture = cv2.VideoCapture(str(source))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        total = -(-count // every) if count > 0 else None
    else:
        raise FileNotFoundError(f"no video file or folder of images at {source}")
    out = []
    for frame in tqdm(frames, total=total, desc="frames", unit="frame", leave=False):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        code = cv2.COLOR_BGR2GRAY if grey else cv2.COLOR_BGR2RGB
        out.append(cv2.cvtColor(frame, code))
    if not out:
        raise ValueError(f"{source}: no frames could be read")
    return np.stack(out)


def to_sequences(frames: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Sequences of ``length`` consecutive frames starting every ``stride`` frames:
    ``[F, ...]`` -> ``[N, length, ...]`` (frames past the last whole sequence are dropped)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    if len(frames) < length:
        raise ValueError(f"{len(frames)} frames are too few for one sequence of {length}")
    starts = range(0, len(frames) - length + 1, stride)
    return np.stack([frames[s : s + length] for s in starts])


def import_frames(
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: tuple[int, int] = (50, 50),
    grey: bool = True,
    length: int = 10,
    stride: int | None = None,
    every: int = 1,
    max_sequences: int | None = None,
) -> Path:
    """Write the frames of ``source`` (a video file OpenCV reads, or a folder of images) as a
    data file with ``images`` only: :func:`read_frames`, then :func:`to_sequences` with
    ``stride`` (default ``length``: no overlap), at most ``max_sequences``; ``metadata``
    records the source and these settings."""
    stride = length if stride is None else stride
    frames = read_frames(source, size, grey, every)
    images = to_sequences(frames, length, stride)
    if max_sequences is not None:
        images = images[:max_sequences]
    meta = {
        "importer": "sqair_pyro.data.frames.import_frames",
        "source": str(source),
        "size": list(size),
        "grey": grey,
        "length": length,
        "stride": stride,
        "every": every,
        "frames_kept": len(frames),  # after keeping every n-th
    }
    return save_npz(out, {"images": images, "metadata": metadata_array(meta)})
