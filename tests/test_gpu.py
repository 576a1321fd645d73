"""The CUDA path of train, evaluate and show; skipped on a machine without a GPU."""

import json

import pytest
import torch
from conftest import small_config

from sqair_pyro.cli import main
from sqair_pyro.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_a_training_step_runs_on_the_gpu():
    trainer = Trainer(small_config("mlp-sqair"), device="cuda")
    assert all(p.is_cuda for p in trainer.model.parameters())
    metrics = trainer.step(torch.rand(4, 3, 50, 50), torch.zeros(4, 3, dtype=torch.long))
    assert torch.isfinite(torch.tensor(metrics["bound"]))


def test_a_training_step_with_aligned_windows_runs_on_the_gpu():
    """``propagation_aligns_window``'s Gauss-Newton steps keep their tensors on the device."""
    config = small_config("mlp-sqair").replace(
        propagation_reads_residual=True, propagation_aligns_window=2
    )
    trainer = Trainer(config, device="cuda")
    metrics = trainer.step(torch.rand(4, 3, 50, 50), torch.zeros(4, 3, dtype=torch.long))
    assert torch.isfinite(torch.tensor(metrics["bound"]))


def test_train_evaluate_and_show_with_device_cuda(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "mlp-air", "--data", str(tiny_data), "--out", str(run)]
    assert main([*args, "--steps", "2", "--set", "hidden=16", "--device", "cuda"]) == 0
    report = tmp_path / "r.json"
    evaluate = ["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(tiny_data)]
    assert main([*evaluate, "--out", str(report), "--particles", "2", "--sequences", "3",
                 "--device", "cuda"]) == 0  # fmt: skip
    assert json.loads(report.read_text())["device"].startswith("cuda")
    show = ["show", "--checkpoint", str(run / "last.pt"), "--data", str(tiny_data)]
    assert main([*show, "--out", str(tmp_path / "f"), "--sequences", "2", "--device", "cuda"]) == 0
    assert (tmp_path / "f" / "reconstructions.png").exists()
