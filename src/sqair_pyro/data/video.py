"""Real video as data, as the paper's pedestrian experiment (Sec. 4.2, App. E).

Every frame of a static-camera video is down-sampled and passed through OpenCV's MOG2
background subtractor; the model sees the foreground only, grey-scale with inverted colours
(pedestrians bright on black, as MNIST digits are), everything the subtractor calls background
set to 0. Sequences are random ``crop x crop`` windows over ``length`` consecutive frames in which
no frame holds more than ``max_objects`` objects; train and validation come from disjoint time
ranges of the video (no frame in both).

There is no ground truth. The objects of a crop are the connected components of the foreground
mask inside it with at least ``min_area`` pixels, linked from frame to frame by box overlap
(Hungarian matching on IoU): a *proxy* ground truth (boxes, visibility, identities, counts),
marked ``"proxy_ground_truth": true`` in the file's metadata and in every report that uses it.

Choices (measured on PETS 2009 S2.L1, ``vtest.avi``): MOG2 rather than KNN because it models
each pixel as a mixture, so the square's flickering shadows and reflections fall into the
background modes, and it marks shadows apart (value 127), which are dropped. Frames are
down-sampled to 320x240: the foreground blobs' median height is then about 28 pixels, the
height of the 28x12 glimpse, and a pedestrian fills a 64-pixel crop about as a digit fills the
50-pixel MNIST canvas (at the paper's 240x175 they are 16 pixels tall).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from sqair_pyro.tracking import box_iou

from .format import metadata_array, save_npz
from .frames import read_frames

__all__ = [
    "VideoDataConfig",
    "crop_objects",
    "foreground",
    "link_tracks",
    "make_video_data",
    "sample_sequences",
]


@dataclass(frozen=True)
class VideoDataConfig:
    """Every knob of :func:`make_video_data` (defaults: the paper's App. E, PETS scale).

    Attributes:
        resize: ``(height, width)`` the frames are down-sampled to before anything else.
        crop: side of the square windows cut from the frames.
        length: frames per sequence.
        max_objects: no frame of a sequence may hold more proxy objects.
        min_objects: proxy objects a sequence must show (in any frame).
        min_area: pixels a connected foreground component needs (at ``resize``) to count.
        every: keep every n-th frame of the video.
        history: frames of history of the MOG2 subtractor.
        var_threshold: its squared Mahalanobis threshold.
        warmup: the first frames are not used (0: with the two passes of :func:`foreground`
            the background is known from the first frame on).
        train_fraction: the share of the usable frames (from the start) for training; the rest,
            later in time, for validation.
        link_iou: boxes in consecutive frames with at least this IoU can be the same object.
    """

    resize: tuple[int, int] = (240, 320)
    crop: int = 64
    length: int = 5
    max_objects: int = 3
    min_objects: int = 1
    min_area: int = 40
    every: int = 1
    history: int = 200
    var_threshold: float = 25.0
    warmup: int = 0
    train_fraction: float = 0.9
    link_iou: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", tuple(self.resize))
        for name in ("crop", "length", "max_objects", "min_area", "every", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError("need 0 <= min_objects <= max_objects")


def foreground(frames: np.ndarray, config: VideoDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The model's input frames and the foreground masks of RGB frames ``[F, H, W, 3]``.

    Two passes: MOG2 first learns the background from every frame, then classifies every
    frame against that frozen model. One pass (a background that keeps learning) absorbs
    slow walkers into the background from behind, worst in the first frames, where its
    learning rate is highest (measured on the synthetic walkers of the tests: boxes 4-6 of
    10 pixels wide, split in two).

    :returns: uint8 ``[F, H, W]``: inverted grey-scale where MOG2 sees foreground, 0
        elsewhere; bool ``[F, H, W]`` masks (shadows dropped, a 3x3 opening removes specks,
        a 5x5 closing joins the parts of one body split by a thin gap).
    """
    subtractor = cv2.createBackgroundSubtractorMOG2(
        history=config.history, varThreshold=config.var_threshold, detectShadows=True
    )
    for frame in tqdm(frames, desc="background", unit="frame", leave=False):
        subtractor.apply(frame)  # first pass: learn the background from the whole video
    opening, closing = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    images = np.zeros(frames.shape[:3], np.uint8)
    masks = np.zeros(frames.shape[:3], bool)
    for i, frame in enumerate(tqdm(frames, desc="foreground", unit="frame", leave=False)):
        raw = subtractor.apply(frame, learningRate=0)  # second pass: the background frozen
        mask = cv2.morphologyEx((raw == 255).astype(np.uint8), cv2.MORPH_OPEN, opening)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, closing) > 0
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        images[i] = np.where(mask, 255 - grey, 0)
        masks[i] = mask
    return images, masks


def crop_objects(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Boxes ``(x, y, w, h)`` float32 ``[K, 4]`` of the connected components of a mask window
    with at least ``min_area`` pixels (8-connectivity), largest first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    stats = stats[1:count]  # label 0 is the background
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= min_area]
    stats = stats[np.argsort(-stats[:, cv2.CC_STAT_AREA], kind="stable")]
    return stats[:, :4].astype(np.float32)


def link_tracks(boxes: list[np.ndarray], min_iou: float) -> list[np.ndarray]:
    """Identities of the boxes of consecutive frames: each frame's boxes are matched to the
    previous frame's by maximum total IoU (Hungarian), pairs below ``min_iou`` not linked;
    an unmatched box starts a new identity. Returns int64 ids per frame, numbered from 0."""
    ids: list[np.ndarray] = []
    next_id = 0
    for t, current in enumerate(boxes):
        frame_ids = np.full(len(current), -1, np.int64)
        if t > 0 and len(current) and len(boxes[t - 1]):
            iou = box_iou(boxes[t - 1], current)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= min_iou:
                    frame_ids[c] = ids[t - 1][r]
        for c in np.flatnonzero(frame_ids < 0):
            frame_ids[c] = next_id
            next_id += 1
        ids.append(frame_ids)
    return ids


