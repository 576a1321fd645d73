"""Training: it learns something, resumes exactly, survives crashes, reports divergence."""

import contextlib
import csv
import dataclasses
import math

import pytest
import torch
from conftest import small_config

from sqair_pyro import train as train_module
from sqair_pyro.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_atomic
from sqair_pyro.tracking import new_objects_per_frame
from sqair_pyro.train import Trainer, TrainingDivergedError, frames_for_step, train


def _params(path):
    payload = read_checkpoint(path)
    return {**payload["model"], **{f"guide.{k}": v for k, v in payload["guide"].items()}}


@pytest.mark.parametrize("name", ["mlp-air", "mlp-sqair"])
def test_resume_reaches_the_same_parameters(tiny_data, tmp_path, name):
    """Stopped after 3 steps and resumed to 6 == 6 steps uninterrupted, bit for bit."""
    config = small_config(name, num_steps=6, checkpoint_every=3, validate_every=3)
    straight = train(config, tiny_data, tmp_path / "straight", progress=False)
    first = config.replace(num_steps=3)
    train(first, tiny_data, tmp_path / "resumed", progress=False)
    elapsed = read_checkpoint(tmp_path / "resumed" / "last.pt")["elapsed_s"]
    train(config, tiny_data, tmp_path / "resumed", resume=True, progress=False)
    # The training clock runs on over the resume, in the checkpoint and in metrics.csv.
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["elapsed_s"] > elapsed > 0
    with (tmp_path / "resumed" / "metrics.csv").open() as f:
        times = [float(row["time_s"]) for row in csv.DictReader(f)]
    assert len(times) == 2 and 0 < times[0] < times[1]  # validations at steps 3 and 6
    a = _params(straight.parent / "last.pt")
    b = _params(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6


def _restored_rates(config, checkpoint, data_dir):
    """The learning rates of each parameter group of ``config`` restored from ``checkpoint``."""
    trainer = Trainer(config)
    arrays = train_module.load_npz(data_dir / "train.npz")
    trainer.restore(checkpoint, train_module.SequenceBatches(arrays, config.num_frames, seed=0))
    groups = trainer.optimizer.param_groups
    return sorted(g["lr"] for g in groups), sorted(g["initial_lr"] for g in groups)


def test_a_resume_may_lower_the_learning_rate(tiny_data, tmp_path):
    """Resuming with another lr rescales every group (multipliers and schedule kept)."""
    config = small_config(
        "mlp-sqair",
        num_steps=2,
        lr=1e-3,
        lr_multipliers={"decoder": 10.0},
        lr_decay_steps=[1],
        lr_decay=0.5,
    )
    train(config, tiny_data, tmp_path, progress=False)
    lowered = config.replace(num_steps=3, lr=1e-4, curriculum_every=1)
    rates, base = _restored_rates(lowered, tmp_path / "last.pt", tiny_data)
    assert rates == pytest.approx([0.5e-4, 0.5e-3])  # decayed once, decoder still 10x
    assert base == pytest.approx([1e-4, 1e-3])
    train(lowered, tiny_data, tmp_path, resume=True, progress=False)  # and it trains on
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 3
    with pytest.raises(ValueError, match="other settings"):
        train(lowered.replace(hidden=16, num_steps=4), tiny_data, tmp_path, resume=True)

    # NVIL baselines learn at their own rate, which a new lr leaves alone.
    baselines = config.replace(objective="tracegraph", baseline_lr=0.02)
    train(baselines, tiny_data, tmp_path / "nvil", progress=False)
    rates, _ = _restored_rates(baselines.replace(lr=1e-4), tmp_path / "nvil" / "last.pt", tiny_data)
    assert rates == pytest.approx([0.5e-4, 0.5e-3, 0.01])


def test_refuses_to_overwrite_a_run(tiny_data, tmp_path):
    config = small_config("mlp-air", num_steps=1)
    train(config, tiny_data, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tiny_data, tmp_path, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    config = small_config("mlp-air", num_steps=4, checkpoint_every=2)
    train(config.replace(num_steps=2), tiny_data, tmp_path, progress=False)
    before = _params(tmp_path / "last.pt")

    def diverging(*args):
        parts, loss = original(*args)
        return [(part * math.inf, params) for part, params in parts], math.inf

    original = train_module.surrogate_losses
    monkeypatch.setattr(train_module, "surrogate_losses", diverging)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        train(config, tiny_data, tmp_path, resume=True, progress=False)
    after = _params(tmp_path / "last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_crash_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"a": 1}, path)

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"a": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_broken_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt is not a checkpoint: found text"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a sqair-pyro checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_curriculum_grows_the_sequence_length():
    config = small_config("mlp-sqair", num_frames=5, curriculum_start=2, curriculum_every=10)
    assert [frames_for_step(config, s) for s in (0, 9, 10, 25, 1000)] == [2, 2, 3, 4, 5]
    assert frames_for_step(small_config("mlp-air"), 1000) == 1


@pytest.mark.parametrize("objective", ["vimco", "reinforce", "tracegraph"])
def test_every_objective_trains_air(tiny_data, tmp_path, objective):
    config = small_config("mlp-air", objective=objective, num_steps=3)
    best = train(config, tiny_data, tmp_path, progress=False)
    config2, model, guide, payload = load_checkpoint(best)
    assert config2 == config and payload["step"] == 3


def test_geometric_discovery_prior_swaps_in_and_trains(tiny_data, tmp_path):
    """Issue 4: swap the categorical discovery prior for a geometric one, train a few steps."""
    config = small_config("mlp-sqair", discovery_prior="geometric", num_steps=3)
    trainer = Trainer(config)
    assert type(trainer.model.discovery_prior).__name__ == "GeometricDiscoveryPrior"
    best = train(config, tiny_data, tmp_path, progress=False)
    assert read_checkpoint(best)["config"]["model"]["discovery_prior"] == "geometric"


def test_learning_rates_by_component():
    """Multipliers apply to named components, baselines to their own rate, shared params once."""
    config = small_config(
        "mlp-sqair", objective="tracegraph", lr=1e-4, lr_multipliers={"decoder": 10.0}
    )
    trainer = Trainer(config)
    rates = {
        name: train_module.parameter_lr(config, name)
        for prefix, module in (("model", trainer.model), ("guide", trainer.guide))
        for name, _ in module.named_parameters(prefix=prefix)
    }
    assert rates["model.likelihood.decoder.net.0.weight"] == pytest.approx(1e-3)
    assert rates["guide.discovery.baseline.0.0.weight"] == config.baseline_lr
    assert rates["guide.image_encoder.net.0.weight"] == pytest.approx(1e-4)
    counted = sum(len(g["params"]) for g in trainer.optimizer.param_groups)
    unique = {id(p) for m in (trainer.model, trainer.guide) for p in m.parameters()}
    assert counted == len(unique)


def test_checkpoints_get_the_usual_file_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save_atomic({"a": 1}, tmp_path / "c.pt")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("difference", [False, True])
def test_sqair_warm_started_from_air_discovers_the_first_frame_as_air_does(
    difference, tiny_data, tmp_path
):
    """init_from copies matching weights and widens the discovery RNN's input with zeros; so
    in the first frame SQAIR's discovery is AIR's, also where both read the difference."""
    import pyro

    reading = dict(discovery_reads_difference=difference)
    air_config = small_config("mlp-air", num_steps=2, **reading)
    air_ckpt = train(air_config, tiny_data, tmp_path, progress=False)
    _, air_model, air_guide, _ = load_checkpoint(air_ckpt)
    sqair = small_config("mlp-sqair", init_from=str(air_ckpt), where_slot_shift_y=3.0, **reading)
    trainer = Trainer(sqair)
    assert "guide.discovery.rnn.weight_ih" in trainer.initialised
    assert "model.likelihood.decoder.net.0.weight" in trainer.initialised
    frames = torch.rand(3, 2, 50, 50)
    pyro.set_rng_seed(7)
    sqair = pyro.poutine.trace(trainer.guide).get_trace(frames)
    pyro.set_rng_seed(7)
    air = pyro.poutine.trace(air_guide).get_trace(frames[:, 0])
    for kind in ("z_pres", "z_where", "z_what"):
        for i in range(3):
            torch.testing.assert_close(
                sqair.nodes[f"{kind}_disc_0_{i}"]["value"], air.nodes[f"{kind}_{i}"]["value"]
            )
    with pytest.raises(ValueError, match="shares no weights"):
        train_module.warm_start(trainer.model, trainer.guide, _foreign_checkpoint(tmp_path))


def _foreign_checkpoint(tmp_path):
    from sqair_pyro.checkpoint import save_checkpoint

    other = torch.nn.Linear(2, 2)  # a checkpoint of some other network entirely
    return save_checkpoint(tmp_path / "foreign.pt", small_config("mlp-air"), other, other)


def test_new_objects_per_frame_tells_tracking_from_rediscovery():
    kept = torch.tensor([[[0, 1, -1], [0, 1, -1], [1, 0, -1]]])  # (1 sequence, T=3, N=3)
    rediscovered = torch.tensor([[[0, -1, -1], [1, -1, -1], [2, -1, -1]]])
    assert new_objects_per_frame(kept) == 0.0
    assert new_objects_per_frame(rediscovered) == 1.0


def test_propagation_warmup_discovers_only_in_the_first_frame():
    import pyro

    config = small_config("mlp-sqair", propagation_warmup_steps=1, discovery_prior="categorical")
    trainer = Trainer(config)
    assert trainer.phase() == {"discover_after_first_frame": False}  # warm-up
    frames = torch.rand(4, 3, 50, 50)
    trainer.step(frames, torch.zeros(4, 3, dtype=torch.long))
    assert trainer.phase() == {"discover_after_first_frame": True}  # after one step
    for program in (trainer.guide, trainer.model):
        pyro.set_rng_seed(0)
        trace = pyro.poutine.trace(program).get_trace(frames, discover_after_first_frame=False)
        later = [
            site["value"]
            for name, site in trace.nodes.items()
            if name.startswith("z_pres_disc_") and not name.startswith("z_pres_disc_0_")
        ]
        assert later and all((value == 0).all() for value in later)
    assert Trainer(small_config("mlp-air")).phase() == {}  # no phase: no arguments


def test_validation_scores_the_whole_model_during_the_propagation_warmup(tiny_data):
    """A validation during the warm-up equals one after it (same weights, same seed): it
    scores discovery in every frame, so a run's validations compare across the warm-up's end
    (before, a warm-up best of the phase's own bound made every later validation look like a
    fall and rolled the run back)."""
    import numpy as np
    import pyro

    batches = train_module.SequenceBatches(
        {"images": np.load(tiny_data / "train.npz")["images"][:8]}, 3, 0
    )
    config = small_config("mlp-sqair", propagation_warmup_steps=10, discovery_prior="categorical")
    trainer = Trainer(config)
    values = []
    for step in (0, 10):  # in the warm-up, then after it
        trainer.step_count = step
        pyro.set_rng_seed(3)
        values.append(trainer.validate(batches, 3, 4))
    assert trainer.phase() == {"discover_after_first_frame": True}
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_a_step_keeps_no_autograd_graph_alive():
    """The latents kept for the step's metrics are detached: holding the step's graph until
    the next step's forward made long sequences cost more per frame (issue 7)."""
    trainer = Trainer(small_config("mlp-sqair"))
    trainer.step(torch.rand(4, 3, 50, 50), torch.zeros(4, 3, dtype=torch.long))
    latents = trainer.capture.latents
    assert {"z_pres", "z_where", "z_what"} <= set(latents)
    assert all(value.grad_fn is None and not value.requires_grad for value in latents.values())
    output = trainer.guide(torch.rand(4, 3, 50, 50))["z_where"]
    assert output.grad_fn is not None  # the guide itself still returns differentiable latents


def test_group_clipping_trains_and_is_checked(tiny_data, tmp_path):
    config = small_config("mlp-sqair", num_steps=2, clip="group")
    train(config, tiny_data, tmp_path, progress=False)
    with (tmp_path / "metrics.csv").open() as f:
        assert "clipped" in next(csv.reader(f))
    with pytest.raises(ValueError, match="clip must be one of global, group"):
        config.replace(clip="sometimes")


def _falling_run(tiny_data, out, monkeypatch, values=(100.0, 50.0, 40.0, 30.0), **changes):
    """Train with validations ``values`` (by default 100, 50, 40, 30: each fall over
    rollback_nats=10, at most two rollbacks); returns each rollback's (model weights, learning
    rates, step) right after it."""
    values = iter(values)
    monkeypatch.setattr(Trainer, "validate", lambda self, *a, **k: (next(values), math.nan))
    restored = []
    original = Trainer.roll_back

    def spy(self, path, batches):
        original(self, path, batches)
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        restored.append((weights, lrs, self.step_count))

    monkeypatch.setattr(Trainer, "roll_back", spy)
    config = small_config(
        "mlp-sqair",
        num_steps=20,
        validate_every=1,
        rollback_nats=10.0,
        max_rollbacks=2,
        lr=1e-3,
        lr_decay=0.5,
        lr_multipliers={},
        **changes,
    )
    train(config, tiny_data, out, progress=False)
    return config, restored


def test_a_fall_of_the_validation_bound_rolls_back_to_the_best(tiny_data, tmp_path, monkeypatch):
    """Validations 100, 50 (more than rollback_nats below): back to best.pt's weights with every
    rate times lr_decay; after max_rollbacks falls the run stops, best.pt kept."""
    config, restored = _falling_run(tiny_data, tmp_path, monkeypatch, checkpoint_every=1)
    best = read_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 1
    assert len(restored) == 2
    for weights, *_ in restored:
        for key, value in best["model"].items():
            assert torch.equal(weights[key], value), key
    assert restored[0][1] == pytest.approx([5e-4]) and restored[1][1] == pytest.approx([2.5e-4])
    last = read_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 4 and last["rollbacks"] == 2  # stopped at the third fall
    # A resume keeps the lowered rates.
    rates, _ = _restored_rates(config, tmp_path / "last.pt", tiny_data)
    assert rates == pytest.approx([2.5e-4])


def test_no_rollback_during_the_propagation_warmup(tiny_data, tmp_path, monkeypatch):
    """With a 3-step warm-up, validations 100, 50 (a fall, but in the warm-up: no rollback),
    then 40 at the warm-up's last step (best.pt restarts there), 20 and 19 (falls: two
    rollbacks to step 3's state) and 10 (the third fall stops the run)."""
    values = (100.0, 50.0, 40.0, 20.0, 19.0, 10.0)
    _, restored = _falling_run(
        tiny_data, tmp_path, monkeypatch, values, checkpoint_every=1, propagation_warmup_steps=3
    )
    assert read_checkpoint(tmp_path / "best.pt")["step"] == 3
    assert [step for *_, step in restored] == [4, 5]
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 6


def test_sigint_and_sigterm_save_the_current_step_and_exit_cleanly(tiny_data, tmp_path):
    """A real training process stopped by a signal between log lines saves the step it
    finished, says so in one line, and resumes from there without logging a step twice."""
    import json
    import signal
    import subprocess
    import sys
    import time

    config = small_config("mlp-sqair", num_steps=100000, log_every=1, checkpoint_every=1000)
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name
        args = ["train", "--preset", "mlp-sqair", "--data", str(tiny_data), "--out", str(out)]
        for key, value in dataclasses.asdict(config).items():
            if key in (
                "hidden",
                "z_what_dim",
                "batch_size",
                "num_particles",
                "validation_size",
                "num_frames",
                "curriculum_start",
                "curriculum_every",
                "num_steps",
                "log_every",
                "checkpoint_every",
                "propagation_warmup_steps",
            ):
                args += ["--set", f"{key}={json.dumps(value)}"]
        args += ["--set", "init_from=None", "--threads", "1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "sqair_pyro.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        metrics = out / "metrics.csv"
        deadline = time.time() + 120
        while time.time() < deadline and (
            not metrics.exists() or len(metrics.read_text().splitlines()) < 4
        ):
            time.sleep(0.2)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 128 + sig, err
        assert f"stopped by {sig.name} at step" in err and "Traceback" not in err
        saved = read_checkpoint(out / "last.pt")["step"]
        assert f"at step {saved};" in err
        # Continue a few steps: the log has every step once.
        more = config.replace(num_steps=saved + 2, init_from=None)
        train(more, tiny_data, out, resume=True, progress=False)
        with metrics.open() as f:
            steps = [int(row["step"]) for row in csv.DictReader(f) if row["bound"]]
        assert steps == list(range(1, saved + 3))


def test_a_resume_drops_rows_logged_after_its_checkpoint(tiny_data, tmp_path):
    config = small_config("mlp-sqair", num_steps=4, log_every=1, checkpoint_every=2)
    train(config, tiny_data, tmp_path, progress=False)
    # As if the process had died after logging step 5 but before checkpointing it.
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("5,1.0,3,1.0,1.0,1.0,1.0,0.0,0.001,,\n")
    train(config.replace(num_steps=6), tiny_data, tmp_path, resume=True, progress=False)
    with (tmp_path / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["bound"]]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_resume_of_an_older_log_gains_the_new_columns(tiny_data, tmp_path):
    """A run whose metrics.csv was written before a column existed (here: val_elbo) keeps its
    rows and logs the new column from the resume on."""
    config = small_config("mlp-sqair", num_steps=2, log_every=1, validate_every=2)
    train(config, tiny_data, tmp_path, progress=False)
    path = tmp_path / "metrics.csv"
    with path.open() as f:
        rows = list(csv.reader(f))
    column = rows[0].index("val_elbo")
    with path.open("w", newline="") as f:  # as an older version wrote it
        csv.writer(f).writerows([row[:column] + row[column + 1 :] for row in rows])
    train(config.replace(num_steps=4), tiny_data, tmp_path, resume=True, progress=False)
    with path.open() as f:
        logged = list(csv.DictReader(f))
    assert [int(r["step"]) for r in logged if r["bound"]] == [1, 2, 3, 4]
    validations = {int(r["step"]): r["val_elbo"] for r in logged if r["val"]}
    assert validations[2] == "" and math.isfinite(float(validations[4]))


def test_a_resume_needs_no_first_weights(tiny_data, tmp_path, monkeypatch):
    """A run warm-started from a file resumes from any directory after the file is gone."""
    first = small_config("mlp-sqair", num_steps=1)
    train(first, tiny_data, tmp_path / "first", progress=False)
    source = tmp_path / "first" / "last.pt"
    config = small_config("mlp-sqair", num_steps=2, init_from=str(source))
    train(config, tiny_data, tmp_path / "run", progress=False)
    source.unlink()
    monkeypatch.chdir(tmp_path / "first")
    train(config.replace(num_steps=3), tiny_data, tmp_path / "run", resume=True, progress=False)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3


def test_a_rollback_keeps_the_milestones_passed_since_the_best(tiny_data, tmp_path, monkeypatch):
    """Best at step 1, a milestone at step 2, falls at steps 2 and 3: the rates after each
    rollback carry the milestone's factor and one lr_decay per rollback."""
    _, restored = _falling_run(tiny_data, tmp_path, monkeypatch, lr_decay_steps=[2])
    expected = [pytest.approx([2.5e-4]), pytest.approx([1.25e-4])]
    assert [rates for _, rates, _ in restored] == expected


def test_a_corrupt_or_truncated_checkpoint_is_one_clear_error(tiny_data, tmp_path):
    train(small_config("mlp-air", num_steps=1), tiny_data, tmp_path, progress=False)
    data = (tmp_path / "last.pt").read_bytes()
    assert read_checkpoint(tmp_path / "last.pt")["checksum"]
    for fraction in (0.3, 0.5, 0.8):  # one flipped byte inside the tensors' data
        flipped = bytearray(data)
        flipped[int(len(data) * fraction)] ^= 0xFF
        (tmp_path / "bad.pt").write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="bad.pt (is corrupt|cannot read)|cannot read"):
            read_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint(tiny_data, tmp_path):
    """A real training process that checkpoints every step, killed with SIGKILL at random
    moments eight times, resumed after each kill: last.pt always loads and the run goes on."""
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(0)
    out = tmp_path / "run"
    settings = dict(hidden=16, z_what_dim=4, batch_size=4, num_particles=2, validation_size=8)
    settings.update(num_steps=100000, checkpoint_every=1, log_every=1, validate_every=100000)
    base = ["train", "--preset", "mlp-air", "--data", str(tiny_data), "--out", str(out)]
    base += [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    base += ["--set", "init_from=None", "--threads", "1"]
    steps = []
    for kill in range(8):
        args = base + (["--resume"] if kill else [])
        before = (out / "last.pt").stat().st_mtime_ns if kill else 0
        process = subprocess.Popen([sys.executable, "-m", "sqair_pyro.cli", *args])
        deadline = time.time() + 60  # until this process has written a checkpoint
        while time.time() < deadline and not (
            (out / "last.pt").exists() and (out / "last.pt").stat().st_mtime_ns != before
        ):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        steps.append(read_checkpoint(out / "last.pt")["step"])  # loads, whatever the moment
    assert steps == sorted(steps) and steps[-1] > steps[0]


def test_the_trainer_takes_any_model_guide_pair_and_objective():
    """A pair built by hand (a discovery prior swapped in as an object), Pyro's own
    Trace_ELBO and another optimiser train through the same Trainer; a guide that returns
    nothing (as most Pyro guides) is fine too."""
    import pyro

    from sqair_pyro.build import build
    from sqair_pyro.models.priors import GeometricDiscoveryPrior

    config = small_config("mlp-sqair")
    model, guide = build(config)
    model.discovery_prior = GeometricDiscoveryPrior(config.max_objects, 0.3)
    objective = pyro.infer.Trace_ELBO(max_plate_nesting=1)
    trainer = Trainer(
        config,
        programs=(model, guide),
        objective=objective,
        optimizer=lambda groups: torch.optim.SGD(groups, momentum=0.5),
    )
    assert trainer.model is model and trainer.elbo is objective
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    frames = torch.rand(4, 3, 50, 50)
    before = [p.detach().clone() for p in guide.parameters()]
    metrics = trainer.step(frames)
    assert math.isfinite(metrics["bound"]) and math.isnan(metrics["counting_accuracy"])
    assert any(not torch.equal(a, b) for a, b in zip(before, guide.parameters(), strict=True))
    trainer.capture.guide = lambda *args, **kwargs: None  # returns no latents
    trainer.capture(frames)
    assert trainer.capture.latents is None


def test_piwae_changes_the_guides_gradient_only(tiny_data):
    """With guide_objective="elbo" the model's parameters get exactly the IWAE run's gradient
    (same seed, same particles), the guide's another one; validation logs both bounds, the
    IWAE bound above the average ELBO."""
    import numpy as np
    import pyro

    images = torch.from_numpy(np.load(tiny_data / "train.npz")["images"][:4, :3]).float() / 255
    grads = {}
    for objective in ("iwae", "elbo"):
        pyro.clear_param_store()
        trainer = Trainer(small_config("mlp-sqair", guide_objective=objective, clip_norm=1e12))
        pyro.set_rng_seed(1)
        trainer.step(images)
        grads[objective] = {
            prefix: {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
            for prefix, module in (("model", trainer.model), ("guide", trainer.guide))
        }
    iwae, elbo = grads["iwae"], grads["elbo"]
    assert iwae["model"].keys() == elbo["model"].keys() and iwae["model"]
    for name, grad in iwae["model"].items():
        torch.testing.assert_close(elbo["model"][name], grad, rtol=1e-4, atol=1e-6)
    differ = [n for n, g in iwae["guide"].items() if not torch.allclose(elbo["guide"][n], g)]
    assert len(differ) > len(iwae["guide"]) // 2
    batches = train_module.SequenceBatches(
        {"images": np.load(tiny_data / "train.npz")["images"][:8]}, 3, 0
    )
    bound, average_elbo = trainer.validate(batches, 3, 4)
    assert math.isfinite(bound) and math.isfinite(average_elbo) and bound >= average_elbo


def test_kl_weights_act_on_training_steps_only(tiny_data):
    """``kl_weights={"z_what": 0.5}`` annealed over 4 steps: the step's weights are 0.5, 0.75
    and 1 at steps 0, 2 and 4; a training step from the same weights and seed scores another
    bound than an unweighted one (the handler is on), and validation gives the same numbers as
    an unweighted trainer's (the bound itself)."""
    import numpy as np
    import pyro

    images = torch.from_numpy(np.load(tiny_data / "train.npz")["images"][:4, :3]).float() / 255
    batches = train_module.SequenceBatches(
        {"images": np.load(tiny_data / "train.npz")["images"][:8]}, 3, 0
    )
    pyro.clear_param_store()
    weighted = Trainer(small_config("mlp-sqair", kl_weights={"z_what": 0.5}, kl_anneal_steps=4))
    plain = Trainer(small_config("mlp-sqair"))
    plain.model.load_state_dict(weighted.model.state_dict())
    plain.guide.load_state_dict(weighted.guide.state_dict())
    schedule = []
    for step in (0, 2, 4):
        weighted.step_count = step
        schedule.append(weighted.weighting().values["z_what"])
    assert schedule == pytest.approx([0.5, 0.75, 1.0])
    assert isinstance(plain.weighting(), contextlib.nullcontext)
    weighted.step_count = 0
    validations = []
    for trainer in (weighted, plain):
        pyro.set_rng_seed(5)
        validations.append(trainer.validate(batches, 3, 4))
    assert validations[0] == pytest.approx(validations[1], rel=1e-6)
    bounds = []
    for trainer in (weighted, plain):
        pyro.set_rng_seed(7)
        bounds.append(trainer.step(images)["bound"])
    assert abs(bounds[0] - bounds[1]) > 1e-3, bounds


@pytest.mark.parametrize("guide_objective", ["iwae", "elbo"])
def test_a_zero_multiplier_freezes_the_guide(tiny_data, guide_objective):
    """``lr_multipliers={"guide": 0}``: a model-only phase. After two steps every guide weight
    is unchanged and has no gradient, the model's weights moved, and the model's gradient on the
    first step equals the one of a run that trains both (same seed, same particles): freezing
    the posterior takes nothing from the model's signal. A 0 wins over a larger multiplier on
    the same path (the guide's ``what_head``); freezing everything is refused."""
    import numpy as np
    import pyro

    images = torch.from_numpy(np.load(tiny_data / "train.npz")["images"][:4, :3]).float() / 255
    multipliers = {"guide": 0.0, "what_head": 10.0, "decoder": 10.0}
    grads = {}
    for frozen in (False, True):
        pyro.clear_param_store()
        config = small_config(
            "mlp-sqair",
            guide_objective=guide_objective,
            clip_norm=1e12,
            lr_multipliers=multipliers if frozen else {"what_head": 10.0, "decoder": 10.0},
        )
        trainer = Trainer(config)
        before = {k: v.clone() for k, v in trainer.guide.state_dict().items()}
        model_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        pyro.set_rng_seed(1)
        trainer.step(images)
        grads[frozen] = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.step(images)
    assert all(p.grad is None for p in trainer.guide.parameters())
    after = trainer.guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model_after = trainer.model.state_dict()
    moved = [k for k in model_before if not torch.equal(model_after[k], model_before[k])]
    assert len(moved) > len(model_before) // 2
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="freeze every parameter"):
        Trainer(small_config("mlp-sqair", lr_multipliers={"model": 0.0, "guide": 0.0}))


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("mlp-vrnn", {"encoder": {"name": "mlp_vrnn", "z_dim": 6, "layers": 2}}),
        ("mlp-sqair", {"objective": "tracegraph"}),
    ],
)
def test_a_zero_freezes_shared_weights_and_baselines(name, config):
    """A weight the guide shares with the model (the VRNN's core) is frozen by {"guide": 0}
    whichever module it is met in first, and so are the guide's NVIL baselines; the clip's
    components hold trainable weights only."""
    trainer = Trainer(small_config(name, lr_multipliers={"guide": 0.0}, **config))
    guide_ids = {id(p) for p in trainer.guide.parameters()}
    assert not any(p.requires_grad for p in trainer.guide.parameters())
    assert guide_ids.isdisjoint(id(p) for p in trainer.params)
    assert any(p.requires_grad for p in trainer.model.parameters())
    clipped = {id(p) for params in trainer.components.values() for p in params}
    assert clipped == {id(p) for p in trainer.params}


def test_a_warm_start_under_another_discovery_prior_warns(tiny_data, tmp_path):
    """init_from weights trained with another where_slot_shift_y or another discovery reading
    warn; matching ones do not."""
    import warnings

    air = train(small_config("mlp-air", num_steps=1), tiny_data, tmp_path, progress=False)
    shift = load_checkpoint(air)[0].where_slot_shift_y
    same = dict(init_from=str(air), discovery_reads_difference=False)
    with pytest.warns(UserWarning, match=f"where_slot_shift_y={shift!r}, this run has 7.0"):
        Trainer(small_config("mlp-sqair", **same, where_slot_shift_y=7.0))
    with pytest.warns(UserWarning, match="discovery_reads_difference=False, this run has True"):
        Trainer(small_config("mlp-sqair", init_from=str(air), where_slot_shift_y=shift))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(small_config("mlp-sqair", **same, where_slot_shift_y=shift))
    # a config this version cannot read: no prior to compare, the weights still copy
    from sqair_pyro.checkpoint import with_checksum

    payload = torch.load(air, weights_only=False)
    torch.save(with_checksum({**payload, "config": {"no_such_field": 1}}), tmp_path / "odd.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = Trainer(small_config("mlp-sqair", init_from=str(tmp_path / "odd.pt")))
    assert "model.likelihood.decoder.net.0.weight" in trainer.initialised


def test_presence_exploration_acts_on_training_steps_only(tiny_data, monkeypatch):
    """``presence_exploration={"z_pres_disc": 0.3}``: the guide of training steps draws each
    discovery decision with probability ``0.3 + 0.4 p`` where the same weights without it
    give ``p``, a whole VIMCO step runs through it, and validation gives the same numbers as
    a trainer without it (the guide itself)."""
    import numpy as np
    import pyro

    from sqair_pyro.infer import PresenceExploration

    data = np.load(tiny_data / "train.npz")["images"]
    images = torch.from_numpy(data[:4, :3]).float() / 255
    batches = train_module.SequenceBatches({"images": data[:8]}, 3, 0)
    pyro.clear_param_store()
    exploring = Trainer(small_config("mlp-sqair", presence_exploration={"z_pres_disc": 0.3}))
    plain = Trainer(small_config("mlp-sqair"))
    plain.model.load_state_dict(exploring.model.state_dict())
    plain.guide.load_state_dict(exploring.guide.state_dict())
    validations = []
    for trainer in (exploring, plain):
        pyro.set_rng_seed(5)
        validations.append(trainer.validate(batches, 3, 4))
    assert validations[0] == pytest.approx(validations[1], rel=1e-6)
    probabilities = {}
    for name, trainer in (("exploring", exploring), ("plain", plain)):
        pyro.set_rng_seed(7)
        trace = pyro.poutine.trace(trainer.training_guide).get_trace(images)
        site = trace.nodes["z_pres_disc_0_0"]["fn"]
        probabilities[name] = site.base_dist.probs
    torch.testing.assert_close(probabilities["exploring"], 0.3 + 0.4 * probabilities["plain"])
    explored_sites = []
    original = PresenceExploration._pyro_sample

    def spy(self, msg):
        original(self, msg)
        explored_sites.append(msg["name"])

    monkeypatch.setattr(PresenceExploration, "_pyro_sample", spy)
    plain.step(images)
    assert explored_sites == []
    exploring.step(images)  # a whole VIMCO step through the explored guide
    assert any(name.startswith("z_pres_disc") for name in explored_sites)


def test_a_warm_start_into_a_finer_decoder_resamples_its_output_layer(tiny_data, tmp_path):
    """init_from weights whose decoder drew 20x20 glimpses into a 28x28 decoder (it warns):
    every other weight copies as it is, and the new output layer's logits are exactly the trained
    logits resampled bilinearly (``resampling_matrix``) for any z_what; other networks than
    the MLP's refuse the setting."""
    from sqair_pyro.build import build
    from sqair_pyro.nn.spatial_transformer import resampling_matrix

    air = train(small_config("mlp-air", num_steps=1), tiny_data, tmp_path, progress=False)
    with pytest.warns(UserWarning, match="drew 20x20 glimpses, this one draws 28x28"):
        trainer = Trainer(
            small_config("mlp-air", init_from=str(air), decoder_glimpse_size=[28, 28])
        )
    trained = load_checkpoint(air)[1].likelihood.decoder
    finer = trainer.model.likelihood.decoder
    assert finer.glimpse_size == (28, 28) and finer(torch.zeros(1, 8)).shape == (1, 28, 28)
    assert "model.likelihood.decoder.net.6.weight" in trainer.initialised
    z_what = torch.randn(5, trained.net[0].in_features)
    with torch.no_grad():
        expected = trained.net(z_what) @ resampling_matrix((20, 20), (28, 28)).T
        torch.testing.assert_close(finer.net(z_what), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="decoder_glimpse_size needs networks"):
        build(small_config("conv-air", decoder_glimpse_size=[28, 28]))


def test_a_warm_start_into_a_finer_read_glimpse_resamples_the_encoders_input(tiny_data, tmp_path):
    """init_from weights whose guide read 20x20 glimpses into one that reads 28x28 (it warns):
    the glimpse encoder, shared by propagation and discovery, reads a 28x28 glimpse exactly as
    the trained one read that glimpse resampled to 20x20 (``resampling_matrix``), under both
    of its names; the frame encoder, which reads no glimpse, copies as it is."""
    from sqair_pyro.nn.spatial_transformer import resampling_matrix

    sqair = train(small_config("mlp-sqair", num_steps=1), tiny_data, tmp_path, progress=False)
    with pytest.warns(UserWarning, match="read 20x20 glimpses, this one reads 28x28"):
        trainer = Trainer(
            small_config(
                "mlp-sqair",
                init_from=str(sqair),
                glimpse_size=[28, 28],
                decoder_glimpse_size=[20, 20],  # the decoder draws as before
            )
        )
    trained = load_checkpoint(sqair)[2]
    old, new = trained.propagation.glimpse_encoder, trainer.guide.propagation.glimpse_encoder
    assert new is trainer.guide.discovery.glimpse_encoder and new.glimpse_size == (28, 28)
    for alias in ("propagation", "discovery"):
        assert f"guide.{alias}.glimpse_encoder.net.0.weight" in trainer.initialised
    glimpses = torch.rand(5, 28, 28)
    resample = resampling_matrix((28, 28), (20, 20))
    coarse = (glimpses.flatten(-2) @ resample.T).unflatten(-1, (20, 20))
    with torch.no_grad():
        torch.testing.assert_close(new(glimpses), old(coarse), rtol=1e-5, atol=1e-5)
    # the same when evaluate rebuilds the trained programs with the setting (--set)
    with pytest.warns(UserWarning, match="read 20x20 glimpses, this one reads 28x28"):
        switched = load_checkpoint(
            sqair, overrides={"glimpse_size": [28, 28], "decoder_glimpse_size": [20, 20]}
        )[2]
    with torch.no_grad():
        torch.testing.assert_close(switched.discovery.glimpse_encoder(glimpses), new(glimpses))
        frames = torch.rand(2, 50, 50)
        torch.testing.assert_close(
            trainer.guide.image_encoder(frames), trained.image_encoder(frames)
        )
