"""Figures: frames with boxes coloured by object identity, reconstructions, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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
    """Rows of :func:`plot_sequences` for data sequences, boxes coloured by object slot
    (named by their labels when the data have them)."""
    rows = []
    for i in indices:
        visible = arrays["visible"][i]  # (T, M)
        slots = np.broadcast_to(np.arange(visible.shape[1]), visible.shape)
        ids = np.where(visible, slots, -1)
        if "labels" in arrays:
            labels = [str(c) for c in arrays["labels"][i] if c >= 0]
            name = f"seq {i}: " + (", ".join(labels) if labels else "empty")
        else:
            name = f"seq {i}: {int(visible.any(0).sum())} objects"
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


# --------------------------------------------------------------------- model behaviour
# Figures of ``sqair-pyro show`` (:mod:`sqair_pyro.show`): animations, glimpses over time,
# conditional generation with the seen/imagined boundary, training curves.

#: A row of :func:`plot_sequences`: ``(label, frames (T, H, W), boxes (T, M, 4), ids (T, M))``.
Row = tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]

#: Colour of the frame around imagined (not observed) frames.
IMAGINED_COLOUR = (0.85, 0.1, 0.1)


def _save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _tight_below_title(fig: plt.Figure, inches: float) -> None:
    """``tight_layout`` that leaves ``inches`` at the top for the suptitle."""
    fig.tight_layout(rect=(0, 0, 1, 1 - inches / fig.get_figheight()))


def _frame_at(row: Row, t: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    _, frames, boxes, ids = row
    return (
        frames[t],
        None if boxes is None else boxes[t],
        None if ids is None else ids[t],
    )


def animate_sequences(
    path: str | Path,
    panels: list[list[Row | None]],
    title: str | None = None,
    frame_titles: list[str] | None = None,
    fps: float = 2.0,
    panel_size: float = 1.6,
    imagined: list[list[bool]] | None = None,
    num_observed: int = 0,
) -> Path:
    """An animated GIF with one grid panel per sequence row, all stepping through time together.

    :param panels: grid rows of panels, each a row of :func:`plot_sequences` (or None: empty);
        all sequences have the same number of frames ``T``, and the GIF has ``T`` frames.
    :param frame_titles: one title per time step (default ``"t = k / T"``), after ``title``.
    :param imagined: per panel (same layout as ``panels``), whether it is generated; those get
        a red frame from time step ``num_observed`` on (conditional generation).
    """
    cells = [p for grid_row in panels for p in grid_row if p is not None]
    if not cells:
        raise ValueError("nothing to animate")
    num_frames = cells[0][1].shape[0]
    if any(p[1].shape[0] != num_frames for p in cells):
        raise ValueError("every animated sequence needs the same number of frames")
    if frame_titles is None:
        frame_titles = [f"t = {t + 1} / {num_frames}" for t in range(num_frames)]
    if len(frame_titles) != num_frames:
        raise ValueError(f"{len(frame_titles)} frame titles for {num_frames} frames")
    num_rows, num_cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(
        num_rows,
        num_cols,
        figsize=(panel_size * num_cols, panel_size * num_rows + 0.5),
        squeeze=False,
    )
    from matplotlib.animation import PillowWriter

    # Draw every panel once, then only swap the image data and the boxes per time step.
    images = {}
    for r in range(num_rows):
        for c in range(num_cols):
            panel = panels[r][c] if c < len(panels[r]) else None
            if panel is None:
                axes[r, c].axis("off")
                continue
            draw_frame(axes[r, c], *_frame_at(panel, 0), title=panel[0])
            images[r, c] = axes[r, c].images[0]
    fig.suptitle(title or "", fontsize=8)
    _tight_below_title(fig, 0.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=80):
        for t in range(num_frames):
            for (r, c), image in images.items():
                ax = axes[r, c]
                frame, boxes, ids = _frame_at(panels[r][c], t)
                image.set_data(frame)
                if imagined is not None and imagined[r][c]:
                    if t >= num_observed:
                        _frame_axes(ax, IMAGINED_COLOUR)
                    else:
                        _frame_axes(ax, "black", 0.8)
                for patch in list(ax.patches):
                    patch.remove()
                _add_boxes(ax, boxes, ids)
            fig.suptitle(
                frame_titles[t] if not title else f"{title}\n{frame_titles[t]}", fontsize=8
            )
            writer.grab_frame()
    plt.close(fig)
    return path


def _add_boxes(ax: plt.Axes, boxes: np.ndarray | None, ids: np.ndarray | None) -> None:
    """Boxes (M, 4) as (x, y, w, h) pixels in their identity's colour, as :func:`draw_frame`."""
    if boxes is None or ids is None:
        return
    for (x, y, w, h), identity in zip(boxes, ids, strict=True):
        if identity >= 0:
            ax.add_patch(
                Rectangle(
                    (x - 0.5, y - 0.5), w, h, fill=False, lw=1.5, ec=identity_colour(identity)
                )
            )


