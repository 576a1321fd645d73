"""``make demo``: the main job, end to end on a small test set, in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

from sqair_pyro.data import load_npz, make_data
from sqair_pyro.viz import ground_truth_rows, plot_sequences

#: The shipped models the demo shows, best first.
DEMO_MODELS = ("mlp-sqair", "mlp-air")


def run_demo(
    out: str | Path,
    mnist_dir: str | Path | None = None,
    seed: int = 0,
    num_sequences: int = 100,
    num_particles: int = 10,
) -> Path:
    """Generate a small test set, evaluate the shipped models on it, draw what they see.

    Writes ``ground_truth.png`` and, per shipped model, ``NAME/report.json`` and the
    figures of ``sqair-pyro show``. Returns the folder.
    """
    from sqair_pyro import pretrained
    from sqair_pyro.evaluate import evaluate, markdown_table, save_report
    from sqair_pyro.show import write_figures

    out = Path(out)
    data_dir = out / "data"
    make_data(data_dir, train_size=10, test_size=num_sequences, seed=seed, mnist_dir=mnist_dir)
    test = load_npz(data_dir / "test.npz")
    figure = plot_sequences(
        out / "ground_truth.png",
        ground_truth_rows(test, list(range(6))),
        title="moving multi-MNIST: ground-truth boxes, coloured by digit identity",
    )
    print(f"figure: {figure}")
    reports = []
    for name in (n for n in DEMO_MODELS if n in pretrained.available()):
        config, model, guide = pretrained.load_pretrained(name)
        report = evaluate(
            model, guide, config, test, num_particles=num_particles, seed=seed, checkpoint=name
        )
        save_report(report, out / name / "report.json")
        reports.append(report)
        for path in write_figures(model, guide, config, test, out / name, seed=seed):
            print(f"figure: {path}")
    if reports:
        print(markdown_table(reports))
    else:
        print("no shipped checkpoint found in sqair_pyro/weights")
    return out
