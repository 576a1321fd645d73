"""The table of bad input, one row per case, over every command: each is refused before any
work with exit status 1 (2 for argparse), one line on stderr that names the problem, and no
traceback. A new command adds its rows here."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sqair_pyro.cli import main


@pytest.fixture(scope="module")
def files(tiny_data, tmp_path_factory):
    """A small checkpoint and the wrong files people pass, by name."""
    from conftest import small_config

    from sqair_pyro.checkpoint import read_checkpoint
    from sqair_pyro.train import train

    root = tmp_path_factory.mktemp("bad_input")
    train(small_config("mlp-air", num_steps=1), tiny_data, root / "run", progress=False)
    ckpt = root / "run" / "last.pt"
    payload = read_checkpoint(ckpt)
    paths = {"data": tiny_data, "test": tiny_data / "test.npz", "ckpt": ckpt, "root": root}

    def write(name: str, content: bytes | str) -> None:
        paths[name] = root / name
        data = content.encode() if isinstance(content, str) else content
        paths[name].write_bytes(data)

    def checkpoint(name: str, **changes) -> None:
        broken = {k: v for k, v in payload.items() if k != "checksum"}
        for key, value in changes.items():
            if value is None:
                broken.pop(key)
            else:
                broken[key] = value
        paths[name] = root / name
        torch.save(broken, paths[name])

    write("text.pt", "hello\n")
    write("empty.pt", b"")
    write("a_file", "x")
    write("ckpt_copy.pt", ckpt.read_bytes())
    paths["fifo"] = root / "fifo"
    os.mkfifo(paths["fifo"])
    write("bad_syntax.py", "def (:\n")
    write("raises.py", "raise RuntimeError('boom')\n")
    write("exits.py", "import sys\nsys.exit(3)\n")
    write("header_only.csv", "step,time_s,bound,val\n")
    write("list.json", "[1, 2]")
    checkpoint("config_str.pt", config="hello")
    checkpoint("no_model.pt", model=None)
    wider = {**payload["config"], "model": {**payload["config"]["model"], "hidden": 48}}
    checkpoint("mismatch.pt", config=wider)
    model_section = {**payload["config"]["model"], "centre_glimpses": True}
    checkpoint("centred.pt", config={**payload["config"], "model": model_section})
    checkpoint("weights_only.pt", optimizer=None)
    nan_guide = dict(payload["guide"])
    first = next(key for key, value in nan_guide.items() if value.is_floating_point())
    nan_guide[first] = torch.full_like(nan_guide[first], float("nan"))
    checkpoint("nan_weights.pt", guide=nan_guide)
    (root / "weights_run").mkdir()
    (root / "weights_run" / "last.pt").write_bytes(paths["weights_only.pt"].read_bytes())
    buffer = io.BytesIO()  # an .npz whose header claims an array of 36 TiB
    np.save(buffer, np.zeros((2, 2), np.float32))
    header = buffer.getvalue().replace(b"(2, 2)", b"(99999999, 99999)")
    paths["huge.npz"] = root / "huge.npz"
    with zipfile.ZipFile(paths["huge.npz"], "w") as archive:
        archive.writestr("images.npy", header)
    paths["frames_only.npz"] = root / "frames_only.npz"  # as import-frames writes: no labels
    np.savez(paths["frames_only.npz"], images=np.zeros((2, 3, 50, 50), np.uint8))
    (root / "empty_dir").mkdir()
    paths["empty_dir"] = root / "empty_dir"
    return paths


def _ev(p: dict, checkpoint: str = "ckpt", data: str = "test", out: str = "r.json") -> list[str]:
    out_path = p[out] if out in p else p["root"] / out
    return ["evaluate", "--checkpoint", str(p[checkpoint]), "--data", str(p[data]), "--out",
            str(out_path), "--particles", "1"]  # fmt: skip


def _train(p: dict, *extra: str) -> list[str]:
    return ["train", "--preset", "mlp-air", "--data", str(p["data"]), "--out",
            str(p["root"] / "r2"), *extra]  # fmt: skip


#: (case, argv from the fixture's paths, words of the one line, exit status)
CASES = [
    # Where the output goes: refused before any work.
    ("make-data into a file", lambda p: ["make-data", "--out", str(p["a_file"])],
     "is a file; the output here is a folder", 1),
    ("make-data under a file", lambda p: ["make-data", "--out", str(p["a_file"] / "sub")],
     "is a file, not a folder", 1),
    ("evaluate --out a folder", lambda p: _ev(p, out="empty_dir"), "is a folder", 1),
    ("evaluate --out under a file", lambda p: _ev(p, out="a_file/r.json"), "not a folder", 1),
    ("train --out a file", lambda p: _train(p, "--out", str(p["a_file"])), "is a file", 1),
    ("addition --out under a file", lambda p: ["addition", "--checkpoint", str(p["ckpt"]),
     "--data", str(p["data"]), "--out", str(p["a_file"] / "x.json")], "not a folder", 1),
    ("addition more draws than epochs", lambda p: ["addition", "--checkpoint", str(p["ckpt"]),
     "--data", str(p["data"]), "--epochs", "2", "--draws", "3"], "must not exceed epochs", 1),
    ("curves --out a folder", lambda p: ["curves", str(p["ckpt"].parent), "--out",
     str(p["empty_dir"])], "is a folder", 1),
    ("futures --out a folder", lambda p: ["futures", "--checkpoint", str(p["ckpt"]), "--data",
     str(p["test"]), "--out", str(p["empty_dir"])], "is a folder", 1),
    ("track --out a file", lambda p: ["track", "--checkpoint", str(p["ckpt"]), "--video",
     str(p["a_file"]), "--out", str(p["a_file"])], "is a file", 1),
    ("demo --out a file", lambda p: ["demo", "--out", str(p["a_file"])], "is a file", 1),
    ("train-digits --out a folder", lambda p: ["train-digits", "--out", str(p["empty_dir"])],
     "is a folder", 1),
    ("import-frames --out a folder", lambda p: ["import-frames", str(p["a_file"]), "--out",
     str(p["empty_dir"])], "is a folder", 1),
    ("forecast --out a .png", lambda p: ["forecast", "--data", str(p["test"]), "--out",
     str(p["root"] / "f.png")], "is the JSON report", 1),
    # Checkpoints that are not ours, or damaged.
    ("text file", lambda p: _ev(p, "text.pt"), "found text, not a file written by torch.save", 1),
    ("empty file", lambda p: _ev(p, "empty.pt"), "found an empty file", 1),
    ("data file", lambda p: _ev(p, "test"), "zip archive without torch's data.pkl", 1),
    ("config a string", lambda p: _ev(p, "config_str.pt"), "its 'config' is a str", 1),
    ("no model weights", lambda p: _ev(p, "no_model.pt"), "it has no 'model'", 1),
    ("weights of another size", lambda p: _ev(p, "mismatch.pt"),
     "does not match its config: model weights", 1),
    ("resume from weights only", lambda p: ["train", "--resume", "--data", str(p["data"]),
     "--out", str(p["root"] / "weights_run")], "holds weights, not a resumable state", 1),
    ("classifier is text", lambda p: ["forecast", "--data", str(p["test"]), "--out",
     str(p["root"] / "f.json"), "--classifier", str(p["text.pt"])], "not a digit classifier", 1),
    # Data and other inputs.
    ("npz claiming 36 TiB", lambda p: _ev(p, data="huge.npz"), "too large to load", 1),
    ("curves of a header only", lambda p: ["curves", str(p["header_only.csv"]), "--out",
     str(p["root"] / "c.png")], "holds no logged bound", 1),
    ("curves of a data file", lambda p: ["curves", str(p["test"]), "--out",
     str(p["root"] / "c.png")], "is not a training metrics file", 1),
    ("compare a JSON list", lambda p: ["compare", str(p["list.json"])],
     "is not a sqair-pyro evaluation or addition report", 1),
    ("show --run without metrics", lambda p: ["show", "--checkpoint", str(p["ckpt"]), "--data",
     str(p["test"]), "--out", str(p["root"] / "sh"), "--run", str(p["empty_dir"])],
     "no metrics.csv there", 1),
    ("make-data of nothing", lambda p: ["make-data", "--out", str(p["root"] / "d0"),
     "--train-size", "0", "--test-size", "0"], "nothing to make", 1),
    ("MNIST folder is a file", lambda p: ["make-data", "--out", str(p["root"] / "d0"),
     "--mnist-dir", str(p["a_file"])], "is a file, not a folder", 1),
    # Component modules of one's own.
    ("--import with a syntax error", lambda p: _train(p, "--import", str(p["bad_syntax.py"])),
     "SyntaxError", 1),
    ("--import that raises", lambda p: _train(p, "--import", str(p["raises.py"])),
     "RuntimeError: boom", 1),
    ("--import that exits", lambda p: _train(p, "--import", str(p["exits.py"])),
     "it called sys.exit(3)", 1),
    ("--import relative", lambda p: _train(p, "--import", ".relative"), "give its full name", 1),
    ("--import empty", lambda p: _train(p, "--import", ""), "needs a module name", 1),
    # Guide options the model cannot take.
    ("AIR with a residual", lambda p: _train(p, "--set", "propagation_reads_residual=true"),
     "needs SQAIR: AIR propagates nothing", 1),
    ("AIR aligning windows", lambda p: _train(p, "--set", "propagation_aligns_window=2"),
     "needs SQAIR: AIR propagates nothing", 1),
    ("negative alignment steps", lambda p: _train(p, "--set", "propagation_aligns_window=-1"),
     "propagation_aligns_window must be >= 0", 1),
    ("VRNN reading the difference", lambda p: ["train", "--preset", "mlp-vrnn", "--data",
     str(p["data"]), "--out", str(p["root"] / "r3"), "--set", "discovery_reads_difference=true"],
     "needs AIR or SQAIR", 1),
    ("SQAIR with two readings", lambda p: ["train", "--preset", "mlp-sqair", "--data",
     str(p["data"]), "--out", str(p["root"] / "r4"), "--set", "init_from=None", "--set",
     "discovery_masks_propagated=true"], "choose one", 1),
    # A finer decoded glimpse: a size, and networks that size their decoder by it.
    ("decoder glimpse of 0 pixels", lambda p: _train(p, "--set", "decoder_glimpse_size=[0, 28]"),
     "must be two positive integers", 1),
    ("finer decoder of CONV-AIR", lambda p: ["train", "--preset", "conv-air", "--data",
     str(p["data"]), "--out", str(p["root"] / "r5"), "--set", "init_from=None", "--set",
     "decoder_glimpse_size=[28, 28]"], "decoder_glimpse_size needs networks", 1),
    # Ranges argparse checks (exit status 2).
    ("train --steps 0", lambda p: _train(p, "--steps", "0"), "must be a positive integer", 2),
    ("show --observed 0", lambda p: ["show", "--checkpoint", str(p["ckpt"]), "--data",
     str(p["test"]), "--out", str(p["root"] / "sh"), "--observed", "0"],
     "must be a positive integer", 2),
    ("seed too large", lambda p: _train(p, "--seed", "99999999999999999999"), "must be 0 to", 2),
    ("negative seed", lambda p: ["make-data", "--out", "x", "--seed", "-5"], "--seed", 2),
    ("IoU threshold -1", lambda p: [*_ev(p), "--iou-threshold", "-1"], "must be in (0, 1]", 2),
    ("match IoU nan", lambda p: ["forecast", "--data", str(p["test"]), "--out", "f.json",
     "--match-iou", "nan"], "must be in (0, 1]", 2),
    ("frames of 100000 pixels", lambda p: ["import-frames", str(p["a_file"]), "--out", "f.npz",
     "--size", "100000", "100000"], "must be a positive integer up to 8192", 2),
    ("curves hours -5", lambda p: ["curves", f"{p['ckpt'].parent}:-5", "--out", "c.png"],
     "finite number >= 0", 2),
    ("evaluate --set an unknown key", lambda p: [*_ev(p), "--set", "no_such_key=1"],
     "unknown config keys ['no_such_key']", 1),
    ("evaluate --set an option the model lacks", lambda p: [*_ev(p), "--set",
     "propagation_aligns_window=2"], "needs SQAIR", 1),
    ("evaluate --set weights that no longer fit", lambda p: [*_ev(p), "--set", "hidden=48"],
     "does not match", 1),
    ("evaluate --particles 0", lambda p: [*_ev(p), "--particles", "0"],
     "must be a positive integer", 2),
    ("export-weights over its checkpoint", lambda p: ["export-weights", "--checkpoint",
     str(p["ckpt_copy.pt"]), "--out", str(p["ckpt_copy.pt"])], "is the checkpoint itself", 1),
    ("export-weights --out a fifo", lambda p: ["export-weights", "--checkpoint", str(p["ckpt"]),
     "--out", str(p["fifo"])], "is not a regular file", 1),
    ("export-weights missing checkpoint", lambda p: ["export-weights", "--checkpoint",
     str(p["root"] / "none.pt"), "--out", "w.pt"], "not found", 1),
    ("export-weights of text", lambda p: ["export-weights", "--checkpoint", str(p["text.pt"]),
     "--out", "w.pt"], "found text, not a file written by", 1),
    ("export-weights without a model", lambda p: ["export-weights", "--checkpoint",
     str(p["no_model.pt"]), "--out", "w.pt"], "has no 'model'", 1),
    ("evaluate a checkpoint with NaN weights", lambda p: _ev(p, "nan_weights.pt"),
     "weights are not finite", 1),
    ("export-weights --out a folder", lambda p: ["export-weights", "--checkpoint",
     str(p["ckpt"]), "--out", str(p["empty_dir"])], "is a folder", 1),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "words", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(files, capsys, case, argv, words, status):
    try:
        code = main(argv(files))
    except SystemExit as stopped:  # argparse
        code = stopped.code
    err = capsys.readouterr().err
    assert code == status, err
    assert words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_unwritable_folder_is_refused_before_the_work(tiny_data, capsys):
    """A place no one may write (/sys is read-only): refused at the start, one line."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    args = ["evaluate", "--data", str(tiny_data / "test.npz"), "--out", "/sys/kernel/r.json"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "cannot write in /sys/kernel" in err and len(err.strip().splitlines()) == 1


