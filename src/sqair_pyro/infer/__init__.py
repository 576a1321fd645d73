"""Inference: the VIMCO importance-weighted ELBO and a many-particle log p(x) estimator."""

from sqair_pyro.infer.log_px import estimate_log_px
from sqair_pyro.infer.vimco import VIMCO_ELBO

__all__ = ["VIMCO_ELBO", "estimate_log_px"]
