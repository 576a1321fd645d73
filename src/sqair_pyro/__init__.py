"""sqair-pyro: Sequential Attend, Infer, Repeat (Kosiorek et al., 2018) in Pyro."""

__version__ = "0.1.0"
