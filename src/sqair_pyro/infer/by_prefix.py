"""A handler that acts on latent sample sites chosen by name prefix (the base of
:class:`~sqair_pyro.infer.LatentWeights` and :class:`~sqair_pyro.infer.PresenceExploration`)."""

from __future__ import annotations

from collections.abc import Mapping

from pyro.poutine.messenger import Messenger

__all__ = ["ByPrefix"]


class ByPrefix(Messenger):
    """Holds one value per site-name prefix; :meth:`value_of` gives a latent site's value,
    that of the longest prefix its name starts with (None: no prefix, or an observed site)."""

    def __init__(self, values: Mapping[str, float]) -> None:
        super().__init__()
        self.prefixes = sorted(values, key=len, reverse=True)  # the longest match first
        self.values = dict(values)

    def value_of(self, msg: dict) -> float | None:
        if msg["is_observed"]:
            return None
        prefix = next((p for p in self.prefixes if msg["name"].startswith(p)), None)
        return None if prefix is None else self.values[prefix]
