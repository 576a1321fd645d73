"""The set of objects carried from one frame to the next, as fixed-size tensors of slots.

Both the model and the guide keep, per sequence (and particle), ``N`` slots: each slot's
latents, its identity and one recurrent state per object (the propagation prior's GRU in
the model, the temporal RNN in the guide). After each frame the propagated and the newly
discovered objects are *compacted* back into ``N`` slots: present objects first, in their
order (propagated before new), so slot order is the order the relation RNN visits them.
Absent slots are masked, never branched on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cat_slots(tensors: list[torch.Tensor], dim: int = -2) -> torch.Tensor:
    """``torch.cat`` on the slot dim after broadcasting the dims left of it (batch, particles)."""
    lead = torch.broadcast_shapes(*(t.shape[: t.dim() + dim] for t in tensors))
    return torch.cat([t.expand(*lead, *t.shape[t.dim() + dim :]) for t in tensors], dim=dim)


@dataclass
class ObjectState:
    """Objects present after a frame: every field has the slot dim ``N`` at position -2.

    ``ids`` (..., N, 1) are object identities (-1: empty slot); ``next_id`` (..., 1, 1) is the
    identity the next discovered object gets.
    """

    z_pres: torch.Tensor  # (..., N, 1)
    z_where: torch.Tensor  # (..., N, 4)
    z_what: torch.Tensor  # (..., N, D)
    hidden: torch.Tensor  # (..., N, H)
    ids: torch.Tensor  # (..., N, 1) long
    next_id: torch.Tensor  # (..., 1, 1) long

    @classmethod
    def empty(
        cls,
        batch: tuple[int, ...],
        num_slots: int,
        hidden_size: int,
        z_what_dim: int,
        device: torch.device | str = "cpu",
    ) -> ObjectState:
        """No objects at all: the state before the first frame."""

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*batch, *shape, device=device)

        long = dict(dtype=torch.long, device=device)
        return cls(
            z_pres=zeros(num_slots, 1),
            z_where=zeros(num_slots, 4),
            z_what=zeros(num_slots, z_what_dim),
            hidden=zeros(num_slots, hidden_size),
            ids=torch.full((*batch, num_slots, 1), -1, **long),
            next_id=torch.zeros(*batch, 1, 1, **long),
        )

    @property
    def num_slots(self) -> int:
        return self.z_pres.shape[-2]

    def latents(self) -> dict[str, torch.Tensor]:
        return {"z_pres": self.z_pres, "z_where": self.z_where, "z_what": self.z_what}

    @staticmethod
    def stack(history: list[ObjectState]) -> dict[str, torch.Tensor]:
        """The states of all frames as tensors (..., T, N, ·); ``ids`` as (..., T, N)."""
        names = ("z_pres", "z_where", "z_what", "ids")
        out = {
            name: torch.stack(torch.broadcast_tensors(*(getattr(s, name) for s in history)), dim=-3)
            for name in names
        }
        out["ids"] = out["ids"].squeeze(-1)
        return out


def compact(
    state: ObjectState,
    propagated: dict[str, torch.Tensor],
    propagated_hidden: torch.Tensor,
    discovered: dict[str, torch.Tensor],
    discovered_hidden: torch.Tensor | None = None,
) -> ObjectState:
    """The next frame's ``N`` slots from ``N`` propagated and ``N`` discovered candidates.

    Propagated objects keep their identity (and lose it when they disappear); discovered
    ones get fresh identities. At most ``N`` candidates are present (discovery is limited to
    ``N - P_t``), so a stable sort by presence keeps every one of them.
    """
    num_slots = state.num_slots
    disc_pres = discovered["z_pres"]
    if discovered_hidden is None:
        discovered_hidden = torch.zeros_like(propagated_hidden)
    # Identities: propagated objects keep theirs, new ones count up from next_id.
    prop_ids = torch.where(propagated["z_pres"].bool(), state.ids, -1)
    new_rank = disc_pres.long().cumsum(-2) - 1  # 0, 1, ... over present new objects
    disc_ids = torch.where(disc_pres.bool(), state.next_id + new_rank, -1)
    next_id = state.next_id + disc_pres.long().sum(-2, keepdim=True)

    candidates = {
        "z_pres": cat_slots([propagated["z_pres"], disc_pres], -2),
        "z_where": cat_slots([propagated["z_where"], discovered["z_where"]], -2),
        "z_what": cat_slots([propagated["z_what"], discovered["z_what"]], -2),
        "hidden": cat_slots([propagated_hidden, discovered_hidden], -2),
        "ids": cat_slots([prop_ids, disc_ids], -2),
    }
    lead = candidates["z_pres"].shape[:-2]
    # Present first, order kept: sort (1 - z_pres) stably and keep the first N slots.
    order = torch.sort(1 - candidates["z_pres"][..., 0], dim=-1, stable=True).indices
    order = order[..., :num_slots].unsqueeze(-1)  # (..., N, 1)
    picked = {
        name: torch.gather(
            value.expand(*lead, *value.shape[-2:]),
            -2,
            order.expand(*order.shape[:-1], value.shape[-1]),
        )
        for name, value in candidates.items()
    }
    return ObjectState(next_id=next_id.expand(*lead, 1, 1), **picked)


class SlotStack:
    """Per-slot values gathered one object slot at a time (the programs loop over slots),
    then stacked along the slot dimension, -2: (..., N, ·)."""

    def __init__(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {}

    def append(self, **values: torch.Tensor) -> None:
        """One slot's values, by name."""
        for name, value in values.items():
            self._values.setdefault(name, []).append(value)

    def stacked(self) -> dict[str, torch.Tensor]:
        """Every name's values stacked over the slots, in the order they were first given."""
        return {name: torch.stack(values, dim=-2) for name, values in self._values.items()}
