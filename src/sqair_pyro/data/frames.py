"""Any video as a data file: frames of a video file or of a folder of images, without ground
truth, cut into sequences (:mod:`sqair_pyro.data.format`)."""

from __future__ import annotations

import itertools
import os
import sys
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


def open_video(path: Path) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` of ``path`` with FFmpeg's own decoder messages silenced (a damaged
    or truncated file would flood the terminal; :func:`read_frames` says in one line when a
    video ends early)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    return cv2.VideoCapture(str(path))


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    capture = open_video(path)
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
    capture = open_video(source)
    try:
        if not capture.isOpened():
            raise ValueError(f"{source}: OpenCV cannot open it as a video")
        size = capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH)
    finally:
        capture.release()
    return int(size[0]), int(size[1])


def free_memory() -> int | None:
    """Bytes a new allocation can have: ``MemAvailable`` of ``/proc/meminfo`` (page cache
    counts as available), else the free pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_fits_in_memory(frames: int | None, frame_bytes: int, source: Path) -> None:
    """One clear error, before reading, for frames that would take more than the free memory."""
    free = free_memory()
    needed = (frames or 1) * frame_bytes
    if free is not None and needed > free:
        raise ValueError(
            f"{source}: {frames or 'its'} frames at this size need {needed / 2**30:.1f} GiB, "
            f"more than the {free / 2**30:.1f} GiB of free memory; choose a smaller size, a "
            "larger --every or fewer frames"
        )


def read_frames(
    source: str | os.PathLike,
    size: tuple[int, int],
    grey: bool = True,
    every: int = 1,
    max_frames: int | None = None,
) -> np.ndarray:
    """Every ``every``-th frame of a video file or of a folder of images (name order), resized
    to ``size = (height, width)`` (area interpolation), as uint8 ``[F, H, W]`` (grey) or
    ``[F, H, W, 3]`` (RGB); at most ``max_frames`` of them. Frames that would not fit in the
    machine's free memory are refused before any is read."""
    source = Path(source)
    height, width = size
    if min(height, width) < 1 or every < 1:
        raise ValueError(f"size must be >= 1 pixel and every >= 1, got {size}, {every}")
    if source.is_dir():
        files = _image_files(source)
        frames, total = _folder_frames(files[::every]), len(files[::every])
    elif source.is_file():
        frames = (f for i, f in enumerate(_video_frames(source)) if i % every == 0)
        capture = open_video(source)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        total = -(-count // every) if count > 0 else None
    else:
        raise FileNotFoundError(f"no video file or folder of images at {source}")
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
        total = max_frames if total is None else min(total, max_frames)
    _check_fits_in_memory(total, height * width * (1 if grey else 3), source)
    out = []
    for frame in tqdm(frames, total=total, desc="frames", unit="frame", leave=False):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        code = cv2.COLOR_BGR2GRAY if grey else cv2.COLOR_BGR2RGB
        out.append(cv2.cvtColor(frame, code))
    if not out:
        raise ValueError(f"{source}: no frames could be read")
    if total is not None and len(out) < total - 1:  # containers may miscount by one
        print(
            f"note: {source} should hold {total} frames here but only {len(out)} could be read "
            "(truncated or damaged?); using those",
            file=sys.stderr,
        )
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
    needed = None if max_sequences is None else (max_sequences - 1) * stride + length
    frames = read_frames(source, size, grey, every, max_frames=needed)
    images = to_sequences(frames, length, stride)
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
