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


@pytest.mark.parametrize(
    ("name", "air", "healthy", "collapse"),
    [  # the largest fall of a run that went on to improve, and a collapse (docs/results.md)
        ("mlp-sqair", "mlp-air", 38.0, 168.0),
        ("conv-sqair", "conv-air", 92.0, 378.0),
        ("conv-sqair-pedestrians", "conv-air-pedestrians", 92.0, 378.0),
    ],
)
def test_sqair_presets_start_from_the_shipped_air(name, air, healthy, collapse):
    """The presets' recipe: warm start from the shipped AIR by name, and roll back by
    themselves when the validation bound falls far below its best, not on a healthy dip."""
    from sqair_pyro.config import preset
    from sqair_pyro.train import Trainer, diverged

    trainer = Trainer(preset(name))
    assert diverged(trainer.config, 6200.0 - collapse, best=6200.0)
    assert not diverged(trainer.config, 6200.0 - healthy, best=6200.0)
    assert "guide.discovery.rnn.weight_ih" in trainer.initialised
    _, air_model, _ = pretrained.load_pretrained(air)
    decoder = trainer.model.likelihood.decoder.net[0].weight
    assert torch.equal(decoder, air_model.likelihood.decoder.net[0].weight)


def test_the_shipped_models_count_as_documented(tiny_data):
    """On 60 fresh test sequences (600 frames), each shipped model's counting accuracy is
    within 0.03 of the figure in its JSON (measured on all 10,000 test sequences)."""
    from sqair_pyro.data import load_npz
    from sqair_pyro.evaluate import evaluate

    arrays = load_npz(tiny_data / "test.npz")
    for name in ("mlp-air", "conv-air", "mlp-sqair"):
        config, model, guide = pretrained.load_pretrained(name)
        report = evaluate(model, guide, config, arrays, num_particles=1, progress=False)
        documented = pretrained.pretrained_metrics(name)["counting_accuracy"]
        assert abs(report["counting_accuracy"] - documented) < 0.03, (
            name,
            report["counting_accuracy"],
        )
