"""Exploring presence decisions in training: the guide's Bernoulli latents kept off 0 and 1.

SQAIR's guide decides presence with Bernoulli sites whose gradient is a score-function
estimate (VIMCO). A decision the guide almost never takes is almost never scored, so the
estimator cannot tell the guide that it should take it. The decision that matters most is
rediscovering a digit that propagation has lost (after an occlusion or an exit through the
canvas edge): its object stays present but draws the digit nowhere near it, and from then on
discovery, which after the first frame almost never proposes a new object, never finds it
again; those frames hold 17% of the squared error of a trained model (docs/results.md,
"Lost digits").

:class:`PresenceExploration` wraps the guide in training only and replaces the distribution
``q(z_pres = 1) = p`` of every Bernoulli site whose name starts with one of its keys by

    q'(z_pres = 1) = eps + (1 - 2 eps) p          for p > 0,   q' = 0 where p = 0,

so each such decision is tried either way at least an ``eps`` of the time. Slots where the
model forbids an object (``p = 0`` exactly: after an absent object, beyond the free slots,
after a vanished object) stay forbidden. ``q'`` is a proposal like any other: the particles
drawn from it give an importance-weighted bound of their own (on the same ``log p(x)``), and
the guide's parameters get the gradient of that bound through ``p``. Validation and
evaluation use the guide itself. Training's logged bound, counting and object counts are
then of draws from ``q'``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import MaskedDistribution

from sqair_pyro.infer.by_prefix import ByPrefix

__all__ = ["MAX_EXPLORATION", "PRESENCE_PREFIX", "PresenceExploration", "explored", "floor_problem"]

#: ``eps`` must be below this: at 0.5 every decision is a fair coin.
MAX_EXPLORATION = 0.5
#: The guide's presence sites' names start with this.
PRESENCE_PREFIX = "z_pres"


def floor_problem(floors: Mapping[str, float]) -> str | None:
    """What the exploration rates ``floors`` (site-name prefix -> eps) must be and are not,
    as the end of a sentence "... must be ..."; None where they are fine."""
    if not all(0 <= eps < MAX_EXPLORATION for eps in floors.values()):
        return f"in [0, {MAX_EXPLORATION}) each"
    if not all(prefix.startswith(PRESENCE_PREFIX) for prefix in floors):
        return f"keyed by presence sites ({PRESENCE_PREFIX}...)"
    return None


def explored(fn: dist.Distribution, eps: float) -> dist.Distribution:
    """``fn`` (a Bernoulli, possibly ``to_event``-ed and masked) with its probabilities
    ``p > 0`` moved to ``eps + (1 - 2 eps) p``; exact zeros stay."""
    if isinstance(fn, MaskedDistribution):
        return explored(fn.base_dist, eps).mask(fn._mask)
    if isinstance(fn, dist.Independent):
        return explored(fn.base_dist, eps).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.Bernoulli):
        p = fn.probs
        return dist.Bernoulli(torch.where(p > 0, eps + (1 - 2 * eps) * p, p))
    raise TypeError(f"presence exploration needs a Bernoulli site, got {type(fn).__name__}")


class PresenceExploration(ByPrefix):
    """Keep the guide's presence probabilities in ``[eps, 1 - eps]`` (exact zeros kept), with
    ``eps`` by site-name prefix, e.g. ``{"z_pres_disc": 0.02}``; a site matching several
    prefixes takes the longest. Wrap the guide only, never the model."""

    def __init__(self, floors: Mapping[str, float]) -> None:
        problem = floor_problem(floors)
        if problem is not None:
            raise ValueError(f"presence exploration must be {problem}, got {dict(floors)}")
        super().__init__(floors)

    def _pyro_sample(self, msg: dict) -> None:
        eps = self.value_of(msg)
        if eps:
            msg["fn"] = explored(msg["fn"], eps)
