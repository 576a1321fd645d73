"""The generative model of SQAIR (paper Sec. 3, Eq. 3, App. B).

At every frame, objects present in the previous frame are first *propagated* (each one
survives or disappears, and moves and changes appearance), then new objects are
*discovered* in the free slots, and the frame is rendered from all present objects::

    for t = 1..T:
        for each object i present at t-1:                            propagation, Eq. 9-10
            h^i_{t-1}     = GRU([z_what^i_{t-1}, z_where^i_{t-1}], h^i_{t-2})
            z_pres^i_t    ~ Bernoulli(f(h^i_{t-1}))
            z_where^i_t   ~ N(z_where^i_{t-1} + mu_where(h^i_{t-1}), sigma_where(h^i_{t-1}))
            z_what^i_t    ~ N(z_what^i_{t-1} + mu_what(h^i_{t-1}), sigma_what(h^i_{t-1}))
        D_t ~ Categorical(0..N - P_t)                                discovery, Eq. 7-8
        for each new object j < D_t:
            z_where^j_t ~ N(mu_where, sigma_where),  z_what^j_t ~ N(0, I)
        x_t ~ N(sum over present objects of ST^{-1}(f^dec(z_what), z_where), sigma_x^2 I)

Latent sample sites, identical in the guide: ``z_{pres,where,what}_prop_{t}_{i}`` for the
object in slot ``i`` of frame ``t - 1``, ``z_{pres,where,what}_disc_{t}_{j}`` for new
objects; the observed frame ``t`` (B, H, W) is the site ``x_{t}``. Slots are compacted after
each frame (:func:`sqair_pyro.models.state.compact`) and every object carries an identity.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.models.air import discover
from sqair_pyro.models.likelihood import AdditiveSTLikelihood
from sqair_pyro.models.priors import DiscoveryPrior, PropagationPrior, WhatWherePrior
from sqair_pyro.models.state import ObjectState, SlotStack, compact


def propagate(
    prior: PropagationPrior, state: ObjectState, t: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Propagation prior ``p^P(z_t | z_{t-1})`` (Eq. 9-10) for every slot of frame ``t - 1``.

    :returns: the latents (..., N, ·) of the propagated objects and the updated GRU states.
    """
    hidden = prior.update(state.z_what, state.z_where, state.hidden, state.z_pres)  # (..., N, H)
    survive, where_loc, where_scale, what_loc, what_scale = prior(hidden, state)
    latents = SlotStack()
    for i in range(state.num_slots):
        # Only objects present at t-1 are propagated; an absent one never comes back (the
        # delta of Eq. 10), so every site of an absent slot is masked out. A vanishing object
        # still draws z_where and z_what (unused), as the guide does: one proper joint.
        was_present = state.z_pres[..., i, :]
        alive = was_present[..., 0].bool()
        z_pres = pyro.sample(
            f"z_pres_prop_{t}_{i}",
            dist.Bernoulli(survive[..., i, :] * was_present).to_event(1).mask(alive),
        )
        z_where = pyro.sample(
            f"z_where_prop_{t}_{i}",
            dist.Normal(where_loc[..., i, :], where_scale[..., i, :]).to_event(1).mask(alive),
        )
        z_what = pyro.sample(
            f"z_what_prop_{t}_{i}",
            dist.Normal(what_loc[..., i, :], what_scale[..., i, :]).to_event(1).mask(alive),
        )
        latents.append(z_pres=z_pres, z_where=z_where, z_what=z_what)
    return latents.stacked(), hidden


class SQAIRModel(nn.Module):
    """``p_theta(x_{1:T}, z_{1:T})`` of SQAIR; priors and likelihood are components.

    :param discovery_prior: ``p^D(D_t | P_t)``, e.g. categorical or geometric (Eq. 8).
    :param what_where_prior: ``p^D(z_what)``, ``p^D(z_where)`` of new objects (Eq. 7).
    :param propagation_prior: ``p^P(z_t | z_{t-1})`` (Eq. 9-10).
    :param likelihood: the additive spatial-transformer likelihood (Alg. 1).
    """

    #: A temporal prior: objects keep identities across frames, and futures can be imagined.
    temporal = True

    def __init__(
        self,
        max_objects: int,
        discovery_prior: DiscoveryPrior,
        what_where_prior: WhatWherePrior,
        propagation_prior: PropagationPrior,
        likelihood: AdditiveSTLikelihood,
    ) -> None:
        super().__init__()
        self.max_objects = max_objects
        self.discovery_prior = discovery_prior
        self.what_where_prior = what_where_prior
        self.propagation_prior = propagation_prior
        self.likelihood = likelihood

    def forward(
        self,
        images: torch.Tensor | None,
        num_frames: int | None = None,
        batch_size: int | None = None,
        discover_after_first_frame: bool = True,
    ) -> dict[str, torch.Tensor]:
        """The generative story, with frame ``t`` of ``images`` (B, T, H, W) observed at ``x_{t}``.

        With ``images=None`` it samples ``batch_size`` sequences of ``num_frames`` frames from
        the prior (returned as ``canvas``, the noise-free frames).
        ``discover_after_first_frame=False`` is a training phase (the guide takes the same
        argument): objects are discovered in the first frame only, so every later frame must
        be explained by propagation, after a warm start from AIR whose discovery would
        otherwise rediscover each object in each frame (see train.py).
        """
        pyro.module("sqair_model", self)
        if images is not None:
            batch_size, num_frames = images.shape[:2]
        if batch_size is None or num_frames is None:
            raise ValueError("without images, give num_frames and batch_size")
        device = self.what_where_prior.what_loc.device
        with pyro.plate("data", batch_size, dim=-1):
            state = ObjectState.empty(
                (batch_size,),
                self.max_objects,
                self.propagation_prior.hidden_size,
                self.what_where_prior.what_loc.shape[-1],
                device,
            )
            canvases, history = [], []
            for t in range(num_frames):
                # Propagation (Eq. 9-10): objects present at t-1 survive or vanish, and move.
                if t > 0:
                    propagated, prior_hidden = propagate(self.propagation_prior, state, t)
                else:
                    propagated, prior_hidden = state.latents(), state.hidden
                # Discovery (Eq. 7-8): up to N - P_t new objects.
                num_propagated = propagated["z_pres"].sum((-2, -1))
                rho = self.discovery_prior.continue_probs(num_propagated, t)
                if t > 0 and not discover_after_first_frame:
                    rho = torch.zeros_like(rho)  # training phase: objects only from frame 1
                discovered = discover(
                    rho, self.what_where_prior, lambda kind, i, t=t: f"{kind}_disc_{t}_{i}"
                )
                # The N slots of frame t hold every present object, propagated and new
                # (compaction keeps them all); render them (Alg. 1), absent ones add nothing.
                state = compact(state, propagated, prior_hidden, discovered)
                canvas = self.likelihood.render(state.z_what, state.z_where, state.z_pres)
                # The frame given its objects (Eq. 1); frames are independent given z (Eq. 3).
                observed = None if images is None else images[:, t]
                pyro.sample(f"x_{t}", self.likelihood.observation(canvas), obs=observed)
                canvases.append(canvas)
                history.append(state)
        return dict(ObjectState.stack(history), canvas=torch.stack(canvases, dim=-3))
