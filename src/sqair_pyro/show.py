"""``sqair-pyro show``: figures and animations that make a trained model's behaviour obvious.

From a checkpoint and a data file, :func:`write_figures` draws

1. ``reconstructions.png`` / ``.gif``: inputs above reconstructions, glimpse boxes coloured by
   object identity (paper Fig. 4, 12). AIR infers every frame alone: every object is new.
   A model without objects (a VRNN) shows frames only.
2. ``glimpses.png``: the decoded glimpse of every object over time (paper Fig. 7), for a model
   of objects with a temporal prior (SQAIR).
3. ``prior_samples.png`` / ``.gif``: sequences sampled from the prior (paper Fig. 5, 14); for
   AIR, independent single-frame samples, those with objects first.
4. ``conditional_generation.png`` / ``.gif``: the model sees the first frames and imagines the
   rest, beside the real continuation (paper Fig. 6, 16), for a model with a temporal prior
   (SQAIR, the VRNN).
5. ``training_curves.png``: bound, counting accuracy, objects and validation bound of the run's
   ``metrics.csv``, when there is one.

The data each figure shows is computed by a function of its own (:func:`reconstruction_data`,
:func:`glimpse_data`, :func:`prior_data`, :func:`conditional_data`, :func:`read_metrics`),
deterministic for a seed; :func:`figure_data` runs them all.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import nn

from sqair_pyro.config import Config
from sqair_pyro.data import check_frames
from sqair_pyro.predict import boxes_and_ids, imagine, reconstruct

__all__ = [
    "FIGURES",
    "conditional_data",
    "figure_data",
    "glimpse_data",
    "prior_data",
    "read_metrics",
    "reconstruction_data",
    "select_sequences",
    "show_checkpoint",
    "write_figures",
]

#: Every file :func:`write_figures` can write; the SQAIR-only ones are skipped for AIR.
FIGURES = (
    "reconstructions.png",
    "reconstructions.gif",
    "glimpses.png",
    "prior_samples.png",
    "prior_samples.gif",
    "conditional_generation.png",
    "conditional_generation.gif",
    "training_curves.png",
)
#: The figures a model without a temporal prior (AIR) does not get.
TEMPORAL_ONLY = ("glimpses.png", "conditional_generation.png", "conditional_generation.gif")

#: Frames the model sees before it imagines the rest (as in the paper's Fig. 6).
NUM_OBSERVED = 3


def select_sequences(arrays: Mapping[str, np.ndarray], num_sequences: int, seed: int) -> list[int]:
    """``num_sequences`` sequence indices drawn with ``seed``, sorted; sequences that show at
    least one digit are preferred (empty ones only if there are too few others)."""
    if int(num_sequences) != num_sequences or num_sequences < 1:
        raise ValueError(f"the number of sequences must be a positive integer, got {num_sequences}")
    total = len(arrays["images"])
    if "counts" in arrays:
        busy = np.flatnonzero(np.asarray(arrays["counts"]).sum(-1) > 0)
    else:
        busy = np.arange(total)
    rest = np.setdiff1d(np.arange(total), busy)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(busy), rng.permutation(rest)])
    return sorted(int(i) for i in order[: int(num_sequences)])


def _device(model: nn.Module) -> torch.device:
    """Where the model's parameters are (its inputs go there)."""
    return next(model.parameters()).device


def _images(arrays: Mapping[str, np.ndarray], indices: list[int]) -> torch.Tensor:
    frames = np.ascontiguousarray(arrays["images"][indices])
    return torch.from_numpy(frames).float() / 255.0


def _at(values: np.ndarray | None, index: int | tuple[int, ...]) -> np.ndarray | None:
    """``values[index]``, or None for a model without objects (no boxes, no ids)."""
    return None if values is None else values[index]


def _pick(values: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: values[key] for key in keys}


def _numpy(latents: Mapping[str, torch.Tensor | None]) -> dict[str, np.ndarray | None]:
    return {k: None if v is None else v.detach().cpu().numpy() for k, v in latents.items()}


@torch.no_grad()
def reconstruction_data(
    model: nn.Module, guide: nn.Module, config: Config, images: torch.Tensor, seed: int = 0
) -> dict[str, np.ndarray]:
    """One posterior sample of ``images`` (S, T, H, W) in [0, 1] and its reconstruction.

    :returns: numpy ``images``, ``canvas`` (S, T, H, W); ``boxes`` (S, T, N, 4) pixel boxes;
        ``ids`` (S, T, N) identities, -1 where absent (AIR: the slot index, every frame
        inferred alone); ``z_pres`` (S, T, N, 1), ``z_where``, ``z_what`` (S, T, N, .).
    """
    pyro.set_rng_seed(seed)
    height, width = images.shape[-2:]
    latents = reconstruct(model, guide, images)
    out = {"canvas": latents["canvas"].clamp(0, 1), **_objects(latents, (height, width))}
    return _numpy({"images": images, **out})


