"""Moving multi-MNIST sequences (SQAIR paper Sec. 4.1).

Each sequence holds ``n ~ U{min_digits..max_digits}`` MNIST digits on a 50x50 canvas for 10
frames. Every digit is cropped to the bounding box of its non-zero pixels; its top-left corner
starts uniformly so that the digit lies fully inside the canvas, and the first-frame boxes are
rejection-sampled not to overlap. Per axis the corner follows

    position += velocity; velocity += acceleration; acceleration += N(0, 0.01^2)

with reflection at the position bounds ``[0, 50]`` (position mirrored, velocity and acceleration
negated), then velocity clipped to ``[-10, 10]`` and acceleration to ``[-3, 3]``. Because the
bound is on the top-left corner, a digit can slide partly or fully out through the right or
bottom edge and always comes back. Frames are rendered at integer-rounded positions, digits
combined by ``max``.

Besides the frames, the ground truth of each frame is kept: per digit slot (slot ``m`` is the
object's identity) its visible box ``(x, y, width, height)`` in pixels (the non-zero pixels that
land inside the canvas; zeros when none do), a visibility flag, the per-frame count of visible
digits and the class labels (``-1`` for an empty slot).

This generator is one writer of the data format of :mod:`sqair_pyro.data.format`: it writes
every ground-truth array, and the ``metadata`` JSON holds its configuration and provenance.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .format import metadata_array, save_npz

__all__ = [
    "FORMAT_VERSION",
    "MovingMNISTConfig",
    "crop_boxes",
    "generate",
    "make_data",
    "motion_step",
    "reflect",
    "simulate_motion",
]

#: 2: the JSON array is called ``metadata`` (``config`` in version 1) and ground truth is optional.
FORMAT_VERSION = 2


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MovingMNISTConfig:
    """Every knob of the generator; defaults are the paper's / original generator's.

    Attributes:
        canvas_size: ``(height, width)`` of a frame in pixels.
        num_frames: sequence length ``T``.
        max_digits: number of digit slots ``M``; the number of digits in a sequence is uniform
            over ``{min_digits, ..., max_digits}``.
        min_digits: smallest number of digits in a sequence.
        crop_digits: crop each digit tightly to the bounding box of its non-zero pixels.
        non_overlapping_first_frame: rejection-sample first-frame positions so that the digit
            boxes do not overlap (touching edges is allowed).
        initial_velocity_bound: initial velocity per axis ~ ``U[-b, b]`` (pixels per frame).
        initial_acceleration_bound: initial acceleration per axis ~ ``U[-b, b]``.
        velocity_bound: velocity clipped to ``[-b, b]`` after every step.
        acceleration_bound: acceleration clipped to ``[-b, b]`` after every step.
        acceleration_noise_std: std of the Gaussian added to the acceleration every step.
        position_bounds_x: ``(low, high)`` bounds of the top-left corner's x coordinate;
            ``None`` means ``(0, width)``.
        position_bounds_y: same for y; ``None`` means ``(0, height)``.
        max_rejection_rounds: give up the first-frame rejection sampling after this many rounds.
    """

    canvas_size: tuple[int, int] = (50, 50)
    num_frames: int = 10
    max_digits: int = 2
    min_digits: int = 0
    crop_digits: bool = True
    non_overlapping_first_frame: bool = True
    initial_velocity_bound: float = 10.0
    initial_acceleration_bound: float = 3.0
    velocity_bound: float = 10.0
    acceleration_bound: float = 3.0
    acceleration_noise_std: float = 0.01
    position_bounds_x: tuple[float, float] | None = None
    position_bounds_y: tuple[float, float] | None = None
    max_rejection_rounds: int = 10000

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) and store tuples so the dataclass stays hashable.
        for name in ("canvas_size", "position_bounds_x", "position_bounds_y"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        height, width = self.canvas_size
        if len(self.canvas_size) != 2 or min(height, width) < 1:
            raise ValueError(f"canvas_size must be (height, width) >= 1, got {self.canvas_size}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if not 0 <= self.min_digits <= self.max_digits:
            raise ValueError(
                f"need 0 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}"
            )
        for name in (
            "initial_velocity_bound",
            "initial_acceleration_bound",
            "velocity_bound",
            "acceleration_bound",
            "acceleration_noise_std",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for axis, (low, high), extent in (
            ("x", self.bounds_x, width),
            ("y", self.bounds_y, height),
        ):
            if not (low <= 0 and high >= extent - 1 and low < high):
                raise ValueError(
                    f"position_bounds_{axis}={(low, high)} must contain [0, {extent - 1}] so that "
                    "first-frame positions are inside the bounds"
                )
        if self.max_rejection_rounds < 1:
            raise ValueError("max_rejection_rounds must be >= 1")

    @property
    def height(self) -> int:
        return int(self.canvas_size[0])

    @property
    def width(self) -> int:
        return int(self.canvas_size[1])

    @property
    def bounds_x(self) -> tuple[float, float]:
        b = self.position_bounds_x
        return (0.0, float(self.canvas_size[1])) if b is None else (float(b[0]), float(b[1]))

    @property
    def bounds_y(self) -> tuple[float, float]:
        b = self.position_bounds_y
        return (0.0, float(self.canvas_size[0])) if b is None else (float(b[0]), float(b[1]))

    @property
    def position_low(self) -> np.ndarray:
        """Lower position bounds as an ``(x, y)`` array (broadcasts over a last axis of 2)."""
        return np.array([self.bounds_x[0], self.bounds_y[0]])

    @property
    def position_high(self) -> np.ndarray:
        return np.array([self.bounds_x[1], self.bounds_y[1]])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MovingMNISTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown MovingMNISTConfig fields: {sorted(unknown)}")
        return cls(**dict(data))


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


def reflect(
    position: np.ndarray,
    velocity: np.ndarray,
    acceleration: np.ndarray,
    low: np.ndarray | float,
    high: np.ndarray | float,
    max_reflections: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror positions that crossed ``low``/``high``; negate their velocity and acceleration.

    A position strictly beyond a bound is mirrored about it (``p -> 2 * high - p``); every
    reflection flips the sign of velocity and acceleration. Repeated until all positions lie
    within the bounds (one round suffices when ``|velocity| < high - low``).
    """
    p = np.array(position, dtype=np.float64)
    v = np.array(velocity, dtype=np.float64)
    a = np.array(acceleration, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    for _ in range(max_reflections):
        above = p > high
        below = p < low
        out = above | below
        if not out.any():
            return p, v, a
        p = np.where(above, 2.0 * high - p, np.where(below, 2.0 * low - p, p))
        v = np.where(out, -v, v)
        a = np.where(out, -a, a)
    raise RuntimeError("reflect: positions did not come back within bounds")


def motion_step(
    position: np.ndarray,
    velocity: np.ndarray,
    acceleration: np.ndarray,
    noise: np.ndarray | float,
    config: MovingMNISTConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the motion model; arrays end with an ``(x, y)`` axis of size 2.

    ``position += velocity; velocity += acceleration; acceleration += noise``, then reflection at
    the position bounds, then velocity clipped to ``velocity_bound`` and acceleration to
    ``acceleration_bound``.
    """
    p = np.asarray(position, dtype=np.float64) + velocity
    v = np.asarray(velocity, dtype=np.float64) + acceleration
    a = np.asarray(acceleration, dtype=np.float64) + noise
    p, v, a = reflect(p, v, a, config.position_low, config.position_high)
    v = np.clip(v, -config.velocity_bound, config.velocity_bound)
    a = np.clip(a, -config.acceleration_bound, config.acceleration_bound)
    return p, v, a


def simulate_motion(
    config: MovingMNISTConfig,
    initial_positions: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Simulate trajectories of top-left corners.

    Args:
        config: generator configuration.
        initial_positions: ``[..., 2]`` first-frame ``(x, y)`` positions.
        rng: source of the initial velocities/accelerations and of the acceleration noise.

    Returns:
        ``positions``, ``velocities``, ``accelerations``: float64 arrays of shape
        ``[N, T, ..., 2]`` (time inserted after the first axis), the state at each frame.
    """
    p = np.asarray(initial_positions, dtype=np.float64)
    shape = p.shape
    v = rng.uniform(-config.initial_velocity_bound, config.initial_velocity_bound, size=shape)
    a = rng.uniform(
        -config.initial_acceleration_bound, config.initial_acceleration_bound, size=shape
    )
    noise = rng.normal(0.0, config.acceleration_noise_std, size=(config.num_frames - 1, *shape))
    positions, velocities, accelerations = [p], [v], [a]
    for t in range(config.num_frames - 1):
        p, v, a = motion_step(p, v, a, noise[t], config)
        positions.append(p)
        velocities.append(v)
        accelerations.append(a)
    return {
        "positions": np.stack(positions, axis=1),
        "velocities": np.stack(velocities, axis=1),
        "accelerations": np.stack(accelerations, axis=1),
    }


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up to integer pixels (np.rint rounds half to even)."""
    return np.floor(np.asarray(x) + 0.5).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------------------------


def crop_boxes(digits: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(x0, y0, width, height)`` (int64 ``[P, 4]``) of non-zero pixels.

    All-zero images get ``(0, 0, 0, 0)``.
    """
    nz = np.asarray(digits) > 0
    rows = nz.any(axis=2)
    cols = nz.any(axis=1)
    h, w = nz.shape[1:]
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    empty = ~rows.any(axis=1)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.int64)
    boxes[empty] = 0
    return boxes


def _shift_to_origin(digits: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Move each digit so its crop box starts at pixel (0, 0); the rest is zero-padded."""
    _, h, w = digits.shape
    rr = np.arange(h)[None, :, None] + boxes[:, 1, None, None]
    cc = np.arange(w)[None, None, :] + boxes[:, 0, None, None]
    inside = (rr < h) & (cc < w)
    index = np.arange(len(digits))[:, None, None]
    shifted = digits[index, np.minimum(rr, h - 1), np.minimum(cc, w - 1)]
    return np.where(inside, shifted, 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _overlapping(pixel_pos: np.ndarray, sizes: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rows ``[n]`` in which two present boxes ``[pos, pos + size)`` overlap."""
    num, slots = present.shape
    bad = np.zeros(num, dtype=bool)
    for i in range(slots):
        for j in range(i + 1, slots):
            lo = np.maximum(pixel_pos[:, i], pixel_pos[:, j])
            hi = np.minimum(pixel_pos[:, i] + sizes[:, i], pixel_pos[:, j] + sizes[:, j])
            overlap = (hi > lo).all(axis=-1)
            bad |= overlap & present[:, i] & present[:, j]
    return bad


def _initial_positions(
    config: MovingMNISTConfig, sizes: np.ndarray, present: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """First-frame corners ``[N, M, 2]``: uniform with the digit fully inside the canvas."""
    extent = np.array([config.width, config.height], dtype=np.float64)
    span = extent - sizes  # >= 0, checked by the caller
    positions = rng.uniform(size=sizes.shape) * span
    if not config.non_overlapping_first_frame:
        return positions
    rows = np.flatnonzero(_overlapping(_round(positions), sizes, present))
    for _ in range(config.max_rejection_rounds):
        if rows.size == 0:
            return positions
        positions[rows] = rng.uniform(size=(rows.size, *sizes.shape[1:])) * span[rows]
        still = _overlapping(_round(positions[rows]), sizes[rows], present[rows])
        rows = rows[still]
    raise RuntimeError(
        f"could not place {rows.size} sequences without first-frame overlap in "
        f"{config.max_rejection_rounds} rounds; use fewer digits or a larger canvas"
    )


def _render(
    config: MovingMNISTConfig,
    patches: np.ndarray,
    digit_index: np.ndarray,
    pixel_pos: np.ndarray,
    chunk_size: int = 512,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the frames and measure each digit's visible box.

    Args:
        patches: ``[P, S_h, S_w]`` digits shifted so their crop box starts at (0, 0).
        digit_index: ``[N, M]`` index into ``patches``; -1 for an empty slot.
        pixel_pos: ``[N, T, M, 2]`` integer ``(x, y)`` of each top-left corner.

    Returns:
        ``images`` uint8 ``[N, T, H, W]``, ``boxes`` float32 ``[N, T, M, 4]``, ``visible`` bool
        ``[N, T, M]``.
    """
    num, frames, slots = pixel_pos.shape[:3]
    height, width = config.height, config.width
    s_h, s_w = patches.shape[1:]
    # Padded scratch canvas: every patch lands fully inside it, so scatters never go out of range.
    if pixel_pos.size:
        lo = pixel_pos.reshape(-1, 2).min(axis=0)
        hi = pixel_pos.reshape(-1, 2).max(axis=0)
    else:
        lo = hi = np.zeros(2, dtype=np.int64)
    off_x, off_y = int(max(0, -lo[0])), int(max(0, -lo[1]))
    pad_w = off_x + max(width, int(hi[0]) + s_w)
    pad_h = off_y + max(height, int(hi[1]) + s_h)
    frame_size = pad_h * pad_w
    rr = np.arange(s_h)
    cc = np.arange(s_w)
    local = rr[:, None] * pad_w + cc[None, :]

    images = np.zeros((num, frames, height, width), dtype=np.uint8)
    boxes = np.zeros((num, frames, slots, 4), dtype=np.float32)
    visible = np.zeros((num, frames, slots), dtype=bool)

    starts: Any = range(0, num, chunk_size)
    if progress:
        try:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="moving MNIST", unit="chunk", leave=False)
        except ImportError:  # progress bars are optional
            pass
    for start in starts:
        stop = min(start + chunk_size, num)
        canvas = np.zeros((stop - start, frames, pad_h, pad_w), dtype=np.uint8)
        flat = canvas.reshape(-1)
        for m in range(slots):
            rows = np.flatnonzero(digit_index[start:stop, m] >= 0)
            if rows.size == 0:
                continue
            seq = start + rows
            patch = patches[digit_index[seq, m]]
            nz = patch > 0
            for t in range(frames):
                px = pixel_pos[seq, t, m, 0]
                py = pixel_pos[seq, t, m, 1]
                base = (rows * frames + t) * frame_size + (py + off_y) * pad_w + (px + off_x)
                index = base[:, None, None] + local
                # One patch per (row, frame, slot): indices are unique, so this is an exact max.
                flat[index] = np.maximum(flat[index], patch)
                # Visible extent: non-zero pixels whose canvas coordinates fall inside the frame.
                ys = py[:, None] + rr
                xs = px[:, None] + cc
                row_in = (ys >= 0) & (ys < height)
                col_in = (xs >= 0) & (xs < width)
                row_any = (nz & col_in[:, None, :]).any(axis=2) & row_in
                col_any = (nz & row_in[:, :, None]).any(axis=1) & col_in
                vis = row_any.any(axis=1)
                y0 = row_any.argmax(axis=1)
                y1 = s_h - row_any[:, ::-1].argmax(axis=1)
                x0 = col_any.argmax(axis=1)
                x1 = s_w - col_any[:, ::-1].argmax(axis=1)
                box = np.stack([px + x0, py + y0, x1 - x0, y1 - y0], axis=1)
                boxes[seq, t, m] = np.where(vis[:, None], box, 0)
                visible[seq, t, m] = vis
        images[start:stop] = canvas[:, :, off_y : off_y + height, off_x : off_x + width]
    return images, boxes, visible


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.SeedSequence(int(seed))
    raise TypeError(f"seed must be an int or a numpy SeedSequence, got {type(seed).__name__}")


def generate(
    config: MovingMNISTConfig | None,
    digits: np.ndarray,
    labels: np.ndarray,
    num_sequences: int,
    seed: int | np.random.SeedSequence,
    *,
    return_trajectories: bool = False,
    progress: bool = False,
    source: str | None = None,
    chunk_size: int = 512,
) -> dict[str, np.ndarray]:
    """Generate moving multi-MNIST sequences (vectorised over sequences).

    Args:
        config: generator configuration (``None``: paper defaults).
        digits: uint8 ``[P, h, w]`` pool of digit images (``h <= H``, ``w <= W`` after cropping).
        labels: ``[P]`` digit classes in 0..9.
        num_sequences: ``N``.
        seed: int or ``np.random.SeedSequence``; the output is a deterministic function of it.
        return_trajectories: also return the motion state and the digits used: ``positions``,
            ``velocities``, ``accelerations`` (float64 ``[N, T, M, 2]``, ``(x, y)`` of the
            top-left corner of the crop), ``pixel_positions`` (int64, the rounded positions
            used for rendering), ``digit_indices`` (int64 ``[N, M]`` into ``digits``, -1 for an
            empty slot) and ``crop_sizes`` (int64 ``[N, M, 2]`` crop ``(width, height)``).
        progress: show a tqdm progress bar.
        source: free-text provenance stored in the metadata (e.g. ``"mnist-train"``).
        chunk_size: sequences rendered at once (memory vs. speed).

    Returns:
        The arrays of a data file (:mod:`sqair_pyro.data.format`): ``images``, ``counts``,
        ``boxes``, ``visible``, ``labels``, ``metadata``; plus the trajectory arrays when requested.
    """
    config = MovingMNISTConfig() if config is None else config
    digits = np.asarray(digits)
    labels = np.asarray(labels)
    if digits.ndim != 3 or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 [P, h, w], got {digits.dtype} {digits.shape}")
    if labels.shape != digits.shape[:1]:
        raise ValueError(f"labels must have shape {digits.shape[:1]}, got {labels.shape}")
    if len(digits) == 0:
        raise ValueError("digits is empty")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError("labels must be digit classes in 0..9")
    if num_sequences < 0:
        raise ValueError(f"num_sequences must be >= 0, got {num_sequences}")
    seed_seq = _seed_sequence(seed)
    rng = np.random.default_rng(seed_seq)
    num, slots = int(num_sequences), config.max_digits

    # Crops of the digit pool.
    if config.crop_digits:
        crops = crop_boxes(digits)
        if (crops[:, 2] == 0).any():
            raise ValueError("digits contains an all-zero image, which has no crop box")
        patches = _shift_to_origin(digits, crops)
        crop_wh = crops[:, 2:4]
    else:
        patches = digits
        crop_wh = np.tile(np.array([digits.shape[2], digits.shape[1]]), (len(digits), 1))
    if (crop_wh[:, 0] > config.width).any() or (crop_wh[:, 1] > config.height).any():
        raise ValueError(
            f"digits of shape {digits.shape[1:]} do not fit a {config.canvas_size} canvas"
        )

    # Which digits: n ~ U{min..max}, slots 0..n-1 filled.
    num_digits = rng.integers(config.min_digits, config.max_digits + 1, size=num)
    present = np.arange(slots)[None, :] < num_digits[:, None]
    drawn = rng.integers(0, len(digits), size=(num, slots))
    digit_index = np.where(present, drawn, -1)
    seq_labels = np.where(present, labels[drawn], -1).astype(np.int64)
    sizes = np.where(present[..., None], crop_wh[drawn], 0).astype(np.int64)

    # Where and how they move.
    initial = _initial_positions(config, sizes, present, rng)
    motion = simulate_motion(config, initial, rng)
    pixel_pos = _round(motion["positions"])

    images, boxes, visible = _render(config, patches, digit_index, pixel_pos, chunk_size, progress)
    out = {
        "images": images,
        "counts": visible.sum(axis=-1).astype(np.int64),
        "boxes": boxes,
        "visible": visible,
        "labels": seq_labels,
        "metadata": _metadata_array(config, seed_seq, num, source),
    }
    if return_trajectories:
        out.update(motion)
        out["pixel_positions"] = pixel_pos
        out["digit_indices"] = digit_index.astype(np.int64)
        out["crop_sizes"] = sizes
    return out


def _metadata_array(
    config: MovingMNISTConfig, seed: np.random.SeedSequence, num: int, source: str | None
) -> np.ndarray:
    return metadata_array(
        {
            "format_version": FORMAT_VERSION,
            "generator": "sqair_pyro.data.moving_mnist.generate",
            "config": config.to_dict(),
            "num_sequences": num,
            "seed": {"entropy": seed.entropy, "spawn_key": list(seed.spawn_key)},
            "source": source,
        }
    )


def make_data(
    out_dir: str | os.PathLike,
    train_size: int = 60000,
    test_size: int = 10000,
    seed: int = 0,
    mnist_dir: str | os.PathLike | None = None,
    config: MovingMNISTConfig | None = None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write ``out_dir/train.npz`` (MNIST training digits) and ``out_dir/test.npz`` (test digits).

    The two splits use independent seeds derived from ``seed`` (``SeedSequence(seed).spawn(2)``).
    """
    from .mnist import load_mnist

    out = Path(out_dir)
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    paths = []
    for split, size, split_seed in (
        ("train", train_size, train_seed),
        ("test", test_size, test_seed),
    ):
        started = time.perf_counter()
        digits, labels = load_mnist(split, mnist_dir)
        arrays = generate(
            config, digits, labels, size, split_seed, progress=progress, source=f"mnist-{split}"
        )
        path = save_npz(out / f"{split}.npz", arrays)
        if progress:
            print(f"wrote {path} ({size} sequences, {time.perf_counter() - started:.1f} s)")
        paths.append(path)
    return paths[0], paths[1]
