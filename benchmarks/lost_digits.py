"""Digits that the inferred objects lose, and what the lost frames cost the reconstructions.

For the first ``--sequences`` sequences of ``--data``, one guide draw with z_where and z_what
at their posterior means (``--latents drawn``: every latent drawn), each inferred object's
content box (the tight box of the pixels its decoded glimpse draws, as ``sqair-pyro
evaluate`` scores tracking) is matched to the true visible digits by Hungarian assignment.
A digit whose visible box covers at least ``--min-area`` pixels is *lost* in a frame where no
object's box overlaps it with IoU ``--iou`` or more. The report gives:

- ``lost``: the share of such digit-frames lost, and its count by frame;
- ``p_lost_after_lost`` / ``p_lost_after_found``: for a digit of that size in two
  consecutive frames, how often it is lost in the second given that it was lost (found) in
  the first: losses that persist are tracks that propagation never recovers;
- ``first_loss``: each digit's first loss after the first frame (found, or not a candidate,
  in the frame before), by what that frame showed: ``overlap`` (its box overlapped another
  digit's), ``edge`` (its box touched the canvas border), ``out_of_view`` (no pixel in view)
  or ``neither``;
- ``new_objects_per_later_frame``: objects discovered after the first frame (identities not
  present in the frame before), which is how a lost digit can be found again (none for an
  AIR, whose identities are per frame);
- the squared error per frame (from ``log p(x_t given z)`` under the fixed-sigma Normal
  likelihood) in frames with a lost digit and in the others, and the lost frames' share of
  the total; and the same split by frames where a visible digit touches the border.

``--figure PATH`` draws the ``--figure-sequences`` sequences with the most lost digit-frames:
each one's frames with the true boxes above its reconstruction with the objects' boxes.

An AIR checkpoint is read too (each frame inferred on its own: nothing to lose but per frame).

    .venv/bin/python benchmarks/lost_digits.py --checkpoint src/sqair_pyro/weights/mlp-sqair.pt \\
        --data data/mm/test.npz --sequences 500 --figure docs/figures/lost_digits.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gradient_terms import (
    checkpoint_parser,
    parse_checked,
    run_script,
    write_report,
)
from posterior_means import VARIANTS, reconstructed_sequences

from sqair_pyro.cli import positive_int, unit_interval
from sqair_pyro.evaluate import predicted_boxes
from sqair_pyro.forecast import match_digits
from sqair_pyro.tracking import box_iou, new_objects_per_frame
from sqair_pyro.viz import ground_truth_rows, plot_sequences

#: What a digit's previous frame showed before its first loss.
CAUSES = ("overlap", "edge", "out_of_view", "neither")


def lost_digits(
    pred_boxes: np.ndarray,
    pred_ids: np.ndarray,
    true_boxes: np.ndarray,
    candidates: np.ndarray,
    iou: float,
) -> np.ndarray:
    """(S, T, M) true where a candidate digit is matched to no inferred object's box at IoU
    ``iou`` or more (one object to one digit, by Hungarian assignment on IoU).

    :param pred_boxes: (S, T, N, 4) boxes ``(x, y, w, h)`` of the inferred objects;
        ``pred_ids`` (S, T, N), -1 where an object is absent or draws nothing.
    :param true_boxes: (S, T, M, 4) visible boxes of the digits; ``candidates`` (S, T, M)
        the digits that count (visible and large enough).
    """
    lost = np.zeros(candidates.shape, dtype=bool)
    for s, t in zip(*np.nonzero(candidates.any(-1)), strict=True):
        matched = match_digits(
            pred_boxes[s, t], pred_ids[s, t], true_boxes[s, t], candidates[s, t], iou
        )
        lost[s, t] = candidates[s, t] & (matched < 0)
    return lost


def touches_edge(boxes: np.ndarray, visible: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """(S, T, M) true where a visible digit's box ``(x, y, w, h)`` touches the canvas border
    (``canvas`` = (height, width))."""
    x, y, w, h = np.moveaxis(boxes, -1, 0)
    height, width = canvas
    return visible & ((x <= 0) | (y <= 0) | (x + w >= width) | (y + h >= height))


def overlaps_another(boxes: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(S, T, M) true where a visible digit's box overlaps another visible digit's."""
    iou = box_iou(boxes, boxes)  # (S, T, M, M)
    both = visible[..., :, None] & visible[..., None, :]
    slots = boxes.shape[-2]
    iou[..., np.arange(slots), np.arange(slots)] = 0.0
    return ((iou > 0) & both).any(-1)


def persistence(lost: np.ndarray, candidates: np.ndarray) -> tuple[float, float]:
    """``P(lost at t+1 | lost at t)`` and ``P(lost at t+1 | found at t)`` over the digits that
    are candidates in both frames (nan where no such pair)."""
    both = candidates[:, :-1] & candidates[:, 1:]

    def lost_next(before: np.ndarray) -> float:
        return float((before & lost[:, 1:]).sum() / before.sum()) if before.any() else np.nan

    return lost_next(both & lost[:, :-1]), lost_next(both & ~lost[:, :-1])


