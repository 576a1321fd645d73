"""Throughput of data-parallel training: one process with N threads against N processes of
one thread each under ``torchrun`` (gloo on a CPU), the same total batch.

Usage (see benchmarks/README.md)::

    python benchmarks/data_parallel.py --data data/mm --processes 2 --json out.json

Each layout is a real ``sqair-pyro train`` run (``python -m sqair_pyro train``) of ``--steps``
steps from the shipped weights, logging every step; its seconds per step are the training
time (the runs' ``time_s``, which leaves out start-up and validation) between step ``--skip``
and the last step, divided by the steps between them. The layouts run one after the other,
``--repeats`` times alternately, so that a machine whose speed drifts favours neither.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from gradient_terms import run_script

from sqair_pyro.cli import OneLineParser, positive_int
from sqair_pyro.show import read_metrics

#: Settings every run shares: the shipped MLP-SQAIR on whole sequences, no validation and no
#: checkpoint before the end (they would be timed as training otherwise).
COMMON = [
    "--set", "log_every=1",
    "--set", "validate_every=1000000",
    "--set", "checkpoint_every=1000000",
    "--set", "propagation_warmup_steps=0",
]  # fmt: skip


def train_command(args: argparse.Namespace, out: Path, processes: int) -> list[str]:
    """The command of one layout: ``processes`` x 1 thread, or 1 x ``--processes`` threads."""
    per_process = args.batch // processes
    train = [
        "-m", "sqair_pyro", "train", "--preset", args.preset, "--data", str(args.data),
        "--out", str(out), "--steps", str(args.steps), "--batch-size", str(per_process),
        "--threads", str(args.processes // processes), "--set", f"init_from={args.weights}",
        "--set", f"curriculum_start={args.frames}", "--set", f"num_frames={args.frames}",
        *COMMON,
    ]  # fmt: skip
    if processes == 1:
        return [sys.executable, *train]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [sys.executable, *launcher, *train]


def seconds_per_step(metrics: Path, skip: int) -> float:
    """Training seconds per step after step ``skip``, from a run's ``metrics.csv``."""
    train, _ = read_metrics(metrics)  # rows sorted by step
    steps, wall = train["step"], train["wall_s"]
    at_skip = np.flatnonzero(steps == skip)
    if not len(at_skip) or steps[-1] <= skip:
        raise SystemExit(f"{metrics}: no steps logged after step {skip}")
    return float((wall[-1] - wall[at_skip[0]]) / (steps[-1] - skip))


def run_layout(args: argparse.Namespace, tmp: Path, processes: int, repeat: int) -> float:
    out = tmp / f"p{processes}-r{repeat}"
    command = train_command(args, out, processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.processes // processes))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds_per_step(out / "metrics.csv", args.skip)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="directory with train.npz")
    p.add_argument("--preset", default="mlp-sqair")
    p.add_argument("--weights", default="pretrained:mlp-sqair", help="the runs' init_from")
    p.add_argument(
        "--processes", type=positive_int, default=2, help="N: processes, and threads of one"
    )
    p.add_argument(
        "--batch", type=positive_int, default=32, help="sequences per step, all processes"
    )
    p.add_argument("--frames", type=positive_int, default=10, help="T")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--skip", type=positive_int, default=10, help="untimed first steps")
    p.add_argument(
        "--repeats", type=positive_int, default=1, help="alternating runs of each layout"
    )
    p.add_argument("--json", type=Path, help="write every number here")
    args = p.parse_args(argv)
    if args.processes < 2 or args.batch % args.processes:
        p.error("--processes must be at least 2 and divide --batch")
    if not 0 < args.skip < args.steps:
        p.error("need 0 < --skip < --steps")
    if not (args.data / "train.npz").is_file():
        p.error(f"{args.data}: no train.npz there")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    layouts = {f"1 process x {args.processes} threads": 1}
    layouts[f"{args.processes} processes x 1 thread (torchrun)"] = args.processes
    times: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory(prefix="sqair-dp-") as tmp_name:
        for repeat in range(args.repeats):
            for name, processes in layouts.items():
                times[name].append(run_layout(args, Path(tmp_name), processes, repeat))
                print(f"{name}, run {repeat + 1}: {times[name][-1]:.3f} s per step", flush=True)
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "layouts": {}}
    print(f"\n| layout | seconds per step of {args.batch} sequences | sequences per second |")
    print("|---|---|---|")
    for name, values in times.items():
        mean = sum(values) / len(values)
        report["layouts"][name] = {"seconds_per_step": values, "sequences_per_s": args.batch / mean}
        print(f"| {name} | {mean:.3f} | {args.batch / mean:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report, "settings": vars(args)}, indent=2, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(run_script(main))