def _num_tracks(ids: list[np.ndarray]) -> int:
    """How many identities :func:`link_tracks` gave out."""
    return 1 + max((int(frame.max()) for frame in ids if len(frame)), default=-1)


def sample_sequences(
    images: np.ndarray,
    masks: np.ndarray,
    starts: range,
    count: int,
    config: VideoDataConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``count`` random crops of ``config.length`` frames starting in ``starts``, with their
    proxy ground truth (see the module docstring) and ``windows`` (N, 3): each crop's first
    frame and top-left corner ``(t, y, x)`` in the resized video.

    A crop is placed uniformly among the windows that hold the centre of a foreground
    component of its first frame chosen at random (crops of empty ground are mostly empty
    otherwise), and kept if every frame holds at most ``max_objects`` objects and at least
    ``min_objects`` are seen. Raises ``ValueError`` if too few crops qualify.
    """
    if count < 1:
        raise ValueError(f"the number of sequences must be at least 1, got {count}")
    size, length, height, width = config.crop, config.length, *images.shape[1:3]
    centres = {}
    sequences: list[tuple[np.ndarray, list[np.ndarray], list[np.ndarray], tuple]] = []
    tries, most_tries = 0, 200 * count + 1000
    with tqdm(total=count, desc="crops", unit="sequence", leave=False) as bar:
        while len(sequences) < count and tries < most_tries:
            tries += 1
            t = int(rng.choice(starts))
            if t not in centres:
                blobs = crop_objects(masks[t], config.min_area)
                centres[t] = blobs[:, :2] + blobs[:, 2:] / 2
            if len(centres[t]) == 0:
                continue
            cx, cy = centres[t][rng.integers(len(centres[t]))]
            x0 = int(rng.integers(max(0, int(cx) - size + 1), min(width - size, int(cx)) + 1))
            y0 = int(rng.integers(max(0, int(cy) - size + 1), min(height - size, int(cy)) + 1))
            window = (slice(t, t + length), slice(y0, y0 + size), slice(x0, x0 + size))
            boxes = [crop_objects(m, config.min_area) for m in masks[window]]
            if max(len(b) for b in boxes) > config.max_objects:
                continue
            ids = link_tracks(boxes, config.link_iou)
            if _num_tracks(ids) < config.min_objects:
                continue
            sequences.append((images[window], boxes, ids, (t, y0, x0)))
            bar.update(1)
    if len(sequences) < count:
        raise ValueError(
            f"only {len(sequences)} of {count} crops hold {max(config.min_objects, 1)} to "
            f"{config.max_objects} moving objects of >= {config.min_area} pixels (is anything "
            "moving in the video?)"
        )
    slots = max(1, *(_num_tracks(s[2]) for s in sequences))  # at least one slot
    n = len(sequences)
    out = {
        "images": np.stack([s[0] for s in sequences]),
        "boxes": np.zeros((n, length, slots, 4), np.float32),
        "visible": np.zeros((n, length, slots), bool),
        # Where each crop comes from: (first frame, y, x) in the resized video.
        "windows": np.array([s[3] for s in sequences], np.int64).reshape(n, 3),
    }
    for i, (_, boxes, ids, _) in enumerate(sequences):
        for t in range(length):
            out["boxes"][i, t, ids[t]] = boxes[t]
            out["visible"][i, t, ids[t]] = True
    out["counts"] = out["visible"].sum(-1).astype(np.int64)
    return out


def make_video_data(
    video: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_size: int = 3150,
    test_size: int = 350,
    seed: int = 0,
    config: VideoDataConfig | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/train.npz`` (the first ``train_fraction`` of the video) and
    ``out_dir/test.npz`` (the validation sequences, from the frames after those), with proxy
    ground truth; see the module docstring. ``video``: a file OpenCV reads or a folder of
    frames."""
    config = VideoDataConfig() if config is None else config
    if min(config.resize) < config.crop:
        raise ValueError(f"frames resized to {config.resize} are smaller than a {config.crop} crop")
    frames = read_frames(video, config.resize, grey=False, every=config.every)
    usable = len(frames) - config.warmup
    if usable < 2 * config.length:
        raise ValueError(
            f"{video}: {len(frames)} frames are too few ({config.warmup} warm-up frames of the "
            f"background subtractor, then sequences of {config.length} for two splits)"
        )
    images, masks = foreground(frames, config)
    boundary = config.warmup + int(config.train_fraction * usable)
    ranges = {
        "train": range(config.warmup, boundary - config.length + 1),
        "test": range(boundary, len(frames) - config.length + 1),
    }
    if min(len(r) for r in ranges.values()) < 1:
        raise ValueError(f"{video}: too few frames to split into train and validation")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    paths = []
    for split, count, rng in (("train", train_size, train_rng), ("test", test_size, test_rng)):
        arrays = sample_sequences(images, masks, ranges[split], count, config, rng)
        meta: dict[str, Any] = {
            "proxy_ground_truth": True,
            "source": str(video),
            "split": "train" if split == "train" else "validation",
            # The first and the last frame (of the kept ones) any sequence uses.
            "frames": [ranges[split].start, ranges[split].stop + config.length - 2],
            "video_frames": len(frames),
            "seed": seed,
            "preprocessing": dataclasses.asdict(config),
            "generator": "sqair_pyro.data.video.make_video_data",
        }
        arrays["metadata"] = metadata_array(meta)
        paths.append(save_npz(Path(out_dir) / f"{split}.npz", arrays))
    return paths[0], paths[1]
