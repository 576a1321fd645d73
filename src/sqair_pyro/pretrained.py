"""Checkpoints shipped with the package, in ``src/sqair_pyro/weights/`` (package data; the
program packages ``models/`` and ``guides/`` hold only the probabilistic programs).

Each ``NAME.pt`` holds a config and the weights only (no optimiser state); ``NAME.json``
beside it holds the metrics measured on it and the command that measured them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from sqair_pyro.checkpoint import export_weights, load_checkpoint
from sqair_pyro.config import Config


def _pretrained_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


#: The shipped MNIST digit classifier (:mod:`sqair_pyro.digits`), which is not a model.
DIGIT_CLASSIFIER = "digit-classifier"


def available() -> list[str]:
    """Names of the shipped model checkpoints."""
    return sorted(p.stem for p in _pretrained_dir().glob("*.pt") if p.stem != DIGIT_CLASSIFIER)


def digit_classifier_path() -> Path:
    """Where the shipped digit classifier lives."""
    return _pretrained_dir() / f"{DIGIT_CLASSIFIER}.pt"


def pretrained_path(name: str) -> Path:
    path = _pretrained_dir() / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no pretrained checkpoint named {name!r}; available: {available() or 'none'}"
        )
    return path


def load_pretrained(name: str, map_location: str = "cpu") -> tuple[Config, nn.Module, nn.Module]:
    """``(config, model, guide)`` of a shipped checkpoint, e.g. ``load_pretrained("mlp-sqair")``."""
    config, model, guide, _ = load_checkpoint(pretrained_path(name), map_location)
    return config, model, guide


def pretrained_metrics(name: str) -> dict[str, Any]:
    """The metrics measured on a shipped checkpoint (its ``NAME.json``)."""
    return json.loads(pretrained_path(name).with_suffix(".json").read_text())


def export(
    checkpoint: str | os.PathLike, out: str | os.PathLike, metrics: dict[str, Any] | None = None
) -> Path:
    """Write a training checkpoint's config and weights only (no optimiser state) to ``out``
    (:func:`sqair_pyro.checkpoint.export_weights`), and ``metrics`` beside it as JSON."""
    out = export_weights(checkpoint, out)
    if metrics is not None:
        Path(out).with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out