#: The benchmark scripts' bad input, the same way: (case, script, argv from the fixture's
#: paths, words of the one line, exit status). Each is refused before its work.
BENCHMARK_CASES = [
    ("data_parallel --processes 3 of 32", "data_parallel", lambda p: ["--data", str(p["data"]),
     "--processes", "3"], "must be at least 2 and divide --batch", 2),
    ("data_parallel --skip = --steps", "data_parallel", lambda p: ["--data", str(p["data"]),
     "--steps", "10", "--skip", "10"], "need 0 < --skip < --steps", 2),
    ("data_parallel data without train.npz", "data_parallel", lambda p: ["--data",
     str(p["empty_dir"])], "no train.npz there", 2),
    ("train_step --steps 0", "train_step", lambda p: ["--steps", "0"],
     "must be a positive integer", 2),
    ("train_step --threads 0", "train_step", lambda p: ["--threads", "1", "0"],
     "must be a positive integer", 2),
    ("train_step --seed -1", "train_step", lambda p: ["--seed", "-1"], "must be 0 to", 2),
    ("train_step unknown device", "train_step", lambda p: ["--device", "tpu"],
     "unknown device 'tpu'", 2),
    ("train_step data without train.npz", "train_step", lambda p: ["--data",
     str(p["empty_dir"])], "no train.npz there", 2),
    ("train_step missing weights", "train_step", lambda p: ["--weights",
     str(p["root"] / "none.pt")], "no such file", 2),
    ("gradient_terms missing checkpoint", "gradient_terms", lambda p: ["--checkpoint",
     str(p["root"] / "none.pt"), "--data", str(p["test"])], "no such file", 2),
    ("gradient_terms --batches 0", "gradient_terms", lambda p: ["--batches", "0"],
     "must be a positive integer", 2),
    ("gradient_terms text checkpoint", "gradient_terms", lambda p: ["--checkpoint",
     str(p["text.pt"]), "--data", str(p["test"])], "found text, not a file written by", 1),
    ("rediscovery --frames 1", "rediscovery", lambda p: ["--checkpoint", str(p["ckpt"]),
     "--data", str(p["test"]), "--frames", "1"], "--frames must be at least 2", 2),
    ("rediscovery of an AIR", "rediscovery", lambda p: ["--checkpoint", str(p["ckpt"]),
     "--data", str(p["test"])], "not a SQAIR checkpoint", 1),
    ("miscounts of frames without labels", "miscounts", lambda p: ["--checkpoint",
     str(p["ckpt"]), "--data", str(p["frames_only.npz"])], "nothing to count against", 1),
    ("miscounts --sequences 0", "miscounts", lambda p: ["--sequences", "0"],
     "must be a positive integer", 2),
    ("miscounts missing data", "miscounts", lambda p: ["--checkpoint", str(p["ckpt"]), "--data",
     str(p["root"] / "none.npz")], "none.npz: no such file", 2),
    ("lost_digits of frames without boxes", "lost_digits", lambda p: ["--checkpoint",
     str(p["ckpt"]), "--data", str(p["frames_only.npz"])], "no digits to lose", 1),
    ("lost_digits --iou 0", "lost_digits", lambda p: ["--iou", "0"], "must be in (0, 1]",
     2),
    ("empty_objects --images 0", "empty_objects", lambda p: ["--images", "0"],
     "must be a positive integer", 2),
    ("posterior_means --seeds 0", "posterior_means", lambda p: ["--seeds", "0"],
     "must be a positive integer", 2),
    ("reconstruction_floor of frames without boxes", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["frames_only.npz"])],
     "no digits to compare with", 1),
    ("reconstruction_floor of a centred drawing", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["centred.pt"]), "--data", str(p["test"])],
     "draws its glimpses centred", 1),
    ("reconstruction_floor --glimpse 0 20", "reconstruction_floor", lambda p: ["--glimpse", "0",
     "20"], "must be a positive integer", 2),
    ("appearance_drift of an AIR", "appearance_drift", lambda p: ["--checkpoint",
     str(p["ckpt"]), "--data", str(p["test"])], "not a SQAIR checkpoint", 1),
    ("appearance_drift of frames without boxes", "appearance_drift", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["frames_only.npz"])],
     "no digits to follow", 1),
    ("appearance_drift --align-steps 0", "appearance_drift", lambda p: ["--align-steps", "0"],
     "must be a positive integer", 2),
    ("reconstruction_floor --what-iterations 0", "reconstruction_floor", lambda p: [
     "--what-iterations", "0"], "must be a positive integer", 2),
    ("reconstruction_floor --refit-lr 0", "reconstruction_floor", lambda p: ["--refit-lr", "0"],
     "must be a finite number > 0", 2),
    ("reconstruction_floor --refit-steps -1", "reconstruction_floor", lambda p: [
     "--refit-steps", "-1"], "must be 0 or more", 2),
    ("reconstruction_floor --refit-out without a refit", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["test"]), "--refit-out",
     str(p["root"] / "out.pt")], "--refit-out and --encoder-steps need --refit-steps", 2),
    ("reconstruction_floor --encoder-steps without a refit", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["test"]), "--encoder-steps", "5"],
     "--refit-out and --encoder-steps need --refit-steps", 2),
    ("reconstruction_floor --refit-out onto its checkpoint", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["test"]), "--refit-steps", "5",
     "--refit-data", str(p["test"]), "--refit-out", str(p["ckpt"])],
     "a directory or the checkpoint itself", 2),
    ("reconstruction_floor missing refit data", "reconstruction_floor", lambda p: [
     "--checkpoint", str(p["ckpt"]), "--data", str(p["test"]), "--refit-steps", "5",
     "--refit-data", str(p["root"] / "none.npz")], "none.npz: no such file", 2),
    ("appearance_drift --frames 1", "appearance_drift", lambda p: ["--checkpoint",
     str(p["ckpt"]), "--data", str(p["test"]), "--frames", "1"],
     "--frames must be at least 2", 2),
    ("particle_spread --particles 0", "particle_spread", lambda p: ["--particles", "0"],
     "must be a positive integer", 2),
    ("precision checkpoint without data", "precision", lambda p: ["--checkpoint",
     str(p["ckpt"])], "--checkpoint and --data go together", 2),
    ("validation_dips missing log", "validation_dips", lambda p: [str(p["root"] / "none.csv")],
     "none.csv: no such file", 2),
    ("validation_dips not a training log", "validation_dips", lambda p: [str(p["text.pt"])],
     "not a training metrics file", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "script", "argv", "words", "status"),
    BENCHMARK_CASES,
    ids=[c[0] for c in BENCHMARK_CASES],
)
def test_benchmark_bad_input_is_one_clear_line(
    files, capsys, monkeypatch, case, script, argv, words, status
):
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    import importlib

    from gradient_terms import run_script

    try:
        code = run_script(importlib.import_module(script).main, argv(files))
    except SystemExit as stopped:  # argparse
        code = stopped.code
    err = capsys.readouterr().err
    assert code == status, err
    assert words in err and f"{script}.py: " in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
