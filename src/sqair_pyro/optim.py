"""Conditioning the learning signal before the optimiser step.

Measured on the shipped MLP-SQAIR (``benchmarks/gradient_terms.py``; docs/results.md, "What
makes the gradient norm"): at T=10, 82-96% of the squared gradient norm of a step sits in the
guide's two ``where_head`` networks, driven by the likelihood term log p(x | z) through the
reparameterised z_where; the decoder holds under 0.1% of it and the score-function term of
z_pres under 0.1%. One global clip (norm 10 against norms of 10^4-10^6) makes every step a
unit-length step whose direction the where-heads dominate, and scales the appearance pathway's
share of it by whatever the where-heads did on that batch.

:func:`clip_by_component` clips each component (the first :data:`GROUP_DEPTH` segments of a
parameter's path, e.g. ``guide.propagation.where_head``) to the same norm on its own, so each
pathway gets a normalised step of its own (a departure from the paper, which clips nothing).
A component is a path prefix, not a pathway: most are one network (a head, an RNN, an
encoder), but a module's direct parameters (the discovery prior's biases) or the layers of an
``nn.Sequential`` held directly by a program (``guide.summary.0``, ``.2``) are clipped apart.
Measured worse than one global clip (docs/results.md), so it is an option, not the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

#: How many leading segments of a parameter's dotted path name its component.
GROUP_DEPTH = 3


def component_of(name: str, depth: int = GROUP_DEPTH) -> str:
    """The component a parameter belongs to: the first ``depth`` segments of its path."""
    return ".".join(name.split(".")[:depth])


def components(named_params: Iterable[tuple[str, nn.Parameter]]) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by :func:`component_of` their names."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in named_params:
        groups.setdefault(component_of(name), []).append(param)
    return groups


@torch.no_grad()
def clip_by_component(
    groups: dict[str, list[nn.Parameter]], max_norm: float
) -> tuple[float, float]:
    """Clip each component's gradient to norm ``max_norm`` in place.

    Returns the norm of the whole gradient before clipping and the fraction of components
    that were clipped; the norm is non-finite when any gradient is.
    """
    squares, clipped = 0.0, 0
    for params in groups.values():
        norm = float(nn.utils.clip_grad_norm_(params, max_norm))
        squares += norm**2
        clipped += norm > max_norm
    return math.sqrt(squares), clipped / max(len(groups), 1)
