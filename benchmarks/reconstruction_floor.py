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

With ``--refit-steps``, it also asks whether the decoder's range, rather than its size, limits
the decoder floor: the decoder is refitted, jointly with a free z_what per frame (generative
latent optimisation, Bojanowski et al., 2018), to the one-object frames of the first
``--refit-sequences`` sequences of ``--refit-data`` (training frames) through the guide's
windows, by the decoder floor's own objective; ``decoder_floor_refitted`` is then the floor of
the refitted decoder on the same held-out frames (with the training frames' mean error over
the first and the last tenth of the refit, at most 250 minibatches each). ``--refit-out``
writes the checkpoint with the refitted decoder (the guide's weights unchanged). With
``--encoder-steps``, two MLP encoders then learn to read from the training frames' glimpses
the guide's codes and the refitted ones, and each frame's error when drawn from them
(``amortised``, training and held-out frames) says whether an encoder can give the refitted
codes on new digits.

    .venv/bin/python benchmarks/reconstruction_floor.py \
        --checkpoint src/sqair_pyro/weights/mlp-sqair.pt --data data/mm/test.npz \
        --sequences 300 --glimpse 20 20 --glimpse 28 28 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
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
from lost_digits import touches_edge
from posterior_means import VARIANTS, reconstructed_sequences

from sqair_pyro.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from sqair_pyro.cli import non_negative_int, positive_float, positive_int
from sqair_pyro.config import Config
from sqair_pyro.nn.modules import MLP
from sqair_pyro.nn.spatial_transformer import (
    boxes_to_z_where,
    glimpse,
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


def drawing_error(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    z_what: torch.Tensor,
    frames: torch.Tensor,
    b_y: torch.Tensor,
    b_x: torch.Tensor,
) -> torch.Tensor:
    """``||B_y f^dec(z_what) B_x^T - frame||^2`` per frame, ``(n,)`` (Alg. 1's drawing of one
    object through its window)."""
    drawn = b_y @ decoder(z_what).to(b_y.dtype) @ b_x.transpose(-1, -2)
    return ((drawn - frames) ** 2).sum((-1, -2))


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
        return drawing_error(decoder, z, frames, b_y, b_x)

    z = z_what.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(iterations):
        optimiser.zero_grad()
        # every frame's own objective: their sum has each frame's gradient
        (error(z) / (2 * obs_sd**2) + 0.5 * (z**2).sum(-1)).sum().backward()
        optimiser.step()
    with torch.no_grad():
        return error(z), z.norm(dim=-1)


def refit_decoder(
    decoder: torch.nn.Module,
    z_what: torch.Tensor,
    frames: torch.Tensor,
    b_y: torch.Tensor,
    b_x: torch.Tensor,
    obs_sd: float,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-4,
    code_lr: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[list[float], torch.Tensor]:
    """Fit ``decoder`` in place, jointly with a free z_what per frame started at ``z_what``,
    to draw ``frames`` through their windows: Adam on the decoder's weights (rate ``lr``) and
    the codes (``code_lr``) for ``steps`` minibatches of ``batch_size`` frames, each step
    maximising :func:`best_what_error`'s objective
    ``log N(frame; B_y f^dec(z) B_x^T, obs_sd) + log N(z; 0, I)`` on its frames. The codes
    are one dense Adam parameter, so a code keeps moving on its momentum in steps that do not
    draw its frame (sparse embeddings would not; each code is drawn ``steps * batch_size / n``
    times). The decoder is left frozen (``requires_grad`` off), as the floors use it.

    :param z_what: ``(n, d)``; :param frames: ``(n, H, W)``; :param b_y: ``(n, H, h)``;
        :param b_x: ``(n, W, w)``.
    :returns: each step's mean squared error per frame (before its update), and the fitted
        codes.
    """
    codes = z_what.detach().clone().requires_grad_(True)
    weights = list(decoder.requires_grad_(True).parameters())
    optimiser = torch.optim.Adam(
        [{"params": weights, "lr": lr}, {"params": [codes], "lr": code_lr}]
    )
    errors = []
    for _ in range(steps):
        rows = torch.randint(len(frames), (batch_size,), generator=generator)
        error = drawing_error(decoder, codes[rows], frames[rows], b_y[rows], b_x[rows])
        loss = (error / (2 * obs_sd**2) + 0.5 * (codes[rows] ** 2).sum(-1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        errors.append(float(error.detach().mean()))
    decoder.requires_grad_(False)
    return errors, codes.detach()


def fit_encoder(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    hidden: int,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.nn.Module:
    """An MLP ``[inputs, hidden, hidden, targets]`` (ELU) fitted by Adam to regress
    ``targets`` ``(n, d)`` from ``inputs`` ``(n, p)`` (summed squared error), frozen: an
    amortised encoder of the codes from what the guide's glimpse encoder reads. Its initial
    weights are drawn from ``generator`` too."""
    if generator is not None:
        torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
    encoder = MLP([inputs.shape[-1], hidden, hidden, targets.shape[-1]])
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    for _ in range(steps):
        rows = torch.randint(len(inputs), (batch_size,), generator=generator)
        loss = ((encoder(inputs[rows]) - targets[rows]) ** 2).sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return encoder.requires_grad_(False)


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


def one_object_frames(args: argparse.Namespace, data: Path, sequences: int) -> dict[str, Any]:
    """The frames of the first ``sequences`` of ``data`` with one inferred object and one
    digit in view (:func:`single_object_frames`), at the posterior means of ``--checkpoint``:
    the programs (``config``, ``model``), the ``pixels`` ``(n, H, W)``, the objects'
    ``windows`` (affine, float64) and ``z_what``, the model's squared error of each frame, the
    digits' pixel boxes, whether each digit is wholly in view (``inside``), and the
    placement matrices ``b_y``, ``b_x`` of the decoded glimpse through the windows."""
    args = argparse.Namespace(**{**vars(args), "data": data, "sequences": sequences})
    config, model, _, arrays, images, model_error, latents = reconstructed_sequences(
        args, ("boxes", "visible"), "no digits to compare with", VARIANTS["both_at_mean"]
    )
    count, frames = images.shape[:2]
    canvas = tuple(images.shape[-2:])
    present = latents["z_pres"][..., 0].bool().numpy()
    visible, true_boxes = arrays["visible"][:count, :frames], arrays["boxes"][:count, :frames]
    seq, frame, slot, digit = single_object_frames(present, visible)
    if len(seq) == 0:
        raise ValueError(f"{data}: no frame with one inferred object and one digit in view")
    digit_boxes = true_boxes[seq, frame, digit]
    windows = where_to_transform(latents["z_where"][seq, frame, slot].double())
    b_y, b_x = placement_weights(windows.float(), tuple(config.decoded_glimpse), canvas)
    return {
        "config": config,
        "model": model,
        "sequences": count,
        "canvas": canvas,
        "pixels": images[seq, frame],
        "windows": windows,
        "b_y": b_y,
        "b_x": b_x,
        "z_what": latents["z_what"][seq, frame, slot],
        "model_error": model_error[seq, frame],
        "digit_boxes": digit_boxes,
        "inside": ~touches_edge(digit_boxes, np.True_, canvas),  # wholly in view
    }


def decoder_floor(
    decoder: torch.nn.Module, frames: dict[str, Any], iterations: int
) -> dict[str, float]:
    """:func:`best_what_error` of ``decoder`` on ``frames`` (:func:`one_object_frames`),
    from the guide's z_what: the mean error, on the frames whose digit is wholly in view,
    and the norms of the best and of the guide's z_what."""
    errors, norms = best_what_error(
        decoder, frames["z_what"], frames["pixels"], frames["b_y"], frames["b_x"],
        frames["config"].obs_sd, iterations,
    )  # fmt: skip
    inside = frames["inside"]
    return {
        "all": float(errors.mean()),
        "digit_wholly_in_view": float(errors[inside].mean()),
        "z_what_norm": float(norms.mean()),
        "model_z_what_norm": float(frames["z_what"].norm(dim=-1).mean()),
    }


def refitted_floor(args: argparse.Namespace, test: dict[str, Any], report: dict[str, Any]) -> None:
    """Refit the decoder of ``test["model"]`` (:func:`refit_decoder`) on the one-object frames
    of ``--refit-data``, then add its floor on the ``test`` frames to ``report`` (and write the
    checkpoint with the refitted decoder to ``--refit-out``)."""
    train = one_object_frames(args, args.refit_data, args.refit_sequences)
    config, decoder = test["config"], test["model"].likelihood.decoder
    before = copy.deepcopy(decoder)
    errors, codes = refit_decoder(
        decoder, train["z_what"], train["pixels"], train["b_y"], train["b_x"], config.obs_sd,
        args.refit_steps, lr=args.refit_lr, generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    window = max(1, min(250, len(errors) // 10))
    report["refit"] = {
        "data": str(args.refit_data),
        "sequences": train["sequences"],
        "frames": len(train["pixels"]),
        "steps": args.refit_steps,
        "lr": args.refit_lr,
        "model_error": float(train["model_error"].mean()),
        "error_first_steps": float(np.mean(errors[:window])),
        "error_last_steps": float(np.mean(errors[-window:])),
    }
    report["decoder_floor_refitted"] = decoder_floor(decoder, test, args.what_iterations)
    if args.encoder_steps:
        report["amortised"] = amortised_errors(args, train, test, before, decoder, codes)
    if args.refit_out:
        _, model, guide, source = load_checkpoint(args.checkpoint)
        extra = {key: source[key] for key in ("step", "elapsed_s") if key in source}
        model.likelihood.decoder.load_state_dict(decoder.state_dict())
        save_checkpoint(args.refit_out, config, model, guide, **extra)
        report["refit"]["checkpoint"] = str(args.refit_out)


def amortised_errors(
    args: argparse.Namespace,
    train: dict[str, Any],
    test: dict[str, Any],
    decoder: torch.nn.Module,
    refitted: torch.nn.Module,
    codes: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """Can an encoder give the refitted codes? Two MLPs (:func:`fit_encoder`,
    ``--encoder-steps`` minibatches) learn to read codes from the training frames' glimpses:
    one the guide's z_what means (drawn by ``decoder``, the model's own), one the refitted
    ``codes`` (drawn by ``refitted``). Returns each one's mean squared error a frame when
    drawing from its codes, on the training and the held-out ``test`` frames."""
    generator = torch.Generator().manual_seed(args.seed)
    config = train["config"]
    splits = {"train": train, "test": test}
    glimpses = {  # what the guide's glimpse encoder reads through each window, flattened
        split: glimpse(frames["pixels"].float(), frames["windows"].float(),
                       tuple(config.glimpse_size)).flatten(1)
        for split, frames in splits.items()
    }  # fmt: skip
    report = {}
    for name, targets, draw in (
        ("guide_codes", train["z_what"].float(), decoder),
        ("refitted_codes", codes, refitted),
    ):
        encoder = fit_encoder(
            glimpses["train"], targets, config.hidden, args.encoder_steps, generator=generator
        )
        with torch.no_grad():
            report[name] = {
                split: float(drawing_error(draw, encoder(glimpses[split]), frames["pixels"],
                                           frames["b_y"], frames["b_x"]).mean())
                for split, frames in splits.items()
            }  # fmt: skip
    return report


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
    parser.add_argument(
        "--refit-steps",
        type=non_negative_int,
        default=0,
        help="minibatches of the decoder's refit with free codes (0: no refit)",
    )
    parser.add_argument(
        "--refit-data",
        type=Path,
        default=Path("data/mm/train.npz"),
        help="the frames the decoder is refitted to (with boxes and visibility)",
    )
    parser.add_argument(
        "--refit-sequences", type=positive_int, default=6000, help="its first N sequences"
    )
    parser.add_argument(
        "--refit-lr", type=positive_float, default=1e-4, help="the decoder's Adam rate"
    )
    parser.add_argument(
        "--refit-out", type=Path, help="write the checkpoint with the refitted decoder here"
    )
    parser.add_argument(
        "--encoder-steps",
        type=non_negative_int,
        default=0,
        help="after the refit, minibatches of the amortised encoders (0: none)",
    )
    args = parse_checked(parser, argv)
    if args.refit_steps and not args.refit_data.is_file():
        parser.error(f"--refit-data {args.refit_data}: no such file")
    if (args.refit_out or args.encoder_steps) and not args.refit_steps:
        parser.error("--refit-out and --encoder-steps need --refit-steps")
    if args.refit_out and (
        args.refit_out.is_dir()
        or (args.refit_out.exists() and args.refit_out.samefile(args.checkpoint))
    ):
        parser.error(f"--refit-out {args.refit_out}: a directory or the checkpoint itself")
    if Config.from_dict(read_checkpoint(args.checkpoint)["config"]).centre_glimpses:
        raise ValueError(
            f"{args.checkpoint} draws its glimpses centred (centre_glimpses); the floors "
            "place glimpses through fixed windows, as the paper draws"
        )
    test = one_object_frames(args, args.data, args.sequences)
    config, canvas, pixels = test["config"], test["canvas"], test["pixels"]
    windows, inside, digit_boxes = test["windows"], test["inside"], test["digit_boxes"]
    report: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "sequences": test["sequences"],
        "frames": len(pixels),
        "frames_digit_wholly_in_view": int(inside.sum()),
        "model": float(test["model_error"].mean()),
        "model_digit_wholly_in_view": float(test["model_error"][inside].mean()),
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
    decoder = test["model"].likelihood.decoder.requires_grad_(False)
    report["decoder_floor"] = decoder_floor(decoder, test, args.what_iterations)
    if inside.any():
        truth = boxes_to_z_where(torch.as_tensor(digit_boxes[inside], dtype=torch.float64), canvas)
        size = tuple(config.decoded_glimpse)
        floor = best_glimpse_error(
            pixels[inside], *placement_weights(truth, size, canvas), args.iterations
        )
        report["true_box_floor"] = float(floor.mean())
        window_boxes = z_where_to_boxes(windows[inside], canvas).numpy()
        report["windows"] = window_statistics(window_boxes, digit_boxes[inside])
    if args.refit_steps:
        refitted_floor(args, test, report)
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
