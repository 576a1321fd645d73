"""Whether z_what holds the digit or the digit's pose in its window: how appearance drifts.

SQAIR's propagation prior (Eq. 8) centres ``z_what^i_t`` on ``z_what^i_{t-1}``, and its KL
(the ``z_what_prop`` sites) is what a tracked object pays each frame for changing its
appearance. A moving-MNIST digit does not change, so a model whose windows follow their digits
could keep z_what still and pay almost nothing. On the first ``--sequences`` sequences this
script reports:

- per dimension of z_what, over the propagated objects present (one guide draw, or the
  posterior means with ``--latents mean``): the analytic KL ``KL(q || p)`` per sequence, the
  posterior and prior scales, and the root mean square of ``loc_q - loc_p`` (*drift*); and the
  decoder's sensitivity to each dimension (the squared change of its glimpse, summed over
  pixels and averaged over ``z ~ N(0, 0.7^2 I)``, when a dimension moves by 0.3), which sorts
  the dimensions it uses (sensitivity above ``--used``) from the rest;
- on consecutive frames where one object follows one visible digit in the same slot (latents
  at the means): the squared error of the frame drawn through the object's window with its own
  z_what, with the previous frame's, and with that of the first frame of its run: how much of
  the frame the change of z_what explains;
- the change of the digit's pose in its window between those frames (centre offset over the
  window's size, the digit's box over the window's) and the share of z_what's change in the
  used dimensions that a linear function of it explains (R^2).

    .venv/bin/python benchmarks/appearance_drift.py \
        --checkpoint src/sqair_pyro/weights/mlp-sqair.pt --data data/mm/test.npz --threads 1
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gradient_terms import checkpoint_parser, parse_checked, run_script, write_report
from lost_digits import touches_edge
from posterior_means import VARIANTS, AtPosteriorMean, reconstructed_sequences
from pyro import poutine
from torch.distributions import Normal, kl_divergence

from sqair_pyro.cli import positive_int
from sqair_pyro.models.likelihood import drawing_transform
from sqair_pyro.nn.spatial_transformer import (
    aligned_window,
    place,
    where_to_transform,
    z_where_to_boxes,
)

#: what the decoder-sensitivity probe moves each dimension by, and the spread it starts from
PROBE_STEP, PROBE_SD = 0.3, 0.7


def base_normal(fn: Any) -> Normal:
    """The Normal under a site's wrappers (``to_event``, ``mask``)."""
    while not isinstance(fn, Normal):
        fn = fn.base_dist
    return fn


def propagated_what(
    model: Callable, guide: Callable, images: torch.Tensor, prefixes: tuple[str, ...]
) -> dict[str, Any]:
    """Per dimension, over the present propagated objects of ``images``: KL per sequence,
    mean posterior and prior scale, and root mean square drift ``loc_q - loc_p``; latents
    of ``prefixes`` at their posterior means."""
    with torch.no_grad(), AtPosteriorMean(prefixes):
        guide_trace = poutine.trace(guide).get_trace(images)
    with torch.no_grad():
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(images)
    sums: dict[str, torch.Tensor] = {}
    objects = 0.0
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or not name.startswith("z_what_prop"):
            continue
        q, p = base_normal(site["fn"]), base_normal(model_trace.nodes[name]["fn"])
        present = guide_trace.nodes[name.replace("z_what", "z_pres")]["value"]
        present = present.reshape(q.loc.shape[:-1])[..., None]
        terms = {
            "kl": kl_divergence(q, p),
            "posterior_scale": q.scale,
            "prior_scale": p.scale,
            "drift_squared": (q.loc - p.loc) ** 2,
        }
        for key, value in terms.items():
            weighted = (value * present).flatten(0, -2).sum(0)
            sums[key] = sums.get(key, 0) + weighted
        objects += float(present.sum())
    if not sums:
        raise ValueError("not a SQAIR checkpoint: no propagated objects")
    if objects == 0:
        raise ValueError("no object is propagated in these sequences: nothing drifts")
    count = len(images)
    return {
        "objects_per_sequence": objects / count,
        "kl_per_sequence": (sums["kl"] / count).tolist(),
        "posterior_scale": (sums["posterior_scale"] / objects).tolist(),
        "prior_scale": (sums["prior_scale"] / objects).tolist(),
        "drift_rms": (sums["drift_squared"] / objects).sqrt().tolist(),
    }