def first_loss_causes(
    lost: np.ndarray, boxes: np.ndarray, visible: np.ndarray, canvas: tuple[int, int]
) -> dict[str, int]:
    """Each digit's first loss after the first frame (lost in frame ``t``, not lost in
    ``t - 1``), counted by what its frame ``t - 1`` showed, the first of :data:`CAUSES` that
    applies: its box overlapped another digit's, touched the canvas border, or it was out of
    view (re-entering); a digit lost from the first frame on has no such loss."""
    overlap, edge = overlaps_another(boxes, visible), touches_edge(boxes, visible, canvas)
    losses = lost[:, 1:] & ~lost[:, :-1]  # (S, T - 1, M): lost in frame t + 1, not in t
    counts = dict.fromkeys(CAUSES, 0)
    for s, m in zip(*np.nonzero(losses.any(1)), strict=True):
        before = int(np.argmax(losses[s, :, m]))  # the frame before the first loss
        if overlap[s, before, m]:
            cause = "overlap"
        elif edge[s, before, m]:
            cause = "edge"
        elif not visible[s, before, m]:
            cause = "out_of_view"
        else:
            cause = "neither"
        counts[cause] += 1
    return counts


def split_error(errors: np.ndarray, frames: np.ndarray) -> dict[str, float]:
    """Squared error per frame in ``frames`` (S, T) and in the others, and their share."""
    return {
        "share_of_frames": float(frames.mean()),
        "squared_error_in": float(errors[frames].mean()) if frames.any() else float("nan"),
        "squared_error_out": float(errors[~frames].mean()) if (~frames).any() else float("nan"),
        "share_of_squared_error": (
            float(errors[frames].sum() / errors.sum()) if errors.sum() > 0 else float("nan")
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=positive_int, default=500)
    parser.add_argument("--min-area", type=positive_int, default=150, help="pixels")
    parser.add_argument("--iou", type=unit_interval, default=0.3, help="a match needs this IoU")
    parser.add_argument("--latents", choices=("mean", "drawn"), default="mean")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the worst sequences")
    parser.add_argument("--figure-sequences", type=positive_int, default=4)
    args = parse_checked(parser, argv)
    prefixes = VARIANTS["both_at_mean" if args.latents == "mean" else "drawn"]
    config, model, guide, data, images, errors, latents = reconstructed_sequences(
        args, ("boxes", "visible"), "no digits to lose", prefixes
    )
    errors = errors.numpy()
    count, frames = images.shape[:2]
    canvas = tuple(images.shape[-2:])
    boxes, ids = predicted_boxes(model, latents, canvas, mode="content")
    true_boxes = data["boxes"][:count, :frames]
    visible = data["visible"][:count, :frames]
    candidates = visible & (true_boxes[..., 2] * true_boxes[..., 3] >= args.min_area)
    lost = lost_digits(boxes.numpy(), ids.numpy(), true_boxes, candidates, args.iou)
    after_lost, after_found = persistence(lost, candidates)
    report: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": count,
        "latents": args.latents,
        "min_area": args.min_area,
        "iou": args.iou,
        "digit_frames": int(candidates.sum()),
        "lost": float(lost.sum() / candidates.sum()) if candidates.any() else float("nan"),
        "lost_by_frame": lost.sum((0, 2)).tolist(),
        "p_lost_after_lost": after_lost,
        "p_lost_after_found": after_found,
        "first_loss": first_loss_causes(lost, true_boxes, visible, canvas),
        "new_objects_per_later_frame": (
            new_objects_per_frame(latents["ids"]) if getattr(model, "temporal", False) else None
        ),
        "squared_error_per_frame": float(errors.mean()),
        "frames_with_a_lost_digit": split_error(errors, lost.any(-1)),
        "frames_with_a_digit_at_the_edge": split_error(
            errors, touches_edge(true_boxes, visible, canvas).any(-1)
        ),
    }
    write_report(report, args.json)
    if args.figure is not None:
        worst = np.argsort(-lost.sum((1, 2)), kind="stable")[: args.figure_sequences]
        with torch.no_grad():
            drawn = model.likelihood.render(
                *(latents[k][worst] for k in ("z_what", "z_where", "z_pres"))
            )
        rows = []
        truth = ground_truth_rows(data, worst.tolist())
        for k, (row, s) in enumerate(zip(truth, worst, strict=True)):
            rows += [row, ("inferred", drawn[k].clamp(0, 1).numpy(), boxes[s], ids[s])]
        plot_sequences(args.figure, rows, title=f"{args.checkpoint}: most lost digits")


if __name__ == "__main__":
    sys.exit(run_script(main))
