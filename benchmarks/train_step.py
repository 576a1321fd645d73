"""Benchmark one SQAIR training step as training runs it, and say where its time goes.

Usage (see benchmarks/README.md for what every number means)::

    python benchmarks/train_step.py --preset mlp-sqair --threads 1 2 --json out.json
    python benchmarks/train_step.py --preset mlp-sqair --threads 1 --scaling --eval

Every thread count runs in a fresh subprocess (so each one's peak RSS is its own), as do the
scaling sweep and the log p(x) evaluation. A step is ``sqair_pyro.train.Trainer.step``:
VIMCO surrogate (guide and model traces, log weights), backward, gradient clipping, Adam.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from gradient_terms import run_script
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from sqair_pyro.cli import OneLineParser, check_device, non_negative_int, positive_int, seed_int
from sqair_pyro.config import Config, preset
from sqair_pyro.data import MovingMNISTConfig, load_npz, make_data
from sqair_pyro.nn import modules
from sqair_pyro.nn.precision import fast_numerics
from sqair_pyro.pretrained import available
from sqair_pyro.train import SequenceBatches, Trainer, warm_start

# ----------------------------------------------------------------------------- components

#: Components of a step, in report order. Each is a ``record_function`` scope installed by
#: :func:`instrumented`; the profiler attributes every op to the innermost scope around it.
ST_GLIMPSE = "spatial transformer: glimpse extraction"
ST_PLACE = "spatial transformer: placement"
IMAGE_ENCODER = "image encoder"
GLIMPSE_ENCODER = "glimpse encoder"
DECODER = "glimpse decoder"
RNN = "RNN cells (GRU/RNN)"
HEADS = "heads (posterior/prior heads, proposal, summary, discovery prior)"
LOG_PROB = "objective: site log-probs (fn.log_prob)"
VIMCO = "objective: VIMCO weights, masks, reductions, baselines"
PYRO_SAMPLE = "Pyro: sample sites (handlers + draws)"
PYRO_MODULE = "Pyro: pyro.module parameter registration"
PROGRAMS = "model/guide programs: other ops + Python (bcat, compact, dists)"
OPTIMISER = "optimiser: zero_grad, clip_grad_norm_, Adam"
BACKWARD_ENGINE = "backward: engine + gradient accumulation (no forward scope)"
OUTSIDE = "Trainer.step outside these scopes (ops + Python)"

COMPONENTS = [
    ST_GLIMPSE,
    ST_PLACE,
    IMAGE_ENCODER,
    GLIMPSE_ENCODER,
    DECODER,
    RNN,
    HEADS,
    LOG_PROB,
    VIMCO,
    PYRO_SAMPLE,
    PYRO_MODULE,
    PROGRAMS,
    OPTIMISER,
    BACKWARD_ENGINE,
    OUTSIDE,
]

#: Summary groups of the components.
GROUPS: dict[str, list[str]] = {
    "spatial transformer": [ST_GLIMPSE, ST_PLACE],
    "networks (encoders, decoder, RNNs, heads)": [
        IMAGE_ENCODER,
        GLIMPSE_ENCODER,
        DECODER,
        RNN,
        HEADS,
    ],
    "objective (VIMCO's tensor work)": [LOG_PROB, VIMCO],
    "Pyro machinery (sample sites, pyro.module)": [PYRO_SAMPLE, PYRO_MODULE],
    "program glue (other ops + Python)": [PROGRAMS],
    "backward engine, optimiser, rest": [BACKWARD_ENGINE, OPTIMISER, OUTSIDE],
}

SCOPE_PREFIX = "sqair::"
SCOPES = {SCOPE_PREFIX + name: name for name in COMPONENTS}
BACKWARD_NODE = "autograd::engine::evaluate_function"
PHASES = ("forward", "backward", "python")


def labelled(component: str, fn: Callable) -> Callable:
    """``fn`` inside a ``record_function`` scope named after ``component``."""
    scope = SCOPE_PREFIX + component

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(scope):
            return fn(*args, **kwargs)

    return wrapper


class Patches:
    """Monkeypatches that wrap attributes in scopes, all undone by :meth:`undo`."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._seen: set[tuple[int, str]] = set()

    def wrap(self, owner: Any, name: str, component: str) -> None:
        if owner is None or not hasattr(owner, name) or (id(owner), name) in self._seen:
            return
        self._seen.add((id(owner), name))
        own = vars(owner)
        had, old = name in own, own.get(name)
        setattr(owner, name, labelled(component, getattr(owner, name)))
        if had:
            self._undo.append(lambda: setattr(owner, name, old))
        else:
            self._undo.append(lambda: delattr(owner, name))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()
        self._seen.clear()


