"""Weighting the KL terms of chosen latents in the training objective (a beta schedule).

The log weight of a particle is ``l = log p(x | z) + sum_s [log p(z_s) - log q(z_s)]`` over
the latent sites ``s``. :class:`LatentWeights` multiplies both terms of every site whose name
starts with one of its keys by that key's weight ``beta``, in the model's trace and the
guide's alike, so the objective sees ``beta_s [log p(z_s) - log q(z_s)]``: the single-sample
KL of those latents counts ``beta_s`` times (Higgins et al. 2017's beta-VAE, per latent). With
``beta < 1`` the guide may put more of each frame into those latents before the decoder can use
it; annealing ``beta`` to 1 (:func:`annealed_weights`) returns to the bound (Bowman et al. 2016).
The objectives read Pyro's per-site ``scale``, which is what this handler sets
(:class:`sqair_pyro.infer.VIMCO_ELBO` keeps the sites' own scales inside its log weights).

Only reparameterised latents may be weighted: a score-function estimator needs the
unscaled ``log q`` of a discrete site, so weighting one raises.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqair_pyro.infer.by_prefix import ByPrefix

__all__ = ["LatentWeights", "annealed_weights"]


class LatentWeights(ByPrefix):
    """Scale the log densities of latent sites by name prefix, e.g. ``{"z_what": 0.5}``.

    Observed sites are never scaled; a site matching several prefixes takes the longest.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        for prefix, weight in weights.items():
            if not weight > 0:
                raise ValueError(f"the weight of latents {prefix!r} must be positive, got {weight}")
        super().__init__(weights)

    def _pyro_sample(self, msg: dict) -> None:
        weight = self.value_of(msg)
        if weight is None:
            return
        if not msg["fn"].has_rsample:
            raise ValueError(
                f"latent {msg['name']!r} is not reparameterised: its log q drives a "
                "score-function estimator and cannot be weighted"
            )
        msg["scale"] = msg["scale"] * weight


def annealed_weights(weights: Mapping[str, float], step: int, steps: int) -> dict[str, float]:
    """The weights at ``step`` of a linear schedule that starts at ``weights`` and reaches 1
    after ``steps`` steps (``steps == 0``: constant weights)."""
    progress = min(1.0, step / steps) if steps > 0 else 0.0
    return {prefix: w + (1.0 - w) * progress for prefix, w in weights.items()}
