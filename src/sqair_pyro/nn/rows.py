"""Run per-object networks only on the rows that hold an object.

Batch, particles and (where the programs stack them) object slots are the leading dims of
every tensor. Most object slots are empty most of the time (a trained SQAIR holds about one
digit per frame in three slots), and an empty slot's network outputs are masked out of every
sample site, so computing them is wasted work. :class:`Rows` gathers the rows where a mask
holds, lets the networks run on those alone (every network and the spatial transformer
accept zero rows), and scatters the results back into full-size tensors with a fill value
elsewhere. Sample sites keep their full shape (and so their random numbers); only the
parameters of masked-out rows change, to the fill values.
"""

from __future__ import annotations

import math

import torch


class Rows:
    """The rows of the leading dims ``mask.shape`` where ``mask`` is true.

    :param mask: (...,) booleans, the shape of the leading dims.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        self.shape = mask.shape
        flat = mask.reshape(-1)
        self.size = flat.numel()
        self.index = flat.nonzero().squeeze(-1)
        self.count = self.index.numel()
        self.all = self.count == self.size

    def gather(self, value: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """The selected rows of ``value`` (..., *event) broadcast to the leading dims:
        (count, *event)."""
        lead, event = (
            value.shape[: value.dim() - event_dims],
            value.shape[value.dim() - event_dims :],
        )
        if self.all or lead == self.shape:
            flat = value.expand(*self.shape, *event).reshape(self.size, *event)
            return flat if self.all else flat.index_select(0, self.index)
        # ``value`` is broadcast over some leading dims (e.g. a frame shared by all particles):
        # pick its own rows rather than copying it to full size first.
        own = math.prod(lead)
        source = torch.arange(own, device=value.device).view(lead).expand(self.shape)
        source = source.reshape(-1).index_select(0, self.index)
        return value.reshape(own, *event).index_select(0, source)

    def scatter(self, rows: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Selected rows (count, *event) back to full size (..., *event), ``fill`` elsewhere."""
        event = rows.shape[1:]
        if self.all:
            return rows.reshape(*self.shape, *event)
        full = rows.new_full((self.size, *event), fill)
        return full.index_copy(0, self.index, rows).view(*self.shape, *event)

    def scatter_sum(self, rows: torch.Tensor) -> torch.Tensor:
        """Selected rows (count, *event) summed over the last leading dim (e.g. the object
        slots), zero where none is selected: (leading dims but the last, *event). Equal to
        ``scatter(rows).sum(len(leading dims) - 1)`` without the full-size intermediate."""
        event = rows.shape[1:]
        *outer, last = self.shape
        if last == 0:
            return rows.new_zeros((*outer, *event))
        total = rows.new_zeros((self.size // last, *event))
        return total.index_add(0, self.index // last, rows).view(*outer, *event)
