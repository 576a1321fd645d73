"""How much of the reconstruction error is the window's: the best glimpse through each window.

Under the additive likelihood (Alg. 1) an object draws ``B_y g B_x^T``: its glimpse ``g`` of
``h x w`` pixels resampled through its window ``z_where``. A wide window spreads the glimpse's
pixels over more canvas pixels, so even a perfect decoder cannot draw a sharp digit through
it. For every frame of the first ``--sequences`` sequences in which the guide infers one
present object and one digit is in view (z_where and z_what at their posterior means, z_pres
drawn), this script reports the summed squared error per frame of

- ``model``: the model's own reconstruction (as ``posterior_means.py`` scores it);
- ``window_floor``: the best glimpse of ``--glimpse`` pixels with values in [0, 1] (the
  decoder's range) drawn through the object's window: what the window allows a perfect
  decoder and z_what;
- ``true_box_floor``: the same through the digit's true tight box (digits wholly in view),
  at the size the model's decoder draws;
- ``decoder_floor``: the model's own decoder through the same window, from the best z_what
  for it (the maximum a posteriori z_what under the likelihood and the discovery prior
  ``N(0, I)``, found by Adam from the guide's mean): what the decoder allows a perfect
  encoder; ``model`` less ``decoder_floor`` is the encoder's share (the amortisation gap at
  the means), ``decoder_floor`` less ``window_floor`` the decoder's;

and the windows' width and height over the digit's box, and their centres' offset in pixels.
``model`` less ``window_floor`` is the appearance's share (decoder and z_what); the window
floor at a larger ``--glimpse`` is what a finer glimpse would allow through the same windows.

    .venv/bin/python benchmarks/reconstruction_floor.py \
        --checkpoint src/sqair_pyro/weights/mlp-sqair.pt --data data/mm/test.npz \
        --sequences 300 --glimpse 20 20 --glimpse 28 28 --threads 1
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gradient_terms import (
    checkpoint_parser,
    parse_checked,
    run_script,
    write_report,
)
from lost_digits import touches_edge
from posterior_means import VARIANTS, reconstructed_sequences

from sqair_pyro.cli import positive_int
from sqair_pyro.nn.spatial_transformer import (
    boxes_to_z_where,
    placement_weights,
    where_to_transform,
    z_where_to_boxes,
)


def best_glimpse_error(
    frames: torch.Tensor, b_y: torch.Tensor, b_x: torch.Tensor, iterations: int = 500
) -> torch.Tensor:
    """``min_g ||B_y g B_x^T - frame||^2`` over glimpses ``g`` with values in [0, 1], per frame.

    Projected gradient descent with step ``1 / L`` (``L = ||B_y||_2^2 ||B_x||_2^2``, the
    gradient's Lipschitz constant), from the clipped least-squares solution.

    :param frames: ``(n, H, W)``; :param b_y: ``(n, H, h)``; :param b_x: ``(n, W, w)``
        (:func:`~sqair_pyro.nn.spatial_transformer.placement_weights`).
    :returns: ``(n,)`` summed squared errors.
    """
    frames, b_y, b_x = frames.double(), b_y.double(), b_x.double()
    glimpse = (torch.linalg.pinv(b_y) @ frames @ torch.linalg.pinv(b_x).transpose(-1, -2)).clamp(
        0, 1
    )
    lipschitz = torch.linalg.matrix_norm(b_y, 2) ** 2 * torch.linalg.matrix_norm(b_x, 2) ** 2
    step = (1 / lipschitz.clamp_min(1e-12))[:, None, None]
    for _ in range(iterations):
        residual = b_y @ glimpse @ b_x.transpose(-1, -2) - frames
        glimpse = (glimpse - step * (b_y.transpose(-1, -2) @ residual @ b_x)).clamp(0, 1)
    return ((b_y @ glimpse @ b_x.transpose(-1, -2) - frames) ** 2).sum((-1, -2))


def best_what_error(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    z_what: torch.Tensor,
    frames: torch.Tensor,
    b_y: torch.Tensor,
    b_x: torch.Tensor,
    obs_sd: float,
    iterations: int = 500,
    lr: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The squared error of ``B_y f^dec(z) B_x^T`` at the z_what ``z`` of largest
    ``log N(frame; B_y f^dec(z) B_x^T, obs_sd) + log N(z; 0, I)`` (Alg. 1's likelihood of one
    object, the discovery prior of Eq. 7), per frame, and the norm of that ``z``.

    Adam on ``z`` alone (the decoder's weights are not changed), from ``z_what``.

    :param z_what: ``(n, d)`` starting points; :param frames: ``(n, H, W)``;
        :param b_y: ``(n, H, h)``; :param b_x: ``(n, W, w)``.
    :returns: ``(errors, norms)``, each ``(n,)``.
    """

    def error(z: torch.Tensor) -> torch.Tensor:
        drawn = b_y @ decoder(z).to(b_y.dtype) @ b_x.transpose(-1, -2)
        return ((drawn - frames) ** 2).sum((-1, -2))

    z = z_what.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(iterations):
        optimiser.zero_grad()
        # every frame's own objective: their sum has each frame's gradient
        (error(z) / (2 * obs_sd**2) + 0.5 * (z**2).sum(-1)).sum().backward()
        optimiser.step()
    with torch.no_grad():
        return error(z), z.norm(dim=-1)


def single_object_frames(
    present: np.ndarray, visible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(sequence, frame, slot, digit)`` indices of the frames with exactly one present
    object and exactly one visible digit.

    :param present: ``(B, T, N)`` inferred presence; :param visible: ``(B, T, D)``.
    """
    frames = (present.sum(-1) == 1) & (visible.sum(-1) == 1)
    sequence, frame = np.nonzero(frames)
    return sequence, frame, present[frames].argmax(-1), visible[frames].argmax(-1)


def window_statistics(windows: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
    """Median window width and height over the digit's, and the mean offset of the centres
    (pixels; positive: right of and below the digit's), of pixel boxes ``(n, 4)``."""
    centre = lambda b: b[:, :2] + b[:, 2:] / 2  # noqa: E731
    offset = centre(windows) - centre(boxes)
    return {
        "width_ratio_median": float(np.median(windows[:, 2] / boxes[:, 2])),
        "height_ratio_median": float(np.median(windows[:, 3] / boxes[:, 3])),
        "centre_offset_mean_px": offset.mean(0).tolist(),
        "centre_offset_mean_abs_px": np.abs(offset).mean(0).tolist(),
        "digit_size_mean_px": boxes[:, 2:].mean(0).tolist(),
        "window_size_mean_px": windows[:, 2:].mean(0).tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.set_defaults(data=parser.get_default("data").with_name("test.npz"))
    parser.add_argument("--sequences", type=positive_int, default=300)
    parser.add_argument(
        "--glimpse",
        type=positive_int,
        nargs=2,
        action="append",
        metavar=("H", "W"),
        help="glimpse size of a window floor (repeatable; default: what the decoder draws)",
    )
    parser.add_argument("--iterations", type=positive_int, default=500)
    parser.add_argument(
        "--what-iterations",
        type=positive_int,
        default=400,
        help="Adam steps of the decoder floor's z_what search",
    )
    args = parse_checked(parser, argv)
    config, model, _, data, images, model_error, latents = reconstructed_sequences(
        args, ("boxes", "visible"), "no digits to compare with", VARIANTS["both_at_mean"]
    )
    count, frames = images.shape[:2]
    canvas = tuple(images.shape[-2:])
    present = latents["z_pres"][..., 0].bool().numpy()
    visible, true_boxes = data["visible"][:count, :frames], data["boxes"][:count, :frames]
    seq, frame, slot, digit = single_object_frames(present, visible)
    if len(seq) == 0:
        raise ValueError("no frame with one inferred object and one digit in view")
    windows = where_to_transform(latents["z_where"][seq, frame, slot].double())
    digit_boxes = true_boxes[seq, frame, digit]
    inside = ~touches_edge(digit_boxes, np.True_, canvas)  # visible digits wholly in view
    pixels = images[seq, frame]
    report: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": count,
        "frames": int(len(seq)),
        "frames_digit_wholly_in_view": int(inside.sum()),
        "model": float(model_error[seq, frame].mean()),
        "model_digit_wholly_in_view": float(model_error[seq, frame][inside].mean()),
        "window_floor": {},
    }
    for size in args.glimpse or [list(config.decoded_glimpse)]:
        floor = best_glimpse_error(
            pixels, *placement_weights(windows, tuple(size), canvas), args.iterations
        )
        report["window_floor"]["x".join(map(str, size))] = {
            "all": float(floor.mean()),
            "digit_wholly_in_view": float(floor[inside].mean()),
        }
    z_what = latents["z_what"][seq, frame, slot]
    b_y, b_x = placement_weights(windows.float(), tuple(config.decoded_glimpse), canvas)
    decoder = model.likelihood.decoder.requires_grad_(False)
    errors, norms = best_what_error(
        decoder, z_what, pixels, b_y, b_x, config.obs_sd, args.what_iterations
    )
    report["decoder_floor"] = {
        "all": float(errors.mean()),
        "digit_wholly_in_view": float(errors[inside].mean()),
        "z_what_norm": float(norms.mean()),
        "model_z_what_norm": float(z_what.norm(dim=-1).mean()),
    }
    if inside.any():
        truth = boxes_to_z_where(torch.as_tensor(digit_boxes[inside], dtype=torch.float64), canvas)
        size = tuple(config.decoded_glimpse)
        floor = best_glimpse_error(
            pixels[inside], *placement_weights(truth, size, canvas), args.iterations
        )
        report["true_box_floor"] = float(floor.mean())
        window_boxes = z_where_to_boxes(windows[inside], canvas).numpy()
        report["windows"] = window_statistics(window_boxes, digit_boxes[inside])
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
