"""The data format: sequences of frames, with whatever ground truth the source has.

One compressed ``.npz`` per split (``train.npz``, ``test.npz``). ``N`` sequences of ``T``
frames of ``H x W`` pixels (``C`` channels for colour), ``M`` object slots; slot ``m`` is one
object's identity throughout its sequence.

============  ==============================  ===========================================
array         dtype and shape                 what it enables
============  ==============================  ===========================================
``images``    uint8 ``[N, T, H, W]`` or       required: everything
              ``[N, T, H, W, C]``
``counts``    integer ``[N, T]``, >= 0        counting accuracy (objects visible per frame)
``boxes``     float ``[N, T, M, 4]``          tracking metrics: ``(x, y, width, height)`` in
                                              pixels of each visible object
``visible``   bool ``[N, T, M]``              (with ``boxes``) which slots are visible
``labels``    integer ``[N, M]``              the addition probe and class checks: a class
                                              >= 0 per object, -1 for an empty slot
``metadata``  0-d unicode string              free-form JSON (provenance, generator knobs)
============  ==============================  ===========================================

Other arrays are kept and ignored. Files written before this format call ``metadata``
``config``; they load unchanged. ``counts`` is derived from ``visible`` when only the latter
is given.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "available",
    "file_kind",
    "load_npz",
    "metadata_array",
    "normalise_arrays",
    "read_metadata",
    "save_npz",
    "split_file",
]

#: The name of the metadata array, and its name in files written before this format.
METADATA, LEGACY_METADATA = "metadata", "config"


def _is_integer(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu"


def normalise_arrays(
    arrays: Mapping[str, Any], source: str | os.PathLike = "<arrays>"
) -> dict[str, np.ndarray]:
    """Check a data file's arrays and return them in canonical dtypes.

    Integer ``counts``/``labels`` become int64, ``boxes`` float32, ``visible`` bool (0/1
    integers are accepted), hidden slots' boxes zero; ``counts`` is derived from ``visible``
    when missing; a legacy ``config`` string becomes ``metadata``.

    Raises:
        ValueError: naming ``source``, the array and the problem.
    """

    def fail(message: str) -> None:
        raise ValueError(f"{source}: {message}")

    out = {key: np.asarray(value) for key, value in arrays.items()}
    if LEGACY_METADATA in out and METADATA not in out:
        out[METADATA] = out.pop(LEGACY_METADATA)
    if "images" not in out:
        fail(f"missing the array 'images' (uint8 [N, T, H, W]); found {sorted(out) or 'none'}")
    images = out["images"]
    if images.dtype != np.uint8:
        fail(
            f"array 'images' has dtype {images.dtype}, expected uint8 (0-255; multiply frames "
            "in [0, 1] by 255 and round)"
        )
    if images.ndim not in (4, 5) or 0 in images.shape[1:]:
        fail(f"array 'images' has shape {images.shape}, expected [N, T, H, W] or [N, T, H, W, C]")
    n, t, h, w = images.shape[:4]
    if ("boxes" in out) != ("visible" in out):
        have, need = ("boxes", "visible") if "boxes" in out else ("visible", "boxes")
        fail(f"array {have!r} needs {need!r} as well (tracking ground truth comes as a pair)")
    slots = None
    if "visible" in out:
        visible, boxes = out["visible"], out["boxes"]
        if visible.ndim != 3 or visible.shape[:2] != (n, t):
            fail(f"array 'visible' has shape {visible.shape}, expected ({n}, {t}, M)")
        if visible.dtype != bool:
            if not _is_integer(visible) or not np.isin(visible, (0, 1)).all():
                fail(f"array 'visible' must be bool (or 0/1 integers), got {visible.dtype}")
            visible = visible.astype(bool)
        slots = visible.shape[2]
        if boxes.shape != (n, t, slots, 4):
            fail(f"array 'boxes' has shape {boxes.shape}, expected {(n, t, slots, 4)}")
        if boxes.dtype.kind not in "fiu":
            fail(f"array 'boxes' must hold numbers, got {boxes.dtype}")
        boxes = np.where(visible[..., None], boxes, 0).astype(np.float32)
        shown = boxes[visible]
        if not np.isfinite(shown).all():
            fail("array 'boxes' has non-finite values for a visible object")
        if shown.size:
            x, y, bw, bh = shown.T
            if (bw < 1).any() or (bh < 1).any():
                fail("array 'boxes' has a visible box with width or height < 1")
            if (x < 0).any() or (y < 0).any() or (x + bw > w).any() or (y + bh > h).any():
                fail(f"array 'boxes' has a visible box outside the {h}x{w} canvas")
        out["visible"], out["boxes"] = visible, boxes
    if "counts" in out:
        counts = out["counts"]
        if counts.shape != (n, t) or not _is_integer(counts):
            fail(
                f"array 'counts' must be integers shaped ({n}, {t}), "
                f"got {counts.dtype} {counts.shape}"
            )
        if counts.size and counts.min() < 0:
            fail("array 'counts' has negative values")
        out["counts"] = counts.astype(np.int64)
        if "visible" in out and not np.array_equal(out["counts"], out["visible"].sum(-1)):
            fail("array 'counts' differs from visible.sum(-1)")
    elif "visible" in out:
        out["counts"] = out["visible"].sum(-1).astype(np.int64)
    if "labels" in out:
        labels = out["labels"]
        if labels.ndim != 2 or len(labels) != n or not _is_integer(labels):
            fail(
                f"array 'labels' must be integers shaped ({n}, M), "
                f"got {labels.dtype} {labels.shape}"
            )
        if slots is not None and labels.shape[1] != slots:
            fail(f"array 'labels' has {labels.shape[1]} slots but 'visible' has {slots}")
        if labels.size and labels.min() < -1:
            fail("array 'labels' has values below -1 (classes are >= 0, -1 marks an empty slot)")
        out["labels"] = labels.astype(np.int64)
        if "visible" in out and (out["visible"] & (out["labels"] < 0)[:, None, :]).any():
            fail("array 'visible' marks an empty slot (label -1) as visible")
    if METADATA in out:
        meta = out[METADATA]
        if meta.dtype.kind != "U" or meta.ndim != 0:
            fail(f"array 'metadata' must be a 0-d unicode string, got {meta.dtype} {meta.shape}")
        try:
            json.loads(str(meta[()]))
        except ValueError as err:
            fail(f"array 'metadata' is not valid JSON ({err})")
    return out


def metadata_array(meta: Mapping[str, Any]) -> np.ndarray:
    """A JSON document as the 0-d unicode array stored under ``metadata``."""
    return np.array(json.dumps(dict(meta), sort_keys=True))


def read_metadata(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The parsed ``metadata`` JSON of a data file (``{}`` when it has none)."""
    value = arrays.get(METADATA, arrays.get(LEGACY_METADATA))
    if value is None:
        return {}
    meta = json.loads(str(np.asarray(value)[()]))
    return meta if isinstance(meta, dict) else {"value": meta}


