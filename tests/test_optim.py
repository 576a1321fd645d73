"""Conditioning of the learning signal: each component clipped on its own."""

import math

import pytest
import torch
from torch import nn

from sqair_pyro.optim import clip_by_component, component_of, components


def _with_grads(norms: dict[str, float]) -> list[tuple[str, nn.Parameter]]:
    named = []
    for name, norm in norms.items():
        param = nn.Parameter(torch.zeros(4))
        param.grad = torch.full((4,), norm / 2.0)  # |g| = norm
        named.append((name, param))
    return named


def test_component_is_the_first_three_segments_of_the_path():
    assert (
        component_of("guide.propagation.where_head.net.0.weight") == "guide.propagation.where_head"
    )
    assert component_of("model.scale") == "model.scale"


def test_each_component_is_clipped_on_its_own():
    named = _with_grads(
        {"guide.a.x.w": 300.0, "guide.a.x.b": 400.0, "guide.b.y.w": 3.0, "model.c.z.w": 20.0}
    )
    groups = components(named)
    assert list(groups) == ["guide.a.x", "guide.b.y", "model.c.z"]
    total, clipped = clip_by_component(groups, max_norm=10.0)
    assert total == pytest.approx(math.sqrt(300**2 + 400**2 + 3**2 + 20**2))
    assert clipped == pytest.approx(2 / 3)
    norm = {
        name: math.sqrt(sum(float(p.grad.norm()) ** 2 for p in ps)) for name, ps in groups.items()
    }
    assert norm["guide.a.x"] == pytest.approx(10.0, rel=1e-5)  # 500 -> 10, direction kept
    assert float(groups["guide.a.x"][0].grad[0]) / float(
        groups["guide.a.x"][1].grad[0]
    ) == pytest.approx(0.75)
    assert norm["guide.b.y"] == pytest.approx(3.0)  # under the limit: untouched
    assert norm["model.c.z"] == pytest.approx(10.0, rel=1e-5)


def test_a_non_finite_gradient_is_reported():
    named = _with_grads({"guide.a.x.w": 1.0})
    named[0][1].grad[0] = float("nan")
    total, _ = clip_by_component(components(named), 10.0)
    assert not math.isfinite(total)
