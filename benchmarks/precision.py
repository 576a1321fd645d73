"""bfloat16 against float32: the subpixel glimpse decoders' speed, and what the rounding does
to the log weights.

Two measurements, in one process on ``--threads`` threads:

- ``decoders``: CONV-SQAIR's (20x20) and the pedestrian model's (28x12) subpixel decoders with
  fresh weights, forward and backward on ``--glimpses`` glimpses, in float32 and under mixed
  precision (bfloat16 hidden layers), each with the decoder's channels-last maps and with
  contiguous ones, alternating, ``--repeats`` rounds: seconds of each.
- ``log_weights``: the same latents (one guide draw, replayed) scored in float32 and under
  mixed precision, for ``--checkpoint`` on the first ``--sequences`` sequences of ``--data``
  (``--frames`` frames), ``--particles`` particles: the shift of every log weight, with the
  decoder's output layer in float32 (as trained) and, for comparison, in bfloat16. With
  ``--as PRESET`` the checkpoint's weights are copied into PRESET's programs where names match
  (as ``init_from`` does), e.g. a pedestrian AIR run as the SQAIR it starts.

    .venv/bin/python benchmarks/precision.py \\
        --checkpoint src/sqair_pyro/weights/conv-air-pedestrians.pt --data data/pets/test.npz \\
        --frames 5 --sequences 32 --as conv-sqair-pedestrians
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from functools import partial

import pyro
import pyro.poutine as poutine
import torch
from gradient_terms import checkpoint_parser, load_programs, parse_checked, run_script, write_report

from sqair_pyro.build import build, conv_networks, conv_pedestrian_networks
from sqair_pyro.cli import positive_int
from sqair_pyro.config import preset
from sqair_pyro.data import load_npz
from sqair_pyro.nn.modules import GlimpseDecoderSubpixel
from sqair_pyro.nn.precision import fast_numerics, keep_float32_outputs, matmul_precision
from sqair_pyro.train import make_objective, warm_start


def decode_contiguous(decoder: GlimpseDecoderSubpixel, z_what: torch.Tensor) -> torch.Tensor:
    """The decoder's layers on maps in the default (contiguous) layout instead of its own
    channels-last one: the layout it had before session 18, for comparison."""
    maps = decoder.fc(z_what).reshape(len(z_what), decoder.start_channels, *decoder.start)
    return decoder.intensities(decoder.net[:-1](maps))


def time_decoder(decoder: GlimpseDecoderSubpixel, z_what: torch.Tensor, repeats: int) -> dict:
    """Seconds of a forward and backward pass in float32 and in mixed precision, each in the
    decoder's channels-last layout and in the contiguous one, alternating."""
    keep_float32_outputs(decoder)
    variants = {
        f"{precision}{suffix}": (low, run)
        for precision, low in (("float32", False), ("bfloat16", True))
        for suffix, run in (("", decoder), (" contiguous", partial(decode_contiguous, decoder)))
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats + 1):  # the first round warms up
        for name, (low, run) in variants.items():
            start = time.perf_counter()
            with matmul_precision(low):
                run(z_what).square().sum().backward()
            seconds[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(t[1:]), "each_s": t[1:]} for name, t in seconds.items()
    }


def shift_stats(shift: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation and largest absolute value of the log weights' shifts."""
    return {
        "mean": shift.mean().item(),
        "sd": shift.std().item() if shift.numel() > 1 else 0.0,
        "max_abs": shift.abs().max().item(),
    }


def log_weight_shifts(model, guide, config, images: torch.Tensor, seed: int) -> dict:
    """The log weights of one guide draw under mixed precision minus float32's, with the
    subpixel decoder's output layer in float32 and in bfloat16."""
    keep_float32_outputs(model, guide)
    elbo = make_objective(config)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        _, guide_trace = elbo._traces(model, guide, (images,), {})
    fixed = poutine.replay(guide, trace=guide_trace)

    def log_w(low: bool) -> torch.Tensor:
        with matmul_precision(low), torch.no_grad():
            return elbo.log_weights(model, fixed, images)[0]

    exact = log_w(False)
    report = {
        "log_weight_mean": exact.mean().item(),
        "output_layer_float32": shift_stats(log_w(True) - exact),
    }
    decoder = getattr(getattr(model, "likelihood", None), "decoder", None)
    if isinstance(decoder, GlimpseDecoderSubpixel):
        bare = GlimpseDecoderSubpixel.intensities.__wrapped__  # without full_precision
        decoder.intensities = types.MethodType(bare, decoder)
        try:
            report["output_layer_bfloat16"] = shift_stats(log_w(True) - exact)
        finally:
            del decoder.intensities
    return report


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.split("\n\n")[0])
    parser.set_defaults(checkpoint=None, data=None)
    parser.add_argument("--glimpses", type=positive_int, default=480)
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--sequences", type=positive_int, default=32)
    parser.add_argument("--particles", type=positive_int, default=5)
    parser.add_argument("--as", dest="as_preset", help="run the weights in this preset's programs")
    args = parse_checked(parser, argv)
    if (args.checkpoint is None) != (args.data is None):
        parser.error("--checkpoint and --data go together (log weights of its sequences)")
    torch.set_num_threads(args.threads)
    fast_numerics()  # as training runs
    report: dict = {"threads": args.threads, "glimpses": args.glimpses, "decoders": {}}
    for name, networks in (
        ("conv-sqair", conv_networks),
        ("conv-sqair-pedestrians", conv_pedestrian_networks),
    ):
        torch.manual_seed(args.seed)
        decoder = networks(preset(name))[2]
        z_what = torch.randn(args.glimpses, preset(name).z_what_dim)
        report["decoders"][name] = time_decoder(decoder, z_what, args.repeats)
    if args.checkpoint is not None:
        if args.as_preset:
            pyro.set_rng_seed(args.seed)  # the networks the checkpoint does not hold
            config = preset(args.as_preset)
            model, guide = build(config)
            warm_start(model, guide, args.checkpoint)
        else:
            config, model, guide = load_programs(args)
        config = config.replace(num_particles=args.particles)
        arrays = load_npz(args.data)
        images = torch.from_numpy(arrays["images"][: args.sequences, : args.frames]).float() / 255
        report["log_weights"] = {
            "checkpoint": str(args.checkpoint),
            "as": args.as_preset,
            "data": str(args.data),
            "sequences": len(images),
            "frames": images.shape[1],
            "particles": args.particles,
            **log_weight_shifts(model, guide, config, images, args.seed),
        }
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