def _objects(latents: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> dict:
    """``boxes``, ``ids`` and the object latents of a model of objects; ``boxes`` and ``ids``
    None for one without (a VRNN), whose figures then show frames only."""
    if "z_pres" not in latents:
        return {"boxes": None, "ids": None}
    boxes, ids = boxes_and_ids(dict(latents), image_size)
    return {"boxes": boxes, "ids": ids, **{k: latents[k] for k in ("z_pres", "z_where", "z_what")}}


@torch.no_grad()
def glimpse_data(
    model: nn.Module, recon: Mapping[str, np.ndarray], max_objects: int | None = 6
) -> list[list[tuple[int, np.ndarray, np.ndarray]]]:
    """The decoded glimpse of every object of every sequence over time (paper Fig. 7).

    :param recon: :func:`reconstruction_data` of a SQAIR model (identities across frames).
    :param max_objects: per sequence, keep the objects present in the most frames (ties: the
        earliest identity); None keeps all.
    :returns: per sequence, a list of ``(identity, glimpses (T, h, w), present (T,))`` in
        identity order; glimpses are ``model.likelihood.decoder(z_what)``, zeros where absent.
    """
    z_what = torch.as_tensor(recon["z_what"], device=_device(model))
    decoded = model.likelihood.decoder(z_what).cpu().numpy()  # (S, T, N, h, w)
    ids = np.asarray(recon["ids"])  # (S, T, N)
    result = []
    for s in range(ids.shape[0]):
        identities = [int(i) for i in np.unique(ids[s]) if i >= 0]
        if max_objects is not None and len(identities) > max_objects:
            frames_present = {i: int((ids[s] == i).any(-1).sum()) for i in identities}
            identities = sorted(identities, key=lambda i: (-frames_present[i], i))
            identities = sorted(identities[:max_objects])
        objects = []
        for identity in identities:
            mask = ids[s] == identity  # (T, N): at most one slot per frame
            present = mask.any(-1)
            slot = mask.argmax(-1)
            glimpses = decoded[s, np.arange(ids.shape[1]), slot] * present[:, None, None]
            objects.append((identity, glimpses.astype(np.float32), present))
        result.append(objects)
    return result


#: A model without a temporal prior (AIR) draws its prior frames this many times over, to
#: show those with objects.
AIR_PRIOR_DRAWS = 20


@torch.no_grad()
def prior_data(
    model: nn.Module, config: Config, num_samples: int, num_frames: int, seed: int = 0
) -> dict[str, Any]:
    """Samples from the prior: ``canvas`` (S, T, H, W), ``boxes`` (S, T, N, 4), ``ids``.

    SQAIR samples ``num_samples`` sequences of ``num_frames`` frames. AIR, which has no time,
    draws :data:`AIR_PRIOR_DRAWS` times ``num_samples * num_frames`` independent images and
    shows those that hold an object first (a sparse discovery prior leaves most draws empty);
    ``with_objects`` is the fraction of all draws (frames, for SQAIR) that hold an object.
    """
    pyro.set_rng_seed(seed)
    temporal = getattr(model, "temporal", False)
    draws = 1 if temporal else AIR_PRIOR_DRAWS
    latents = model(None, num_frames=num_frames, batch_size=num_samples * draws)
    objects = _objects(latents, config.image_size)
    if objects["ids"] is None:  # no objects to show first: the first samples
        canvas = latents["canvas"][:num_samples].clamp(0, 1)
        return {**_numpy({"canvas": canvas}), "boxes": None, "ids": None, "with_objects": None}
    boxes, ids = objects["boxes"], objects["ids"]
    out = {"canvas": latents["canvas"].clamp(0, 1), "boxes": boxes, "ids": ids}
    has_objects = (ids >= 0).any(-1)
    fraction = float(has_objects.float().mean())
    if not temporal:  # independent frames: those with objects first
        frames = {k: v.flatten(0, 1) for k, v in out.items()}
        first = torch.argsort((~has_objects.flatten()).int(), stable=True)
        first = first[: num_samples * num_frames]
        out = {k: v[first].unflatten(0, (num_samples, num_frames)) for k, v in frames.items()}
    return {**_numpy(out), "with_objects": fraction}


@torch.no_grad()
def conditional_data(
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    num_observed: int = NUM_OBSERVED,
    num_samples: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Conditional generation (SQAIR): see the first ``num_observed`` frames, imagine the rest.

    :param images: (B, T, H, W) real sequences; their first frames are shown to the guide.
    :returns: ``real`` (B, T, H, W); ``canvas`` (K, B, T, H, W), ``boxes`` (K, B, T, N, 4)
        and ``ids`` (K, B, T, N) of ``K = num_samples`` futures (frames before
        ``num_observed`` are reconstructions); ``num_observed``.
    """
    num_frames = images.shape[1]
    if not 0 < num_observed < num_frames:
        raise ValueError(
            f"conditional generation needs 0 < observed frames ({num_observed}) < {num_frames}"
        )
    pyro.set_rng_seed(seed)
    out = imagine(model, guide, images[:, :num_observed], num_frames - num_observed, num_samples)
    objects = _objects(out, tuple(images.shape[-2:]))
    data = _numpy(
        {"real": images, "canvas": out["canvas"].clamp(0, 1), **_pick(objects, "boxes", "ids")}
    )
    data["num_observed"] = num_observed
    return data


def figure_data(
    model: nn.Module,
    guide: nn.Module,
    config: Config,
    arrays: Mapping[str, np.ndarray],
    num_sequences: int = 4,
    seed: int = 0,
    num_imagined: int = 3,
    num_observed: int = NUM_OBSERVED,
) -> dict[str, Any]:
    """Everything the model-dependent figures show, deterministic for ``seed``.

    :returns: ``indices`` (the sequences shown), ``reconstruction``, ``glimpses`` (SQAIR; None
        for AIR), ``prior`` and ``conditional`` (SQAIR with more than ``num_observed`` frames,
        which it sees before imagining the rest; else None).
    """
    check_frames(arrays["images"], config.image_size)
    indices = select_sequences(arrays, num_sequences, seed)
    images = _images(arrays, indices).to(_device(model))  # the models' device
    num_frames = images.shape[1]
    temporal = getattr(model, "temporal", False)
    recon = reconstruction_data(model, guide, config, images, seed)
    data: dict[str, Any] = {
        "indices": indices,
        "reconstruction": recon,
        # Glimpses over time need objects with identities across frames.
        "glimpses": glimpse_data(model, recon) if temporal and recon["ids"] is not None else None,
        "prior": prior_data(model, config, len(indices), num_frames, seed),
        "conditional": None,
    }
    if temporal and num_frames > num_observed:
        data["conditional"] = conditional_data(
            model, guide, images, num_observed, num_imagined, seed
        )
    return data


def read_metrics(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The training and validation rows of a run's ``metrics.csv`` as float columns.

    Empty cells are NaN. ``wall_s`` is the cumulative wall time: a resumed run restarts its
    ``time_s`` clock, so each restart continues from where the previous one stopped. A step
    logged twice (rows between the last checkpoint and an interruption, then again after
    resuming) keeps its last row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a training metrics file (not CSV text: {error})") from None
    if "step" not in (reader.fieldnames or []):
        raise ValueError(f"{path} is not a training metrics file (no 'step' column)")

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    train: dict[float, dict[str, float]] = {}
    validation: dict[float, dict[str, float]] = {}
    offset, previous = 0.0, 0.0
    for row in rows:
        values = {key: number(value) for key, value in row.items() if key is not None}
        if not math.isfinite(values.get("step", math.nan)):
            continue
        time_s = values.get("time_s", math.nan)
        if math.isfinite(time_s):
            if time_s < previous:  # a resumed run: its clock starts again
                offset += previous
            previous = time_s
            values["wall_s"] = offset + time_s
        else:
            values["wall_s"] = math.nan
        is_validation = math.isfinite(values.get("val", math.nan))
        (validation if is_validation else train)[values["step"]] = values

    def columns(table: dict[float, dict[str, float]]) -> dict[str, np.ndarray]:
        steps = sorted(table)
        keys = sorted({key for row in table.values() for key in row})
        return {
            key: np.array([table[s].get(key, math.nan) for s in steps], dtype=float) for key in keys
        }

    return columns(train), columns(validation)


def _note(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def write_figures(
    model: nn.Module,
    guide: nn.Module,
    config: Config,
    arrays: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike,
    num_sequences: int = 4,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    num_observed: int = NUM_OBSERVED,
) -> list[Path]:
    """Write the figures of the module docstring into ``out_dir``; returns the written paths.

    :param arrays: a data split as :func:`sqair_pyro.data.load_npz` returns it; frames must be
        the model's ``image_size`` (else ``ValueError``).
    :param run_dir: a training run directory; with a ``metrics.csv`` there, training curves.
    :param num_observed: frames the conditional generation sees before it imagines the rest.
    """
    from sqair_pyro.viz import (
        animate_sequences,
        plot_conditional,
        plot_glimpses,
        plot_sequences,
        plot_training_curves,
    )

    out_dir = Path(out_dir)
    data = figure_data(model, guide, config, arrays, num_sequences, seed, num_observed=num_observed)
    name = config.model_name
    air = not getattr(model, "temporal", False)  # no identities across frames, no futures
    indices = data["indices"]
    written: list[Path] = []

    def wrote(path: Path) -> None:
        written.append(path)
        _note(progress, f"wrote {path}")

    # 1. Reconstructions, boxes coloured by identity.
    recon = data["reconstruction"]
    rows = []
    for s, i in enumerate(indices):
        rows.append((f"seq {i}: input", recon["images"][s], None, None))
        rows.append(
            ("reconstruction", recon["canvas"][s], _at(recon["boxes"], s), _at(recon["ids"], s))
        )
    how = "each frame inferred alone" if air else "box colour = identity"
    wrote(
        plot_sequences(
            out_dir / "reconstructions.png",
            rows,
            title=f"{name}: inputs and reconstructions ({how})",
        )
    )
    panels = [
        [(f"seq {i}", recon["images"][s], None, None) for s, i in enumerate(indices)],
        [
            ("reconstruction", recon["canvas"][s], _at(recon["boxes"], s), _at(recon["ids"], s))
            for s in range(len(indices))
        ],
    ]
    wrote(animate_sequences(out_dir / "reconstructions.gif", panels, title=f"{name}: {how}"))

    # 2. Glimpses over time (SQAIR only).
    if data["glimpses"] is None:
        _note(progress, f"skipped glimpses.png: {name} has no objects kept across frames")
    else:
        sequences = []
        for s, i in enumerate(indices):
            seq_rows = [
                ("input", recon["images"][s], None, None),
                (
                    "reconstruction",
                    recon["canvas"][s],
                    _at(recon["boxes"], s),
                    _at(recon["ids"], s),
                ),
            ]
            sequences.append((f"seq {i}", seq_rows, data["glimpses"][s]))
        wrote(
            plot_glimpses(
                out_dir / "glimpses.png",
                sequences,
                title=f"{name}: reconstructed glimpses of each object over time "
                "(frame colour = identity)",
            )
        )

    # 3. Prior samples.
    prior = data["prior"]
    label = "samples" if air else "sample"
    prior_rows = [
        (f"{label} {s}", prior["canvas"][s], _at(prior["boxes"], s), _at(prior["ids"], s))
        for s in range(len(prior["canvas"]))
    ]
    if prior["ids"] is None:
        prior_title = f"{name}: sequences sampled from the prior"
    elif air:
        prior_title = (
            f"{name}: independent images sampled from the prior (AIR has no time), those with "
            f"objects first; {prior['with_objects']:.1%} of {AIR_PRIOR_DRAWS}x as many draws "
            "hold an object"
        )
    else:
        empty = int((prior["ids"] < 0).all(-1).sum())
        prior_title = (
            f"{name}: sequences sampled from the prior ({empty} of "
            f"{prior['ids'][..., 0].size} frames without objects)"
        )
    wrote(plot_sequences(out_dir / "prior_samples.png", prior_rows, title=prior_title))
    half = (len(prior_rows) + 1) // 2
    panels = [prior_rows[:half], prior_rows[half:]] if len(prior_rows) > 2 else [prior_rows]
    wrote(animate_sequences(out_dir / "prior_samples.gif", panels, title=f"{name}: prior samples"))

    # 4. Conditional generation (SQAIR only).
    cond = data["conditional"]
    if cond is None:
        reason = (
            f"{name} has no temporal prior of objects"
            if air
            else f"needs more than {num_observed} frames"
        )
        _note(progress, f"skipped conditional_generation.png/.gif: {reason}")
    else:
        seen = cond["num_observed"]
        cond_rows = []
        for s, i in enumerate(indices):
            cond_rows.append((f"seq {i}: real", cond["real"][s], None, None))
            for k in range(len(cond["canvas"])):
                cond_rows.append(
                    (
                        f"imagined {k + 1}",
                        cond["canvas"][k, s],
                        _at(cond["boxes"], (k, s)),
                        _at(cond["ids"], (k, s)),
                    )
                )
        cond_title = f"{name}: sees {seen} frames (reconstructed), imagines the rest (red)"
        flags = [not label.endswith(": real") for label, *_ in cond_rows]
        path = out_dir / "conditional_generation.png"
        wrote(plot_conditional(path, cond_rows, seen, cond_title, imagined=flags))
        num_frames = cond["real"].shape[1]
        panels = [
            [(f"seq {i}: real", cond["real"][s], None, None) for s, i in enumerate(indices)],
            *[
                [
                    (
                        f"imagined {k + 1}",
                        cond["canvas"][k, s],
                        _at(cond["boxes"], (k, s)),
                        _at(cond["ids"], (k, s)),
                    )
                    for s in range(len(indices))
                ]
                for k in range(len(cond["canvas"]))
            ],
        ]
        frame_titles = [
            f"t = {t + 1} / {num_frames}: " + ("seen" if t < seen else "IMAGINED")
            for t in range(num_frames)
        ]
        wrote(
            animate_sequences(
                out_dir / "conditional_generation.gif",
                panels,
                title=f"{name}: conditional generation",
                frame_titles=frame_titles,
                imagined=[[r > 0] * len(indices) for r in range(len(panels))],
                num_observed=seen,
            )
        )

    # 5. Training curves.
    metrics = Path(run_dir) / "metrics.csv" if run_dir is not None else None
    curves = None
    if metrics is not None and metrics.is_file():
        try:
            curves = read_metrics(metrics)
        except ValueError as error:
            _note(progress, f"skipped training_curves.png: {error}")
    elif metrics is not None:
        _note(progress, f"skipped training_curves.png: no {metrics}")
    if curves is not None:
        train, validation = curves
        wrote(
            plot_training_curves(
                out_dir / "training_curves.png",
                train,
                validation,
                title=f"{name}, run {Path(run_dir).resolve().name}",
            )
        )
    return written


def show_checkpoint(
    checkpoint: str | os.PathLike,
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_sequences: int = 4,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str = "cpu",
    num_observed: int = NUM_OBSERVED,
) -> list[Path]:
    """:func:`write_figures` for a checkpoint file and a data file (a directory: its test.npz).

    ``run_dir`` defaults to the checkpoint's directory (where training writes metrics.csv,
    if the checkpoint came from a run); one given explicitly must hold a metrics.csv.
    The model runs on ``device``.
    Raises ``CheckpointError``, ``FileNotFoundError`` or ``ValueError`` for bad input.
    """
    from sqair_pyro.checkpoint import load_checkpoint
    from sqair_pyro.data import load_npz, split_file

    if run_dir is not None and not (Path(run_dir) / "metrics.csv").is_file():
        raise FileNotFoundError(f"run {run_dir}: no metrics.csv there (a training run folder)")

    data_path = split_file(data_path, "test")
    config, model, guide, _ = load_checkpoint(checkpoint, map_location=device)
    arrays = load_npz(data_path)
    check_frames(arrays["images"], config.image_size)
    if run_dir is None:
        run_dir = Path(checkpoint).parent
    return write_figures(
        model, guide, config, arrays, out_dir, num_sequences, seed, run_dir, progress, num_observed
    )


def compare_futures(
    checkpoints: list[str | os.PathLike],
    data_path: str | os.PathLike,
    out: str | os.PathLike,
    num_sequences: int = 3,
    seed: int = 0,
) -> Path:
    """The imagined futures of several models on the same test sequences, one row each under
    the real sequence (paper App. G): every model sees the first :data:`NUM_OBSERVED` frames
    and imagines the rest, with the same seed."""
    from sqair_pyro.checkpoint import load_checkpoint
    from sqair_pyro.data import load_npz, split_file
    from sqair_pyro.viz import plot_sequences

    arrays = load_npz(split_file(data_path, "test"))
    indices = select_sequences(arrays, num_sequences, seed)
    images = _images(arrays, indices)
    rows: list[tuple] = []
    futures = []
    for checkpoint in checkpoints:
        config, model, guide, _ = load_checkpoint(checkpoint)
        check_frames(arrays["images"], config.image_size)
        if not getattr(model, "temporal", False):
            raise ValueError(f"{checkpoint}: {config.model_name} cannot imagine futures")
        futures.append((config.model_name, conditional_data(model, guide, images, seed=seed)))
    for s, i in enumerate(indices):
        rows.append((f"seq {i}: real", images[s].numpy(), None, None))
        for name, cond in futures:
            rows.append(
                (name, cond["canvas"][0, s], _at(cond["boxes"], (0, s)), _at(cond["ids"], (0, s)))
            )
    title = f"sees {NUM_OBSERVED} frames, imagines the rest: " + " vs ".join(n for n, _ in futures)
    return plot_sequences(out, rows, title=title)
