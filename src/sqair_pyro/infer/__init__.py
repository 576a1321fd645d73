"""Inference: the VIMCO importance-weighted ELBO, a many-particle log p(x) estimator, a
handler that reads the means of continuous latents, and one that weights chosen latents' KL."""

from sqair_pyro.infer.latent_weights import LatentWeights, annealed_weights
from sqair_pyro.infer.log_px import estimate_log_px
from sqair_pyro.infer.means import LatentMeans, latent_means
from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = [
    "VIMCO_ELBO",
    "LatentMeans",
    "LatentWeights",
    "annealed_weights",
    "estimate_log_px",
    "latent_means",
]
