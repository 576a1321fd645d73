"""Does SQAIR's discovery find the propagated objects again?

For a SQAIR checkpoint, the guide alone on the first ``--sequences`` sequences of ``--data``
(``--frames`` frames each), one posterior draw, three ways:

- ``first_frame_only``: discovery in the first frame only (the propagation warm-up's phase);
- ``every_frame``: discovery in every frame, as the checkpoint's guide is configured;
- ``stepping_over`` / ``summary_only``: the same with the discovery RNN stepping over the
  propagated objects first (``discovery_steps_over_propagated``), or not, whichever the
  checkpoint does not do.

Each reports the objects per frame and the objects new in each frame after the first
(identities not present in the frame before). A discovery that re-finds what propagation
carries adds new objects in the second frame until the slots are full, and propagation then
keeps the duplicates.

    .venv/bin/python benchmarks/rediscovery.py --checkpoint runs/pedG/best.pt \\
        --data data/pets/test.npz --frames 5 --sequences 128
"""

from __future__ import annotations

import sys

import torch
from gradient_terms import checkpoint_parser, load_programs, parse_checked, run_script, write_report

from sqair_pyro.cli import positive_int
from sqair_pyro.data import load_npz
from sqair_pyro.tracking import new_objects


def counts(guide: torch.nn.Module, images: torch.Tensor, later: bool) -> dict[str, list[float]]:
    """Objects per frame, and new objects per frame after the first, of one guide draw."""
    with torch.no_grad():
        latents = guide(images, discover_after_first_frame=later)
    return {
        "objects_per_frame": latents["z_pres"].sum((-2, -1)).mean(0).tolist(),
        "new_objects_per_later_frame": new_objects(latents["ids"]).float().mean(0).tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=positive_int, default=128)
    args = parse_checked(parser, argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2 (rediscovery happens after the first frame)")
    config, _, guide = load_programs(args)
    if not hasattr(guide, "step_over_propagated"):
        raise ValueError(f"{args.checkpoint}: not a SQAIR checkpoint ({config.model})")
    arrays = load_npz(args.data)
    images = torch.from_numpy(arrays["images"][: args.sequences, : args.frames]).float() / 255
    own = guide.step_over_propagated
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": len(images),
        "frames": images.shape[1],
        "checkpoint_steps_over_propagated": own,
    }
    torch.manual_seed(args.seed)
    report["first_frame_only"] = counts(guide, images, later=False)
    torch.manual_seed(args.seed)
    report["every_frame"] = counts(guide, images, later=True)
    guide.step_over_propagated = not own
    torch.manual_seed(args.seed)
    report["summary_only" if own else "stepping_over"] = counts(guide, images, later=True)
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
