"""``make demo``: the main job, end to end on a small test set, in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

from sqair_pyro.data import load_npz, make_data
from sqair_pyro.viz import ground_truth_rows, plot_sequences


def run_demo(out: str | Path, mnist_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Generate a small moving multi-MNIST set and draw sequences with their true boxes.

    Returns the folder that holds the figures.
    """
    out = Path(out)
    data_dir = out / "data"
    make_data(data_dir, train_size=200, test_size=100, seed=seed, mnist_dir=mnist_dir)
    test = load_npz(data_dir / "test.npz")
    figure = plot_sequences(
        out / "ground_truth.png",
        ground_truth_rows(test, list(range(6))),
        title="moving multi-MNIST: ground-truth boxes, coloured by digit identity",
    )
    print(f"figure: {figure}")
    return out
