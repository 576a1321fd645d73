"""Where the particles of one sequence disagree: the spread of the log weights and its cause.

The IWAE bound ``log mean_k exp(l_k)`` exceeds the average ELBO ``mean_k l_k`` by more the
more the log weights spread across particles, and a one-sample posterior (the ``log p(x given
z)`` and KL columns of Table 1, the addition probe's drawn features) is as good as a typical
particle, not the best. This script draws ``K`` particles for each of the first
``--sequences`` held-out training sequences (the validation split of training) and prints:

- the gap between the IWAE bound and the average ELBO, and the variance of the log weights
  across particles (mean over sequences) and that of each site family's term (``kind:name``
  without the time and slot indices; the terms covary, so their variances need not add up);
- quantiles over sequences of the standard deviation of ``log p(x given z)`` across particles;
- frame-0 failures: particles whose first frame is reconstructed more than ``--margin`` nats
  worse than by the best particle of the same sequence, and how many of them inferred fewer
  objects than that best particle (the rest placed the objects elsewhere).

    .venv/bin/python benchmarks/particle_spread.py \
        --checkpoint src/sqair_pyro/weights/mlp-sqair.pt --data data/mm/train.npz \
        --sequences 64 --particles 20 --threads 1
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import torch
from gradient_terms import (
    checkpoint_parser,
    family,
    first_sequences,
    load_programs,
    parse_checked,
    run_script,
    write_report,
)

from sqair_pyro.cli import positive_int
from sqair_pyro.data import load_npz
from sqair_pyro.train import make_objective, split_validation


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=positive_int, default=64)
    parser.add_argument("--particles", type=positive_int, default=20)
    parser.add_argument("--margin", type=float, default=100.0)
    args = parse_checked(parser, argv)
    config, model, guide = load_programs(args)
    _, valid = split_validation(load_npz(args.data), config.validation_size)
    images = first_sequences(valid, args.sequences, args.frames)
    elbo = make_objective(config.replace(num_particles=args.particles))
    if not hasattr(elbo, "log_weight_terms"):
        parser.error(
            f"{args.checkpoint} was trained with objective {config.objective!r}: "
            "this script needs particles (vimco or reinforce)"
        )
    latents: dict[str, torch.Tensor] = {}

    def capture(*args_, **kwargs_):  # the guide, keeping the latents it returns
        latents.update(guide(*args_, **kwargs_) or {})

    with torch.no_grad():
        log_w, terms = elbo.log_weight_terms(model, capture, images)
    K = log_w.size(0)
    families: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros_like(log_w))
    for (name, kind), term in terms.items():
        families[family(name, kind)] += term
    likelihood = families["p:x"]
    report = {
        "checkpoint": str(args.checkpoint),
        "sequences": int(log_w.size(1)),
        "particles": K,
        "iwae_minus_elbo": float((torch.logsumexp(log_w, 0) - math.log(K) - log_w.mean(0)).mean()),
        "log_weight_variance": float(log_w.var(0).mean()),
        "variance_by_family": {
            name: float(t.var(0).mean())
            for name, t in sorted(families.items(), key=lambda kv: -float(kv[1].var(0).mean()))
        },
        "likelihood_sd_quantiles": dict(
            zip(
                ("q10", "q50", "q90", "max"),
                torch.quantile(likelihood.std(0), torch.tensor([0.1, 0.5, 0.9, 1.0])).tolist(),
                strict=True,
            )
        ),
    }
    first = terms.get(("x_0", "p"))
    if first is not None and "z_pres" in latents:
        best = first.argmax(0, keepdim=True)
        failed = first < first.gather(0, best) - args.margin
        objects = latents["z_pres"][:, :, 0].sum((-2, -1))  # (K, S) objects at frame 0
        fewer = objects < objects.gather(0, best)
        report["frame0_failures"] = float(failed.float().mean())
        report["frame0_failures_with_fewer_objects"] = float((failed & fewer).float().mean())
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
