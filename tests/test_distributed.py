"""Data-parallel training with torchrun, on this machine's CPU with two processes (gloo)."""

import os
import subprocess
import sys
import textwrap

import pyro
import pytest
import torch
from conftest import small_config
from torch import nn

from sqair_pyro.checkpoint import read_checkpoint
from sqair_pyro.train import Trainer

#: Launches ``python -m sqair_pyro ...`` or a script as two local processes.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")

#: A model/guide pair without randomness (x ~ Normal(f(w), 1), no latents), so that one
#: process on the whole batch and two processes on its halves must take the same step.
TOY = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

    def forward(self, images):
        mean = images.flatten(1)[:, :3] @ self.w
        with pyro.plate("data", images.shape[0]):
            pyro.sample("x", dist.Normal(mean, 1.0), obs=torch.ones(images.shape[0]))


class NoLatents(nn.Module):
    def forward(self, images):
        return {}
"""


def _toy_step(workers, images):
    namespace: dict = {}
    exec(TOY, namespace)
    config = small_config("mlp-sqair", lr=0.1, clip_norm=1e6)
    trainer = Trainer(
        config,
        programs=(namespace["Toy"](), namespace["NoLatents"]()),
        objective=pyro.infer.Trace_ELBO(max_plate_nesting=1),
        optimizer=lambda groups: torch.optim.SGD(groups),
        workers=workers,
    )
    trainer.step(images)
    return trainer.model.w.detach()


def test_two_processes_take_the_step_of_the_combined_batch(tmp_path):
    """Two processes on the halves of a batch, gradients all-reduced, take the same SGD step
    as one process on the whole batch (to 1e-6)."""
    images = torch.rand(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_distributed import _toy_step
        from sqair_pyro.distributed import setup
        workers, _ = setup("cpu")
        images = torch.load({str(tmp_path / "images.pt")!r})
        w = _toy_step(workers, images[workers.shard(len(images))])
        torch.save(w, {str(tmp_path)!r} + f"/w{{workers.rank}}.pt")
        """)
    )
    done = subprocess.run([*TORCHRUN, str(script)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    alone = _toy_step(__import__("sqair_pyro.distributed").distributed.ALONE, images)
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / f"w{rank}.pt"), alone, rtol=0, atol=1e-6)
    assert not torch.equal(alone, torch.tensor([0.5, -1.0, 2.0]))  # a step was taken


@pytest.mark.slow
def test_two_process_runs_resume_in_one_and_back(tiny_data, tmp_path):
    run = ["--data", str(tiny_data), "--out", str(tmp_path / "run")]
    small = ["--set", "hidden=16", "--set", "validation_size=8", "--set", "validate_every=2"]
    small += ["--set", "log_every=1"]
    first = ["-m", "sqair_pyro", "train", "--preset", "mlp-air", *run, "--steps", "3", *small]
    done = subprocess.run([*TORCHRUN, *first], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    steps = [row.split(",")[0] for row in rows[1:] if row.split(",")[3]]
    assert steps == ["1", "2", "3"]  # rank 0 alone logs, each step once
    # One process continues the two-process run, then two continue the one-process run.
    one = [sys.executable, "-m", "sqair_pyro", "train", "--resume", *run, "--steps", "5"]
    done = subprocess.run(one, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 5
    again = ["-m", "sqair_pyro", "train", "--resume", *run, "--steps", "7"]
    done = subprocess.run([*TORCHRUN, *again], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["step"] == 7
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


def test_a_lone_process_is_rank_zero_of_one():
    from sqair_pyro.distributed import ALONE, average_gradients, setup

    workers, device = setup("cpu")
    assert workers is ALONE and device == "cpu" and workers.main
    assert workers.shard(5) == slice(0, 5, 1) and workers.sum(2.5) == 2.5
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    average_gradients([p], workers)
    assert p.grad.tolist() == [3.0, 3.0]


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux: the parent id in ``/proc/*/stat``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _rank_of(pid: int) -> int | None:
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return int(env[b"RANK"]) if b"RANK" in env else None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile("/proc/self/stat"), reason="reads /proc (Linux)")
def test_a_killed_worker_leaves_the_last_checkpoint_intact(tiny_data, tmp_path):
    """The writing process (rank 0) of a two-process run that checkpoints every step, killed
    with SIGKILL mid-run: torchrun ends the run, and last.pt loads and resumes in one process."""
    import signal
    import time

    out = tmp_path / "run"
    small = ["--set", "hidden=16", "--set", "validation_size=8", "--set", "validate_every=1000"]
    small += ["--set", "checkpoint_every=1", "--set", "log_every=1"]
    args = ["-m", "sqair_pyro", "train", "--preset", "mlp-air", "--data", str(tiny_data)]
    args += ["--out", str(out), "--steps", "100000", *small]
    log = open(tmp_path / "torchrun.log", "w")  # noqa: SIM115 (closed below)
    launcher = subprocess.Popen(
        [*TORCHRUN, *args], env=ENV, stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
            (out / "last.pt").exists() and read_checkpoint(out / "last.pt")["step"] >= 2
        ):
            time.sleep(0.1)
        writers = [pid for pid in _children(launcher.pid) if _rank_of(pid) == 0]
        assert len(writers) == 1, "rank 0 not found among torchrun's workers"
        time.sleep(0.3)  # somewhere inside a step (or a checkpoint's atomic write)
        os.kill(writers[0], signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0  # the run stops with its writer
    finally:  # never leave a 100,000-step run behind
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        log.close()
    step = read_checkpoint(out / "last.pt")["step"]
    assert step >= 2
    resume = [sys.executable, "-m", "sqair_pyro", "train", "--resume", "--data", str(tiny_data)]
    resume += ["--out", str(out), "--steps", str(step + 2)]
    done = subprocess.run(resume, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_checkpoint(out / "last.pt")["step"] == step + 2
