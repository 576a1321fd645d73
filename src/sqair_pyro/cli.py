"""The ``sqair-pyro`` command: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from sqair_pyro.config import CHOICES, PRESETS, preset


def _parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with the value read as a Python literal, else as JSON (``true``,
    ``{"flag": false}``), else as the string itself."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


#: make-data's options of each source, with their defaults: moving MNIST, or a video.
MNIST_OPTIONS = {
    "frames": 10, "min_digits": 0, "max_digits": 2, "canvas": [50, 50], "max_speed": 10.0,
    "max_acceleration": 3.0, "acceleration_noise": 0.01, "train_size": 60000,
    "test_size": 10000,
}  # fmt: skip
VIDEO_OPTIONS = {
    "frames": 5, "resize": [240, 320], "crop": 64, "max_objects": 3, "min_area": 40,
    "every": 1, "train_size": 3150, "test_size": 350,
}  # fmt: skip


def _options(args: argparse.Namespace, chosen: dict, other: dict, source: str) -> dict:
    """The options of one source, defaults filled in; one clear error for another's."""
    for name in set(other) - set(chosen):
        if getattr(args, name) is not None:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to {source}")
    return {
        k: default if getattr(args, k) is None else getattr(args, k)
        for k, default in chosen.items()
    }


def cmd_make_data(args: argparse.Namespace) -> None:
    if args.train_size == args.test_size == 0:
        raise ValueError("nothing to make: --train-size and --test-size are both 0")
    if args.video is not None:
        from sqair_pyro.data.video import VideoDataConfig, make_video_data

        o = _options(args, VIDEO_OPTIONS, MNIST_OPTIONS, "--video")
        config = VideoDataConfig(
            resize=tuple(o["resize"]),
            crop=o["crop"],
            length=o["frames"],
            max_objects=o["max_objects"],
            min_area=o["min_area"],
            every=o["every"],
        )
        train_path, test_path = make_video_data(
            args.video, args.out, o["train_size"], o["test_size"], args.seed, config
        )
        print(f"wrote {train_path} and {test_path} (validation), proxy ground truth")
        return
    from sqair_pyro.data import MovingMNISTConfig, make_data

    o = _options(args, MNIST_OPTIONS, VIDEO_OPTIONS, "moving MNIST (without --video)")
    config = MovingMNISTConfig(
        canvas_size=tuple(o["canvas"]),
        num_frames=o["frames"],
        min_digits=o["min_digits"],
        max_digits=o["max_digits"],
        initial_velocity_bound=o["max_speed"],
        velocity_bound=o["max_speed"],
        initial_acceleration_bound=o["max_acceleration"],
        acceleration_bound=o["max_acceleration"],
        acceleration_noise_std=o["acceleration_noise"],
    )
    train_path, test_path = make_data(
        args.out,
        train_size=o["train_size"],
        test_size=o["test_size"],
        seed=args.seed,
        mnist_dir=args.mnist_dir,
        config=config,
    )
    print(f"wrote {train_path} and {test_path}")


def cmd_track(args: argparse.Namespace) -> None:
    from sqair_pyro.data.video import VideoDataConfig
    from sqair_pyro.track import track_video

    config = VideoDataConfig(resize=tuple(args.resize), every=args.every)
    result = track_video(args.checkpoint, args.video, args.out, config, args.max_frames, args.seed)
    print(
        f"{result['boxes']} boxes of {result['identities']} identities over {result['frames']} "
        f"frames: {result['tracks']} (MOTChallenge format), {result['gif']}"
    )


def cmd_futures(args: argparse.Namespace) -> None:
    from sqair_pyro.show import compare_futures

    path = compare_futures(args.checkpoint, args.data, args.out, args.sequences, args.seed)
    print(f"figure written to {path}")


