"""Multi-object-tracking metrics (HOTA, CLEAR MOT, identity) of inferred boxes and identities.

The metrics themselves are those of the ``trackeval`` package (Luiten et al., the reference
implementation of HOTA, also used by the MOTChallenge benchmark): this module only turns
tensors of boxes and identities into trackeval's per-sequence data dictionaries, runs its
metric classes on every sequence and combines the sequences the way trackeval does (counts
summed over sequences, ratios recomputed from the sums; HOTA averaged over its localisation
thresholds ``alpha``).

Conventions:

- boxes are pixel ``(x, y, width, height)``; a frame is ``image_size = (H, W)`` pixels;
- predicted boxes are clipped to the canvas first; one with no area left inside it is not a
  detection (a latent object that lies wholly off-screen shows nothing);
- the ground-truth identity of a digit is its slot ``m``; only visible digits are objects;
- the similarity of a predicted and a true box is their IoU; a pair counts as a match for
  CLEAR (MOTA, MOTP, switches) and identity (IDF1) metrics when IoU >= ``iou_threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["box_iou", "clip_boxes", "sequence_data", "tracking_metrics"]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (..., 4) clipped to an ``(H, W)`` canvas, and whether any area is left (...,)."""
    height, width = image_size
    boxes = np.asarray(boxes, dtype=np.float64)
    x0 = np.clip(boxes[..., 0], 0, width)
    y0 = np.clip(boxes[..., 1], 0, height)
    x1 = np.clip(boxes[..., 0] + boxes[..., 2], 0, width)
    y1 = np.clip(boxes[..., 1] + boxes[..., 3], 0, height)
    clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)
    inside = (x1 > x0) & (y1 > y0) & np.isfinite(boxes).all(-1)
    return clipped, inside


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (..., n, 4) with every box in ``b`` (..., m, 4), as
    (..., n, m), leading dims broadcast; xywh. A single box (4,) counts as (1, 4)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a.reshape(-1, 4) if a.ndim < 2 else a
    b = b.reshape(-1, 4) if b.ndim < 2 else b
    a, b = a[..., :, None, :], b[..., None, :, :]  # (..., n, 1, 4) and (..., 1, m, 4)
    ax0, ay0, ax1, ay1 = a[..., 0], a[..., 1], a[..., 0] + a[..., 2], a[..., 1] + a[..., 3]
    bx0, by0, bx1, by1 = b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    inter_w = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    inter_h = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = inter_w * inter_h
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    iou = np.zeros_like(inter)
    np.divide(inter, union, out=iou, where=union > 0)
    return np.clip(iou, 0.0, 1.0)


