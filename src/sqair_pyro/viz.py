"""Figures: frames with boxes coloured by object identity, reconstructions, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

#: One colour per identity, cycling (colour-blind safe "tab10").
PALETTE = plt.get_cmap("tab10").colors


def identity_colour(identity: int) -> tuple[float, float, float]:
    return PALETTE[int(identity) % len(PALETTE)]


def draw_frame(
    ax: plt.Axes,
    frame: np.ndarray,
    boxes: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """A frame (H, W) in grey, boxes (M, 4) as (x, y, w, h) pixels, ids (M,) (-1: none)."""
    ax.imshow(frame, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if boxes is not None and ids is not None:
        for (x, y, w, h), identity in zip(boxes, ids, strict=True):
            if identity < 0:
                continue
            ax.add_patch(
                Rectangle(
                    (x - 0.5, y - 0.5), w, h, fill=False, lw=1.5, ec=identity_colour(identity)
                )
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-0.5, frame.shape[1] - 0.5)
    ax.set_ylim(frame.shape[0] - 0.5, -0.5)
    if title:
        ax.set_title(title, fontsize=7)


def plot_sequences(
    path: str | Path,
    rows: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
    title: str | None = None,
) -> Path:
    """A grid: one row per ``(label, frames (T, H, W), boxes (T, M, 4), ids (T, M))``.

    Use it for inputs above reconstructions, ground truth above inference, and so on.
    """
    num_frames = max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(
        len(rows), num_frames, figsize=(1.1 * num_frames, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, frames, boxes, ids) in enumerate(rows):
        for t in range(num_frames):
            ax = axes[r, t]
            if t >= frames.shape[0]:
                ax.axis("off")
                continue
            draw_frame(
                ax,
                frames[t],
                None if boxes is None else boxes[t],
                None if ids is None else ids[t],
                title=f"t={t + 1}" if r == 0 else None,
            )
        axes[r, 0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ground_truth_rows(
    arrays: dict[str, np.ndarray], indices: list[int]
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of :func:`plot_sequences` for data sequences, boxes coloured by digit slot."""
    rows = []
    for i in indices:
        visible = arrays["visible"][i]  # (T, M)
        slots = np.broadcast_to(np.arange(visible.shape[1]), visible.shape)
        ids = np.where(visible, slots, -1)
        labels = [str(c) for c in arrays["labels"][i] if c >= 0]
        name = f"seq {i}: " + (", ".join(labels) if labels else "empty")
        rows.append((name, arrays["images"][i] / 255.0, arrays["boxes"][i], ids))
    return rows


def reconstruction_rows(
    images: np.ndarray, canvas: np.ndarray, boxes: np.ndarray, ids: np.ndarray
) -> list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Rows of :func:`plot_sequences`: each input sequence above its reconstruction with boxes.

    ``images``, ``canvas`` (S, T, H, W); ``boxes`` (S, T, N, 4); ``ids`` (S, T, N).
    """
    rows = []
    for s in range(images.shape[0]):
        rows.append((f"input {s}", images[s], None, None))
        rows.append((f"inferred {s}", np.clip(canvas[s], 0, 1), boxes[s], ids[s]))
    return rows
