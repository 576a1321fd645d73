"""``sqair-pyro track``: a trained model's tracks over a whole video, in the video's pixels.

The video is pre-processed as the real-video data are (:mod:`sqair_pyro.data.video`:
down-sampled, two-pass MOG2, inverted grey foreground), cut in time into chunks of the
model's ``T`` frames and in space into a grid of windows of the model's frame size that
covers every frame (the last row and column aligned to the far edge). The guide infers the
objects of every window of a chunk at once (one posterior sample; windows without foreground
are skipped), and their content boxes are mapped back to the video's own pixels.

The model keeps identities within one window of one chunk (it sees one window at a time);
across windows and chunks they are joined afterwards: a track that ends at frame ``t`` and one
that starts at ``t + 1`` are one object if their boxes overlap (IoU >= :data:`LINK_IOU`,
Hungarian matching), :func:`link_across`.

Writes ``tracks.txt`` in the MOTChallenge format (``frame, id, x, y, w, h, conf, -1, -1, -1``,
frames counted from 1 in the video's own numbering, ``conf`` -1) and ``tracks.gif``, the
first :data:`GIF_FRAMES` down-sampled frames with the boxes coloured by identity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyro
import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from sqair_pyro.checkpoint import load_checkpoint
from sqair_pyro.data.frames import frame_size, read_frames
from sqair_pyro.data.video import VideoDataConfig, foreground
from sqair_pyro.evaluate import predicted_boxes
from sqair_pyro.predict import reconstruct
from sqair_pyro.tracking import box_iou

__all__ = ["track_video", "window_origins"]

#: Boxes of a track that ends and one that starts a frame later with at least this IoU are
#: one object.
LINK_IOU = 0.3
#: The GIF shows the first frames only (a whole video would be tens of megabytes).
GIF_FRAMES = 100
#: Colours of identities in the GIF (RGB), cycled.
PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)],
    np.uint8,
)  # fmt: skip


def window_origins(size: int, window: int) -> list[int]:
    """Starts of windows of ``window`` pixels that cover ``size`` pixels: every ``window``,
    the last aligned to the far edge."""
    if size < window:
        raise ValueError(f"frames of {size} pixels are smaller than the model's {window}")
    return sorted({*range(0, size - window + 1, window), size - window})


def link_across(rows: list[tuple], min_iou: float = LINK_IOU) -> list[tuple]:
    """Rows ``(frame index, id, x, y, w, h)`` with identities joined across the model's
    windows and chunks (see the module docstring), renumbered from 0 in order of appearance."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    by_frame: dict[int, list[tuple]] = {}
    for row in rows:
        by_frame.setdefault(row[0], []).append(row)
    for t in sorted(by_frame):
        now, after = by_frame[t], by_frame.get(t + 1, [])
        ids_now, ids_after = {r[1] for r in now}, {r[1] for r in after}
        ending = [r for r in now if r[1] not in ids_after]
        starting = [r for r in after if r[1] not in ids_now]
        if not ending or not starting:
            continue
        iou = box_iou(np.array([r[2:] for r in ending]), np.array([r[2:] for r in starting]))
        for e, s in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[e, s] >= min_iou:
                parent[root(starting[s][1])] = root(ending[e][1])
    order: dict[int, int] = {}
    linked = []
    for row in sorted(rows):
        new = order.setdefault(root(row[1]), len(order))
        linked.append((row[0], new, *row[2:]))
    return linked


def _owns(
    origins: list[tuple[int, int]], window: int, cx: float, cy: float, height: int, width: int
) -> bool:
    """Whether window ``origins[window]`` is, of all windows holding the point ``(cx, cy)``,
    the one whose centre is nearest: windows overlap at the far edges, and an object seen
    by two is reported once."""
    holding = [
        i for i, (y, x) in enumerate(origins) if y <= cy < y + height and x <= cx < x + width
    ]
    if not holding:
        return True
    distance = [
        (origins[i][0] + height / 2 - cy) ** 2 + (origins[i][1] + width / 2 - cx) ** 2
        for i in holding
    ]
    return holding[int(np.argmin(distance))] == window