def available(
    arrays: Mapping[str, np.ndarray], uses: Mapping[str, Iterable[str]], source: str = "the data"
) -> dict[str, bool]:
    """For each measurement in ``uses`` (its name -> the arrays it needs), whether ``arrays``
    has what it needs; one line on stderr names what is skipped and why."""
    missing = {what: [key for key in keys if key not in arrays] for what, keys in uses.items()}
    skipped = [what for what, keys in missing.items() if keys]
    if skipped:
        lacks = sorted({key for what in skipped for key in missing[what]})
        print(
            f"note: {source} has no {', '.join(lacks)}: skipping {', '.join(skipped)}",
            file=sys.stderr,
        )
    return {what: not keys for what, keys in missing.items()}


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Check and write ``arrays`` with ``np.savez_compressed``, atomically (temp + rename)."""
    path = Path(path)
    arrays = normalise_arrays(arrays, source=f"{path} (before saving)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name opened normally (mkstemp would force mode 0600 instead of the umask).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: Leading bytes of files people pass as data by mistake, and what they are.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"\x93NUMPY", "a single .npy array"),
    (b"\x80", "a Python pickle (sqair-pyro never loads pickles)"),
)


def file_kind(head: bytes) -> str:
    """What a file that is not an .npz archive looks like, from its first bytes."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head.startswith(b"RIFF"):
        return {b"AVI ": "an AVI video", b"WAVE": "a WAV sound"}.get(head[8:12], "a RIFF file")
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "text"


def split_file(path: str | os.PathLike, split: str) -> Path:
    """A data file given as itself, or as the directory that holds ``{split}.npz``."""
    path = Path(path)
    return path / f"{split}.npz" if path.is_dir() else path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a data file and return its arrays checked and normalised (:func:`normalise_arrays`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable or its arrays break the format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open("rb") as f:
        head = f.read(12)
    if not head.startswith(b"PK"):
        hint = " (turn videos and image folders into one with `sqair-pyro import-frames`)"
        raise ValueError(
            f"{path} is not a data file: expected a .npz archive of arrays, found "
            f"{file_kind(head)}{hint}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise ValueError(f"{path}: not a readable .npz data file ({err})") from err
    except MemoryError as err:  # a header claiming an impossible shape, or a huge file
        raise ValueError(f"{path}: an array is too large to load ({err})") from None
    return normalise_arrays(arrays, source=path)
