"""IsotropicNormal, the likelihood's pixel noise: the density and gradients of Pyro's Normal."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from sqair_pyro.distributions import IsotropicNormal, SquaredDistance


@pytest.mark.parametrize("event_dim", [0, 1, 2, 3])
def test_log_prob_and_gradients_equal_the_independent_normal(event_dim):
    torch.manual_seed(0)
    loc = torch.randn(5, 4, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    value = torch.randn(4, 3, 6, 7, dtype=torch.float64, requires_grad=True)  # broadcast
    ours = IsotropicNormal(loc, 0.3, event_dim).log_prob(value)
    theirs = dist.Normal(loc, 0.3).to_event(event_dim).log_prob(value)
    assert ours.shape == theirs.shape == loc.shape[: loc.dim() - event_dim]
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-9)
    weights = torch.randn_like(theirs)
    grads = torch.autograd.grad((ours * weights).sum(), (loc, value))
    expected = torch.autograd.grad((theirs * weights).sum(), (loc, value))
    for g, e in zip(grads, expected, strict=True):
        assert g.shape == e.shape
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-10)


def test_squared_distance_passes_gradcheck():
    torch.manual_seed(1)
    a = torch.randn(3, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: SquaredDistance.apply(a, b, 2), (a, b))


def test_samples_have_the_stated_mean_and_scale():
    """100,000 draws per pixel mean: the sample mean within 5 standard errors, the sample
    standard deviation within 1% of the scale."""
    torch.manual_seed(2)
    loc = torch.tensor([[-1.0, 0.0], [2.0, 5.0]])
    d = IsotropicNormal(loc, 0.3, event_dim=2)
    x = d.sample((100_000,))
    assert x.shape == (100_000, 2, 2)
    assert ((x.mean(0) - loc).abs() < 5 * 0.3 / math.sqrt(100_000)).all()
    assert torch.allclose(x.std(0), torch.full_like(loc, 0.3), rtol=0.01)
    assert torch.equal(d.mean, loc) and torch.allclose(d.variance, torch.full_like(loc, 0.09))


def test_rsample_is_reparameterised():
    loc = torch.zeros(3, 2, requires_grad=True)
    IsotropicNormal(loc, 0.5, 1).rsample().sum().backward()
    assert torch.equal(loc.grad, torch.ones(3, 2))


def test_expand_mask_and_shapes_work_in_a_pyro_plate():
    loc = torch.randn(4, 4)
    d = IsotropicNormal(loc, 1.0, event_dim=2)
    assert d.batch_shape == () and d.event_shape == (4, 4)
    expanded = d.expand((3,))
    assert expanded.batch_shape == (3,) and expanded.loc.shape == (3, 4, 4)

    def model():
        with pyro.plate("data", 3):
            pyro.sample("x", d.mask(torch.tensor([True, False, True])), obs=torch.zeros(3, 4, 4))

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    lp = trace.nodes["x"]["log_prob"]
    full = dist.Normal(loc, 1.0).to_event(2).log_prob(torch.zeros(4, 4))
    assert torch.allclose(lp, torch.stack([full, torch.zeros(()), full]))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        IsotropicNormal(torch.zeros(2), scale, 1)


def test_event_dim_beyond_loc_is_refused():
    with pytest.raises(ValueError, match="event_dim"):
        IsotropicNormal(torch.zeros(2, 3), 1.0, 3)
