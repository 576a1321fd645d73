"""Inference: the VIMCO importance-weighted ELBO, a many-particle log p(x) estimator, a
handler that reads the means of continuous latents, one that weights chosen latents' KL and
one that explores presence decisions in training."""

from sqair_pyro.infer.exploration import PresenceExploration
from sqair_pyro.infer.latent_weights import LatentWeights, annealed_weights
from sqair_pyro.infer.log_px import estimate_log_px
from sqair_pyro.infer.means import LatentMeans, latent_means
from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = [
    "VIMCO_ELBO",
    "LatentMeans",
    "LatentWeights",
    "PresenceExploration",
    "annealed_weights",
    "estimate_log_px",
    "latent_means",
]
