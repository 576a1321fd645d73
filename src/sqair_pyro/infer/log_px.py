"""Many-particle importance-sampling estimate of log p(x), computed in memory-bounded chunks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = ["estimate_log_px"]


def estimate_log_px(
    model: Callable,
    guide: Callable,
    *args,
    num_particles: int = 1000,
    chunk_size: int = 100,
    max_plate_nesting: int = 1,
    **kwargs,
) -> torch.Tensor:
    r"""
    Estimates :math:`\log p(x_b)` for every element :math:`b` of the data plates with the
    importance-weighted bound of Burda et al. (2016) at a large number of particles :math:`K`,

    .. math::

        \hat{\mathcal{L}}_b = \log \frac{1}{K} \sum_{k=1}^K
        \frac{p(x_b, z_{kb})}{q(z_{kb} \mid x_b)}, \qquad z_{kb} \sim q(\cdot \mid x_b),

    which is a stochastic lower bound that rises to :math:`\log p(x_b)` as :math:`K \to \infty`.
    The particles are drawn ``chunk_size`` at a time (under ``torch.no_grad``) and combined with
    a running log-sum-exp, so memory is bounded by ``chunk_size`` whatever ``num_particles`` is.
    The chunked estimate is exactly ``logsumexp`` of the concatenated per-chunk log weights
    minus :math:`\log K`; the log weights are those of :meth:`VIMCO_ELBO.log_weights` (see
    there for what counts as a data plate; a global latent collapses the result to a scalar).
    The mini-batch scale of a subsampled data plate is ignored: the result is per datum.

    :param model: a Pyro model.
    :param guide: a Pyro guide for it (every latent site of the model must be in it).
    :param args: passed to ``model`` and ``guide``.
    :param num_particles: total number of particles :math:`K`.
    :param chunk_size: number of particles drawn at once.
    :param max_plate_nesting: bound on the number of nested plates of the model and guide.
    :param kwargs: passed to ``model`` and ``guide``.
    :returns: a tensor of shape ``data_plate_shape`` holding :math:`\hat{\mathcal{L}}_b`.
    """
    if int(num_particles) != num_particles or num_particles < 1:
        raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    elbos: dict[int, VIMCO_ELBO] = {}
    total: torch.Tensor | None = None
    remaining = int(num_particles)
    with torch.no_grad():
        while remaining > 0:
            k = min(int(chunk_size), remaining)
            if k not in elbos:
                elbos[k] = VIMCO_ELBO(
                    num_particles=k, max_plate_nesting=max_plate_nesting, control_variate=False
                )
            log_w, _ = elbos[k].log_weights(model, guide, *args, **kwargs)
            chunk = torch.logsumexp(log_w, dim=0)
            total = chunk if total is None else torch.logaddexp(total, chunk)
            remaining -= k
    assert total is not None
    return total - math.log(num_particles)
