"""Shipped checkpoints: exported without optimiser state, loaded by name."""

import json

import pytest
import torch
from conftest import small_config

from sqair_pyro import pretrained
from sqair_pyro.checkpoint import read_checkpoint
from sqair_pyro.train import train


def test_export_keeps_weights_drops_optimiser(tiny_data, tmp_path, monkeypatch):
    best = train(small_config("mlp-air", num_steps=2), tiny_data, tmp_path / "run", progress=False)
    out = pretrained.export(best, tmp_path / "shipped" / "tiny-air.pt", {"counting_accuracy": 0.5})
    full, slim = read_checkpoint(best), read_checkpoint(out)
    assert "optimizer" in full and "optimizer" not in slim
    assert all(torch.equal(full["guide"][k], slim["guide"][k]) for k in full["guide"])
    assert out.stat().st_size < (tmp_path / "run" / "last.pt").stat().st_size

    monkeypatch.setattr(pretrained, "_pretrained_dir", lambda: tmp_path / "shipped")
    assert pretrained.available() == ["tiny-air"]
    config, model, guide = pretrained.load_pretrained("tiny-air")
    assert config == small_config("mlp-air", num_steps=2)
    assert pretrained.pretrained_metrics("tiny-air") == {"counting_accuracy": 0.5}
    assert json.loads(out.with_suffix(".json").read_text())["counting_accuracy"] == 0.5
    with pytest.raises(FileNotFoundError, match="tiny-air"):
        pretrained.load_pretrained("no-such-model")
