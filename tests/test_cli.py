"""The command line: the README's commands run and report bad input in one line."""

import math
import re
import subprocess
import sys

import pyro
import pytest

from sqair_pyro.cli import main


def test_make_data_and_train_from_the_command_line(tmp_path, capsys):
    assert (
        main(
            [
                "make-data",
                "--out",
                str(tmp_path / "d"),
                "--train-size",
                "40",
                "--test-size",
                "10",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert (tmp_path / "d" / "train.npz").exists() and (tmp_path / "d" / "test.npz").exists()
    code = main(
        [
            "train",
            "--preset",
            "mlp-air",
            "--data",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "--set",
            "hidden=16",
            "--set",
            "validation_size=4",
        ]
    )
    assert code == 0
    assert "best checkpoint" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_missing_data_is_one_clear_line(tmp_path, capsys):
    code = main(
        ["train", "--preset", "mlp-air", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "train.npz" in err and "Traceback" not in err


def test_unknown_setting_is_rejected(tmp_path, capsys):
    code = main(
        [
            "train",
            "--preset",
            "mlp-air",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "hiden=3",
        ]
    )
    assert code == 1
    assert "hiden" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_evaluates_and_draws_the_shipped_models(tmp_path, capsys):
    import json

    from sqair_pyro.pretrained import available

    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ground_truth.png").stat().st_size > 10_000
    assert "mlp-air" in available()
    report = json.loads((tmp_path / "mlp-air" / "report.json").read_text())
    assert report["num_sequences"] == 100 and 0 <= report["counting_accuracy"] <= 1
    assert (tmp_path / "mlp-air" / "reconstructions.png").stat().st_size > 10_000
    assert (tmp_path / "mlp-sqair" / "conditional_generation.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "| MLP-AIR (mlp-air) |" in out and "| MLP-SQAIR (mlp-sqair) |" in out


@pytest.mark.slow
def test_console_script_is_installed():
    """The installed ``sqair-pyro`` entry point (beside this interpreter) runs."""
    from pathlib import Path

    script = Path(sys.executable).with_name("sqair-pyro")
    assert script.exists(), f"no console script at {script}"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "make-data" in out.stdout and "forecast" in out.stdout


@pytest.mark.slow
def test_readme_python_api_runs(tmp_path, monkeypatch):
    """The README's Python snippet runs as written, right after the quick start (it makes
    its own small data set; run here in a scratch directory)."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"## Python API\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["latents"]["z_pres"].shape == (32, 10, 3, 1)
    assert math.isfinite(namespace["loss"])


def test_evaluate_defaults_to_the_shipped_model(tiny_data, tmp_path, capsys):
    import json

    from pyro.distributions.util import is_validation_enabled

    out = tmp_path / "r.json"
    args = ["evaluate", "--data", str(tiny_data / "test.npz"), "--out", str(out)]
    pyro.enable_validation(True)
    assert main([*args, "--particles", "2", "--sequences", "3"]) == 0
    assert not is_validation_enabled()  # evaluates under training's numerics
    report = json.loads(out.read_text())
    assert report["checkpoint"].endswith("mlp-sqair.pt")  # SQAIR first
    assert report["mixed_precision"] is False
    assert "| MLP-SQAIR (" in capsys.readouterr().out
    assert main([*args, "--particles", "2", "--sequences", "3", "--mixed-precision"]) == 0
    assert json.loads(out.read_text())["mixed_precision"] is True
    assert "bfloat16" in capsys.readouterr().out


def test_resume_without_preset_uses_the_runs_own_settings(tiny_data, tmp_path):
    from sqair_pyro.checkpoint import read_checkpoint

    run = ["--data", str(tiny_data), "--out", str(tmp_path / "run")]
    first = ["train", "--preset", "mlp-air", *run, "--steps", "2", "--set", "hidden=16"]
    assert main([*first, "--set", "validation_size=4"]) == 0
    assert main(["train", "--resume", *run, "--steps", "3"]) == 0
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["step"] == 3 and payload["config"]["model"]["hidden"] == 16
    assert main(["train", *run]) == 1  # neither a preset nor a run to resume


def test_export_weights_keeps_the_weights_and_drops_the_training_state(tiny_data, tmp_path, capsys):
    import json

    import torch

    from sqair_pyro.checkpoint import WEIGHT_KEYS, read_checkpoint

    run = tmp_path / "run"
    train = ["train", "--preset", "mlp-sqair", "--data", str(tiny_data), "--out", str(run)]
    assert main([*train, "--steps", "2", "--set", "hidden=16", "--set", "validation_size=4"]) == 0
    weights = tmp_path / "w.pt"
    assert (
        main(["export-weights", "--checkpoint", str(run / "last.pt"), "--out", str(weights)]) == 0
    )
    assert f"wrote {weights}: weights only" in capsys.readouterr().out
    full, exported = read_checkpoint(run / "last.pt"), read_checkpoint(weights)  # checksum holds
    assert "optimizer" in full and sorted(exported) == sorted([*WEIGHT_KEYS, "checksum"])
    assert weights.stat().st_size < (run / "last.pt").stat().st_size / 2
    for part in ("model", "guide"):
        assert full[part].keys() == exported[part].keys()
        assert all(torch.equal(full[part][k], exported[part][k]) for k in full[part])
    reports = []
    for checkpoint in (run / "last.pt", weights):  # the same evaluation from either file
        out = tmp_path / f"{checkpoint.stem}.json"
        evaluate = [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(tiny_data / "test.npz"),
        ]
        assert main([*evaluate, "--particles", "2", "--sequences", "3", "--out", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0]["log_px"] == reports[1]["log_px"]
    assert reports[0]["checkpoint_step"] == reports[1]["checkpoint_step"] == 2


def test_curves_of_several_runs(tmp_path, capsys):
    for name, values in (("a", (100.0, 150.0)), ("b", (120.0, 110.0))):
        run = tmp_path / name
        run.mkdir()
        rows = ["step,time_s,frames,bound,counting_accuracy,objects,grad_norm,lr,val,new_objects"]
        for step in (10, 20, 30, 40):  # a validation after every 20 steps, 36 s per step
            rows.append(f"{step},{step * 36.0},3,1.0,0.9,1.0,5.0,0.001,,")
            if step % 20 == 0:
                rows.append(f"{step},{step * 36.0},,,,,,,{values[step // 20 - 1]},")
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "curves.png"
    assert main(["curves", f"{tmp_path / 'a'}:1.5", str(tmp_path / "b"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a: best validation bound 150.0 at step 40, 1.90 CPU-hours" in printed
    assert "b: best validation bound 120.0 at step 20, 0.20 CPU-hours" in printed
    assert out.exists()
    assert main(["curves", str(tmp_path / "missing"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "metrics file not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse's one line, exit status 2
        main(["curves", f"{tmp_path / 'a'}:soon", "--out", str(out)])
    err = capsys.readouterr().err
    assert "RUN_DIR[:HOURS_BEFORE]" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "lr=abc"], "config lr must be float, got 'abc'"),
        (["--batch-size", "0"], "config batch_size must be positive, got 0"),
        (["--set", "clip=sometimes"], "config clip must be one of global, group"),
        (["--set", "image_size=[0,50]"], "config image_size must be two positive integers"),
        (["--set", "no_such_key=1"], "unknown config keys ['no_such_key']"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_training_settings_are_one_clear_line(tmp_path, capsys, extra, message):
    """The table of bad ``train`` settings: exit status 1, one line, no traceback."""
    args = ["train", "--preset", "mlp-sqair", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_more_bad_input_on_the_command_line(tmp_path, tiny_data, capsys):
    """Negative thread counts, a missing GPU, an empty training set: one line, no traceback."""
    import torch

    from sqair_pyro.data import load_npz, save_npz

    with pytest.raises(SystemExit) as stopped:
        main(["show", "--threads", "-1", "--checkpoint", "c", "--data", "d", "--out", "o"])
    assert stopped.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err
    if not torch.cuda.is_available():
        args = ["evaluate", "--device", "cuda", "--data", str(tiny_data), "--out", "r.json"]
        assert main(args) == 1
        assert "no CUDA device on this machine" in capsys.readouterr().err
    arrays = load_npz(tiny_data / "train.npz")
    few = save_npz(tmp_path / "few.npz", {k: v[:3] if v.ndim else v for k, v in arrays.items()})
    args = ["train", "--preset", "mlp-air", "--data", str(few), "--out", str(tmp_path / "r")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "training needs at least 5 sequences" in err and "Traceback" not in err
    # A training file given directly (not its folder) trains.
    args = ["train", "--preset", "mlp-air", "--data", str(tiny_data / "train.npz"), "--out"]
    assert main([*args, str(tmp_path / "ok"), "--steps", "1", "--set", "hidden=16"]) == 0
    assert (tmp_path / "ok" / "last.pt").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr_decay": 0.0}, "lr_decay must be in (0, 1]"),
        ({"rollback_nats": -5.0}, "rollback_nats must be >= 0"),
        ({"geometric_rho": 2.0}, "geometric_rho must be in (0, 1)"),
        ({"lr": float("nan")}, "lr must be finite"),
        ({"num_steps": -3}, "num_steps must be >= 0"),
        ({"lr_multipliers": {"decoder": -1.0}}, "lr_multipliers must be >= 0 each"),
        ({"baseline_lr": 0.0}, "baseline_lr must be > 0"),
        ({"kl_weights": {"z_what": 0.0}}, "kl_weights must be > 0 each"),
        ({"presence_exploration": {"z_pres_disc": 0.5}}, "presence_exploration must be in"),
        ({"presence_exploration": {"z_pres_disc": -0.1}}, "presence_exploration must be in"),
        ({"presence_exploration": {"z_where": 0.1}}, "presence_exploration must be keyed by"),
        ({"kl_anneal_steps": -1}, "kl_anneal_steps must be >= 0"),
        ({"max_rollbacks": -1}, "max_rollbacks must be >= 0"),
        ({"where_scale_logit": [0.0, 1.0, 2.0]}, "where_scale_logit must be a number or two"),
        ({"objective": "tracegraph", "guide_objective": "elbo"}, "guide_objective must be iwae"),
        ({"guide_objective": "wake"}, "guide_objective must be one of iwae, elbo"),
    ],
)
def test_config_ranges(change, message):
    from sqair_pyro.config import preset

    with pytest.raises(ValueError, match=re.escape(message)):
        preset("mlp-sqair", **change)
    assert preset("mlp-sqair", image_size=[50, 50]).image_size == (50, 50)  # JSON lists


def test_train_digits_bad_input_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:  # argparse: one line, exit status 2
        main(["train-digits", "--out", str(tmp_path / "c.pt"), "--epochs", "0"])
    assert stopped.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
    code = main(["train-digits", "--out", str(tmp_path / "c.pt"), "--mnist-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1


class _Payload:
    """Unpickling this writes a marker file: a checkpoint that runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tiny_data, tmp_path, capsys):
    """evaluate, show and train --resume load checkpoints as data (weights_only): a crafted
    pickle is one clear line and its payload never runs."""
    import torch

    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": _Payload(str(marker))}, crafted)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(crafted.read_bytes())
    for args in (
        ["evaluate", "--checkpoint", str(crafted), "--data", str(tiny_data), "--out", "r.json"],
        ["show", "--checkpoint", str(crafted), "--data", str(tiny_data), "--out", str(tmp_path)],
        ["train", "--resume", "--data", str(tiny_data), "--out", str(run)],
    ):
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().split("\n")) == 1, err
        assert not marker.exists(), f"{args[0]} ran the checkpoint's code"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("discovery_masks_propagated=true", True),
        ("discovery_masks_propagated=True", True),
        ("propagation_reads_residual=true", True),
        ("discovery_steps_over_propagated=false", False),
        ("rollback_nats=null", None),
        ("rollback_nats=None", None),
        ("lr_decay_steps=[1000, 2000]", [1000, 2000]),
        ('presence_exploration={"z_pres_prop": 0.01}', {"z_pres_prop": 0.01}),
        ('kl_weights={"z_what": 0.5, "flag": true}', {"z_what": 0.5, "flag": True}),
        ("encoder=conv", "conv"),
    ],
)
def test_set_reads_python_and_json_constants(text, value):
    from sqair_pyro.cli import _parse_override

    assert _parse_override(text) == (text.partition("=")[0], value)