def decoder_sensitivity(decoder: Callable, z_what_dim: int, draws: int = 2000) -> np.ndarray:
    """The squared change of the decoded glimpse (summed over its pixels, averaged over
    ``draws`` of ``z ~ N(0, PROBE_SD^2 I)``, fixed seed) when one dimension of ``z`` moves by
    ``PROBE_STEP``, per dimension."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(draws, z_what_dim, generator=generator) * PROBE_SD
    with torch.no_grad():
        base = decoder(z)
        moved = [decoder(z + PROBE_STEP * torch.eye(z_what_dim)[d]) for d in range(z_what_dim)]
    return np.array([float(((m - base) ** 2).sum((-1, -2)).mean()) for m in moved])


def followed_digits(
    present: np.ndarray, visible: np.ndarray
) -> list[tuple[int, int, int, int, int]]:
    """``(sequence, frame, slot, digit, first)`` of each frame ``t > 0`` in which one
    present object and one visible digit follow those of frame ``t - 1`` in the same slot and
    digit; ``first`` is the first frame of that run.

    :param present: ``(B, T, N)``; :param visible: ``(B, T, D)``.
    """
    one = (present.sum(-1) == 1) & (visible.sum(-1) == 1)
    slot, digit = present.argmax(-1), visible.argmax(-1)
    pairs = []
    for b in range(len(present)):
        first = 0
        for t in range(len(present[b])):
            same = t > 0 and one[b, t - 1] and slot[b, t] == slot[b, t - 1]
            if not (one[b, t] and same and digit[b, t] == digit[b, t - 1]):
                first = t
                continue
            pairs.append((b, t, int(slot[b, t]), int(digit[b, t]), first))
    return pairs


def centre(boxes: np.ndarray) -> np.ndarray:
    """The centres ``(n, 2)`` of pixel boxes ``(n, 4)``."""
    return boxes[:, :2] + boxes[:, 2:] / 2


def pose_in_window(windows: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The digit's pose in its window, ``(n, 4)``: its centre's offset from the window's
    centre over the window's size, and its box's size over the window's (pixel boxes)."""
    return np.concatenate([(centre(boxes) - centre(windows)) / windows[:, 2:],
                           boxes[:, 2:] / windows[:, 2:]], 1)  # fmt: skip


