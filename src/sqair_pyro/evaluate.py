"""Evaluation on a moving-MNIST split: the paper's Table 1 metrics and tracking metrics.

Every number is *per sequence* of the data file's length ``T`` (the paper's ``T = 10``), so
AIR, which sees every frame as an independent image, is summed over the ``T`` frames of each
sequence before averaging:

- ``log_px``: ``log p(x_{1:T})`` as the importance-weighted bound with ``K = num_particles``
  (:func:`sqair_pyro.infer.estimate_log_px`, chunked); a lower bound, tight as ``K`` grows.
- ``log_px_given_z`` and ``kl``: one posterior sample ``z ~ q(z | x)`` per sequence gives
  ``log p(x | z)`` (the observed site) and ``log q(z | x) - log p(z)`` (all latent sites);
  ``log_px_given_z - kl`` is the single-sample ELBO.
- ``counting_accuracy``: per frame, the number of present objects in that posterior sample
  against the number of digits in the sequence (a digit that slid out of view still exists,
  as the paper's code counts); ``counting_accuracy_visible`` against the per-frame count of
  visible digits.
- tracking metrics (:func:`sqair_pyro.tracking.tracking_metrics`) of the sample's boxes and
  identities against the true visible boxes; AIR has no identities, so each of its frames gets
  fresh ones and its identity metrics are poor by construction.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.poutine.util import site_is_subsample
from torch import nn
from tqdm.auto import tqdm

from sqair_pyro.config import Config
from sqair_pyro.data import (
    available,
    check_frames,
    load_npz,
    normalise_arrays,
    read_metadata,
    split_file,
)
from sqair_pyro.infer import estimate_log_px
from sqair_pyro.models.likelihood import drawing_transform
from sqair_pyro.nn.precision import keep_float32_outputs, matmul_precision
from sqair_pyro.nn.spatial_transformer import place
from sqair_pyro.predict import boxes_and_ids, replayed
from sqair_pyro.tracking import new_objects_per_frame, tracking_metrics

__all__ = [
    "PAPER_TABLE1",
    "REPORT_FORMAT",
    "counting_hits",
    "evaluate",
    "evaluate_checkpoint",
    "inferred_counts",
    "load_report",
    "log_px",
    "markdown_table",
    "num_digits",
    "predicted_boxes",
    "save_report",
    "single_sample_terms",
    "site_family",
]

REPORT_FORMAT = "sqair-pyro-evaluation"
#: The ``format`` of the addition probe's reports (:mod:`sqair_pyro.addition`).
ADDITION_FORMAT = "sqair-pyro-addition"
REPORT_VERSION = 1

#: The paper's Table 1 (moving MNIST, T = 10, log p(x) with K = 1000); None: not reported.
PAPER_TABLE1: list[dict[str, Any]] = [
    dict(model="CONV-SQAIR", log_px=6784.8, log_px_given_z=6923.8, kl=134.6,
         counting_accuracy=0.9974, addition=0.9990),
    dict(model="MLP-SQAIR", log_px=6617.6, log_px_given_z=6786.5, kl=164.5,
         counting_accuracy=0.9986, addition=0.9998),
    dict(model="MLP-AIR", log_px=6443.6, log_px_given_z=6830.6, kl=352.6,
         counting_accuracy=0.9058, addition=0.8644),
    dict(model="CONV-VRNN", log_px=6561.9, log_px_given_z=6737.8, kl=270.2,
         counting_accuracy=None, addition=0.8536),
    dict(model="MLP-VRNN", log_px=5959.3, log_px_given_z=6108.7, kl=218.3,
         counting_accuracy=None, addition=None),
]  # fmt: skip

#: What each part of the report needs beyond the frames (skipped when a file lacks it).
USES = {
    "counting accuracy (paper's)": ("labels",),
    "counting accuracy (visible)": ("counts",),
    "tracking metrics": ("boxes", "visible"),
}


# ------------------------------------------------------------------------------ counting


def num_digits(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Digits in each sequence, (S,): the slots with a label (>= 0), visible or not."""
    return (torch.as_tensor(labels) >= 0).sum(-1)


