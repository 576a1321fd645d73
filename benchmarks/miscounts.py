"""Where a SQAIR checkpoint miscounts, and what its learned count prior expects.

For the first ``--sequences`` sequences of ``--data`` (one posterior draw of the guide), each
frame's number of present objects against the sequence's number of digits (the paper's
counting), split by that number of digits:

- the share of frames counted too high and too low, and the miscounted share at each frame;
- ``persisting``: of the sequences miscounted in the first frame, the share still miscounted
  in the last (a count set by the first frame's discovery and kept by propagation);
- for sequences of two or more digits, the miscounted share by the largest box IoU between two
  of the frame's digits (do overlapping digits merge?);
- for sequences of two digits, the share whose first frame is counted too high and too low,
  by the pair's orientation in that frame (where a SQAIR's count is decided):
  ``vertical`` where the box centres lie farther apart in y than in x, else ``horizontal``
  (a digit out of view: in neither). An AIR-style discovery that orders objects along one
  axis explains a pair aligned across that axis with a third object between the two
  (docs/results.md, "Split digits come from one orientation").

An AIR checkpoint is read as well, each frame on its own.

With a categorical discovery prior (Eq. 8) it also reports the prior's probabilities of
``0..N`` new objects in the first frame: a prior that expects more objects than the data holds
has learnt the guide's split digits.

    .venv/bin/python benchmarks/miscounts.py --checkpoint runs/sqairV3/last.pt \\
        --data data/mm/test.npz --sequences 3000
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from gradient_terms import (
    checkpoint_parser,
    load_programs_and_truth,
    parse_checked,
    run_script,
    write_report,
)

from sqair_pyro.cli import positive_int
from sqair_pyro.evaluate import inferred_counts, num_digits, single_sample_terms
from sqair_pyro.tracking import box_iou

#: Bins of the largest box IoU between two digits of a frame (the last bin includes 1).
OVERLAP_BINS = (0.0, 1e-9, 0.2, 0.5, 1.0)


def largest_overlap(boxes: np.ndarray) -> np.ndarray:
    """The largest IoU between two of a frame's ``(x, y, width, height)`` boxes, (S, T);
    empty boxes (no visible pixel) overlap nothing.

    :param boxes: (S, T, M, 4) boxes of the M digit slots.
    """
    slots = boxes.shape[2]
    if slots < 2:
        return np.zeros(boxes.shape[:2])
    iou = box_iou(boxes, boxes)  # (S, T, M, M)
    iou[..., np.arange(slots), np.arange(slots)] = 0.0  # a box with itself
    return iou.max((-2, -1))


def pair_orientation(boxes: np.ndarray) -> np.ndarray:
    """``"vertical"``, ``"horizontal"`` or ``""`` (a digit out of view: an empty box) for each
    frame of two digits' ``(x, y, width, height)`` boxes (S, T, 2, 4), as an (S, T) array."""
    centres = boxes[..., :2] + boxes[..., 2:] / 2
    dx, dy = np.abs(centres[..., 0, :] - centres[..., 1, :]).transpose(2, 0, 1)
    seen = (boxes[..., 2:] > 0).all((-1, -2))
    return np.where(seen, np.where(dy > dx, "vertical", "horizontal"), "")


def miscounts(inferred: np.ndarray, digits: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
    """The breakdown of the module doc for inferred counts ``(S, T)``, the sequences' digits
    ``(S,)`` and the digits' boxes ``(S, T, M, 4)``; keyed by the number of digits."""
    overlap = largest_overlap(boxes)
    report: dict[str, Any] = {}
    for count in np.unique(digits):
        rows = digits == count
        got, overlaps = inferred[rows], overlap[rows]
        wrong = got != count
        entry: dict[str, Any] = {
            "sequences": int(rows.sum()),
            "miscounted": float(wrong.mean()),
            "too_high": float((got > count).mean()),
            "too_low": float((got < count).mean()),
            "miscounted_by_frame": wrong.mean(0).tolist(),
            "sequences_with_a_miscount": float(wrong.any(1).mean()),
            "miscounted_first_frame": float(wrong[:, 0].mean()),
            "persisting": float(wrong[wrong[:, 0], -1].mean()) if wrong[:, 0].any() else None,
        }
        if count >= 2:
            bins = []
            for low, high in zip(OVERLAP_BINS[:-1], OVERLAP_BINS[1:], strict=True):
                inside = (overlaps >= low) & ((overlaps < high) | (high == OVERLAP_BINS[-1]))
                bins.append(
                    {
                        "iou_from": low,
                        "iou_to": high,
                        "share_of_frames": float(inside.mean()),
                        "miscounted": float(wrong[inside].mean()) if inside.any() else None,
                    }
                )
            entry["by_largest_overlap"] = bins
        if count == 2:
            orientation, first = pair_orientation(boxes[rows][:, :1, :2])[:, 0], got[:, 0]
            entry["first_frame_by_orientation"] = {
                side: {
                    "share_of_sequences": float((orientation == side).mean()),
                    "too_high": float((first[orientation == side] > count).mean()),
                    "too_low": float((first[orientation == side] < count).mean()),
                }
                for side in ("vertical", "horizontal")
                if (orientation == side).any()
            }
        report[str(int(count))] = entry
    return report


def first_frame_count_prior(model: torch.nn.Module) -> list[float] | None:
    """The learned categorical's ``P(D_1 = 0..N)`` with nothing propagated; None for a fixed
    prior (e.g. geometric)."""
    prior = getattr(model, "discovery_prior", None)
    if prior is None or not hasattr(prior, "count_logits"):
        return None
    with torch.no_grad():
        logits = prior.count_logits(torch.zeros(1), t=0)
    return torch.softmax(logits, -1)[0].tolist()


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=positive_int, default=1000)
    parser.add_argument("--batch-size", type=positive_int, default=50)
    args = parse_checked(parser, argv)
    config, model, guide, arrays = load_programs_and_truth(
        args, ("labels", "boxes"), "nothing to count against"
    )
    images = arrays["images"][: args.sequences, : args.frames]
    inferred = []
    with torch.no_grad():
        for first in range(0, len(images), args.batch_size):
            batch = torch.from_numpy(images[first : first + args.batch_size]).float() / 255
            latents = single_sample_terms(model, guide, batch)["latents"]
            if "z_pres" not in latents:
                raise ValueError(f"{args.checkpoint}: {config.model_name} has no objects to count")
            inferred.append(inferred_counts(latents["z_pres"]).numpy())
    labels = arrays["labels"][: len(images)]
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": len(images),
        "frames": images.shape[1],
        "by_digits": miscounts(
            np.concatenate(inferred),
            num_digits(labels).numpy(),
            arrays["boxes"][: len(images), : images.shape[1]].astype(float),
        ),
        "first_frame_count_prior": first_frame_count_prior(model),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
