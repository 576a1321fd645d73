"""Running trained programs: reconstructions and boxes from the posterior."""

from __future__ import annotations

from typing import Any

import pyro.poutine as poutine
import torch
from torch import nn

from sqair_pyro.infer import latent_means
from sqair_pyro.nn.spatial_transformer import where_to_transform, z_where_to_boxes


def replayed(
    model: nn.Module, guide: nn.Module, images: torch.Tensor | None, *model_args: Any, **kwargs: Any
) -> tuple[poutine.Trace, poutine.Trace]:
    """The guide's trace on ``images`` and the model's trace replayed on its sample: the
    model runs on ``model_args`` when given (e.g. ``None`` to go on from the prior), else on
    ``images``; ``kwargs`` go to the model."""
    guide_trace = poutine.trace(guide).get_trace(images)
    args = model_args if model_args else (images,)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return guide_trace, model_trace


@torch.no_grad()
def reconstruct(
    model: nn.Module, guide: nn.Module, images: torch.Tensor, means: bool = False
) -> dict[str, torch.Tensor]:
    """One posterior sample: the guide's latents and the model's noise-free ``canvas`` given them.

    ``images`` (B, T, H, W) (or single images for AIR, (B, H, W)); the result holds
    ``z_pres``, ``z_where``, ``z_what`` (..., N, ·), ``canvas`` and ``ids``. With ``means``
    the continuous latents are the posterior's means (z_pres is still drawn).
    """
    with latent_means(means):
        return replayed(model, guide, images)[1].nodes["_RETURN"]["value"]


def boxes_and_ids(latents: dict[str, torch.Tensor], image_size: tuple[int, int]) -> tuple:
    """Pixel boxes (..., N, 4) of the inferred objects and their ids (..., N), -1 if absent.

    Without ``ids`` (AIR on single images, or a model of one's own) the slot index is the
    identity.
    """
    boxes = z_where_to_boxes(where_to_transform(latents["z_where"]), image_size)
    present = latents["z_pres"][..., 0].bool()
    if "ids" in latents:
        ids = latents["ids"]
    else:
        ids = torch.arange(present.shape[-1], device=present.device).expand(present.shape)
    return boxes, torch.where(present, ids, -1)


@torch.no_grad()
def imagine(
    model: nn.Module,
    guide: nn.Module,
    observed: torch.Tensor,
    num_future: int,
    num_samples: int = 1,
    means: bool = False,
) -> dict[str, torch.Tensor]:
    """Conditional generation (paper Fig. 6): see the first frames, imagine the rest.

    Posterior predictive sampling as Pyro handlers: the guide infers the objects of the
    ``observed`` frames (B, T_obs, H, W); the model is replayed on those latents and then
    runs its propagation and discovery priors forward for ``num_future`` more frames.

    With ``means`` every continuous latent takes its mean instead of a draw: the posterior's
    for the observed frames, then the prior's, step by step (z_pres is still drawn): the
    path of the prior's conditional means, without the random walk that its draws of z_what add.

    :returns: ``canvas`` (S, B, T_obs + num_future, H, W) — reconstructions of the observed
        frames followed by imagined ones — and the latents and ``ids`` of every frame, for
        ``S = num_samples`` independent futures.
    """
    batch, num_observed = observed.shape[:2]
    samples = []
    for _ in range(num_samples):
        # A model whose dynamics read past frames (a VRNN) is given the observed ones; one
        # whose dynamics read only its latents (SQAIR) runs from them alone.
        frames = observed if getattr(model, "reads_frames", False) else None
        with latent_means(means):
            _, trace = replayed(
                model,
                guide,
                observed,
                frames,
                num_frames=num_observed + num_future,
                batch_size=batch,
            )
        samples.append(trace.nodes["_RETURN"]["value"])
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