def _frame_axes(ax: plt.Axes, colour: tuple[float, ...] | str, width: float = 2.0) -> None:
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def plot_glimpses(
    path: str | Path,
    sequences: list[tuple[str, list[Row], list[tuple[int, np.ndarray, np.ndarray]]]],
    title: str | None = None,
) -> Path:
    """Reconstructed glimpses of every object over time (paper Fig. 7).

    :param sequences: per sequence ``(name, rows, objects)``: ``rows`` are rows of
        :func:`plot_sequences` drawn first (e.g. input and reconstruction); ``objects`` are
        ``(identity, glimpses (T, h, w), present (T,))``, one grid row each, a glimpse framed
        in its identity's colour where the object is present and left blank otherwise.
    """
    num_frames = max(
        [r[1].shape[0] for _, rows, _ in sequences for r in rows]
        + [g.shape[0] for _, _, objects in sequences for _, g, _ in objects]
    )
    num_rows = sum(len(rows) + max(len(objects), 1) for _, rows, objects in sequences)
    fig, axes = plt.subplots(
        num_rows, num_frames, figsize=(1.0 * num_frames + 0.6, 1.0 * num_rows + 0.5), squeeze=False
    )
    r = 0
    for name, rows, objects in sequences:
        for i, row in enumerate(rows):
            for t in range(num_frames):
                if t >= row[1].shape[0]:
                    axes[r, t].axis("off")
                    continue
                draw_frame(axes[r, t], *_frame_at(row, t), title=f"t={t + 1}" if r == 0 else None)
            label = f"{name}\n{row[0]}" if i == 0 else row[0]
            axes[r, 0].set_ylabel(label, fontsize=7)
            r += 1
        if not objects:
            for t in range(num_frames):
                axes[r, t].axis("off")
            axes[r, 0].text(0, 0.5, "no objects", fontsize=7, transform=axes[r, 0].transAxes)
            r += 1
        for identity, glimpses, present in objects:
            colour = identity_colour(identity)
            for t in range(num_frames):
                ax = axes[r, t]
                ax.set_xticks([])
                ax.set_yticks([])
                if t < glimpses.shape[0] and present[t]:
                    ax.imshow(glimpses[t], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    _frame_axes(ax, colour)
                else:
                    for spine in ax.spines.values():
                        spine.set_visible(False)
            axes[r, 0].set_ylabel(f"id {identity}", fontsize=7, color=colour)
            r += 1
    if title:
        fig.suptitle(title, fontsize=9)
    _tight_below_title(fig, 0.5 if title else 0.0)
    return _save(fig, path)


def plot_conditional(
    path: str | Path,
    rows: list[Row],
    num_observed: int,
    title: str | None = None,
    imagined: list[bool] | None = None,
) -> Path:
    """Conditional generation (paper Fig. 6): a grid like :func:`plot_sequences` whose frames
    after the first ``num_observed`` are marked as imagined: a red frame around each, the
    column titles ``seen`` / ``imagined`` and a dashed line at the boundary.

    :param imagined: per row, whether it is generated (framed in red after ``num_observed``)
        or real; default: every row but the first.
    """
    if imagined is None:
        imagined = [r > 0 for r in range(len(rows))]
    if len(imagined) != len(rows):
        raise ValueError(f"{len(imagined)} imagined flags for {len(rows)} rows")
    num_frames = max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(
        len(rows), num_frames, figsize=(1.1 * num_frames, 1.15 * len(rows) + 0.5), squeeze=False
    )
    for r, row in enumerate(rows):
        for t in range(num_frames):
            ax = axes[r, t]
            if t >= row[1].shape[0]:
                ax.axis("off")
                continue
            heading = None
            if r == 0:
                heading = f"seen t={t + 1}" if t < num_observed else f"imagined t={t + 1}"
            draw_frame(ax, *_frame_at(row, t), title=heading)
            if t >= num_observed and imagined[r]:
                _frame_axes(ax, IMAGINED_COLOUR)
        axes[r, 0].set_ylabel(row[0], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    _tight_below_title(fig, 0.5 if title else 0.0)
    if 0 < num_observed < num_frames:
        # A dashed line halfway between the last seen and the first imagined column.
        left = axes[0, num_observed - 1].get_position()
        right = axes[0, num_observed].get_position()
        x = (left.x1 + right.x0) / 2
        bottom = axes[-1, 0].get_position().y0
        top = axes[0, 0].get_position().y1
        fig.add_artist(
            plt.Line2D(
                [x, x], [bottom, top], transform=fig.transFigure, color=IMAGINED_COLOUR, ls="--"
            )
        )
    return _save(fig, path)


def _format_duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plot_training_curves(
    path: str | Path,
    train: dict[str, np.ndarray],
    validation: dict[str, np.ndarray],
    title: str | None = None,
) -> Path:
    """Training curves of a run's ``metrics.csv`` against step, wall time on a top axis.

    :param train: columns of the training rows: ``step``, ``wall_s`` (cumulative seconds),
        ``bound``, ``counting_accuracy``, ``objects`` and ``frames`` (curriculum length).
    :param validation: columns of the validation rows: ``step``, ``wall_s``, ``val``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = [
        (axes[0, 0], train, "bound", "training bound (per datum: a sequence, or an AIR frame)"),
        (axes[0, 1], validation, "val", "validation bound (full length)"),
        (axes[1, 0], train, "counting_accuracy", "counting accuracy (training batches)"),
        (axes[1, 1], train, "objects", "objects per frame (training batches)"),
    ]
    for ax, columns, key, label in panels:
        steps = columns.get("step", np.zeros(0))
        values = columns.get(key, np.zeros(0))
        keep = np.isfinite(values)
        if keep.any():
            ax.plot(steps[keep], values[keep], lw=0.8, marker="o" if keep.sum() < 30 else None)
            if keep.sum() >= 20 and columns is train:
                window = max(int(keep.sum()) // 20, 2)
                smooth = np.convolve(values[keep], np.ones(window) / window, mode="valid")
                ax.plot(steps[keep][window - 1 :], smooth, lw=1.8, color="k", alpha=0.7)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    frames = train.get("frames", np.zeros(0))
    steps = train.get("step", np.zeros(0))
    if frames.size > 1:  # curriculum: mark where sequences got longer
        changes = np.flatnonzero(np.diff(frames) != 0) + 1
        for i in changes:
            for ax in axes.flat:
                ax.axvline(steps[i], color="grey", ls=":", lw=0.8)
            axes[0, 0].text(
                steps[i],
                0.02,
                f" T={frames[i]:g}",
                fontsize=6,
                va="bottom",
                transform=axes[0, 0].get_xaxis_transform(),
            )
    for ax in axes[1]:
        ax.set_xlabel("step")
    # Wall time on a top axis: ticks at round times, placed at the step where the run's clock
    # read them (interpolated from the logged (step, time) pairs: the training rows, else the
    # validation rows). Ticks, not an inverse function, so flat stretches of the clock (a
    # resume) cannot stack two labels on one place.
    clock = train if np.size(train.get("step", [])) >= 2 else validation
    all_steps = np.asarray(clock.get("step", []), dtype=float)
    all_wall = np.asarray(clock.get("wall_s", []), dtype=float)
    known = np.isfinite(all_wall)
    all_steps, all_wall = all_steps[known], np.maximum.accumulate(all_wall[known])
    all_wall, first = np.unique(all_wall, return_index=True)  # strictly increasing
    all_steps = all_steps[first]
    walls = np.concatenate([train.get("wall_s", []), validation.get("wall_s", [])])
    walls = walls[np.isfinite(walls)]
    total = float(walls.max()) if walls.size else float("nan")
    if all_steps.size >= 2:
        unit, name = (1.0, "s") if total < 120 else (60.0, "min") if total < 7200 else (3600.0, "h")
        ticks = MaxNLocator(nbins=6).tick_values(all_wall[0] / unit, all_wall[-1] / unit)
        ticks = ticks[(ticks >= all_wall[0] / unit) & (ticks <= all_wall[-1] / unit)]
        positions = np.interp(ticks * unit, all_wall, all_steps)
        for ax in axes[0]:
            top = ax.twiny()
            top.set_xlim(ax.get_xlim())
            top.set_xticks(positions, [f"{t:g}" for t in ticks], fontsize=7)
            top.set_xlabel(f"wall time ({name})", fontsize=8)
    steps_logged = np.concatenate([train.get("step", []), validation.get("step", [])])
    last_step = int(np.max(steps_logged)) if steps_logged.size else 0
    head = f"{last_step} steps, {_format_duration(total)} of training"
    fig.suptitle(f"{title}: {head}" if title else head, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_forecast(path: str | Path, report: dict, title: str | None = None) -> Path:
    """The forecast metrics (:mod:`sqair_pyro.forecast`) against the horizon: the fraction of
    objects that keep their digit's class (imagined, and the reconstruction ceiling), and the
    centre distance of the imagined objects beside the stay and constant-velocity baselines."""
    horizons = np.asarray(report["horizons"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(horizons, report["imagined_kept"], "o-", label="imagined")
    left.plot(horizons, report["reconstructed_kept"], "s--", label="reconstructed (ceiling)")
    left.plot(horizons, report["imagined_present"], ":", color="grey", label="imagined present")
    left.set(xlabel="frames after the last seen", ylabel="fraction", ylim=(0, 1.02))
    left.set_title("digit class kept", fontsize=9)
    left.legend(fontsize=7)
    right.plot(horizons, report["distance_imagined"], "o-", label="imagined")
    right.plot(horizons, report["distance_stay"], "s--", label="stay at last seen")
    right.plot(horizons, report["distance_constant_velocity"], "^:", label="constant velocity")
    right.set(xlabel="frames after the last seen", ylabel="centre distance (pixels)")
    right.set_title("motion", fontsize=9)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(horizons)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    _tight_below_title(fig, 0.3 if title else 0.0)
    return _save(fig, path)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def plot_runs(
    path: str | Path,
    runs: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray], float]],
    title: str | None = None,
) -> Path:
    """Several runs against CPU-hours: the validation bound (left) and the counting accuracy
    of the training batches (right, running mean of 20 logs). Each run is ``(label, train,
    validation, hours_before)`` (the columns of :func:`sqair_pyro.show.read_metrics`);
    ``hours_before`` is the training its first weights already had (a warm start)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (label, train, validation, before) in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        if len(validation.get("val", [])):
            hours = before + validation["wall_s"] / 3600
            left.plot(hours, validation["val"], "o-", ms=3, color=colour, label=label)
        if len(train.get("counting_accuracy", [])):
            accuracy = train["counting_accuracy"]
            keep = np.isfinite(accuracy)
            hours = before + train["wall_s"][keep] / 3600
            right.plot(hours, _running_mean(accuracy[keep], 20), color=colour, label=label)
    left.set(xlabel="CPU-hours of training (one thread)", ylabel="validation bound (nats)")
    left.set_title("validation bound (IWAE, K of the run, full length)", fontsize=9)
    right.set(xlabel="CPU-hours of training (one thread)", ylabel="counting accuracy")
    right.set_title("counting on training batches (running mean of 20 logs)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing logged yet", ha="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    _tight_below_title(fig, 0.3 if title else 0.0)
    return _save(fig, path)
