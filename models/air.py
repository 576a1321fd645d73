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

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.models.likelihood import AdditiveSTLikelihood
from sqair_pyro.models.priors import DiscoveryPrior, WhatWherePrior

#: The latent variables of an object, in the order the tensors are stacked.
LATENTS = ("z_pres", "z_where", "z_what")


def discover(
    rho: torch.Tensor, prior: WhatWherePrior, site: Callable[[str, int], str]
) -> dict[str, torch.Tensor]:
    """New objects from the discovery prior ``p^D`` (paper Eq. 7-8), one slot at a time.

    :param rho: (..., N) continue probabilities of :meth:`DiscoveryPrior.continue_probs`.
    :param site: the sample-site name of a latent ``kind`` in slot ``i``.
    :returns: ``z_pres`` (..., N, 1), ``z_where`` (..., N, 4), ``z_what`` (..., N, D).
    """
    z_pres = torch.ones_like(rho[..., :1])
    latents: dict[str, list[torch.Tensor]] = {name: [] for name in LATENTS}
    for i in range(rho.shape[-1]):
        # Slot i holds a new object only if slot i - 1 did (stick breaking of Eq. 8).
        z_pres = pyro.sample(
            site("z_pres", i), dist.Bernoulli(rho[..., i : i + 1] * z_pres).to_event(1)
        )
        present = z_pres[..., 0].bool()
        z_where = pyro.sample(
            site("z_where", i),
            dist.Normal(prior.where_loc, prior.where_scale).to_event(1).mask(present),
        )
        z_what = pyro.sample(
            site("z_what", i),
            dist.Normal(prior.what_loc, prior.what_scale).to_event(1).mask(present),
        )
        for name, value in zip(LATENTS, (z_pres, z_where, z_what), strict=True):
            latents[name].append(value)
    return {name: torch.stack(values, dim=-2) for name, values in latents.items()}


class AIRModel(nn.Module):
    """``p_theta(x, z)`` of AIR; the priors and the likelihood are components."""

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

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the generative story with ``images`` (B, H, W) observed at site ``x``."""
        pyro.module("air_model", self)
        batch = images.shape[0]
        with pyro.plate("data", batch, dim=-1):
            rho = self.discovery_prior.continue_probs(images.new_zeros(batch), t=0)  # (B, N)
            latents = discover(rho, self.what_where_prior, lambda kind, i: f"{kind}_{i}")
            canvas = self.likelihood.render(
                latents["z_what"], latents["z_where"], latents["z_pres"]
            )
            pyro.sample("x", self.likelihood.observation(canvas), obs=images)
        return dict(latents, canvas=canvas)
