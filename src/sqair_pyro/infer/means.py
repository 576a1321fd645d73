"""A Pyro handler that replaces draws of continuous latents by their means."""

from __future__ import annotations

import contextlib
from typing import Any

from pyro.poutine.messenger import Messenger


class LatentMeans(Messenger):
    """Inside ``with LatentMeans():`` every unobserved reparameterisable site (z_what,
    z_where) takes its distribution's mean instead of a draw; discrete sites (z_pres) are
    still sampled. Run a guide under it for the posterior means of its continuous latents,
    e.g. as the features of a representation probe; run a model under it (outside a replay,
    which fixes the sites it holds) for the prior's most likely continuation, e.g. imagined
    futures without the prior's sampling noise.
    """

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["fn"].has_rsample and not msg["is_observed"] and msg["value"] is None:
            msg["value"] = msg["fn"].mean


def latent_means(enabled: bool) -> contextlib.AbstractContextManager:
    """:class:`LatentMeans` when ``enabled``, else a context that changes nothing (draws)."""
    return LatentMeans() if enabled else contextlib.nullcontext()
