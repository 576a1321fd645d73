"""How much of the reconstruction gap is the posterior's noise: log p(x given z) at its means.

Table 1's ``log p(x given z)`` is taken at one draw of the posterior. This script infers the
first ``--sequences`` held-out training sequences (the validation split of training; or the
first of any file with ``--split all``, e.g. the test split) four ways
and reports the average ``log p(x given z)`` per sequence of each:

- ``drawn``: every latent drawn from the guide, as Table 1 and training draw them;
- ``where_at_mean`` / ``what_at_mean``: z_where (or z_what) set to its posterior mean at every
  site, the other latents drawn (later sites see the mean, as the guide's own networks would);
- ``both_at_mean``: z_where and z_what at their means (z_pres still drawn).

The gain of ``both_at_mean`` over ``drawn`` is what the posterior's spread costs the
reconstructions; what remains below a perfect reconstruction is the decoder's and the means'
own error. Under a Normal likelihood of fixed ``sigma`` a frame of ``P`` pixels reconstructed
with summed squared error ``SSE`` scores ``P * log N(0; 0, sigma) - SSE / (2 sigma^2)``, so the
report also gives each variant's squared error per frame, and that of the paper's Table 1
``log p(x given z)`` for the same model (``--paper``, 6786.5 for MLP-SQAIR).

    .venv/bin/python benchmarks/posterior_means.py \
        --checkpoint src/sqair_pyro/weights/mlp-sqair.pt --data data/mm/train.npz \
        --sequences 200 --seeds 3 --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys

import pyro
import torch
from gradient_terms import (
    checkpoint_parser,
    first_sequences,
    load_programs,
    load_programs_and_truth,
    parse_checked,
    run_script,
    write_report,
)
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn

from sqair_pyro.cli import positive_int
from sqair_pyro.data import load_npz
from sqair_pyro.train import split_validation

#: the latent families that may be set to their posterior means, by variant
VARIANTS: dict[str, tuple[str, ...]] = {
    "drawn": (),
    "where_at_mean": ("z_where",),
    "what_at_mean": ("z_what",),
    "both_at_mean": ("z_where", "z_what"),
}


class AtPosteriorMean(Messenger):
    """Sample sites whose names start with one of ``prefixes`` take their distribution's mean
    instead of a draw (the value is set before sampling, so later sites condition on it)."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def _pyro_sample(self, msg: dict) -> None:
        if self.prefixes and not msg["is_observed"] and msg["name"].startswith(self.prefixes):
            msg["value"] = msg["fn"].mean


def scored_latents(
    model: nn.Module, guide: nn.Module, images: torch.Tensor, prefixes: tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``log p(x_t given z)`` of every sequence and frame, ``(B, T)``, with the latents of
    ``prefixes`` at their posterior means, and the guide's latents that scored it (SQAIR's
    frames are sites ``x_t``; AIR's frames are one site ``x`` of ``B * T`` independent
    images)."""
    with torch.no_grad(), AtPosteriorMean(prefixes):
        guide_trace = poutine.trace(guide).get_trace(images)
    with torch.no_grad():
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(images)
    latents = guide_trace.nodes["_RETURN"]["value"]
    if "x" in model_trace.nodes:  # AIR: one site "x" over every frame, (B * T) of them
        site = model_trace.nodes["x"]
        return site["fn"].log_prob(site["value"]).view(images.shape[:2]), latents
    frames = [model_trace.nodes[f"x_{t}"] for t in range(images.size(1))]
    return torch.stack([site["fn"].log_prob(site["value"]) for site in frames], -1), latents


def reconstructed_sequences(
    args: argparse.Namespace, keys: tuple[str, ...], without: str, prefixes: tuple[str, ...]
) -> tuple:
    """``(config, model, guide, data, images, errors, latents)``: the programs of
    ``--checkpoint`` and ``--data`` with its ground truth ``keys`` (else one line naming what
    the script cannot do ``without`` them), its first ``--sequences`` sequences of
    ``--frames`` frames, and their squared error per frame ``(B, T)`` with the latents of
    ``prefixes`` at their posterior means (:func:`scored_latents`, which also gives them)."""
    config, model, guide, data = load_programs_and_truth(args, keys, without)
    images = first_sequences(data, args.sequences, args.frames)
    log_lik, latents = scored_latents(model, guide, images, prefixes)
    errors = squared_error(log_lik, images[0, 0].numel(), config.obs_sd)
    return config, model, guide, data, images, errors, latents


def log_likelihood_per_frame(
    model: nn.Module, guide: nn.Module, images: torch.Tensor, prefixes: tuple[str, ...]
) -> torch.Tensor:
    """``log p(x_t given z)``, ``(B, T)``, of one guide draw (:func:`scored_latents`)."""
    return scored_latents(model, guide, images, prefixes)[0]


def perfect_frame(pixels: int, sigma: float) -> float:
    """``log p(x_t given z)`` of a frame of ``pixels`` reconstructed exactly."""
    return pixels * (-math.log(sigma) - 0.5 * math.log(2 * math.pi))


def squared_error(log_lik: torch.Tensor | float, pixels: int, sigma: float) -> torch.Tensor | float:
    """The summed squared error of a frame that scores ``log_lik`` under the Normal
    likelihood of fixed ``sigma``: ``2 sigma^2 (perfect - log_lik)``."""
    return 2 * sigma**2 * (perfect_frame(pixels, sigma) - log_lik)


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=positive_int, default=200)
    parser.add_argument(
        "--seeds", type=positive_int, default=3, help="draws of each variant, averaged"
    )
    parser.add_argument("--paper", type=float, default=6786.5, help="the paper's log p(x|z)")
    parser.add_argument(
        "--split",
        choices=("validation", "all"),
        default="validation",
        help="the validation split of a training file, or the file's own first sequences",
    )
    args = parse_checked(parser, argv)
    config, model, guide = load_programs(args)
    data = load_npz(args.data)
    if args.split == "validation":
        _, data = split_validation(data, config.validation_size)
    images = first_sequences(data, args.sequences, args.frames)
    count = len(images)
    pixels, sigma = images[0, 0].numel(), config.obs_sd

    def frame_error(log_lik: float) -> float:
        return float(squared_error(log_lik, pixels, sigma))

    report: dict = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "split": args.split,
        "sequences": count,
        "seeds": args.seeds,
    }
    for variant, prefixes in VARIANTS.items():
        per_frame = []
        for seed in range(args.seeds):
            pyro.set_rng_seed(args.seed + seed)
            per_frame.append(log_likelihood_per_frame(model, guide, images, prefixes))
        frames = torch.stack(per_frame).mean(0)  # (B, T), averaged over the draws
        report[variant] = {
            "log_px_given_z": float(frames.sum(1).mean()),
            "per_draw": [float(f.sum(1).mean()) for f in per_frame],
            "squared_error_per_frame": frame_error(float(frames.mean())),
            "squared_error_by_frame": [frame_error(float(v)) for v in frames.mean(0)],
        }
    report["paper_squared_error_per_frame"] = frame_error(args.paper / args.frames)
    report["perfect_log_px_given_z"] = perfect_frame(pixels, sigma) * args.frames
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