def _contiguous(ids_per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Ids remapped to 0..n-1 over the sequence (trackeval indexes arrays with them)."""
    present = [i for i in ids_per_frame if i.size]
    unique = np.unique(np.concatenate(present)) if present else np.zeros(0, dtype=np.int64)
    remapped = [np.searchsorted(unique, i).astype(int) for i in ids_per_frame]
    return remapped, len(unique)


def sequence_data(
    pred_boxes: Any,
    pred_ids: Any,
    gt_boxes: Any,
    gt_visible: Any,
    image_size: tuple[int, int],
) -> dict[str, Any]:
    """trackeval's data dictionary of one sequence.

    :param pred_boxes: (T, N, 4) pixel boxes; :param pred_ids: (T, N), -1 for no object.
    :param gt_boxes: (T, M, 4) true visible boxes; :param gt_visible: (T, M) bool.
    :returns: ``num_timesteps``, ``num_gt_ids``, ``num_tracker_ids``, ``num_gt_dets``,
        ``num_tracker_dets``, ``gt_ids``, ``tracker_ids`` (lists of int arrays, ids contiguous
        from 0) and ``similarity_scores`` (list of (gt, tracker) IoU matrices).
    """
    pred_boxes, pred_ids = _numpy(pred_boxes), _numpy(pred_ids).astype(np.int64)
    gt_boxes, gt_visible = _numpy(gt_boxes), _numpy(gt_visible).astype(bool)
    clipped, inside = clip_boxes(pred_boxes, image_size)
    detected = (pred_ids >= 0) & inside
    gt_ids, tracker_ids, similarity = [], [], []
    for t in range(pred_ids.shape[0]):
        ids = pred_ids[t][detected[t]]
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"frame {t}: a predicted identity occurs twice ({ids.tolist()})")
        gt_ids.append(np.flatnonzero(gt_visible[t]))
        tracker_ids.append(ids)
        similarity.append(box_iou(gt_boxes[t][gt_visible[t]], clipped[t][detected[t]]))
    gt_ids, num_gt_ids = _contiguous(gt_ids)
    tracker_ids, num_tracker_ids = _contiguous(tracker_ids)
    return {
        "num_timesteps": len(gt_ids),
        "num_gt_ids": num_gt_ids,
        "num_tracker_ids": num_tracker_ids,
        "num_gt_dets": int(sum(len(i) for i in gt_ids)),
        "num_tracker_dets": int(sum(len(i) for i in tracker_ids)),
        "gt_ids": gt_ids,
        "tracker_ids": tracker_ids,
        "similarity_scores": similarity,
    }


def tracking_metrics(
    pred_boxes: Any,
    pred_ids: Any,
    gt_boxes: Any,
    gt_visible: Any,
    image_size: tuple[int, int],
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """HOTA, CLEAR MOT and identity metrics of a batch of sequences, combined over all of them.

    :param pred_boxes: (S, T, N, 4) predicted pixel boxes ``(x, y, w, h)``.
    :param pred_ids: (S, T, N) predicted identities, -1 where there is no object.
    :param gt_boxes: (S, T, M, 4) true boxes of the visible parts; slot ``m`` is the identity.
    :param gt_visible: (S, T, M) whether digit ``m`` is visible in the frame.
    :param image_size: ``(H, W)``; predicted boxes are clipped to it.
    :param iou_threshold: the IoU at which a pair matches (CLEAR and identity metrics; HOTA
        averages over its own thresholds 0.05..0.95).
    :returns: ``hota``, ``deta``, ``assa`` (HOTA and its detection and association parts,
        means over alpha), ``mota``, ``motp`` (mean IoU of matches), ``idf1``, ``idp``, ``idr``,
        ``id_switches``, ``false_positives``, ``misses`` (false negatives), ``matches``,
        ``precision``, ``recall``, ``num_gt_dets``, ``num_pred_dets``, ``num_sequences``.
    """
    try:
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError as error:
        raise ImportError(
            "tracking metrics need the trackeval package: pip install trackeval"
        ) from error

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred_boxes, pred_ids = _numpy(pred_boxes), _numpy(pred_ids)
    gt_boxes, gt_visible = _numpy(gt_boxes), _numpy(gt_visible)
    s, t = pred_ids.shape[:2]
    if pred_boxes.shape[:3] != pred_ids.shape or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes {pred_boxes.shape} do not match pred_ids {pred_ids.shape}")
    if gt_boxes.shape[:3] != gt_visible.shape or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes {gt_boxes.shape} do not match gt_visible {gt_visible.shape}")
    if gt_visible.shape[:2] != (s, t):
        raise ValueError(
            f"predictions cover {s} sequences of {t} frames, the ground truth "
            f"{gt_visible.shape[0]} of {gt_visible.shape[1]}"
        )
    config = {"THRESHOLD": float(iou_threshold), "PRINT_CONFIG": False}
    metrics = {"hota": HOTA(), "clear": CLEAR(dict(config)), "identity": Identity(dict(config))}
    per_sequence: dict[str, dict[str, dict]] = {name: {} for name in metrics}
    num_gt = num_pred = 0
    for i in range(s):
        data = sequence_data(pred_boxes[i], pred_ids[i], gt_boxes[i], gt_visible[i], image_size)
        num_gt += data["num_gt_dets"]
        num_pred += data["num_tracker_dets"]
        for name, metric in metrics.items():
            per_sequence[name][str(i)] = metric.eval_sequence(data)
    combined = {name: m.combine_sequences(per_sequence[name]) for name, m in metrics.items()}
    hota, clear, ident = combined["hota"], combined["clear"], combined["identity"]
    return {
        "hota": float(np.mean(hota["HOTA"])),
        "deta": float(np.mean(hota["DetA"])),
        "assa": float(np.mean(hota["AssA"])),
        "mota": float(clear["MOTA"]),
        "motp": float(clear["MOTP"]),
        "idf1": float(ident["IDF1"]),
        "idp": float(ident["IDP"]),
        "idr": float(ident["IDR"]),
        "id_switches": int(clear["IDSW"]),
        "false_positives": int(clear["CLR_FP"]),
        "misses": int(clear["CLR_FN"]),
        "matches": int(clear["CLR_TP"]),
        "precision": float(clear["CLR_Pr"]),
        "recall": float(clear["CLR_Re"]),
        "num_gt_dets": int(num_gt),
        "num_pred_dets": int(num_pred),
        "num_sequences": int(s),
    }


def new_objects(ids: torch.Tensor) -> torch.Tensor:
    """The objects new in each frame after the first, (..., T - 1), of ids (..., T, N), -1
    absent: present ids that were not present in the frame before."""
    now, before = ids[..., 1:, :], ids[..., :-1, :]
    seen = (now.unsqueeze(-1) == before.unsqueeze(-2)).any(-1)
    return ((now >= 0) & ~seen).sum(-1)


def new_objects_per_frame(ids: torch.Tensor) -> float:
    """Objects discovered per frame after the first (..., T, N ids, -1 absent).

    A tracker that keeps its objects discovers few after the first frame; one that drops and
    rediscovers every object each frame (identity switches) discovers about one per object.
    """
    if ids.shape[-2] < 2:
        return 0.0
    return new_objects(ids).float().mean().item()
