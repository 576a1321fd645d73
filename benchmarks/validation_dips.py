"""How far training runs' validation bounds fall below their best so far.

For each training log (a run's ``metrics.csv``), the validations at or after ``--after``
(the step where the trainer's best restarts: the end of a propagation warm-up), and the
largest fall of a validation below the best before it, with its step. This is the number
``rollback_nats`` is set against: a threshold above every healthy run's largest fall and
below a collapse's.

    .venv/bin/python benchmarks/validation_dips.py docs/eval/runs/*.csv --after 2000
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from gradient_terms import run_script, write_report

from sqair_pyro.cli import OneLineParser, non_negative_int
from sqair_pyro.show import read_metrics


def largest_fall(validations: list[tuple[int, float]]) -> tuple[float, int | None]:
    """The largest ``best_so_far - value`` over ``(step, value)`` in step order, and its step
    (0 and None when no validation falls below an earlier one)."""
    best, fall, at = -math.inf, 0.0, None
    for step, value in validations:
        if best - value > fall:
            fall, at = best - value, step
        best = max(best, value)
    return fall, at


def validations(path: Path, after: int) -> list[tuple[int, float]]:
    """``(step, val)`` of the rows of a ``metrics.csv`` that validated, at or after ``after``
    (read by :func:`sqair_pyro.show.read_metrics`: a step logged again after a resume keeps
    its last row)."""
    _, validation = read_metrics(path)
    steps, values = validation.get("step", ()), validation.get("val", ())
    return [
        (int(step), float(value))
        for step, value in zip(steps, values, strict=True)
        if step >= after
    ]


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="validation_dips.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", type=Path, nargs="+", help="metrics.csv files")
    parser.add_argument("--after", type=non_negative_int, default=2000)
    args = parser.parse_args(argv)
    for path in args.logs:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    runs = []
    for path in args.logs:
        found = validations(path, args.after)
        fall, at = largest_fall(found)
        runs.append({"log": str(path), "validations": len(found), "fall": fall, "step": at})
    runs.sort(key=lambda run: run["fall"], reverse=True)
    write_report({"after": args.after, "runs": runs}, None)


if __name__ == "__main__":
    sys.exit(run_script(main))