def inferred_counts(z_pres: torch.Tensor) -> torch.Tensor:
    """The number of present objects in each frame, (S, T), of presences (S, T, N, 1)."""
    return z_pres.squeeze(-1).sum(-1).round().long()


def counting_hits(z_pres: torch.Tensor, target: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Whether each frame's number of present objects equals ``target``, (S, T) bools.

    :param z_pres: (S, T, N, 1) presences of one posterior sample.
    :param target: (S, T) per-frame counts, or (S,) one count per sequence (every frame).
    """
    inferred = inferred_counts(z_pres)
    target = torch.as_tensor(target, device=inferred.device).long()
    if target.dim() == 1:
        target = target.unsqueeze(-1)
    return inferred == target.expand_as(inferred)


# ------------------------------------------------------------------------------- boxes


def _span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last true index along the last dim (garbage where none is true)."""
    index = torch.arange(mask.shape[-1], device=mask.device)
    first = torch.where(mask, index, mask.shape[-1]).min(-1).values
    last = torch.where(mask, index, -1).max(-1).values
    return first, last


@torch.no_grad()
def predicted_boxes(
    model: nn.Module,
    latents: dict[str, torch.Tensor],
    image_size: tuple[int, int],
    mode: str = "window",
    threshold: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel boxes ``(x, y, w, h)`` (..., N, 4) of the inferred objects and ids (..., N).

    ``mode="window"``: the glimpse window that ``z_where`` describes
    (:func:`sqair_pyro.predict.boxes_and_ids`); it holds the object with a margin, so it is
    larger than a tight box. ``mode="content"``: the tight box around the pixels where the
    object's own decoded glimpse, drawn alone on the canvas, exceeds ``threshold``; the same
    convention as the data's ground truth (the box of a digit's visible pixels). An object
    that draws no such pixel is not a detection (its id becomes -1). Ids: as
    :func:`~sqair_pyro.predict.boxes_and_ids` (slot index without ``ids``, -1 if absent).
    """
    boxes, ids = boxes_and_ids(latents, image_size)
    if mode == "window":
        return boxes, ids
    if mode != "content":
        raise ValueError(f"unknown box mode {mode!r}; choose 'content' or 'window'")
    likelihood = getattr(model, "likelihood", None)
    if likelihood is None:
        raise ValueError("box mode 'content' needs a model with a likelihood.decoder")
    glimpses = likelihood.decoder(latents["z_what"])  # (..., N, h, w)
    centre = getattr(likelihood, "centre_glimpses", False)
    transform = drawing_transform(glimpses, latents["z_where"], centre)
    drawn = place(glimpses, transform, image_size) > threshold
    rows, cols = drawn.any(-1), drawn.any(-2)  # (..., N, H), (..., N, W)
    y0, y1 = _span(rows)
    x0, x1 = _span(cols)
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=-1).to(boxes.dtype)
    shown = rows.any(-1)
    boxes = torch.where(shown.unsqueeze(-1), boxes, torch.zeros_like(boxes))
    return boxes, torch.where(shown, ids, -1)


# ----------------------------------------------------------------- likelihood and KL


def _per_datum(log_prob: torch.Tensor | float) -> torch.Tensor:
    """A site's log-probability per element of the data plate, which lies at dim -1."""
    log_prob = torch.as_tensor(log_prob)
    if log_prob.dim() > 1:
        log_prob = log_prob.sum(tuple(range(log_prob.dim() - 1)))
    return log_prob


@torch.no_grad()
def single_sample_terms(model: nn.Module, guide: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """One posterior sample per datum: ``log p(x | z)``, ``log q(z|x) - log p(z)``, latents.

    The guide is run once and the model replayed on its sample. Masked and scaled log-probs
    are those Pyro computes (``Trace.compute_log_prob``).

    :param images: the programs' input, e.g. (B, T, H, W).
    :returns: ``log_px_given_z`` and ``kl`` per datum of the data plate ((B,) for SQAIR,
        (B * T,) for AIR, whose data are frames), ``kl_by_site``, the KL's share of each
        site family (:func:`site_family`), which sum to ``kl``, and ``latents``, the model's
        return value (``z_pres``, ``z_where``, ``z_what``, ``canvas``, ``ids``).
    """
    guide_trace, model_trace = replayed(model, guide, images)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    zero = images.new_zeros(())
    log_px_given_z = zero
    kl_by_site: dict[str, torch.Tensor] = {}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = _per_datum(site["log_prob"])
        if site["is_observed"]:
            log_px_given_z = log_px_given_z + lp
        else:
            family = site_family(name)
            kl_by_site[family] = kl_by_site.get(family, zero) - lp
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if name not in model_trace.nodes:
            raise ValueError(f"guide site {name!r} is not in the model")
        family = site_family(name)
        kl_by_site[family] = kl_by_site.get(family, zero) + _per_datum(site["log_prob"])
    kl = sum(kl_by_site.values(), zero)
    shape = torch.broadcast_shapes(log_px_given_z.shape, kl.shape)
    return {
        "log_px_given_z": log_px_given_z.expand(shape),
        "kl": kl.expand(shape),
        "kl_by_site": {family: term.expand(shape) for family, term in kl_by_site.items()},
        "latents": model_trace.nodes["_RETURN"]["value"],
    }


def site_family(name: str) -> str:
    """The family of a sample site: its name without trailing frame and slot indices
    (``z_what_prop_3_1`` -> ``z_what_prop``, ``z_7`` -> ``z``)."""
    return re.sub(r"(_\d+)+$", "", name)


def log_px(
    model: nn.Module,
    guide: nn.Module,
    images: torch.Tensor,
    num_particles: int = 1000,
    chunk_size: int = 100,
    mixed_precision: bool = False,
) -> torch.Tensor:
    """``log p(x)`` per datum (B,) as the IWAE bound with ``num_particles`` (chunked).

    With ``mixed_precision`` the networks' matrix products run in bfloat16 and every density
    and log weight in float32 (:mod:`sqair_pyro.nn.precision`; it registers, once, hooks on
    ``model`` and ``guide`` that return float32 from their layers): on the shipped MLP-SQAIR,
    K=1000 on 100 test sequences, 1.44x faster on one CPU thread and the mean estimate 0.2 nat
    away (docs/results.md, "CONV-SQAIR, session 15").
    """
    if mixed_precision:
        keep_float32_outputs(model, guide)
    with matmul_precision(mixed_precision, images.device):
        return estimate_log_px(
            model,
            guide,
            images,
            num_particles=num_particles,
            chunk_size=chunk_size,
            max_plate_nesting=1,
        )


# ---------------------------------------------------------------------------- evaluate


def _warn_if_more_objects_than_slots(arrays: Mapping[str, np.ndarray], config: Config) -> None:
    """One line on stderr when some frame holds more objects than the model has slots."""
    if "counts" not in arrays:
        return
    most = int(np.max(arrays["counts"])) if np.size(arrays["counts"]) else 0
    if most > config.max_objects:
        share = float(np.mean(np.asarray(arrays["counts"]) > config.max_objects))
        print(
            f"warning: the data have up to {most} objects in a frame but the model has "
            f"{config.max_objects} slots; {share:.1%} of frames cannot be counted right",
            file=sys.stderr,
        )


def _mean_and_se(values: list[torch.Tensor]) -> tuple[float, float]:
    x = torch.cat(values).double()
    se = (x.std() / math.sqrt(x.numel())).item() if x.numel() > 1 else float("nan")
    return x.mean().item(), se


def evaluate(
    model: nn.Module,
    guide: nn.Module,
    config: Config,
    arrays: Mapping[str, np.ndarray] | str | os.PathLike,
    num_particles: int = 1000,
    num_sequences: int | None = None,
    batch_size: int = 10,
    chunk_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    *,
    device: str | torch.device = "cpu",
    iou_threshold: float = 0.5,
    box_mode: str = "content",
    content_threshold: float = 0.1,
    checkpoint: str | None = None,
    data: str | None = None,
    mixed_precision: bool = False,
) -> dict[str, Any]:
    """Evaluate a model and guide on the first ``num_sequences`` sequences of a data split.

    :param arrays: the split's arrays (as :func:`sqair_pyro.data.load_npz` returns them) or
        the path of a ``.npz`` data file.
    :param num_particles: ``K`` of the IWAE bound of ``log_px`` (the paper uses 1000).
    :param num_sequences: how many sequences, from the first (None: all).
    :param batch_size: sequences per batch; memory grows with ``batch_size * chunk_size``.
    :param chunk_size: particles drawn at once for ``log_px``.
    :param seed: seeds Pyro's (torch's, numpy's, python's) global generators first, so the
        report is reproducible; those generators are left advanced.
    :param device: where to run, e.g. ``"cuda"``; the model and guide are moved there.
    :param iou_threshold: the IoU at which boxes match for MOTA and IDF1.
    :param box_mode: ``"content"`` (default: tight boxes around each object's drawn pixels,
        the convention of the moving-MNIST ground truth, boxes of visible pixels) or
        ``"window"`` (the z_where glimpse windows, larger); see :func:`predicted_boxes`.
    :param content_threshold: the pixel value above which a drawn pixel counts (content).
    :param checkpoint: a name for the report (the checkpoint path); :param data: likewise.
    :param mixed_precision: estimate ``log_px`` with bfloat16 matrix products (:func:`log_px`).
    :returns: the report, a JSON-serialisable dict (see the module docstring for the
        metrics); means are over sequences, ``*_se`` their standard errors.
    """
    if box_mode not in ("content", "window"):
        raise ValueError(f"unknown box mode {box_mode!r}; choose 'content' or 'window'")
    if isinstance(arrays, Mapping):
        arrays = normalise_arrays(arrays, data or "the data arrays")
    else:
        data = data or str(arrays)
        arrays = load_npz(arrays)
    check_frames(arrays["images"], config.image_size)
    has = available(arrays, USES, data or "the data")
    _warn_if_more_objects_than_slots(arrays, config)
    for name, value in (
        ("num_particles", num_particles),
        ("batch_size", batch_size),
        ("chunk_size", chunk_size),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    total = len(arrays["images"])
    if num_sequences is None:
        num_sequences = total
    if int(num_sequences) != num_sequences or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive integer, got {num_sequences!r}")
    num_sequences = min(int(num_sequences), total)
    num_frames, height, width = arrays["images"].shape[1:]
    device = torch.device(device)
    model.to(device)
    guide.to(device)

    started = time.perf_counter()
    pyro.set_rng_seed(seed)
    sums: dict[str, list[torch.Tensor]] = {"log_px": [], "log_px_given_z": [], "kl": []}
    kl_sums: dict[str, list[torch.Tensor]] = {}
    hits, hits_visible, inferred, digits = [], [], [], []
    all_boxes, all_ids = [], []
    starts = range(0, num_sequences, batch_size)
    bar = tqdm(starts, disable=not progress, desc="evaluate", unit="batch")
    for start in bar:
        stop = min(start + batch_size, num_sequences)
        frames = torch.from_numpy(np.ascontiguousarray(arrays["images"][start:stop]))
        frames = frames.to(device=device, dtype=torch.float32) / 255
        b = stop - start

        def per_sequence(x: torch.Tensor, b: int = b) -> torch.Tensor:
            """Per datum -> per sequence: a model whose data are frames (AIR) sums them."""
            return x.detach().double().cpu().reshape(b, -1).sum(-1)

        terms = single_sample_terms(model, guide, frames)
        sums["log_px_given_z"].append(per_sequence(terms["log_px_given_z"]))
        sums["kl"].append(per_sequence(terms["kl"]))
        for family, term in terms["kl_by_site"].items():
            kl_sums.setdefault(family, []).append(per_sequence(term))
        latents = terms["latents"]
        if "z_pres" in latents:  # a model of objects (not a VRNN): count and track them
            boxes, ids = predicted_boxes(
                model, latents, (height, width), box_mode, content_threshold
            )
            boxes, ids, z_pres = boxes.cpu(), ids.cpu(), latents["z_pres"].detach().cpu()
            all_boxes.append(boxes)
            all_ids.append(ids)
            if has["counting accuracy (paper's)"]:
                sequence_digits = num_digits(arrays["labels"][start:stop])
                hits.append(counting_hits(z_pres, sequence_digits))
                digits.append(sequence_digits)
            if has["counting accuracy (visible)"]:
                hits_visible.append(counting_hits(z_pres, arrays["counts"][start:stop]))
            inferred.append(inferred_counts(z_pres))

        estimate = log_px(model, guide, frames, num_particles, chunk_size, mixed_precision)
        sums["log_px"].append(per_sequence(estimate))
        bar.set_postfix(log_px=f"{torch.cat(sums['log_px']).mean().item():.1f}")
    bar.close()

    counting: dict[str, Any] = dict.fromkeys(
        ("counting_accuracy", "counting_accuracy_visible", "counting_accuracy_by_digits")
    )
    if hits:
        hits_t, digits_t = torch.cat(hits), torch.cat(digits)
        counting["counting_accuracy"] = hits_t.float().mean().item()
        counting["counting_accuracy_by_digits"] = {
            str(int(c)): hits_t[digits_t == c].float().mean().item() for c in digits_t.unique()
        }
    if hits_visible:
        counting["counting_accuracy_visible"] = torch.cat(hits_visible).float().mean().item()
    tracking: dict[str, Any] = {}  # no ground-truth boxes: no tracking keys in the report
    if not all_ids:
        print(f"note: {config.model_name} has no objects: no counting or tracking", file=sys.stderr)
    if has["tracking metrics"] and all_ids:
        tracking = tracking_metrics(
            torch.cat(all_boxes),
            torch.cat(all_ids),
            arrays["boxes"][:num_sequences],
            arrays["visible"][:num_sequences],
            (height, width),
            iou_threshold=iou_threshold,
        )
        tracking.pop("num_sequences")
    report: dict[str, Any] = {"format": REPORT_FORMAT, "version": REPORT_VERSION}
    for key, values in sums.items():
        report[key], report[f"{key}_se"] = _mean_and_se(values)
    report["elbo"] = report["log_px_given_z"] - report["kl"]
    report["kl_by_site"] = {family: _mean_and_se(v)[0] for family, v in sorted(kl_sums.items())}
    report.update(
        **counting,
        mean_inferred_count=torch.cat(inferred).float().mean().item() if inferred else None,
        new_objects_per_frame=new_objects_per_frame(torch.cat(all_ids)) if all_ids else None,
        **tracking,
        iou_threshold=float(iou_threshold),
        box_mode=box_mode,
        content_threshold=float(content_threshold),
        # Boxes and counts made from a foreground mask, not annotated (sqair_pyro.data.video).
        proxy_ground_truth=bool(read_metadata(arrays).get("proxy_ground_truth", False)),
        model_name=config.model_name,
        num_sequences=num_sequences,
        num_particles=int(num_particles),
        mixed_precision=bool(mixed_precision),
        num_frames=int(num_frames),
        checkpoint=checkpoint,
        data=data,
        config=config.to_dict(),
        seed=seed,
        device=str(device),
        wall_time_s=time.perf_counter() - started,
    )
    return report


def evaluate_checkpoint(
    path: str | os.PathLike,
    data_path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate` a checkpoint file on a data file (a directory means its ``test.npz``).

    ``overrides``: config fields changed before the programs are built around the trained
    weights (e.g. a guide option switched on untrained), recorded in the report. Keyword
    arguments go to :func:`evaluate`. Raises ``CheckpointError`` for a file that is not a
    sqair-pyro checkpoint (or whose weights do not fit the changed programs),
    ``FileNotFoundError``/``ValueError`` for bad data or a refused override.
    """
    from sqair_pyro.checkpoint import load_checkpoint

    data_path = split_file(data_path, "test")
    device = str(kwargs.get("device", "cpu"))
    config, model, guide, payload = load_checkpoint(path, device, overrides)
    arrays = load_npz(data_path)
    kwargs.setdefault("checkpoint", str(path))
    kwargs.setdefault("data", str(data_path))
    report = evaluate(model, guide, config, arrays, **kwargs)
    report["checkpoint_step"] = payload.get("step")
    report["overrides"] = dict(overrides or {})
    return report


# ----------------------------------------------------------------------------- reports


def save_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a report as JSON (creating the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a report written by :func:`save_report`; ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report not found: {path}")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON evaluation report ({error})") from error
    if not isinstance(report, dict) or report.get("format") not in (REPORT_FORMAT, ADDITION_FORMAT):
        raise ValueError(f"{path} is not a sqair-pyro evaluation or addition report")
    return report


def _same_checkpoint(report: Mapping[str, Any]) -> tuple[Any, Any]:
    return report.get("model_name"), report.get("checkpoint_step")


def join_addition(reports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation rows, each with the ``addition`` accuracy of the addition report of the same
    model (model name and checkpoint step); an addition report that matches no evaluation
    report becomes a row of its own. Reports of :func:`load_report`, in their order."""
    additions = [r for r in reports if r.get("format") == ADDITION_FORMAT]
    rows = [dict(r) for r in reports if r.get("format") != ADDITION_FORMAT]
    for addition in additions:
        matches = [row for row in rows if _same_checkpoint(row) == _same_checkpoint(addition)]
        for row in matches:
            row["addition"] = addition["accuracy"]
        if not matches:
            rows.append(
                {
                    "model_name": addition.get("model_name"),
                    "checkpoint": addition.get("checkpoint"),
                    "addition": addition["accuracy"],
                }
            )
    return rows


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


_COLUMNS = (
    # (header, key, decimals); the first five are the paper's Table 1
    ("log p(x)", "log_px", 1),
    ("log p(x given z)", "log_px_given_z", 1),
    ("KL", "kl", 1),
    ("counting", "counting_accuracy", 4),
    ("addition", "addition", 4),
    ("counting (visible)", "counting_accuracy_visible", 4),
    ("HOTA", "hota", 3),
    ("MOTA", "mota", 3),
    ("IDF1", "idf1", 3),
    ("ID switches", "id_switches", 0),
    ("K", "num_particles", 0),
    ("sequences", "num_sequences", 0),
    ("T", "num_frames", 0),
)


def markdown_table(reports: list[Mapping[str, Any]], paper: bool = True) -> str:
    """A Markdown table: one row per report, then (``paper=True``) the paper's Table 1 rows.

    Columns a source does not have read "n/a" (``addition`` comes from addition reports,
    joined by :func:`join_addition`; the paper has no tracking metrics). Rows whose tracking
    used the boxes of the drawn pixels say "content boxes". Paper rows are marked "(paper)".
    """
    header = ["model", *(c[0] for c in _COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for report in join_addition(reports):
        if "log_px" not in report and "addition" not in report:
            raise ValueError("not an evaluation report (no 'log_px')")
        name = report.get("model_name", "model")
        if report.get("checkpoint"):
            name = f"{name} ({report['checkpoint']})"
        if report.get("box_mode") == "window":
            name = f"{name}, window boxes"
        if report.get("mixed_precision"):
            name = f"{name}, log p(x) in bfloat16 products"
        if report.get("proxy_ground_truth"):
            name = f"{name}, proxy ground truth"
        if report.get("overrides"):
            changed = ", ".join(f"{k}={v}" for k, v in report["overrides"].items())
            name = f"{name}, --set {changed}"
        cells = [_fmt(report.get(key), digits) for _, key, digits in _COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    if paper:
        for row in PAPER_TABLE1:
            values = {**row, "num_particles": 1000, "num_frames": 10}
            cells = [_fmt(values.get(key), digits) for _, key, digits in _COLUMNS]
            lines.append("| " + " | ".join([f"{row['model']} (paper)", *cells]) + " |")
    return "\n".join(lines)
