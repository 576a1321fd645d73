"""Tests of estimate_log_px on a conjugate Gaussian model with a closed-form log p(x)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from sqair_pyro.infer import VIMCO_ELBO, estimate_log_px

S = 0.5  # observation noise
X_BASE = torch.tensor([-1.5, 0.3, 2.0])
REPS = 1000  # each datum is repeated; the copies give independent estimates in one call
X = X_BASE.repeat(REPS)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def guide(x, record=None):
    """Deliberately imperfect: the exact posterior's mean shifted by 1.0, its sd times 1.5."""
    post_var = S**2 / (1.0 + S**2)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x / (1.0 + S**2) + 1.0, 1.5 * math.sqrt(post_var)))
    if record is not None:
        record.append(z.shape[0])


def model_rec(x, record=None):
    model(x)


def exact_log_px(x):
    return dist.Normal(0.0, math.sqrt(1.0 + S**2)).log_prob(x)


def test_bound_rises_with_k_and_reaches_log_px():
    exact = exact_log_px(X)
    means, ses = [], []
    for k in (1, 10, 100, 1000):
        gap = exact - estimate_log_px(model, guide, X, num_particles=k, chunk_size=100)
        assert gap.shape == X.shape
        means.append(gap.mean().item())
        ses.append((gap.std() / math.sqrt(gap.numel())).item())
    print("mean gap log p(x) - L_K for K = 1, 10, 100, 1000:", means, "se:", ses)
    # the gap shrinks with K (each step by more than 3 standard errors of the difference) ...
    for i in range(3):
        assert means[i] - means[i + 1] > 3 * math.hypot(ses[i], ses[i + 1])
    # ... it is positive in expectation (a lower bound) and nearly closed at K = 1000
    assert means[0] > 1.0
    assert means[3] > -3 * ses[3]
    assert means[3] < 0.01


def test_chunked_equals_concatenated_log_weights():
    x = X_BASE
    pyro.set_rng_seed(7)
    chunked = estimate_log_px(model, guide, x, num_particles=100, chunk_size=30)
    pyro.set_rng_seed(7)
    log_ws = []
    for k in (30, 30, 30, 10):  # the same draws, in the same order
        log_w, scale = VIMCO_ELBO(num_particles=k, control_variate=False).log_weights(
            model, guide, x
        )
        assert scale == 1.0 and log_w.shape == (k, 3)
        log_ws.append(log_w)
    expected = torch.logsumexp(torch.cat(log_ws), dim=0) - math.log(100)
    torch.testing.assert_close(chunked, expected)


def test_chunked_agrees_with_one_batch():
    x = X[:900]
    chunked = estimate_log_px(model, guide, x, num_particles=1000, chunk_size=64)
    one_batch = estimate_log_px(model, guide, x, num_particles=1000, chunk_size=1000)
    diff = chunked - one_batch
    se = diff.std() / math.sqrt(diff.numel())
    print(f"chunked - one batch: mean {diff.mean():.2e}, se {se:.2e}")
    assert abs(diff.mean()) < 4 * se
    print(f"mean |chunked - one batch| = {diff.abs().mean():.3f}")
    assert diff.abs().mean() < 0.15  # per datum too (heavy-tailed weights at this guide)


def test_memory_bounded_by_chunk_size():
    record: list[int] = []
    out = estimate_log_px(model_rec, guide, X_BASE, record, num_particles=250, chunk_size=100)
    assert record == [100, 100, 50]
    assert out.shape == (3,) and not out.requires_grad


def test_argument_errors():
    with pytest.raises(ValueError, match="num_particles"):
        estimate_log_px(model, guide, X_BASE, num_particles=0)
    with pytest.raises(ValueError, match="chunk_size"):
        estimate_log_px(model, guide, X_BASE, chunk_size=0)