def _draw(frames: np.ndarray, rows: list[tuple], scale: tuple[float, float]) -> list[np.ndarray]:
    """The (down-sampled, RGB) frames with each row's box in its identity's colour."""
    drawn = [frame.copy() for frame in frames]
    for index, identity, x, y, w, h in rows:
        colour = tuple(int(c) for c in PALETTE[identity % len(PALETTE)])
        x0, y0 = round(x / scale[1]), round(y / scale[0])
        x1, y1 = round((x + w) / scale[1]), round((y + h) / scale[0])
        cv2.rectangle(drawn[index], (x0, y0), (x1, y1), colour, 1)
    return drawn


@torch.no_grad()
def track_video(
    checkpoint: str | os.PathLike,
    video: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: VideoDataConfig | None = None,
    max_frames: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Track the objects of ``video`` with the model of ``checkpoint`` (see the module doc).

    :param config: the pre-processing (``resize``, ``every`` and the background subtractor's
        settings); default: the real-video data's defaults.
    :param max_frames: track only the first frames (after ``every``).
    :returns: the paths of ``tracks`` (the MOT file) and ``gif``, and the numbers of
        ``frames`` tracked, ``identities`` and ``boxes``.
    """
    config = VideoDataConfig() if config is None else config
    model_config, model, guide, _ = load_checkpoint(checkpoint)
    if not getattr(model, "objects", True):
        raise ValueError(f"{checkpoint}: {model_config.model_name} has no objects to track")
    height, width = model_config.image_size
    num_frames = model_config.num_frames
    frames = read_frames(
        video, config.resize, grey=False, every=config.every, max_frames=max_frames
    )
    if len(frames) < num_frames:
        raise ValueError(f"{video}: {len(frames)} frames, fewer than the model's {num_frames}")
    images, _ = foreground(frames, config)
    origins = [
        (y, x)
        for y in window_origins(images.shape[1], height)
        for x in window_origins(images.shape[2], width)
    ]
    original = frame_size(video)
    scale = (original[0] / images.shape[1], original[1] / images.shape[2])
    pyro.set_rng_seed(seed)
    rows: list[tuple[int, int, float, float, float, float]] = []  # (frame index, id, box)
    next_id = 0
    chunks = range(0, len(images) - num_frames + 1, num_frames)
    for t0 in tqdm(chunks, desc="track", unit="chunk"):
        clip = images[t0 : t0 + num_frames]
        windows = np.stack([clip[:, y : y + height, x : x + width] for y, x in origins])
        busy = np.flatnonzero(windows.reshape(len(windows), -1).max(-1) > 0)
        if len(busy) == 0:
            continue
        latents = reconstruct(model, guide, torch.from_numpy(windows[busy]).float() / 255)
        boxes, ids = predicted_boxes(model, latents, (height, width), "content")
        for k, window in enumerate(busy):
            y0, x0 = origins[window]
            present = ids[k] >= 0
            fresh = {int(i): next_id + j for j, i in enumerate(ids[k][present].unique().tolist())}
            next_id += len(fresh)
            for t, n in present.nonzero().tolist():
                x, y, w, h = boxes[k, t, n].tolist()
                if not _owns(origins, window, x0 + x + w / 2, y0 + y + h / 2, height, width):
                    continue  # seen again by the window whose centre is nearer
                rows.append(
                    (t0 + t, fresh[int(ids[k, t, n])], (x0 + x) * scale[1], (y0 + y) * scale[0],
                     w * scale[1], h * scale[0])
                )  # fmt: skip
    rows = link_across(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracks = out / "tracks.txt"
    tracks.write_text(
        "".join(
            f"{index * config.every + 1},{i},{x:.1f},{y:.1f},{w:.1f},{h:.1f},-1,-1,-1,-1\n"
            for index, i, x, y, w, h in sorted(rows)
        )
    )
    from PIL import Image

    shown = len(chunks) * num_frames
    drawn = _draw(frames[: min(shown, GIF_FRAMES)], [r for r in rows if r[0] < GIF_FRAMES], scale)
    pictures = [Image.fromarray(f) for f in drawn]
    gif = out / "tracks.gif"
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return {
        "tracks": tracks,
        "gif": gif,
        "frames": shown,
        "identities": len({row[1] for row in rows}),
        "boxes": len(rows),
    }
