"""Conditional generation, measured: see the first frames, imagine the rest (paper Sec. 4.1).

The paper shows imagined futures only as pictures. Here every imagined object that stands for
a real digit is scored at each horizon ``h`` (frames after the last one seen):

- **appearance kept**: the imagined object is present and an independent MNIST classifier
  (:mod:`sqair_pyro.digits`) reads its decoded glimpse as the real digit's class. Absent
  objects count as not kept. The same on the posterior's reconstructions of the same frames
  (the guide sees every frame) is the ceiling the classifier and decoder allow.
- **motion**: distance in pixels between the centre of the imagined object's drawn pixels and
  the centre of the real digit's visible pixels (both boxes, the data's convention), beside two
  baselines made from the real digit's own boxes: *stay* at its last seen centre, and *constant
  velocity* from its last two seen centres. Distances are over the (digit, frame) pairs where
  the digit is visible and the imagined object draws something.

Objects are matched to digits at the last observed frame by box IoU (Hungarian assignment,
IoU >= ``match_iou``) and then followed by identity.

The continuous latents are drawn (the paper's figures show draws) or, with ``latents="mean"``,
taken at their means: a point forecast, the path of the prior's conditional means.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import torch
from scipy.optimize import linear_sum_assignment
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
from sqair_pyro.digits import NUM_CLASSES, classify
from sqair_pyro.evaluate import predicted_boxes
from sqair_pyro.predict import imagine, reconstruct
from sqair_pyro.tracking import box_iou

REPORT_FORMAT = "sqair-pyro-forecast"
#: The paper's Fig. 6 setting: three frames seen, the rest imagined.
NUM_OBSERVED = 3
_DATA_KEYS = ("images", "boxes", "visible", "labels")
#: How the continuous latents are read: drawn, or at their means.
LATENTS = ("sample", "mean")
#: What the report needs beyond the frames: motion (required) and the digit class check.
USES = {"motion errors": ("boxes", "visible"), "class kept": ("labels",)}


def centres(boxes: np.ndarray) -> np.ndarray:
    """Centres (..., 2) of xywh boxes (..., 4)."""
    return boxes[..., :2] + boxes[..., 2:] / 2


def match_digits(
    pred_boxes: np.ndarray,
    pred_ids: np.ndarray,
    true_boxes: np.ndarray,
    visible: np.ndarray,
    match_iou: float,
) -> np.ndarray:
    """For one frame of one sequence: the id of the inferred object matched to each true
    digit (M,), -1 where none. ``pred_boxes`` (N, 4), ``pred_ids`` (N,) (-1: absent),
    ``true_boxes`` (M, 4), ``visible`` (M,)."""
    matched = np.full(len(true_boxes), -1, dtype=np.int64)
    objects, digits = np.flatnonzero(pred_ids >= 0), np.flatnonzero(visible)
    if len(objects) == 0 or len(digits) == 0:
        return matched
    iou = box_iou(pred_boxes[objects], true_boxes[digits])
    rows, cols = linear_sum_assignment(-iou)
    for r, c in zip(rows, cols, strict=True):
        if iou[r, c] >= match_iou:
            matched[digits[c]] = pred_ids[objects[r]]
    return matched


def _glimpse_classes(model: nn.Module, classifier: nn.Module, z_what: torch.Tensor) -> np.ndarray:
    """The classifier's reading of each object's decoded glimpse, scaled to a maximum of 1."""
    glimpses = model.likelihood.decoder(z_what.reshape(-1, z_what.shape[-1]))
    peak = glimpses.flatten(1).amax(-1).clamp_min(1e-6).reshape(-1, 1, 1)
    return classify(classifier, glimpses / peak).reshape(z_what.shape[:-1]).numpy()


def score_objects(
    latents: Mapping[str, torch.Tensor],
    model: nn.Module,
    classifier: nn.Module,
    arrays: Mapping[str, np.ndarray],
    num_observed: int,
    match_iou: float,
    image_size: tuple[int, int],
) -> dict[str, np.ndarray]:
    """Per (sequence, digit, horizon): whether the matched object is present and drawn
    (``present``), keeps the digit's class (``kept``), its centre's distance to the digit's
    (``distance``, nan where absent) and whether the pair counts (``valid``: the digit was
    matched at the last observed frame and is visible at that horizon).

    ``latents``: one sample, (B, T, N, ·) and ``ids`` (B, T, N); ``arrays``: the same B
    sequences' ``boxes`` (B, T, M, 4), ``visible`` (B, T, M), ``labels`` (B, M).
    """
    boxes, ids = predicted_boxes(model, dict(latents), image_size, "content")
    boxes, ids = boxes.numpy(), ids.numpy()
    classes = _glimpse_classes(model, classifier, latents["z_what"])
    true_boxes, visible, labels = arrays["boxes"], arrays["visible"], arrays.get("labels")
    batch, num_frames, num_digits = visible.shape
    last = num_observed - 1
    horizons = num_frames - num_observed
    shape = (batch, num_digits, horizons)
    present, kept = np.zeros(shape, bool), np.zeros(shape, bool)
    distance, valid = np.full(shape, np.nan), np.zeros(shape, bool)
    for b in range(batch):
        matched = match_digits(
            boxes[b, last], ids[b, last], true_boxes[b, last], visible[b, last], match_iou
        )
        for m in np.flatnonzero(matched >= 0):
            for h in range(horizons):
                t = num_observed + h
                if not visible[b, t, m]:
                    continue
                valid[b, m, h] = True
                slots = np.flatnonzero(ids[b, t] == matched[m])
                if len(slots) == 0:
                    continue
                slot = slots[0]
                present[b, m, h] = True
                kept[b, m, h] = labels is not None and classes[b, t, slot] == labels[b, m]
                distance[b, m, h] = np.linalg.norm(
                    centres(boxes[b, t, slot]) - centres(true_boxes[b, t, m])
                )
    return {"present": present, "kept": kept, "distance": distance, "valid": valid}


def baseline_distances(
    arrays: Mapping[str, np.ndarray], num_observed: int
) -> dict[str, np.ndarray]:
    """Distances (B, M, horizons) of the *stay* and *constant velocity* predictions from the
    real digits' own boxes (velocity 0 where the digit was not visible one frame earlier)."""
    c = centres(np.asarray(arrays["boxes"], dtype=np.float64))  # (B, T, M, 2)
    visible = arrays["visible"]
    last = num_observed - 1
    velocity = np.zeros_like(c[:, last])
    if last > 0:
        both = (visible[:, last] & visible[:, last - 1])[..., None]
        velocity = np.where(both, c[:, last] - c[:, last - 1], 0.0)
    future = np.moveaxis(c[:, num_observed:], 1, 2)  # (B, M, H, 2)
    steps = np.arange(1, future.shape[2] + 1)[None, None, :, None]
    stay = c[:, last][:, :, None]
    moving = stay + steps * velocity[:, :, None]
    return {
        "stay": np.linalg.norm(future - stay, axis=-1),
        "constant_velocity": np.linalg.norm(future - moving, axis=-1),
    }


