"""Inference: the VIMCO importance-weighted ELBO, a many-particle log p(x) estimator, and a
handler that reads posterior means."""

from sqair_pyro.infer.log_px import estimate_log_px
from sqair_pyro.infer.means import PosteriorMeans
from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = ["VIMCO_ELBO", "PosteriorMeans", "estimate_log_px"]
