"""The generative model of AIR (Eslami et al., 2016; SQAIR paper Sec. 2, Eq. 1).

One image, up to ``N`` objects::

    n ~ p(n)                                   number of objects (the discovery prior, t = 0)
    for i < n:
        z_where^i ~ N(mu_where, sigma_where)   location and scale of object i
        z_what^i  ~ N(0, I)                    appearance of object i
    x ~ N(sum_i ST^{-1}(f^dec(z_what^i), z_where^i), sigma_x^2 I)

``n`` is sampled one slot at a time as presence variables ``z_pres^i`` (see
:mod:`sqair_pyro.models.priors`), so the model's sites mirror the guide's, name by name:
``z_pres_i``, ``z_where_i``, ``z_what_i`` and the observed ``x``. SQAIR's discovery step
(:mod:`sqair_pyro.models.sqair`) is this same story, run at every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.models.likelihood import AdditiveSTLikelihood
from sqair_pyro.models.priors import DiscoveryPrior, WhatWherePrior
from sqair_pyro.models.state import SlotStack


def discover(
    rho: torch.Tensor, prior: WhatWherePrior, site: Callable[[str, int], str]
) -> dict[str, torch.Tensor]:
    """New objects from the discovery prior ``p^D`` (paper Eq. 7-8), one slot at a time.

    :param rho: (..., N) continue probabilities of :meth:`DiscoveryPrior.continue_probs`.
    :param site: the sample-site name of a latent ``kind`` in slot ``i``.
    :returns: ``z_pres`` (..., N, 1), ``z_where`` (..., N, 4), ``z_what`` (..., N, D).
    """
    z_pres = torch.ones_like(rho[..., :1])
    latents = SlotStack()
    for i in range(rho.shape[-1]):
        # Slot i holds a new object only if slot i - 1 did (stick breaking of Eq. 8).
        z_pres = pyro.sample(
            site("z_pres", i), dist.Bernoulli(rho[..., i : i + 1] * z_pres).to_event(1)
        )
        present = z_pres[..., 0].bool()
        z_where = pyro.sample(
            site("z_where", i),
            dist.Normal(prior.slot_where_loc(i, rho.shape[-1]), prior.where_scale)
            .to_event(1)
            .mask(present),
        )
        z_what = pyro.sample(
            site("z_what", i),
            dist.Normal(prior.what_loc, prior.what_scale).to_event(1).mask(present),
        )
        latents.append(z_pres=z_pres, z_where=z_where, z_what=z_what)
    return latents.stacked()


def frame_ids(z_pres: torch.Tensor) -> torch.Tensor:
    """Identities (..., T, N) for a model that tracks nothing (AIR): every present object of
    every frame gets a new one (``t * N + slot``), absent ones -1."""
    num_frames, n = z_pres.shape[-3:-1]
    fresh = torch.arange(num_frames * n, device=z_pres.device).reshape(num_frames, n)
    return torch.where(z_pres[..., 0] != 0, fresh, -1)


def as_sequences(latents: Mapping[str, torch.Tensor], batch: int, num_frames: int) -> dict:
    """Per-image results (..., B * T, ·, ·) of AIR run on every frame, back as sequences
    (..., B, T, ·, ·), with per-frame identities (:func:`frame_ids`)."""
    out = {key: value.unflatten(-3, (batch, num_frames)) for key, value in latents.items()}
    return dict(out, ids=frame_ids(out["z_pres"]))


class AIRModel(nn.Module):
    """``p_theta(x, z)`` of AIR; the priors and the likelihood are components.

    It reads what SQAIR reads, sequences (B, T, H, W), and explains each frame on its own:
    the B * T frames are the data plate (each frame its own datum, as the paper trains and
    evaluates AIR), and the latents come back as (..., B, T, N, ·) with per-frame identities.
    Single images (B, H, W) give (..., B, N, ·).
    """

    #: No temporal prior: no identities across frames, no imagined futures.
    temporal = False

    def __init__(
        self,
        max_objects: int,
        discovery_prior: DiscoveryPrior,
        what_where_prior: WhatWherePrior,
        likelihood: AdditiveSTLikelihood,
    ) -> None:
        super().__init__()
        self.max_objects = max_objects
        self.discovery_prior = discovery_prior
        self.what_where_prior = what_where_prior
        self.likelihood = likelihood

    def forward(
        self,
        images: torch.Tensor | None,
        num_frames: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the generative story with ``images`` (B, T, H, W) or (B, H, W) observed at
        site ``x``; with ``images=None``, sample ``batch_size`` sequences of ``num_frames``
        independent frames from the prior (the noise-free frames are ``canvas``)."""
        pyro.module("air_model", self)
        if images is None:
            if batch_size is None or num_frames is None:
                raise ValueError("without images, give num_frames and batch_size")
            latents = self._images(None, batch_size * num_frames)
            return as_sequences(latents, batch_size, num_frames)
        if images.dim() == 4:
            latents = self._images(images.flatten(0, 1), images.shape[0] * images.shape[1])
            return as_sequences(latents, *images.shape[:2])
        return self._images(images, images.shape[0])

    def _images(self, images: torch.Tensor | None, batch: int) -> dict[str, torch.Tensor]:
        """Eq. 1 for ``batch`` independent images, observed when ``images`` is given."""
        device = self.what_where_prior.what_loc.device
        with pyro.plate("data", batch, dim=-1):
            rho = self.discovery_prior.continue_probs(torch.zeros(batch, device=device), t=0)
            latents = discover(rho, self.what_where_prior, lambda kind, i: f"{kind}_{i}")
            canvas = self.likelihood.render(
                latents["z_what"], latents["z_where"], latents["z_pres"]
            )
            pyro.sample("x", self.likelihood.observation(canvas), obs=images)
        return dict(latents, canvas=canvas)