@contextlib.contextmanager
def instrumented(trainer: Trainer) -> Iterator[None]:
    """Install a ``record_function`` scope around every component of a step (no library edits).

    Functions are patched where the programs look them up (module attributes), networks by
    their instance ``forward``; everything is restored on exit.
    """
    import pyro.distributions.torch_distribution as torch_distribution

    import sqair_pyro.guides.air as guide_air
    import sqair_pyro.guides.sqair as guide_sqair
    import sqair_pyro.models.likelihood as likelihood
    from sqair_pyro.infer.vimco import VIMCO_ELBO
    from sqair_pyro.nn.modules import BernoulliHead, GaussianHead

    patches = Patches()
    model, guide = trainer.model, trainer.guide
    try:
        # Spatial transformer and recurrent cells, where the programs call them.
        for module in (guide_air, guide_sqair):
            patches.wrap(module, "glimpse", ST_GLIMPSE)
        patches.wrap(likelihood, "place", ST_PLACE)
        # Networks, by instance.
        patches.wrap(getattr(guide, "image_encoder", None), "forward", IMAGE_ENCODER)
        for owner in (getattr(guide, "propagation", None), getattr(guide, "discovery", None)):
            encoder = getattr(owner, "glimpse_encoder", None)
            patches.wrap(encoder, "forward", GLIMPSE_ENCODER)
            patches.wrap(getattr(owner, "baseline", None), "forward", HEADS)
        patches.wrap(model.likelihood.decoder, "forward", DECODER)
        propagation = getattr(guide, "propagation", None)
        patches.wrap(getattr(propagation, "proposal", None), "forward", HEADS)
        patches.wrap(getattr(guide, "summary", None), "forward", HEADS)
        patches.wrap(getattr(model, "propagation_prior", None), "forward", HEADS)
        patches.wrap(model.discovery_prior, "continue_probs", HEADS)
        for module in [*model.modules(), *guide.modules()]:
            if isinstance(module, nn.RNNCellBase):
                patches.wrap(module, "forward", RNN)
            elif isinstance(module, GaussianHead | BernoulliHead | guide_sqair.GatedWhatHead):
                patches.wrap(module, "forward", HEADS)
        # Pyro primitives (the programs call pyro.sample / pyro.module by attribute).
        patches.wrap(pyro, "sample", PYRO_SAMPLE)
        patches.wrap(pyro, "module", PYRO_MODULE)
        # The objective: the traces, the log-probs, the rest of VIMCO_ELBO's tensor work.
        patches.wrap(VIMCO_ELBO, "_traces", PROGRAMS)
        patches.wrap(VIMCO_ELBO, "_log_weights", VIMCO)
        patches.wrap(VIMCO_ELBO, "surrogate_losses", VIMCO)
        patches.wrap(torch.distributions.Independent, "log_prob", LOG_PROB)
        patches.wrap(torch_distribution.MaskedDistribution, "log_prob", LOG_PROB)
        # The optimiser's part of Trainer.step.
        patches.wrap(trainer.optimizer, "step", OPTIMISER)
        patches.wrap(trainer.optimizer, "zero_grad", OPTIMISER)
        patches.wrap(torch.nn.utils, "clip_grad_norm_", OPTIMISER)
        yield
    finally:
        patches.undo()


# ----------------------------------------------------------------------------- setup


def configure(threads: int) -> None:
    """Thread count and the global settings training uses (``sqair_pyro.train.train``)."""
    torch.set_num_threads(threads)
    fast_numerics()


def make_config(
    spec: dict[str, Any], frames: int | None = None, objects: int | None = None
) -> Config:
    """The preset at the benchmark's B, K, N, with the curriculum pinned at ``frames``.

    The weights are ``spec["weights"]`` (a checkpoint or ``pretrained:NAME``; None: fresh
    initialisation), and every frame may discover objects (no propagation warm-up): a step
    costs what the objects present cost, so it is timed as a trained model runs it.
    """
    frames = spec["frames"] if frames is None else frames
    config = preset(
        spec["preset"],
        batch_size=spec["batch"],
        num_particles=spec["particles"],
        max_objects=spec["objects"] if objects is None else objects,
        seed=spec["seed"],
        init_from=spec["weights"],
        propagation_warmup_steps=0,
        mixed_precision=spec.get("mixed_precision", False),
    )
    if config.num_frames > 1:  # sequences (not AIR's single frames): pin the curriculum
        config = config.replace(num_frames=frames, curriculum_start=frames)
    return config


def make_dataset(out_dir: Path, frames: int, train_size: int, test_size: int, seed: int) -> Path:
    """A small moving multi-MNIST set (``train.npz``, ``test.npz``) of ``frames`` frames."""
    make_data(
        out_dir,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        config=MovingMNISTConfig(num_frames=frames),
        progress=False,
    )
    return out_dir