def _ratios(totals: np.ndarray, counts: np.ndarray) -> list[float | None]:
    """``totals / counts`` per horizon; None where nothing was counted (JSON null)."""
    return [float(t / c) if c else None for t, c in zip(totals, counts, strict=True)]


def _check_arrays(
    arrays: Mapping[str, np.ndarray],
    config: Config,
    model: nn.Module,
    num_observed: int,
    source: str,
) -> bool:
    """Raise ``ValueError`` for data or a model the forecast cannot score; return whether the
    digit classes can be judged (``labels`` are MNIST classes 0..9)."""
    if "boxes" not in arrays or "visible" not in arrays:
        raise ValueError("forecast metrics need the ground-truth 'boxes' and 'visible' arrays")
    has = available(arrays, USES, source)
    check_frames(arrays["images"], config.image_size)
    digits = has["class kept"] and int(np.max(arrays["labels"], initial=0)) < NUM_CLASSES
    if has["class kept"] and not digits:
        print(
            f"note: {source} has labels beyond the digits 0-9: skipping class kept", file=sys.stderr
        )
    if not getattr(model, "objects", True):
        raise ValueError(f"forecast metrics score objects; {config.model_name} has none")
    if not getattr(model, "temporal", False):
        raise ValueError(
            f"conditional generation needs a model with a temporal prior, not {config.model_name}"
        )
    num_frames = arrays["images"].shape[1]
    if not 0 < num_observed < num_frames:
        raise ValueError(
            f"the model sees {num_observed} frame(s) and imagines the rest, so the sequences "
            f"need more than {num_observed} frames; these have {num_frames}"
        )
    return digits