def explained_share(x: np.ndarray, y: np.ndarray) -> float:
    """R^2 of the least-squares affine fit of ``y`` (n, k) on ``x`` (n, m)."""
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(1 - (residual**2).sum() / ((y - y.mean(0)) ** 2).sum())


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.set_defaults(data=parser.get_default("data").with_name("test.npz"))
    parser.add_argument("--sequences", type=positive_int, default=300)
    parser.add_argument(
        "--latents",
        choices=("drawn", "mean"),
        default="drawn",
        help="the KL statistics at one guide draw or at the posterior means",
    )
    parser.add_argument(
        "--used", type=float, default=0.01, help="decoder sensitivity of a used dimension"
    )
    parser.add_argument(
        "--align-steps", type=positive_int, default=3, help="Gauss-Newton steps of the alignment"
    )
    parser.add_argument(
        "--align-scale", action="store_true", help="the alignment moves the scale too"
    )
    args = parse_checked(parser, argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2: z_what drifts between frames")
    means = VARIANTS["both_at_mean"]
    config, model, guide, data, images, _, latents = reconstructed_sequences(
        args, ("boxes", "visible"), "no digits to follow", means
    )
    decoder = model.likelihood.decoder
    stats = propagated_what(model, guide, images, means if args.latents == "mean" else ())
    sensitivity = decoder_sensitivity(decoder, config.z_what_dim)
    used = sensitivity > args.used
    if not used.any():
        raise ValueError(f"the decoder uses no dimension of z_what (sensitivity > {args.used})")
    kl = np.array(stats["kl_per_sequence"])
    report: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": len(images),
        "latents": args.latents,
        "used_dimensions": np.flatnonzero(used).tolist(),
        "kl_prop_per_sequence": float(kl.sum()),
        "kl_prop_per_sequence_used": float(kl[used].sum()),
        **{
            key: float(np.mean(np.array(stats[key])[used]))
            for key in ("posterior_scale", "prior_scale", "drift_rms")
        },  # fmt: skip
        "drift_rms_unused": float(np.mean(np.array(stats["drift_rms"])[~used])),
        "objects_per_sequence": stats["objects_per_sequence"],
        "per_dimension": {
            **{key: value for key, value in stats.items() if key != "objects_per_sequence"},
            "decoder_sensitivity": sensitivity.tolist(),
        },
    }
    present = latents["z_pres"][..., 0].bool().numpy()
    count, frames = images.shape[:2]
    pairs = followed_digits(present, data["visible"][:count, :frames])
    if pairs:
        b, t, k, d, first = (np.array(column) for column in zip(*pairs, strict=True))
        canvas = tuple(images.shape[-2:])
        where = latents["z_where"][b, t, k]
        what = latents["z_what"]

        def error(drawn_through: torch.Tensor, glimpses: torch.Tensor) -> float:
            drawn = place(glimpses, drawn_through, canvas)
            return float(((drawn - images[b, t]) ** 2).sum((-1, -2)).mean())

        def drawing(glimpses: torch.Tensor) -> torch.Tensor:
            """The windows as the model draws ``glimpses`` through them (centred or not)."""
            return drawing_transform(glimpses, where, model.likelihood.centre_glimpses)

        with torch.no_grad():
            glimpses = {"own": t, "previous": t - 1, "first_of_run": first}
            errors = {}
            for name, tt in glimpses.items():
                decoded = decoder(what[b, tt, k])
                errors[name] = error(drawing(decoded), decoded)
            template = decoder(what[b, t - 1, k])
            aligned = aligned_window(
                drawing(template), template, images[b, t], args.align_steps, args.align_scale
            )
            errors["previous_aligned"] = error(aligned, template)
        boxes = data["boxes"][:count, :frames]
        window_boxes = [
            z_where_to_boxes(where_to_transform(latents["z_where"][b, tt, k]), canvas).numpy()
            for tt in (t, t - 1)
        ]
        digit_boxes = [boxes[b, t, d], boxes[b, t - 1, d]]
        pose = [pose_in_window(w, box) for w, box in zip(window_boxes, digit_boxes, strict=True)]
        change = (what[b, t, k] - what[b, t - 1, k]).numpy()[:, used]
        inside = ~(touches_edge(digit_boxes[0], np.True_, canvas)
                   | touches_edge(digit_boxes[1], np.True_, canvas))  # fmt: skip
        offsets = [
            centre(w) - centre(box) for w, box in zip(window_boxes, digit_boxes, strict=True)
        ]
        report["followed_frames"] = {
            "frames": len(pairs),
            "squared_error_with_z_what_of": errors,
            "alignment": {"steps": args.align_steps, "scale": args.align_scale},
            "pose_change_rms": np.sqrt(((pose[0] - pose[1]) ** 2).mean(0)).tolist(),
            "z_what_change_rms_used": float(np.sqrt((change**2).mean())),
            "z_what_change_explained_by_pose": explained_share(pose[0] - pose[1], change),
            "frames_digit_wholly_in_view": int(inside.sum()),
            "window_centre_wobble_px": np.sqrt(
                ((offsets[0] - offsets[1])[inside] ** 2).mean(0)
            ).tolist(),
            "window_log_size_change_rms": np.sqrt(
                (np.log(window_boxes[0][inside, 2:] / window_boxes[1][inside, 2:]) ** 2).mean(0)
            ).tolist(),
        }
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