def load_batches(data_dir: Path, config: Config, frames: int) -> SequenceBatches:
    """Random training batches as ``sqair_pyro.train`` draws them."""
    arrays = load_npz(Path(data_dir) / "train.npz")
    available = arrays["images"].shape[1]
    if config.num_frames > 1 and available < frames:
        raise SystemExit(f"{data_dir}/train.npz has {available} frames; {frames} needed")
    return SequenceBatches(arrays, config.num_frames, seed=config.seed)


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MiB; None off Linux."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def ru_maxrss_mib() -> float:
    """``getrusage`` peak RSS (KiB on Linux). Linux carries it over fork and exec, so in a
    worker it is at least the parent's peak at the fork; :func:`peak_rss_mib` is not."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """Peak RSS of this process image: ``VmHWM`` (reset by exec), else ``ru_maxrss``."""
    peak = _status_mib("VmHWM")
    return ru_maxrss_mib() if peak is None else peak


def current_rss_mib() -> float:
    rss = _status_mib("VmRSS")
    return float("nan") if rss is None else rss


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so that a timing ends when the work does (CUDA)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    trainer: Trainer, batches: SequenceBatches, frames: int, warmup: int, steps: int
) -> tuple[list[float], list[float]]:
    """Seconds of ``trainer.step`` on fresh random batches (batch sampling is not timed), and
    the number of objects per frame the guide inferred in each timed step (the per-object
    networks run only where objects are, so the cost follows it)."""
    config = trainer.config
    for _ in range(warmup):
        trainer.step(*batches.sample(config.batch_size, frames))
    gc.collect()
    times, objects = [], []
    for _ in range(steps):
        batch = batches.sample(config.batch_size, frames)
        start = time.perf_counter()
        metrics = trainer.step(*batch)
        synchronize(trainer.device)
        times.append(time.perf_counter() - start)
        objects.append(float(metrics["objects"]))  # per frame
    return times, objects


def summarize(times: list[float], batch_size: int, frames: int) -> dict[str, Any]:
    """Median, quartiles, extremes and throughput of step times."""
    t = np.asarray(times)
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    return {
        "steps": len(t),
        "median_s": float(median),
        "q1_s": float(q1),
        "q3_s": float(q3),
        "iqr_s": float(q3 - q1),
        "min_s": float(t.min()),
        "max_s": float(t.max()),
        "mean_s": float(t.mean()),
        "sequences_per_s": batch_size / float(median),
        "frames_per_s": batch_size * frames / float(median),
        "times_s": [float(x) for x in t],
    }


# ----------------------------------------------------------------------------- breakdown


def attribute(events: Any) -> tuple[dict[str, dict[str, float]], float]:
    """Self CPU time (µs) of every profiled event, by component and phase.

    Forward: an event belongs to the innermost component scope around it. Backward: autograd
    runs each node inside an ``autograd::engine::evaluate_function`` event whose
    ``sequence_nr`` is that of the forward op that created the node; the node's work goes to
    that op's component (nodes without one, e.g. ``AccumulateGrad``, to the engine row).
    Only the busiest thread counts (the step's; CPU backward runs on the calling thread).
    Returns ``({component: {"forward": us, "backward": us, "python": us}}, summed self time
    in µs)``; ``python`` is the part of ``forward`` that is the self time of the component's
    own scopes: Python (and profiler bookkeeping) between its torch ops.
    """
    thread_time: dict[int, float] = {}
    for e in events:
        if e.cpu_parent is None:
            thread_time[e.thread] = thread_time.get(e.thread, 0.0) + e.cpu_time_total
    main = max(thread_time, key=thread_time.__getitem__)
    ordered = sorted(
        (e for e in events if e.thread == main),
        key=lambda e: (e.time_range.start, -e.time_range.end),
    )
    owner: dict[int, tuple[str, str]] = {}  # id(event) -> (component, phase)
    by_sequence: dict[int, str] = {}  # forward sequence_nr -> component
    totals = {name: dict.fromkeys(PHASES, 0.0) for name in COMPONENTS}
    for e in ordered:  # parents start before their children
        parent = owner.get(id(e.cpu_parent)) if e.cpu_parent is not None else None
        if e.name.startswith(BACKWARD_NODE):
            mine = (by_sequence.get(e.sequence_nr, BACKWARD_ENGINE), "backward")
        elif e.name in SCOPES:
            phase = parent[1] if parent is not None else "forward"
            mine = (SCOPES[e.name], phase)
        elif parent is not None:
            mine = parent
        else:
            mine = (OUTSIDE, "forward")
        owner[id(e)] = mine
        if mine[1] == "forward" and e.sequence_nr >= 0:
            # The op that creates autograd node s is the last one to start recording s
            # (ops that create no node record the number the next node will get).
            by_sequence[e.sequence_nr] = mine[0]
        totals[mine[0]][mine[1]] += e.self_cpu_time_total
        if e.name in SCOPES:
            totals[mine[0]]["python"] += e.self_cpu_time_total
    return totals, thread_time[main]


def profile_breakdown(
    trainer: Trainer,
    batches: SequenceBatches,
    frames: int,
    steps: int,
    unprofiled_median_s: float,
) -> dict[str, Any]:
    """Where a step's time goes, from ``torch.profiler`` with component scopes.

    Profiles ``steps`` steps (after one instrumented warm-up step), averages the attributed
    self times, puts the wall time no event covers (Python between top-level ops) into the
    "outside" row, and rescales everything to the unprofiled median step time.
    """
    config = trainer.config
    sums = {name: dict.fromkeys(PHASES, 0.0) for name in COMPONENTS}
    wall_us = 0.0
    with instrumented(trainer):
        trainer.step(*batches.sample(config.batch_size, frames))
        for _ in range(steps):
            batch = batches.sample(config.batch_size, frames)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                trainer.step(*batch)
                wall = (time.perf_counter() - start) * 1e6
            totals, covered = attribute(prof.events())
            for phase in ("forward", "python"):
                totals[OUTSIDE][phase] += max(wall - covered, 0.0)
            wall_us += max(wall, covered)
            for name in COMPONENTS:
                for phase in PHASES:
                    sums[name][phase] += totals[name][phase]
    profiled_s = wall_us / steps / 1e6
    factor = unprofiled_median_s / profiled_s
    rows = []
    for name in COMPONENTS:
        fwd, bwd, python = (sums[name][phase] / steps / 1e3 * factor for phase in PHASES)
        rows.append(
            {
                "component": name,
                "forward_ms": fwd,
                "backward_ms": bwd,
                "python_ms": python,
                "total_ms": fwd + bwd,
                "share": (fwd + bwd) / (unprofiled_median_s * 1e3),
            }
        )
    shares = {row["component"]: row["share"] for row in rows}
    return {
        "method": (
            "torch.profiler attribution: each event's self CPU time goes to the innermost "
            "component scope (record_function, installed by monkeypatching); backward nodes go "
            "to the component of the forward op with the same sequence_nr; wall time no event "
            "covers goes to the 'outside' row; all times rescaled from the profiled step to the "
            "unprofiled median step"
        ),
        "profiled_steps": steps,
        "profiled_step_s": profiled_s,
        "unprofiled_median_s": unprofiled_median_s,
        "profiler_overhead_factor": 1 / factor,
        "rows": rows,
        "groups": {group: sum(shares[n] for n in names) for group, names in GROUPS.items()},
        "python_share": sum(row["python_ms"] for row in rows) / (unprofiled_median_s * 1e3),
    }


# ----------------------------------------------------------------------------- FLOPs


def count_flops(trainer: Trainer, batches: SequenceBatches, frames: int) -> dict[str, Any]:
    """Forward+backward FLOPs of one step, by op (``FlopCounterMode``: matmuls/convs only)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = batches.sample(trainer.config.batch_size, frames)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step(*batch)
    by_op = counter.get_flop_counts().get("Global", {})
    return {
        "total": int(counter.get_total_flops()),
        "by_op": {str(op): int(n) for op, n in sorted(by_op.items(), key=lambda kv: -kv[1])},
    }


def gemm_throughput(
    size: int, repeats: int, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> dict[str, Any]:
    """GFLOP/s of a ``size``-cubed matmul in ``dtype`` on ``device`` (at the current thread
    count on a CPU)."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.mm(a, b, out=out)  # warm-up
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        times.append(time.perf_counter() - start)
    flops = 2 * size**3
    return {
        "size": size,
        "repeats": repeats,
        "median_s": float(np.median(times)),
        "best_s": float(min(times)),
        "gflops_median": flops / float(np.median(times)) / 1e9,
        "gflops_best": flops / min(times) / 1e9,
    }


# ----------------------------------------------------------------------------- workers


#: The pure networks that ``--compile`` hands to ``torch.compile``: every module of these kinds
#: that no other one of them holds (a head's MLP is compiled with its head).
COMPILED_KINDS = (
    modules.MLP,
    modules.GaussianHead,
    modules.BernoulliHead,
    modules.EncoderMLP,
    modules.GlimpseDecoderMLP,
    modules.SharedCNN,
    modules.GlimpseDecoderSubpixel,
    nn.GRUCell,
    nn.RNNCell,
)


def compile_networks(trainer: Trainer) -> int:
    """``torch.compile`` (dynamic shapes: the rows of present objects vary from call to call)
    of the trainer's pure networks, in place; returns how many were compiled. The programs'
    glue, the spatial transformer and Pyro stay eager."""
    import torch._dynamo

    # One compiled graph per module instance: many instances share each forward's code.
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    compiled: list[str] = []
    for root in (trainer.model, trainer.guide):
        compiled_here: list[str] = []
        for name, module in root.named_modules():
            inside = any(name.startswith(outer + ".") for outer in compiled_here)
            if isinstance(module, COMPILED_KINDS) and not inside:
                module.compile(dynamic=True)
                compiled_here.append(name)
        compiled += compiled_here
    return len(compiled)


def step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Timing, peak RSS, breakdown and FLOPs of the step at one thread count."""
    config = make_config(spec)
    frames = spec["frames"]
    batches = load_batches(spec["data"], config, frames)
    trainer = Trainer(config, device=spec["device"])
    if spec.get("compile"):
        log(f"torch.compile of {compile_networks(trainer)} networks (compiled in the warm-up)")
    log(f"[{spec['threads']} thread(s)] {spec['warmup']} warm-up + {spec['steps']} timed steps")
    times, objects = time_steps(trainer, batches, frames, spec["warmup"], spec["steps"])
    result: dict[str, Any] = {
        "objects_per_frame": float(np.mean(objects)),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in trainer.params),
        "timing": summarize(times, config.batch_size, frames),
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": ru_maxrss_mib(),
    }
    median = result["timing"]["median_s"]
    if spec["profile_steps"] > 0:
        log(f"[{spec['threads']} thread(s)] profiling {spec['profile_steps']} step(s)")
        result["breakdown"] = profile_breakdown(
            trainer, batches, frames, spec["profile_steps"], median
        )
    log(f"[{spec['threads']} thread(s)] counting FLOPs, timing a {spec['gemm_size']}^3 GEMM")
    flops = count_flops(trainer, batches, frames)
    size, repeats, device = spec["gemm_size"], spec["gemm_repeats"], spec["device"]
    gemm = gemm_throughput(size, repeats, device=device)
    gemm_bf16 = gemm_throughput(size, repeats, torch.bfloat16, device)
    achieved = flops["total"] / median / 1e9
    result["flops"] = {
        **flops,
        "step_gflops": achieved,
        "gemm": gemm,
        "gemm_bf16": gemm_bf16,
        "utilisation_vs_gemm_best": achieved / gemm["gflops_best"],
        "utilisation_vs_gemm_median": achieved / gemm["gflops_median"],
        "utilisation_vs_bf16_gemm_best": achieved / gemm_bf16["gflops_best"],
    }
    result["peak_rss_mib_end"] = peak_rss_mib()
    return result


def fit(xs: list[float], ys: list[float]) -> dict[str, Any]:
    """Least-squares line and log-log exponent of ``ys`` against ``xs``."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(x, y, 1)
    exponent, _ = np.polyfit(np.log(x), np.log(y), 1)
    return {
        "x": xs,
        "median_s": ys,
        "slope_s_per_unit": float(slope),
        "intercept_s": float(intercept),
        "loglog_exponent": float(exponent),
        "growth_ratio": float(y[-1] / y[0]),
        "x_ratio": float(x[-1] / x[0]),
        "at_most_linear": bool(exponent <= 1.1),
    }


def at_objects(times: list[float], objects: list[float], reference: float) -> dict[str, float]:
    """The step time of one configuration at ``reference`` objects per frame.

    A step's cost grows with the objects the guide infers (the per-object networks run only
    where objects are), and a trained model infers slightly more per frame in longer
    sequences, so the raw medians of two configurations compare different amounts of work.
    Over the timed steps, each on a fresh batch, the time is regressed on the step's objects
    per frame (least squares); the line's value at ``reference`` is the median moved by the
    slope times the difference of the means.
    """
    t, o = np.asarray(times, float), np.asarray(objects, float)
    slope = float(np.polyfit(o, t, 1)[0]) if o.std() > 1e-6 else 0.0
    return {
        "slope_s_per_object_per_frame": slope,
        "median_s": float(np.median(t) + slope * (reference - o.mean())),
    }


def scaling_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Median step time against T (frames) and against N (max objects), raw and at the same
    number of inferred objects per frame (:func:`at_objects`)."""
    runs: dict[tuple[int, int], tuple[list[float], list[float]]] = {}

    def measure(frames: int, objects: int) -> tuple[list[float], list[float]]:
        if (frames, objects) not in runs:
            config = make_config(spec, frames=frames, objects=objects)
            batches = load_batches(spec["data"], config, frames)
            trainer = Trainer(config, device=spec["device"])
            runs[frames, objects] = time_steps(
                trainer, batches, frames, spec["scaling_warmup"], spec["scaling_steps"]
            )
            times, found = runs[frames, objects]
            log(
                f"  T={frames:3d} N={objects:3d}: {np.median(times):.3f} s/step, "
                f"{np.mean(found):.3f} objects per frame"
            )
        return runs[frames, objects]

    def sweep(points: list[tuple[int, int]], xs: list[int]) -> dict[str, Any]:
        measured = [measure(*point) for point in points]
        result = fit(xs, [float(np.median(times)) for times, _ in measured])
        found = [float(np.mean(objects)) for _, objects in measured]
        reference = float(np.mean(found))
        adjusted = [at_objects(times, objects, reference) for times, objects in measured]
        result["objects_per_frame"] = found
        result["at_objects"] = {
            "objects_per_frame": reference,
            **fit(xs, [a["median_s"] for a in adjusted]),
            "slopes_s_per_object_per_frame": [a["slope_s_per_object_per_frame"] for a in adjusted],
        }
        return result

    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    if spec["preset"] != "mlp-air":
        frames = spec["scaling_frames"]
        result["frames"] = sweep([(t, spec["objects"]) for t in frames], frames)
    objects = spec["scaling_objects"]
    result["objects"] = sweep([(spec["frames"], n) for n in objects], objects)
    result["steps"], result["warmup"] = spec["scaling_steps"], spec["scaling_warmup"]
    return result


