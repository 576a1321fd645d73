"""Prior components handed to the generative programs, so each can be swapped alone.

The discovery prior (paper Eq. 7-8) draws the number of new objects
``D_t ~ Categorical(0..N - P_t)``. A Pyro model samples it one object slot at a time, as
the guide does, by writing the categorical as a chain of Bernoulli "continue" decisions
(stick breaking): slot ``i`` holds a new object with probability

    rho_i = P(D_t > i | D_t >= i) = sum_{k > i} pi_k / sum_{k >= i} pi_k,

given that slot ``i - 1`` did, and the chain stops at the first empty slot. The product
of these Bernoulli probabilities is exactly ``Categorical(D_t; pi)``, so both views are one
prior. A researcher swaps the prior by handing another object with the same
:meth:`continue_probs` to the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sqair_pyro.models.state import ObjectState
from sqair_pyro.nn.modules import bcat
from sqair_pyro.nn.rows import Rows


class DiscoveryPrior(nn.Module):
    """Base class: per-slot continue probabilities of the number of new objects."""

    max_objects: int

    def continue_probs(self, num_propagated: torch.Tensor, t: int) -> torch.Tensor:
        """``rho_i`` for slots ``i = 0..N-1``, shape (..., N); zero for ``i >= N - P_t``.

        :param num_propagated: ``P_t`` (...,), objects already present at time ``t``.
        :param t: the time step (0-based); AIR uses ``t = 0`` and ``P_t = 0``.
        """
        raise NotImplementedError

    def free_slots(self, num_propagated: torch.Tensor) -> torch.Tensor:
        """(..., N) booleans: slot ``i`` may hold a new object iff ``i < N - P_t``."""
        slots = torch.arange(self.max_objects, device=num_propagated.device)
        return slots < (self.max_objects - num_propagated).unsqueeze(-1)


class CategoricalDiscoveryPrior(DiscoveryPrior):
    """Learnable categorical over ``0..N`` new objects (Eq. 8; biases as in the authors'
    original implementation).

    ``logits = base + [t > 0] * bias_no_new * onehot(0) + MLP(P_t)``: the time-step bias
    favours "no new objects" after the first frame (starts at +10 on zero). Counts above
    ``N - P_t`` are masked and the rest renormalised.
    """

    def __init__(
        self,
        max_objects: int,
        hidden: int = 32,
        no_new_bias: float = 10.0,
        init_rho: float | None = None,
    ) -> None:
        super().__init__()
        self.max_objects = max_objects
        # Uniform over counts, or, with init_rho, starting as a geometric (few objects).
        base = torch.zeros(max_objects + 1)
        if init_rho is not None:
            base = torch.arange(max_objects + 1.0) * math.log(init_rho)
        self.base = nn.Parameter(base)
        self.no_new_bias = nn.Parameter(torch.tensor(float(no_new_bias)))
        self.from_propagated = nn.Sequential(
            nn.Linear(1, hidden), nn.ELU(), nn.Linear(hidden, max_objects + 1)
        )
        nn.init.zeros_(self.from_propagated[-1].weight)
        nn.init.zeros_(self.from_propagated[-1].bias)

    def count_logits(self, num_propagated: torch.Tensor, t: int) -> torch.Tensor:
        """Unnormalised log-probabilities of ``D_t = 0..N``, shape (..., N + 1)."""
        logits = self.base + self.from_propagated(num_propagated.unsqueeze(-1).float())
        if t > 0:
            no_new = torch.zeros_like(self.base)
            no_new[0] = 1.0
            logits = logits + self.no_new_bias * no_new
        return logits

    def continue_probs(self, num_propagated: torch.Tensor, t: int) -> torch.Tensor:
        n = self.max_objects
        counts = torch.arange(n + 1, device=num_propagated.device)
        allowed = counts <= (n - num_propagated).unsqueeze(-1)  # D_t <= N - P_t
        logits = self.count_logits(num_propagated, t).masked_fill(~allowed, -math.inf)
        # log sum_{k >= i} pi_k for i = 0..N, then log 0 for i = N + 1.
        tail = torch.logcumsumexp(logits.flip(-1), dim=-1).flip(-1)
        tail = torch.cat([tail, torch.full_like(tail[..., :1], -math.inf)], dim=-1)
        ratio = (tail[..., 1:] - tail[..., :-1])[..., :n]
        # Slots past N - P_t have tail = -inf on both sides: probability zero, not NaN.
        return torch.exp(ratio).nan_to_num(0.0)


class GeometricDiscoveryPrior(DiscoveryPrior):
    """Fixed geometric prior: every free slot holds a new object with probability ``rho``.

    ``P(D_t = k) = rho^k (1 - rho)`` for ``k < N - P_t`` and ``rho^(N - P_t)`` for the last
    count. AIR's sparsity prior; a drop-in for the categorical.
    """

    def __init__(self, max_objects: int, rho: float = 0.5) -> None:
        super().__init__()
        self.max_objects = max_objects
        self.rho = rho

    def continue_probs(self, num_propagated: torch.Tensor, t: int) -> torch.Tensor:
        return self.free_slots(num_propagated).float() * self.rho


class WhatWherePrior(nn.Module):
    """Fixed isotropic Gaussians ``p^D(z_what)``, ``p^D(z_where)`` of new objects (Eq. 7).

    z_where is kept unconstrained: ``(s_x, s_y) = sigmoid(z[:2])``, ``(t_x, t_y) = z[2:]``.
    The scale logit is centred at ``scale_logit`` (0: glimpses half the canvas, 25 pixels of
    50, about the size of an MNIST digit), or at ``(x, y)`` for windows of another shape (a
    walking person is about as tall as 0.4 and as wide as 0.17 of a 64-pixel crop).

    ``slot_shift_y`` (a departure from the paper, whose new objects are alike whatever their
    slot; 0 keeps the paper's prior) centres the vertical shift of the ``i``-th of ``N`` new
    objects at ``slot_shift_y * (2 i / (N - 1) - 1)``: the first slot expects an object near
    the top, the last near the bottom, so that discovery orders objects from top to bottom
    (:meth:`slot_where_loc`). Measured: an MLP-AIR that orders digits left to right puts its
    first window between two stacked digits and a third object beside it, in 39-60% of such
    pairs for three seeds of six, and its SQAIR keeps that split; with ``slot_shift_y`` 3,
    seeds 1 and 3 split 2% and 5% of them (docs/results.md, "Split digits come from one
    orientation").
    """

    def __init__(
        self,
        z_what_dim: int,
        scale_logit: float | Sequence[float] = 0.0,
        scale_sd: float = 0.5,
        shift_sd: float = 1.0,
        slot_shift_y: float = 0.0,
    ) -> None:
        super().__init__()
        self.slot_shift_y = slot_shift_y
        self.register_buffer("what_loc", torch.zeros(z_what_dim))
        self.register_buffer("what_scale", torch.ones(z_what_dim))
        x, y = scale_logit if isinstance(scale_logit, Sequence) else (scale_logit, scale_logit)
        self.register_buffer("where_loc", torch.tensor([float(x), float(y), 0.0, 0.0]))
        self.register_buffer("where_scale", torch.tensor([scale_sd, scale_sd, shift_sd, shift_sd]))

    def slot_where_loc(self, slot: int, num_slots: int) -> torch.Tensor:
        """The mean of ``p^D(z_where)`` of the ``slot``-th of ``num_slots`` new objects."""
        if not self.slot_shift_y or num_slots < 2:
            return self.where_loc
        ramp = 2 * slot / (num_slots - 1) - 1
        return self.where_loc + self.where_loc.new_tensor([0.0, 0.0, 0.0, self.slot_shift_y * ramp])


class PropagationPrior(nn.Module):
    """``p^P(z_t | z_{t-1})`` (paper Eq. 9-10): a GRU per object over time.

    ``h^i_{t-1} = GRU([z_what^i_{t-1}, z_where^i_{t-1}], h^i_{t-2})`` and from it
    the survival probability ``f(h)`` (its logit bias starts at ``+survive_bias``, so
    objects stay), and Gaussians for z_where and z_what centred on their previous values.
    """

    def __init__(self, z_what_dim: int, hidden_size: int, survive_bias: float = 10.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.z_what_dim = z_what_dim
        self.gru = nn.GRUCell(z_what_dim + 4, hidden_size)
        self.survive = nn.Linear(hidden_size, 1)
        nn.init.constant_(self.survive.bias, survive_bias)
        self.where = nn.Linear(hidden_size, 8)
        self.what = nn.Linear(hidden_size, 2 * z_what_dim)
        for layer in (self.where, self.what):  # start as "stay where and as you were"
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def update(
        self,
        z_what: torch.Tensor,
        z_where: torch.Tensor,
        hidden: torch.Tensor,
        z_pres: torch.Tensor,
    ) -> torch.Tensor:
        """One GRU step for every present object: (..., N, ·) to (..., N, H), zero elsewhere."""
        rows = Rows(z_pres[..., 0].bool())
        inputs = bcat([rows.gather(z_what), rows.gather(z_where)])
        return rows.scatter(self.gru(inputs, rows.gather(hidden)))

    def forward(self, hidden: torch.Tensor, previous: ObjectState) -> tuple[torch.Tensor, ...]:
        """``(survive, where_loc, where_scale, what_loc, what_scale)``, each (..., N, ·)."""
        survive = torch.sigmoid(self.survive(hidden))
        where_delta, where_raw = self.where(hidden).chunk(2, dim=-1)
        what_delta, what_raw = self.what(hidden).chunk(2, dim=-1)
        return (
            survive,
            previous.z_where + where_delta,
            F.softplus(where_raw - 2.0) + 1e-3,
            previous.z_what + what_delta,
            F.softplus(what_raw - 1.0) + 1e-3,
        )
