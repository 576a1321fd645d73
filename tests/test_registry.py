"""Components by name: a prior written outside the package trains from the command line,
saves, loads in a fresh process and evaluates; nested configs; old checkpoints still load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sqair_pyro import registry
from sqair_pyro.build import build
from sqair_pyro.checkpoint import read_checkpoint
from sqair_pyro.cli import main
from sqair_pyro.config import Config, preset

#: A user's module: a discovery prior with one learnable continue logit per slot.
USER_MODULE = """
import torch
from torch import nn

from sqair_pyro.models.priors import DiscoveryPrior
from sqair_pyro.registry import register


class LearnedSlotPrior(DiscoveryPrior):
    def __init__(self, max_objects, rho):
        super().__init__()
        self.max_objects = max_objects
        self.logits = nn.Parameter(torch.full((max_objects,), float(rho)).logit())

    def continue_probs(self, num_propagated, t):
        return self.free_slots(num_propagated).float() * torch.sigmoid(self.logits)


@register("discovery_prior")
def learned_slot_prior(config, rho=0.5):
    return LearnedSlotPrior(config.max_objects, rho)
"""


def test_a_prior_of_ones_own_trains_saves_loads_and_evaluates(
    tmp_path, tiny_data, capsys, scratch_registry
):
    module = tmp_path / "my_priors.py"
    module.write_text(USER_MODULE)
    run = tmp_path / "run"
    small = ["--set", "hidden=16", "--set", "init_from=None", "--set", "validation_size=4"]
    prior = '--set=model.discovery_prior={"name": "learned_slot_prior", "rho": 0.2}'
    args = ["train", "--preset", "mlp-sqair", "--data", str(tiny_data), "--out", str(run)]
    assert main([*args, "--import", str(module), prior, *small, "--steps", "2"]) == 0
    payload = read_checkpoint(run / "last.pt")
    config = payload["config"]
    assert config["model"]["discovery_prior"] == {"name": "learned_slot_prior", "rho": 0.2}
    assert config["imports"] == [str(module.resolve())]
    assert "discovery_prior.logits" in payload["model"]
    # It resumes, and a fresh process (where nothing registered the prior) evaluates it.
    assert (
        main(["train", "--resume", "--data", str(tiny_data), "--out", str(run), "--steps", "3"])
        == 0
    )
    report = tmp_path / "r.json"
    evaluate = [sys.executable, "-m", "sqair_pyro.cli", "evaluate", "--checkpoint"]
    evaluate += [str(run / "last.pt"), "--data", str(tiny_data), "--out", str(report)]
    done = subprocess.run(
        [*evaluate, "--particles", "2", "--sequences", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["checkpoint_step"] == 3
    # A name nobody registered: one line naming the registered ones.
    bad = '--set=model.discovery_prior="nope"'
    assert main([*args[:-1], str(tmp_path / "r2"), bad, *small, "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip().split("\n")[-1]
    assert "unknown discovery_prior 'nope'; registered: categorical, geometric" in err


@pytest.fixture
def scratch_registry():
    """Registrations a test adds are removed afterwards, so other tests see the built-ins."""
    before = {kind: dict(factories) for kind, factories in registry._FACTORIES.items()}
    yield
    for kind, factories in before.items():
        registry._FACTORIES[kind].clear()
        registry._FACTORIES[kind].update(factories)


def test_registry_basics(scratch_registry):
    @registry.register("discovery_prior", "test_prior")
    def first(config):
        return "first"

    @registry.register("discovery_prior", "test_prior")  # a cell run again replaces it
    def second(config, scale=1):
        return ("second", scale)

    assert "test_prior" in registry.names("discovery_prior")
    made = registry.component("discovery_prior", {"name": "test_prior", "scale": 3})(None)
    assert made == ("second", 3)
    for bad, message in (
        (lambda: registry.register("prior"), "unknown component kind 'prior'"),
        (lambda: registry.spec({"scale": 3}), "a component is a name or a dict with a 'name'"),
        (
            lambda: registry.component("model", "crnn"),
            "unknown model .crnn.; registered: air, sqair, vrnn",
        ),
        (lambda: registry.import_module("no_such_module_here"), "cannot import component"),
    ):
        with pytest.raises(ValueError, match=message):
            bad()
    with pytest.raises(FileNotFoundError, match="component module not found"):
        registry.import_module("missing_file.py")


def test_nested_config_round_trip_and_dotted_keys():
    config = preset("mlp-sqair", hidden=64)
    nested = config.to_dict()
    assert set(nested) == {"model", "guide", "training", "imports"}
    assert nested["model"]["name"] == "sqair" and nested["model"]["hidden"] == 64
    assert nested["guide"]["what_scale_offset"] == config.what_scale_offset
    assert nested["training"]["lr"] == config.lr
    assert Config.from_dict(json.loads(json.dumps(nested))) == config
    assert config.replace(**{"model.name": "air", "training.lr": 0.5}).model == "air"
    with pytest.raises(ValueError, match="unknown config key guide.hidden"):
        config.replace(**{"guide.hidden": 3})
    assert config.model_name == "MLP-SQAIR"
    assert nested["guide"]["name"] == "" and config.replace(**{"guide.name": "air"}).guide == "air"


def test_a_model_with_another_guide(scratch_registry):
    """Model and guide are separate components: SQAIR's model with a guide registered under
    another name builds, and a name that is not registered is one clear error."""
    registry.register("guide", "sqair_again")(registry.component("guide", "sqair"))
    model, guide = build(preset("mlp-sqair", init_from=None, guide="sqair_again"))
    assert type(guide).__name__ == "SQAIRGuide" and type(model).__name__ == "SQAIRModel"
    with pytest.raises(ValueError, match="unknown guide 'nope'; registered: air, sqair"):
        build(preset("mlp-sqair", init_from=None, guide="nope"))


@pytest.mark.parametrize(
    ("path", "nested"),
    [
        ("checkpoints/mlp-sqair/last.pt", False),  # a committed training state, flat config
        ("checkpoints/campH/weights.pt", True),
    ],
)
def test_old_checkpoints_still_load(path, nested):
    """Checkpoints written with the flat config (older) or the nested one rebuild the same
    model, weights strict."""
    payload = read_checkpoint(Path(__file__).parents[1] / path)
    assert ("training" in payload["config"]) == nested
    config = Config.from_dict(payload["config"])
    model, guide = build(config)
    model.load_state_dict(payload["model"])
    guide.load_state_dict(payload["guide"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
