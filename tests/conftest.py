"""Shared fixtures: a tiny moving-MNIST data set and small, fast configs."""

import pyro
import pytest
import torch

from sqair_pyro.config import Config, preset
from sqair_pyro.data import make_data

torch.set_num_threads(1)  # small tensors: threads cost more than they give on 2 cores


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Every test starts from an empty param store and seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(False)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A directory with train.npz (240 sequences) and test.npz (60), seed 0."""
    out = tmp_path_factory.mktemp("moving_mnist")
    make_data(out, train_size=240, test_size=60, seed=0, progress=False)
    return out


def small_config(name: str, **changes) -> Config:
    """A preset shrunk for tests: 32 units, short sequences, tiny batches."""
    base = dict(
        hidden=32,
        z_what_dim=8,
        batch_size=4,
        num_particles=3,
        validation_size=8,
        init_from=None,  # the shipped AIR has other layer sizes
        propagation_warmup_steps=0,
    )
    if name != "mlp-air":
        base.update(num_frames=3, curriculum_start=2, curriculum_every=2)
    return preset(name, **{**base, **changes})