def cmd_import_frames(args: argparse.Namespace) -> None:
    from sqair_pyro.data.frames import import_frames

    path = import_frames(
        args.source,
        args.out,
        size=tuple(args.size),
        grey=not args.colour,
        length=args.length,
        stride=args.stride,
        every=args.every,
        max_sequences=args.max_sequences,
    )
    print(f"wrote {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from sqair_pyro.train import train

    overrides = dict(args.set or [])
    for key in ("objective", "optimizer", "lr", "num_particles", "batch_size", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.steps is not None:
        overrides["num_steps"] = args.steps
    if args.clip_norm is not None:
        overrides["clip_norm"] = args.clip_norm
    if args.imports:  # .py files by absolute path, so a checkpoint loads from anywhere
        overrides["imports"] = [
            str(Path(m).resolve()) if m.endswith(".py") else m for m in args.imports
        ]
    last = Path(args.out) / "last.pt"
    if args.resume and last.exists() and args.preset is None:
        # Continue with the run's own settings; only how long and how often may change.
        from sqair_pyro.checkpoint import read_checkpoint
        from sqair_pyro.config import Config

        config = Config.from_dict(read_checkpoint(last)["config"]).replace(**overrides)
    elif args.preset is None:
        raise ValueError("--preset is required unless --resume continues OUT/last.pt")
    else:
        config = preset(args.preset, **overrides)
    best = train(config, args.data, args.out, resume=args.resume, device=args.device)
    if os.environ.get("RANK", "0") == "0":  # one line, not one per torchrun process
        print(f"best checkpoint: {best}")


def cmd_demo(args: argparse.Namespace) -> None:
    from sqair_pyro.demo import run_demo

    print(f"demo written to {run_demo(args.out, mnist_dir=args.mnist_dir)}")


def default_checkpoint() -> Path:
    """The best shipped pretrained checkpoint (SQAIR before AIR)."""
    from sqair_pyro import pretrained
    from sqair_pyro.demo import DEMO_MODELS

    for name in DEMO_MODELS:
        if name in pretrained.available():
            return pretrained.pretrained_path(name)
    raise FileNotFoundError("no shipped pretrained checkpoint: pass --checkpoint")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sqair_pyro.evaluate import evaluate_checkpoint, markdown_table, save_report

    checkpoint = args.checkpoint or default_checkpoint()
    report = evaluate_checkpoint(
        checkpoint,
        args.data,
        num_particles=args.particles,
        num_sequences=args.sequences,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        seed=args.seed,
        device=args.device,
        iou_threshold=args.iou_threshold,
        box_mode=args.boxes,
        mixed_precision=args.mixed_precision,
        overrides=dict(args.set or []),
    )
    save_report(report, args.out)
    print(markdown_table([report]))
    print(f"report written to {args.out} ({report['wall_time_s']:.0f} s)")


def cmd_compare(args: argparse.Namespace) -> None:
    from sqair_pyro.evaluate import load_report, markdown_table

    print(markdown_table([load_report(path) for path in args.reports]))


def cmd_show(args: argparse.Namespace) -> None:
    from sqair_pyro.show import show_checkpoint

    paths = show_checkpoint(
        args.checkpoint or default_checkpoint(),
        args.data,
        args.out,
        num_sequences=args.sequences,
        seed=args.seed,
        run_dir=args.run,
        device=args.device,
        num_observed=args.observed,
    )
    print(f"{len(paths)} figures written to {args.out}")


def cmd_addition(args: argparse.Namespace) -> None:
    import json

    from sqair_pyro.addition import addition_checkpoint

    report = addition_checkpoint(
        args.checkpoint or default_checkpoint(),
        args.data,
        num_train=args.train_sequences,
        num_test=args.test_sequences,
        epochs=args.epochs,
        seed=args.seed,
        progress=True,
        features=args.features,
        draws=args.draws,
    )
    print(
        f"addition accuracy {report['accuracy']:.4f} (chance {report['chance']:.4f}, "
        f"train {report['train_accuracy']:.4f}) on {report['num_test_frames']} test frames; "
        f"classifier trained on {report['num_train_frames']} frames for {report['epochs']} epochs"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"report written to {args.out}")


def cmd_forecast(args: argparse.Namespace) -> None:
    from sqair_pyro.evaluate import save_report
    from sqair_pyro.forecast import forecast_checkpoint
    from sqair_pyro.viz import plot_forecast

    if args.out.suffix.lower() == ".png":
        raise ValueError(f"--out {args.out} is the JSON report; its figure goes beside it (.png)")
    report = forecast_checkpoint(
        args.checkpoint or default_checkpoint(),
        args.data,
        args.classifier,
        num_observed=args.observed,
        num_sequences=args.sequences,
        batch_size=args.batch_size,
        match_iou=args.match_iou,
        seed=args.seed,
        latents=args.latents,
    )
    save_report(report, args.out)
    figure = plot_forecast(
        args.out.with_suffix(".png"),
        report,
        title=f"{Path(report['checkpoint']).name} (step {report['checkpoint_step']}): sees "
        f"{report['num_observed']} frames, imagines the rest ({report['num_sequences']} sequences, "
        f"latents {'at their means' if report['latents'] == 'mean' else 'drawn'})",
    )
    for h, kept, ceiling, dist, stay, cv in zip(
        report["horizons"],
        report["imagined_kept"],
        report["reconstructed_kept"],
        report["distance_imagined"],
        report["distance_stay"],
        report["distance_constant_velocity"],
        strict=True,
    ):
        print(
            f"h={h}: class kept {_fmt(kept, 3)} (reconstructed {_fmt(ceiling, 3)}); centre "
            f"distance {_fmt(dist, 2)} px (stay {_fmt(stay, 2)}, constant velocity {_fmt(cv, 2)})"
        )
    print(f"report written to {args.out}, figure to {figure}")


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cmd_train_digits(args: argparse.Namespace) -> None:
    from sqair_pyro.data.mnist import load_mnist
    from sqair_pyro.digits import save_classifier, train_digit_classifier

    train = load_mnist("train", args.mnist_dir)
    test = load_mnist("test", args.mnist_dir)
    classifier, report = train_digit_classifier(train, test, epochs=args.epochs, seed=args.seed)
    save_classifier(classifier, report, args.out)
    print(
        f"test accuracy {report['test_accuracy_central']:.4f} (random glimpse-like views "
        f"{report['test_accuracy_random_views']:.4f}); written to {args.out}"
    )


def _run_spec(text: str) -> tuple[Path, float]:
    path, sep, hours = text.partition(":")
    try:
        before = float(hours) if sep else 0.0
    except ValueError:
        before = math.nan
    if not 0 <= before < math.inf:
        raise argparse.ArgumentTypeError(
            f"expected RUN_DIR[:HOURS_BEFORE] with HOURS_BEFORE a finite number >= 0, got {text!r}"
        )
    return Path(path), before


def cmd_export_weights(args: argparse.Namespace) -> None:
    from sqair_pyro.checkpoint import export_weights

    out = export_weights(args.checkpoint, args.out)
    mib = 2**20
    print(
        f"wrote {out}: weights only, {out.stat().st_size / mib:.1f} MiB "
        f"(the checkpoint: {args.checkpoint.stat().st_size / mib:.1f} MiB)"
    )


def cmd_curves(args: argparse.Namespace) -> None:
    import numpy as np

    from sqair_pyro.show import read_metrics
    from sqair_pyro.viz import plot_runs

    runs = []
    for path, before in args.runs:
        metrics = path / "metrics.csv" if path.is_dir() else path
        train, validation = read_metrics(metrics)
        logged = [validation.get("val"), train.get("counting_accuracy"), train.get("bound")]
        if not any(column is not None and np.isfinite(column).any() for column in logged):
            raise ValueError(f"{metrics} holds no logged bound or counting accuracy yet")
        # The run directory's name; a CSV's own name unless it is a run's metrics.csv.
        label = metrics.parent.name if metrics.name == "metrics.csv" else metrics.stem
        runs.append((label, train, validation, before))
        if len(validation.get("val", [])):
            best = int(np.nanargmax(validation["val"]))
            print(
                f"{label}: best validation bound {validation['val'][best]:.1f} at step "
                f"{validation['step'][best]:.0f}, "
                f"{before + validation['wall_s'][best] / 3600:.2f} CPU-hours"
            )
    print(f"figure written to {plot_runs(args.out, runs, args.title)}")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def check_device(device: str) -> None:
    """One clear error for a device this machine does not have."""
    import torch

    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda[:N]")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"no CUDA device on this machine (--device {device}); use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"no device {device}: this machine has {torch.cuda.device_count()}")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


#: The largest frame side (pixels) a command resizes to; beyond it OpenCV and memory give out.
MAX_SIDE = 8192


def _side(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer up to {MAX_SIDE} (pixels), got {text}"
        )
    return value


#: Seeds go to NumPy, whose generators take 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    """An argparse type: a seed NumPy takes (0 to 2**32 - 1)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SEED}, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in (0, 1] from the command line (argparse ``type``)."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def check_output(args: argparse.Namespace) -> None:
    """A command's ``--out`` checked before its work: a folder it can create and write in, or
    a file (not a folder) in one (:mod:`sqair_pyro.outputs`)."""
    from sqair_pyro.outputs import output_dir, output_file

    out = getattr(args, "out", None)
    if out is not None:
        (output_dir if args.out_kind == "dir" else output_file)(out)


class OneLineParser(argparse.ArgumentParser):
    """argparse with bad arguments said in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sqair-pyro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "make-data",
        help="moving multi-MNIST, or with --video a real video as the paper's pedestrian data "
        "(train.npz, test.npz)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-size", type=non_negative_int, help="sequences (60000; video: 3150)")
    p.add_argument("--test-size", type=non_negative_int, help="sequences (10000; video: 350)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--frames", type=positive_int, help="frames per sequence (10; video: 5)")
    p.add_argument("--mnist-dir", type=Path, help="directory with the four MNIST IDX files")
    p.add_argument("--min-digits", type=non_negative_int, help="fewest digits (0)")
    p.add_argument("--max-digits", type=non_negative_int, help="most digits (2)")
    p.add_argument("--canvas", type=_side, nargs=2, metavar=("H", "W"), help="(50 50)")
    p.add_argument("--max-speed", type=_non_negative_float, help="pixels per frame per axis (10)")
    p.add_argument("--max-acceleration", type=_non_negative_float, help="pixels/frame^2 (3)")
    p.add_argument("--acceleration-noise", type=_non_negative_float, help="its std (0.01)")
    p.add_argument(
        "--video",
        type=Path,
        help="a static-camera video OpenCV reads (or a folder of frames): background "
        "subtraction, crops and proxy ground truth (sqair_pyro.data.video)",
    )
    p.add_argument("--resize", type=_side, nargs=2, metavar=("H", "W"), help="(240 320)")
    p.add_argument("--crop", type=positive_int, help="crop side in pixels (64)")
    p.add_argument("--max-objects", type=positive_int, help="per frame of a sequence (3)")
    p.add_argument("--min-area", type=positive_int, help="pixels of a proxy object (40)")
    p.add_argument("--every", type=positive_int, help="keep every n-th frame (1)")
    p.set_defaults(func=cmd_make_data, out_kind="dir")

    p = sub.add_parser(
        "futures", help="imagined futures of several models side by side (paper App. G)"
    )
    p.add_argument("--checkpoint", type=Path, action="append", required=True, help="repeat")
    p.add_argument(
        "--data", type=Path, required=True, help="data file (.npz), or a directory: its test.npz"
    )
    p.add_argument("--out", type=Path, required=True, help="figure (.png)")
    p.add_argument("--sequences", type=positive_int, default=3)
    p.add_argument("--seed", type=seed_int, default=0)
    p.set_defaults(func=cmd_futures, out_kind="file")

    p = sub.add_parser(
        "track",
        help="a model's tracks over a whole video: MOTChallenge text file and annotated GIF",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a model of real-video crops")
    p.add_argument("--video", type=Path, required=True, help="a video file or folder of frames")
    p.add_argument("--out", type=Path, required=True, help="directory for tracks.txt, tracks.gif")
    p.add_argument(
        "--resize", type=_side, nargs=2, default=[240, 320], metavar=("H", "W"),
        help="as the model's training data were made (make-data --video)",
    )  # fmt: skip
    p.add_argument("--every", type=positive_int, default=1, help="keep every n-th frame")
    p.add_argument("--max-frames", type=positive_int, help="only the first frames")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: default)")
    p.set_defaults(func=cmd_track, out_kind="dir")

    p = sub.add_parser(
        "import-frames",
        help="a video file or a folder of images as a data file (frames only, no ground truth)",
    )
    p.add_argument("source", type=Path, help="a video OpenCV reads, or a folder of images")
    p.add_argument("--out", type=Path, required=True, help="data file to write (.npz)")
    p.add_argument(
        "--size", type=_side, nargs=2, default=[50, 50], metavar=("H", "W"), help="resize to"
    )
    p.add_argument("--colour", action="store_true", help="keep colour (default: grey)")
    p.add_argument("--length", type=positive_int, default=10, help="frames per sequence (T)")
    p.add_argument(
        "--stride", type=positive_int, help="frames between sequence starts (default: --length)"
    )
    p.add_argument("--every", type=positive_int, default=1, help="keep every n-th frame")
    p.add_argument("--max-sequences", type=positive_int, help="stop after this many sequences")
    p.set_defaults(func=cmd_import_frames, out_kind="file")

    p = sub.add_parser("train", help="train a model with SVI")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="model and settings (optional with --resume: the run's own are used)",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="training data file (.npz), or a directory: its train.npz",
    )
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.add_argument("--steps", type=positive_int, help="train to this step (total)")
    p.add_argument("--objective", choices=CHOICES["objective"])
    p.add_argument("--optimizer", choices=CHOICES["optimizer"])
    p.add_argument("--lr", type=float)
    p.add_argument("--clip-norm", type=float)
    p.add_argument("--particles", dest="num_particles", type=int, help="K per datum")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=seed_int)
    p.add_argument(
        "--set",
        type=_parse_override,
        action="append",
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set curriculum_every=500 or "
        "--set model.discovery_prior=geometric",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="a module (name or .py file) that registers components of your own",
    )
    p.set_defaults(func=cmd_train, out_kind="dir")

    p = sub.add_parser("demo", help="the main job: data, model, figures")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--mnist-dir", type=Path)
    p.set_defaults(func=cmd_demo, out_kind="dir")

    p = sub.add_parser(
        "evaluate",
        help="log p(x) (IWAE, K particles), log p(x|z), KL, counting and tracking metrics",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint to evaluate (default: the best shipped pretrained model)",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="data file (.npz), or a directory: its test.npz"
    )
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    p.add_argument(
        "--particles", type=positive_int, default=1000, help="K of the IWAE bound (paper: 1000)"
    )
    p.add_argument(
        "--sequences", type=positive_int, help="evaluate the first N sequences (default: all)"
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=10, help="sequences per batch")
    p.add_argument("--chunk-size", type=positive_int, default=100, help="particles drawn at once")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.add_argument(
        "--iou-threshold", type=unit_interval, default=0.5, help="IoU of a match (MOTA, IDF1)"
    )
    p.add_argument(
        "--boxes",
        choices=["content", "window"],
        default="content",
        help="predicted boxes: the z_where glimpse windows, or tight around each object's "
        "drawn pixels",
    )
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="log p(x) with bfloat16 matrix products (densities stay float32): 1.44x faster "
        "for MLP-SQAIR on a CPU, its mean 0.2 nat apart",
    )
    p.add_argument(
        "--set",
        type=_parse_override,
        action="append",
        metavar="KEY=VALUE",
        help="change a config field before the programs are built around the trained "
        "weights, e.g. --set discovery_aligns_window=2 (an option switched on untrained)",
    )
    p.set_defaults(func=cmd_evaluate, out_kind="file")

    p = sub.add_parser(
        "compare",
        help="one Markdown table of evaluation (and addition) reports and the paper's Table 1",
    )
    p.add_argument("reports", type=Path, nargs="+", metavar="REPORT.json")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "show",
        help="figures and GIFs: reconstructions, glimpses, prior samples, conditional "
        "generation, training curves",
    )
    p.add_argument("--checkpoint", type=Path, help="default: the best shipped pretrained model")
    p.add_argument(
        "--data", type=Path, required=True, help="data file (.npz), or a directory: its test.npz"
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the figures")
    p.add_argument(
        "--sequences", type=positive_int, default=4, help="sequences (and prior samples) shown"
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument(
        "--run", type=Path, help="run directory with metrics.csv (default: the checkpoint's)"
    )
    p.add_argument(
        "--observed",
        type=positive_int,
        default=3,
        help="frames the conditional generation sees before it imagines the rest",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.set_defaults(func=cmd_show, out_kind="dir")

    p = sub.add_parser(
        "addition", help="the paper's addition probe: digit sums from the latents (App. D.4)"
    )
    p.add_argument("--checkpoint", type=Path, help="default: the best shipped pretrained model")
    p.add_argument("--data", type=Path, required=True, help="directory with train.npz and test.npz")
    p.add_argument(
        "--train-sequences", type=positive_int, default=2000, help="first N of train.npz"
    )
    p.add_argument("--test-sequences", type=positive_int, default=500, help="first N of test.npz")
    p.add_argument("--epochs", type=positive_int, default=20, help="classifier epochs")
    p.add_argument(
        "--features",
        choices=["sample", "mean"],
        default="sample",
        help="z_what drawn (the paper's probe) or at its posterior mean",
    )
    p.add_argument(
        "--draws",
        type=positive_int,
        default=1,
        help="posterior draws of each training frame; epoch e trains on draw e mod DRAWS",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", type=Path, help="also write the report as JSON")
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.set_defaults(func=cmd_addition, out_kind="file")

    p = sub.add_parser(
        "forecast",
        help="conditional generation, measured: digit class kept and motion error of "
        "imagined objects at each horizon",
    )
    p.add_argument("--checkpoint", type=Path, help="default: the best shipped pretrained model")
    p.add_argument(
        "--data", type=Path, required=True, help="data file (.npz), or a directory: its test.npz"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON report (figure beside it, .png)")
    p.add_argument("--observed", type=positive_int, default=3, help="frames seen (paper: 3)")
    p.add_argument("--sequences", type=positive_int, help="the first N sequences (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument(
        "--match-iou", type=unit_interval, default=0.5, help="IoU to match objects to digits"
    )
    p.add_argument("--classifier", type=Path, help="digit classifier (default: the shipped one)")
    p.add_argument(
        "--latents",
        choices=("sample", "mean"),
        default="sample",
        help="draw the continuous latents (the paper's figures) or take their means",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.set_defaults(func=cmd_forecast, out_kind="file")

    p = sub.add_parser(
        "curves", help="validation bound and counting of several runs against CPU-hours"
    )
    p.add_argument(
        "runs",
        type=_run_spec,
        nargs="+",
        metavar="RUN_DIR[:HOURS_BEFORE]",
        help="a run directory (or its metrics.csv), with the CPU-hours its first weights "
        "already had",
    )
    p.add_argument("--out", type=Path, required=True, help="figure (.png)")
    p.add_argument("--title")
    p.set_defaults(func=cmd_curves, out_kind="file")

    p = sub.add_parser(
        "export-weights",
        help="a checkpoint's weights without its optimiser state: the file to share or commit",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a run's last.pt or best.pt")
    p.add_argument("--out", type=Path, required=True, help="weights file (.pt)")
    p.set_defaults(func=cmd_export_weights, out_kind="file")

    p = sub.add_parser(
        "train-digits", help="train the MNIST digit classifier that judges imagined glimpses"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=positive_int, default=6)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--mnist-dir", type=Path, help="directory with the four MNIST IDX files")
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)"
    )
    p.set_defaults(func=cmd_train_digits, out_kind="file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sqair_pyro.errors import command_errors, one_line
    from sqair_pyro.train import TrainingDivergedError, TrainingInterruptedError

    try:
        if hasattr(args, "device"):
            check_device(args.device)
        check_output(args)
        if getattr(args, "threads", 0):
            import torch

            torch.set_num_threads(args.threads)
        from sqair_pyro.nn.precision import fast_numerics

        fast_numerics()  # every command computes as training does
        args.func(args)
    except (*command_errors(), TrainingDivergedError) as error:
        print(f"sqair-pyro {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except TrainingInterruptedError as stopped:
        print(f"sqair-pyro {args.command}: {stopped}", file=sys.stderr)
        return 128 + stopped.signal
    except KeyboardInterrupt:
        print(f"sqair-pyro {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
