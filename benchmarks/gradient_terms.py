"""What makes the gradient norm of a training step: each term's and each component's share.

The gradient of the IWAE bound is ``sum_k w_k grad l_k`` (``w`` the normalised importance
weights, held constant) plus, for discrete guide sites, the VIMCO score-function term
``sum_k (L - L_{-k}) grad log q_k``. ``l_k`` is a sum of per-site terms, so the gradient splits
into one part per site family (a site name without its time and slot indices, e.g.
``p:x`` for the likelihood, ``q:z_where_prop`` for the propagated objects' where posterior)
and the score term. For each part this prints the median and largest norm over batches, and
for the whole step the share of the squared norm in each component (``sqair_pyro.optim``).

    .venv/bin/python benchmarks/gradient_terms.py --checkpoint src/sqair_pyro/weights/mlp-sqair.pt \
        --data data/mm/train.npz --batches 8 --frames 10 --threads 1
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import torch

from sqair_pyro.checkpoint import load_checkpoint
from sqair_pyro.cli import OneLineParser, positive_int, seed_int
from sqair_pyro.data import load_npz
from sqair_pyro.errors import command_errors, one_line
from sqair_pyro.nn.precision import fast_numerics
from sqair_pyro.optim import component_of
from sqair_pyro.train import SequenceBatches, make_objective


def family(name: str, kind: str) -> str:
    """``kind:name`` without the name's numeric indices (time step, slot)."""
    prefix = "q" if kind == "q_discrete" else kind
    return prefix + ":" + re.sub(r"_\d+", "", name)


def norm(grads: tuple[torch.Tensor | None, ...]) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))


def checkpoint_parser(script: str, description: str) -> argparse.ArgumentParser:
    """The options these scripts share: the checkpoint, its data, frames, seed, threads and
    a JSON copy of what is printed; errors name ``script`` (a path: its file name)."""
    parser = OneLineParser(prog=Path(script).name, description=description)
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("src/sqair_pyro/weights/mlp-sqair.pt")
    )
    parser.add_argument("--data", type=Path, default=Path("data/mm/train.npz"))
    parser.add_argument("--frames", type=positive_int, default=10)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    return parser


def parse_checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s arguments, with a missing ``--checkpoint`` or ``--data`` file refused in
    one line before any work (argparse's exit status 2)."""
    args = parser.parse_args(argv)
    for name in ("checkpoint", "data"):
        path = getattr(args, name, None)
        if path is not None and not path.is_file():
            parser.error(f"--{name} {path}: no such file")
    return args


def run_script(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a benchmark's ``main``: what goes wrong in its work (a damaged checkpoint, a file
    that cannot be read, memory) is one line on stderr and exit status 1, as the
    ``sqair-pyro`` commands do."""
    script = Path(inspect.getfile(main)).name
    try:
        main(argv)
    except command_errors() as error:
        print(f"{script}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
    return 0


def load_programs(args: argparse.Namespace) -> tuple:
    """``(config, model, guide)`` of ``--checkpoint``, with the threads, Pyro's validation
    off (as in training) and the seed set."""
    torch.set_num_threads(args.threads)
    fast_numerics()
    pyro.set_rng_seed(args.seed)
    config, model, guide, _ = load_checkpoint(args.checkpoint)
    return config, model, guide


def load_programs_and_truth(args: argparse.Namespace, keys: tuple[str, ...], without: str) -> tuple:
    """``(config, model, guide, arrays)``: :func:`load_programs` and the arrays of ``--data``,
    which must hold the ground truth ``keys`` (else one line: the file has no such keys,
    ``without`` says what the script cannot do then)."""
    config, model, guide = load_programs(args)
    arrays = load_npz(args.data)
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ValueError(f"{args.data} has no {' or '.join(missing)}: {without}")
    return config, model, guide, arrays


def first_sequences(data: dict, sequences: int, frames: int) -> torch.Tensor:
    """The first ``sequences`` of ``data`` (all, if it holds fewer), their first ``frames``
    frames, as training batches them: ``(B, T, H, W)`` intensities in [0, 1]."""
    count = min(sequences, len(data["images"]))
    return SequenceBatches(data, frames, seed=0).get(list(range(count)), frames)[0]


def write_report(report: dict, path: Path | None) -> None:
    """Print a benchmark's report as JSON and, given a path, write it there too."""
    print(json.dumps(report, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=positive_int, default=8)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    args = parse_checked(parser, argv)
    config, model, guide = load_programs(args)
    elbo = make_objective(config)
    batches = SequenceBatches(load_npz(args.data), config.num_frames, seed=args.seed)
    named = [(f"model.{n}", p) for n, p in model.named_parameters()]
    named += [(f"guide.{n}", p) for n, p in guide.named_parameters()]
    params = [p for _, p in named]
    parts: dict[str, list[float]] = defaultdict(list)
    shares: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.batches):
        images, _ = batches.sample(args.batch_size, args.frames)
        log_w, terms = elbo.log_weight_terms(model, guide, images)
        weights = torch.softmax(log_w.detach(), 0)
        bound = torch.logsumexp(log_w.detach(), 0) - math.log(elbo.num_particles)
        signal = elbo._learning_signal(log_w.detach(), bound)
        pieces: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        log_q_discrete = torch.zeros(())
        for (name, kind), term in terms.items():
            pieces[family(name, kind)] = pieces[family(name, kind)] + (weights * term).sum()
            if kind == "q_discrete":
                log_q_discrete = log_q_discrete - term  # terms of q are signed negative
        pieces["score function (discrete sites)"] = (signal * log_q_discrete).sum()
        total = sum(pieces.values()) / args.batch_size
        for key, piece in pieces.items():
            if piece.requires_grad:
                grads = torch.autograd.grad(
                    piece / args.batch_size, params, retain_graph=True, allow_unused=True
                )
                parts[key].append(norm(grads))
        grads = torch.autograd.grad(total, params, allow_unused=True)
        parts["TOTAL"].append(norm(grads))
        per: dict[str, float] = defaultdict(float)
        for (name, _), grad in zip(named, grads, strict=True):
            if grad is not None:
                per[component_of(name)] += float((grad.double() ** 2).sum())
        squared = sum(per.values())
        for key, value in per.items():
            shares[key].append(value / squared)
    table = {
        "terms": {
            k: {"median": float(np.median(v)), "max": float(np.max(v))} for k, v in parts.items()
        },
        "component_share": {
            k: {"median": float(np.median(v)), "max": float(np.max(v))} for k, v in shares.items()
        },
        "batches": args.batches,
        "frames": args.frames,
        "checkpoint": str(args.checkpoint),
    }
    print(
        f"gradient norm per term (per sequence), {args.batches} batches of "
        f"{args.batch_size} at T={args.frames}"
    )
    for key, row in sorted(table["terms"].items(), key=lambda kv: -kv[1]["median"]):
        if row["max"] > 0:
            print(f"  {key:34s} median {row['median']:12.1f}   max {row['max']:12.1f}")
    print("share of the squared gradient norm per component (median, max)")
    for key, row in sorted(table["component_share"].items(), key=lambda kv: -kv[1]["median"])[:10]:
        print(f"  {key:44s} {row['median']:.4f}  {row['max']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_script(main))