@torch.no_grad()
def forecast(
    model: nn.Module,
    guide: nn.Module,
    config: Config,
    arrays: Mapping[str, np.ndarray],
    classifier: nn.Module,
    num_observed: int = NUM_OBSERVED,
    num_sequences: int | None = None,
    batch_size: int = 50,
    match_iou: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    source: str = "the data",
    latents: str = "sample",
) -> dict[str, Any]:
    """The forecast report of a SQAIR model on ``arrays`` with ground-truth boxes (see the
    module doc); ``kept`` is None without digit labels. ``latents``: ``"sample"`` draws the
    continuous latents (the paper's figures), ``"mean"`` takes their means, the posterior's
    and then the prior's (:func:`sqair_pyro.predict.imagine`), for imagination and
    reconstruction alike; z_pres is drawn either way."""
    if latents not in LATENTS:
        raise ValueError(f"latents must be one of {', '.join(LATENTS)}, got {latents!r}")
    arrays = normalise_arrays(arrays, source)
    digits = _check_arrays(arrays, config, model, num_observed, source)
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    total = (
        len(arrays["images"])
        if num_sequences is None
        else min(num_sequences, len(arrays["images"]))
    )
    if total < 1:
        raise ValueError("no sequences to score")
    started = time.perf_counter()
    pyro.set_rng_seed(seed)
    num_frames = arrays["images"].shape[1]
    future, means = num_frames - num_observed, latents == "mean"
    image_size = tuple(arrays["images"].shape[2:4])
    parts: dict[str, list[np.ndarray]] = {}
    for start in tqdm(range(0, total, batch_size), disable=not progress, desc="forecast"):
        index = slice(start, min(start + batch_size, total))
        images = torch.from_numpy(np.asarray(arrays["images"][index])).float() / 255
        batch_arrays = {key: np.asarray(arrays[key][index]) for key in _DATA_KEYS if key in arrays}
        if not digits:
            batch_arrays.pop("labels", None)
        imagined = imagine(model, guide, images[:, :num_observed], future, means=means)
        imagined = {key: value[0] for key, value in imagined.items()}
        seen = reconstruct(model, guide, images, means=means)
        for name, inferred in (("imagined", imagined), ("reconstructed", seen)):
            scores = score_objects(
                inferred, model, classifier, batch_arrays, num_observed, match_iou, image_size
            )
            for key, value in scores.items():
                parts.setdefault(f"{name}_{key}", []).append(value)
        for key, value in baseline_distances(batch_arrays, num_observed).items():
            parts.setdefault(key, []).append(value)
    data = {key: np.concatenate(value) for key, value in parts.items()}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "num_sequences": total,
        "num_observed": num_observed,
        "horizons": list(range(1, num_frames - num_observed + 1)),
        "match_iou": match_iou,
        "latents": latents,
        "seed": seed,
        "proxy_ground_truth": bool(read_metadata(arrays).get("proxy_ground_truth", False)),
    }
    for name in ("imagined", "reconstructed"):
        valid = data[f"{name}_valid"]
        pairs = valid.sum((0, 1))
        report[f"{name}_pairs"] = pairs.tolist()
        for key in ("present", "kept"):
            hits = (data[f"{name}_{key}"] & valid).sum((0, 1))
            ratios = _ratios(hits, pairs)
            report[f"{name}_{key}"] = ratios if key == "present" or digits else [None] * len(pairs)
    # Distances over the pairs where the imagined object is drawn, baselines on the same pairs.
    drawn = data["imagined_valid"] & data["imagined_present"]
    report["distance_pairs"] = drawn.sum((0, 1)).tolist()
    for key, values in (
        ("distance_imagined", data["imagined_distance"]),
        ("distance_stay", data["stay"]),
        ("distance_constant_velocity", data["constant_velocity"]),
    ):
        report[key] = _ratios(np.where(drawn, values, 0.0).sum((0, 1)), drawn.sum((0, 1)))
    report["wall_time_s"] = time.perf_counter() - started
    return report


def forecast_checkpoint(
    path: str | os.PathLike,
    data_path: str | os.PathLike,
    classifier_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`forecast` a checkpoint on a data file (a directory means its ``test.npz``) with
    the shipped digit classifier or the one at ``classifier_path``."""
    from sqair_pyro.checkpoint import load_checkpoint
    from sqair_pyro.digits import load_classifier

    data_path = split_file(data_path, "test")
    config, model, guide, payload = load_checkpoint(path)
    arrays = load_npz(data_path)
    classifier, classifier_report = load_classifier(classifier_path)
    kwargs.setdefault("source", str(data_path))
    report = forecast(model, guide, config, arrays, classifier, **kwargs)
    report.update(
        checkpoint=str(path),
        checkpoint_step=payload.get("step"),
        data=str(data_path),
        classifier_test_accuracy=classifier_report.get("test_accuracy_central"),
    )
    return report