def eval_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds and peak memory of ``estimate_log_px`` (chunked) on the first test sequences."""
    from sqair_pyro.build import build
    from sqair_pyro.evaluate import log_px

    config = make_config(spec)
    pyro.set_rng_seed(config.seed)
    model, guide = build(config)
    model.to(spec["device"])
    guide.to(spec["device"])
    if config.init_from:
        warm_start(model, guide, config.init_from)
    arrays = load_npz(Path(spec["data"]) / "test.npz")
    sequences, frames = spec["eval_sequences"], spec["frames"]
    images = torch.from_numpy(arrays["images"][:sequences, :frames]).float() / 255
    images = images.to(spec["device"])
    if config.model == "air":  # AIR sees every frame alone
        images = images.reshape(-1, *images.shape[2:])
    rss_before, peak_before = current_rss_mib(), peak_rss_mib()
    estimates = []
    start = time.perf_counter()
    for first in range(0, len(images), spec["eval_batch"]):
        estimates.append(
            log_px(
                model,
                guide,
                images[first : first + spec["eval_batch"]],
                num_particles=spec["eval_particles"],
                chunk_size=spec["eval_chunk"],
                mixed_precision=config.mixed_precision,
            )
        )
    synchronize(spec["device"])
    seconds = time.perf_counter() - start
    return {
        "threads": torch.get_num_threads(),
        "sequences": sequences,
        "frames": frames,
        "particles": spec["eval_particles"],
        "chunk_size": spec["eval_chunk"],
        "batch_size": spec["eval_batch"],
        "seconds": seconds,
        "seconds_per_sequence": seconds / sequences,
        "ms_per_sequence_particle": seconds / sequences / spec["eval_particles"] * 1e3,
        "rss_before_mib": rss_before,
        "peak_rss_before_mib": peak_before,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": ru_maxrss_mib(),
        "mean_log_px": float(torch.cat(estimates).mean()),
    }


def data_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Generate the data set (in its own process, so the parent never holds MNIST and its
    peak RSS, which Linux's ``ru_maxrss`` hands down to the workers, stays small)."""
    started = time.perf_counter()
    make_dataset(
        Path(spec["data"]), spec["data_frames"], spec["train_size"], spec["test_size"], spec["seed"]
    )
    return {"seconds": time.perf_counter() - started}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "data": data_worker,
    "step": step_worker,
    "scaling": scaling_worker,
    "eval": eval_worker,
}


