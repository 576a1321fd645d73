"""The additive spatial-transformer likelihood ``p(x_t | z_t)`` (paper Alg. 1, Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sqair_pyro.distributions import IsotropicNormal
from sqair_pyro.nn.rows import Rows
from sqair_pyro.nn.spatial_transformer import centred, place, where_to_transform


def drawing_transform(glimpses: torch.Tensor, z_where: torch.Tensor, centre: bool) -> torch.Tensor:
    """The transform that draws decoded ``glimpses`` (..., h, w) through the windows of
    ``z_where`` (..., 4, unconstrained): the window's own (the paper's ``ST^{-1}``), or with
    ``centre`` shifted so that each glimpse's centre of mass lands on its window's centre
    (:func:`~sqair_pyro.nn.spatial_transformer.centred`).

    Centring is a departure from the paper. Its decoder can draw a digit anywhere in the
    window, so z_what also says where the digit sits in it; the propagated windows wobble
    0.7 px a frame about their digits, z_what changes each frame to follow (a frame drawn with
    the previous frame's z_what errs 20.3 squared units instead of 6.9), and 130 of the 220
    nats of KL a sequence are those changes (docs/results.md, "Where the appearance error
    sits"). Centred, a change of z_what that only moves the drawing moves nothing: where the
    digit is belongs to z_where (to bilinear precision, and while the glimpse's mass is not
    cut by the canvas's edge), and the appearance can stay as it was. Measured from the shipped
    MLP-SQAIR's weights (run C3, 1,750 steps with ``discovery_aligns_window``; docs/results.md,
    "Centred glimpses"): the propagated z_what's KL 21 nats lower, imagined digits keep their
    class 0.45 of the time seven frames ahead instead of 0.36, but the validation bound still
    98 nats under the uncentred model's plateau; so it is off by default.
    """
    transform = where_to_transform(z_where)
    return centred(transform, glimpses) if centre else transform


def draw(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    z_what: torch.Tensor,
    z_where: torch.Tensor,
    z_pres: torch.Tensor,
    size: tuple[int, int],
    centre: bool = False,
) -> torch.Tensor:
    """Alg. 1's canvas ``sum_i z_pres^i ST^{-1}(f^dec(z_what^i), z_where^i)`` of the object
    slots (..., N, ·) of one frame, (..., H, W) of ``size``; absent objects add nothing;
    ``centre``: each glimpse drawn with its centre of mass at its window's centre
    (:func:`drawing_transform`).

    :param z_what: (..., N, D); :param z_where: (..., N, 4) unconstrained;
    :param z_pres: (..., N, 1) in {0, 1}.
    """
    rows = Rows(z_pres[..., 0] != 0)  # absent objects add nothing: skip them
    glimpses = decoder(rows.gather(z_what))  # (objects, h, w)
    placed = place(glimpses, drawing_transform(glimpses, rows.gather(z_where), centre), size)
    placed = placed * rows.gather(z_pres).unsqueeze(-1)
    return rows.scatter_sum(placed)  # the sum over slots


class AdditiveSTLikelihood(nn.Module):
    """Decode each present object's glimpse, place it on the canvas, add them up.

    ``y_t = sum_i z_pres^i ST^{-1}(f^dec(z_what^i), z_where^i)`` and
    ``x_t ~ Normal(y_t, sigma^2 I)`` with a fixed ``sigma`` (0.3 in the paper).
    ``centre_glimpses``: each glimpse drawn with its centre of mass at its window's centre
    (:func:`drawing_transform`; a departure from the paper).
    """

    def __init__(
        self,
        decoder: nn.Module,
        image_size: tuple[int, int],
        obs_sd: float,
        centre_glimpses: bool = False,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.image_size = image_size
        self.obs_sd = obs_sd
        self.centre_glimpses = centre_glimpses

    def render(
        self, z_what: torch.Tensor, z_where: torch.Tensor, z_pres: torch.Tensor
    ) -> torch.Tensor:
        """Alg. 1: the canvas ``y_t`` from all object slots of one frame at once (:func:`draw`).

        :param z_what: (..., N, D); :param z_where: (..., N, 4) unconstrained;
        :param z_pres: (..., N, 1) in {0, 1}. Returns (..., H, W).
        """
        return draw(self.decoder, z_what, z_where, z_pres, self.image_size, self.centre_glimpses)

    def observation(self, canvas: torch.Tensor) -> IsotropicNormal:
        """Eq. 1's pixel noise: ``x_t ~ Normal(y_t, sigma^2 I)`` over the (H, W) event dims."""
        return IsotropicNormal(canvas, self.obs_sd, event_dim=2)
