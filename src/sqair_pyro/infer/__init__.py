"""Inference: the VIMCO importance-weighted ELBO, a many-particle log p(x) estimator, and a
handler that reads the means of continuous latents."""

from sqair_pyro.infer.log_px import estimate_log_px
from sqair_pyro.infer.means import LatentMeans, latent_means
from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = ["VIMCO_ELBO", "LatentMeans", "estimate_log_px", "latent_means"]