def run_worker(kind: str, spec: dict[str, Any], threads: int, tmp: Path) -> dict[str, Any]:
    """Run one measurement in a fresh Python process and read back its JSON."""
    spec_path, out_path = tmp / f"{kind}-{threads}.spec.json", tmp / f"{kind}-{threads}.json"
    spec_path.write_text(json.dumps({**spec, "threads": threads}))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    command += ["--worker-spec", str(spec_path), "--worker-out", str(out_path)]
    subprocess.run(command, check=True)
    return json.loads(out_path.read_text())


def worker_main(kind: str, spec_path: Path, out_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    configure(spec["threads"])
    out_path.write_text(json.dumps(WORKERS[kind](spec)))


# ----------------------------------------------------------------------------- report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    """CPU model and cores, memory, load, library versions."""
    model, cores = "unknown", set()
    physical = core = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model == "unknown":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                core = value
                cores.add((physical, core))
    memory_gib = float("nan")
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024**2
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "physical_cores": len(cores) or None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": round(memory_gib, 1),
        "load_average_at_start": [float(x) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "pyro": pyro.__version__,
        "numpy": np.__version__,
    }


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table: first column left-aligned, the rest right-aligned."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def print_step(threads: int, result: dict[str, Any], spec: dict[str, Any]) -> None:
    timing, flops = result["timing"], result["flops"]
    ms = 1e3
    print(
        f"\n== {threads} thread(s): B={spec['batch']} K={spec['particles']} "
        f"T={spec['frames']} N={spec['objects']}, {result['parameters']:,} parameters, "
        f"{result['objects_per_frame']:.2f} objects per frame inferred"
    )
    print(
        f"step: median {timing['median_s'] * ms:.1f} ms  IQR {timing['iqr_s'] * ms:.1f} ms "
        f"[{timing['q1_s'] * ms:.1f}, {timing['q3_s'] * ms:.1f}]  min {timing['min_s'] * ms:.1f}"
        f"  max {timing['max_s'] * ms:.1f}  ({timing['steps']} steps after {spec['warmup']} "
        "warm-up)"
    )
    print(
        f"throughput: {timing['sequences_per_s']:.2f} sequences/s, "
        f"{timing['frames_per_s']:.1f} frames/s;  peak RSS {result['peak_rss_mib']:.0f} MiB "
        f"after timing (ru_maxrss {result['ru_maxrss_mib']:.0f}), "
        f"{result['peak_rss_mib_end']:.0f} MiB at the end (profiling, FLOP count, GEMM)"
    )
    gemm = flops["gemm"]
    print(
        f"FLOPs/step (fwd+bwd, matmul/conv only): {flops['total'] / 1e9:.2f} GFLOP -> "
        f"{flops['step_gflops']:.2f} GFLOP/s; {gemm['size']}^3 fp32 GEMM: "
        f"{gemm['gflops_best']:.1f} GFLOP/s best ({gemm['gflops_median']:.1f} median); "
        f"utilisation {flops['utilisation_vs_gemm_best']:.1%} of the GEMM; bf16 GEMM "
        f"{flops['gemm_bf16']['gflops_best']:.1f} GFLOP/s best, utilisation "
        f"{flops['utilisation_vs_bf16_gemm_best']:.1%} of it"
    )
    top = list(flops["by_op"].items())[:5]
    print("  by op: " + ", ".join(f"{op} {n / 1e9:.2f}G" for op, n in top))
    if "breakdown" in result:
        bd = result["breakdown"]
        print(
            f"\nwhere the time goes ({bd['profiled_steps']} profiled step(s): "
            f"{bd['profiled_step_s'] * ms:.1f} ms under the profiler, x"
            f"{bd['profiler_overhead_factor']:.2f}; ms rescaled to the unprofiled median)"
        )
        rows = [
            [
                r["component"],
                f"{r['forward_ms']:.1f}",
                f"{r['backward_ms']:.1f}",
                f"{r['python_ms']:.1f}",
                f"{r['total_ms']:.1f}",
                f"{r['share']:.1%}",
            ]
            for r in bd["rows"]
        ]
        total = sum(r["total_ms"] for r in bd["rows"])
        rows.append(
            ["total", "", "", "", f"{total:.1f}", f"{total / (timing['median_s'] * ms):.1%}"]
        )
        print(
            table(["component", "fwd/own ms", "bwd ms", "of fwd: Python", "ms/step", "share"], rows)
        )
        print(table(["group", "share"], [[g, f"{s:.1%}"] for g, s in bd["groups"].items()]))
        print(
            f"Python between torch ops (all scopes, 'of fwd: Python' column): "
            f"{bd['python_share']:.1%} of the step"
        )
        print(f"method: {bd['method']}")


def print_scaling(result: dict[str, Any]) -> None:
    print(
        f"\n== scaling ({result['threads']} thread(s), median of {result['steps']} steps "
        f"after {result['warmup']} warm-up)"
    )
    for axis, unit in (("frames", "T"), ("objects", "N")):
        if axis not in result:
            continue
        r = result[axis]
        same = r["at_objects"]
        points = ", ".join(
            f"{unit}={x}: {y:.3f} s ({o:.3f} obj/frame)"
            for x, y, o in zip(r["x"], r["median_s"], r["objects_per_frame"], strict=True)
        )
        print(f"{unit}: {points}")
        for label, f in (("raw", r), (f"at {same['objects_per_frame']:.3f} obj/frame", same)):
            verdict = "at most linear" if f["at_most_linear"] else "SUPER-LINEAR"
            times = ", ".join(f"{y:.3f}" for y in f["median_s"])
            print(
                f"   {label}: {times} s; slope {f['slope_s_per_unit'] * 1e3:.1f} ms per unit of "
                f"{unit}, intercept {f['intercept_s'] * 1e3:.1f} ms; log-log exponent "
                f"{f['loglog_exponent']:.3f} ({verdict}); time x{f['growth_ratio']:.3f} for "
                f"{unit} x{f['x_ratio']:.2f}"
            )


def print_eval(result: dict[str, Any]) -> None:
    print(
        f"\n== estimate_log_px ({result['threads']} thread(s)): {result['sequences']} sequences"
        f" x T={result['frames']}, K={result['particles']} in chunks of {result['chunk_size']}, "
        f"{result['batch_size']} sequences at a time\n"
        f"{result['seconds']:.1f} s ({result['seconds_per_sequence']:.2f} s per sequence, "
        f"{result['ms_per_sequence_particle']:.2f} ms per sequence-particle); peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB (before the estimate: RSS "
        f"{result['rss_before_mib']:.0f} MiB, peak {result['peak_rss_before_mib']:.0f} MiB)"
    )


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n")[0])
    p.add_argument(
        "--preset",
        default="mlp-sqair",
        help="any preset of sqair_pyro.config (AIR: batches of single frames)",
    )
    p.add_argument(
        "--threads", type=positive_int, nargs="+", default=[1, 2], help="torch thread counts"
    )
    p.add_argument("--steps", type=positive_int, default=30, help="timed steps (after the warm-up)")
    p.add_argument("--warmup", type=non_negative_int, default=5)
    p.add_argument("--batch", type=positive_int, default=32, help="B")
    p.add_argument("--particles", type=positive_int, default=5, help="K")
    p.add_argument("--frames", type=positive_int, default=10, help="T")
    p.add_argument("--objects", type=positive_int, default=3, help="N, max objects")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument(
        "--weights",
        default="trained",
        help="checkpoint path, pretrained:NAME, 'trained' (the shipped checkpoint of the "
        "preset, if any) or 'init' (fresh weights)",
    )
    p.add_argument("--profile-steps", type=non_negative_int, default=2, help="0: no time breakdown")
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="bfloat16 matrix products (config mixed_precision)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (timings wait for the GPU)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the pure networks (give --warmup 3 or more: compiling is slow)",
    )
    p.add_argument("--gemm-size", type=positive_int, default=2048)
    p.add_argument("--gemm-repeats", type=positive_int, default=5)
    p.add_argument("--scaling", action="store_true", help="step time against T and N")
    p.add_argument("--scaling-frames", type=positive_int, nargs="+", default=[3, 5, 10, 20])
    p.add_argument("--scaling-objects", type=positive_int, nargs="+", default=[3, 6, 12])
    p.add_argument("--scaling-steps", type=positive_int, default=30)
    p.add_argument("--scaling-warmup", type=non_negative_int, default=3)
    p.add_argument("--eval", action="store_true", help="time estimate_log_px")
    p.add_argument("--eval-sequences", type=positive_int, default=100)
    p.add_argument("--eval-particles", type=positive_int, default=1000)
    p.add_argument("--eval-chunk", type=positive_int, default=100, help="particles at once")
    p.add_argument("--eval-batch", type=positive_int, default=10, help="sequences at once")
    p.add_argument(
        "--data", type=Path, help="directory with train.npz/test.npz (default: make a small set)"
    )
    p.add_argument(
        "--train-size", type=positive_int, default=512, help="sequences of the generated set"
    )
    p.add_argument("--json", type=Path, help="write every number here")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    try:
        check_device(args.device)
    except ValueError as error:
        p.error(str(error))
    if args.data is not None and not (args.data / "train.npz").is_file():
        p.error(f"--data {args.data}: no train.npz there")
    special = args.weights in ("trained", "init") or args.weights.startswith("pretrained:")
    if not special and not Path(args.weights).is_file():
        p.error(f"--weights {args.weights}: no such file")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.worker_spec, args.worker_out)
        return
    if args.preset == "mlp-air" and args.frames != 1:
        log("mlp-air trains on single frames: T=1 (each item is one frame)")
        args.frames = 1
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    report: dict[str, Any] = {"command": command, "machine": machine_info()}
    m = report["machine"]
    print(f"command: {command}")
    print(
        f"machine: {m['cpu_model']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical "
        f"CPUs ({m['physical_cores']} physical cores), {m['cpu_capability']}, "
        f"{m['memory_gib']} GiB, load {m['load_average_at_start']}"
    )
    print(f"python {m['python']}, torch {m['torch']}, pyro {m['pyro']}, numpy {m['numpy']}")
    spec = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
        if not key.startswith("worker") and key not in ("json", "threads")
    }
    if spec["weights"] == "trained":
        shipped = args.preset in available()
        spec["weights"] = f"pretrained:{args.preset}" if shipped else None
    elif spec["weights"] == "init":
        spec["weights"] = None
    print(f"weights: {spec['weights'] or 'fresh initialisation'}")
    report["settings"] = {**spec, "threads": args.threads}
    frames_needed = max([args.frames, *(args.scaling_frames if args.scaling else [])])
    with tempfile.TemporaryDirectory(prefix="sqair-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.data is None:
            log(f"generating {args.train_size} moving-MNIST sequences of {frames_needed} frames")
            spec["data"] = str(tmp / "data")
            test_size = max(args.eval_sequences if args.eval else 0, 1)
            extra = {"data_frames": frames_needed, "test_size": test_size}
            run_worker("data", {**spec, **extra}, 1, tmp)
        report["step"] = {}
        for threads in args.threads:
            result = run_worker("step", spec, threads, tmp)
            report["step"][str(threads)] = result
            print_step(threads, result, spec)
        if args.scaling:
            log(f"scaling sweep at {args.threads[0]} thread(s)")
            report["scaling"] = run_worker("scaling", spec, args.threads[0], tmp)
            print_scaling(report["scaling"])
        if args.eval:
            log(f"estimate_log_px at {args.threads[0]} thread(s)")
            report["eval"] = run_worker("eval", spec, args.threads[0], tmp)
            print_eval(report["eval"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(run_script(main))
