"""The additive spatial-transformer likelihood ``p(x_t | z_t)`` (paper Alg. 1, Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sqair_pyro.distributions import IsotropicNormal
from sqair_pyro.nn.rows import Rows
from sqair_pyro.nn.spatial_transformer import place, where_to_transform


def draw(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    z_what: torch.Tensor,
    z_where: torch.Tensor,
    z_pres: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Alg. 1's canvas ``sum_i z_pres^i ST^{-1}(f^dec(z_what^i), z_where^i)`` of the object
    slots (..., N, ·) of one frame, (..., H, W) of ``size``; absent objects add nothing.

    :param z_what: (..., N, D); :param z_where: (..., N, 4) unconstrained;
    :param z_pres: (..., N, 1) in {0, 1}.
    """
    rows = Rows(z_pres[..., 0] != 0)  # absent objects add nothing: skip them
    glimpses = decoder(rows.gather(z_what))  # (objects, h, w)
    placed = place(glimpses, where_to_transform(rows.gather(z_where)), size)
    placed = placed * rows.gather(z_pres).unsqueeze(-1)
    return rows.scatter_sum(placed)  # the sum over slots


class AdditiveSTLikelihood(nn.Module):
    """Decode each present object's glimpse, place it on the canvas, add them up.

    ``y_t = sum_i z_pres^i ST^{-1}(f^dec(z_what^i), z_where^i)`` and
    ``x_t ~ Normal(y_t, sigma^2 I)`` with a fixed ``sigma`` (0.3 in the paper).
    """

    def __init__(self, decoder: nn.Module, image_size: tuple[int, int], obs_sd: float) -> None:
        super().__init__()
        self.decoder = decoder
        self.image_size = image_size
        self.obs_sd = obs_sd

    def render(
        self, z_what: torch.Tensor, z_where: torch.Tensor, z_pres: torch.Tensor
    ) -> torch.Tensor:
        """Alg. 1: the canvas ``y_t`` from all object slots of one frame at once (:func:`draw`).

        :param z_what: (..., N, D); :param z_where: (..., N, 4) unconstrained;
        :param z_pres: (..., N, 1) in {0, 1}. Returns (..., H, W).
        """
        return draw(self.decoder, z_what, z_where, z_pres, self.image_size)

    def observation(self, canvas: torch.Tensor) -> IsotropicNormal:
        """Eq. 1's pixel noise: ``x_t ~ Normal(y_t, sigma^2 I)`` over the (H, W) event dims."""
        return IsotropicNormal(canvas, self.obs_sd, event_dim=2)
