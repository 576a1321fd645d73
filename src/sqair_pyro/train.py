"""Training by stochastic variational inference (paper Sec. 3, App. D.1).

``train(config, data_dir, out_dir)`` is what ``sqair-pyro train`` runs; a notebook calls it
the same way, or drives :class:`Trainer` one step at a time.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import inspect
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import TraceGraph_ELBO
from torch import nn
from tqdm.auto import tqdm

from sqair_pyro.build import build
from sqair_pyro.checkpoint import (
    CheckpointError,
    load_weights,
    read_checkpoint,
    resample_glimpse_layers,
    save_checkpoint,
)
from sqair_pyro.config import Config
from sqair_pyro.data import available, check_frames, load_npz, split_file
from sqair_pyro.distributed import (
    ALONE,
    Workers,
    average_gradients,
    broadcast_parameters,
    finish,
    setup,
)
from sqair_pyro.infer import VIMCO_ELBO, LatentWeights, PresenceExploration, annealed_weights
from sqair_pyro.infer.vimco import backward_parts
from sqair_pyro.nn.precision import fast_numerics, keep_float32_outputs, matmul_precision
from sqair_pyro.optim import clip_by_component, components
from sqair_pyro.tracking import new_objects_per_frame

#: Settings a resumed run may change: how long it runs, how often it reports, where its first
#: weights came from (used only at the start), its base learning rate (every group keeps its
#: multiplier and the schedule its factor) and the curriculum's pace (frames_for_step).
RESUMABLE_CHANGES = frozenset(
    {
        "lr",
        "curriculum_every",
        "num_steps",
        "log_every",
        "checkpoint_every",
        "validate_every",
        "early_stopping_patience",
        "init_from",
        "rollback_nats",
        "max_rollbacks",
    }
)


#: Process ``r`` of a data-parallel run seeds its sampling noise ``seed + r * this``.
RANK_SEED_STRIDE = 100_003
#: The fewest training sequences a run accepts: a fifth of them validates.
MIN_SEQUENCES = 5


#: What a resumable state holds besides the weights (``Trainer.state``).
RESUME_STATE = (
    "optimizer", "scheduler", "torch_rng", "batch_rng", "step", "best_validation",
    "validations_without_improvement",
)  # fmt: skip


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def make_objective(config: Config) -> pyro.infer.ELBO:
    """The ELBO named by ``config.objective`` (``vimco``, ``reinforce`` or ``tracegraph``)."""
    if config.objective in ("vimco", "reinforce"):
        return VIMCO_ELBO(
            num_particles=config.num_particles,
            max_plate_nesting=1,
            vectorize_particles=True,
            control_variate=config.objective == "vimco",
            guide_objective=config.guide_objective,
        )
    if config.objective == "tracegraph":
        return TraceGraph_ELBO(num_particles=1, max_plate_nesting=1)
    raise ValueError(f"unknown objective {config.objective!r}")


def make_optimizer(config: Config, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam, or RMSProp with momentum 0.9 as in the paper."""
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def parameter_lr(config: Config, name: str) -> float:
    """The learning rate of the parameter called ``name`` (dotted path).

    NVIL baselines (``.baseline.``) learn at ``baseline_lr`` (as in Pyro's AIR example); a
    parameter inside a component named in ``lr_multipliers`` (any path segment, e.g.
    ``decoder``) at ``lr`` times its largest multiplier; the rest at ``lr``. A multiplier of 0
    on any segment freezes the parameter (rate 0), e.g. ``{"guide": 0}`` trains the model
    alone against a fixed posterior (NVIL baselines under a 0 freeze too).
    """
    path = f".{name}."
    factors = [f for key, f in config.lr_multipliers.items() if f".{key}." in path]
    if 0.0 in factors:
        return 0.0
    if ".baseline." in path:
        return config.baseline_lr
    return config.lr * max(factors, default=1.0)


@contextlib.contextmanager
def quiet_frozen(active: bool) -> Iterator[None]:
    """Inside the block, when ``active``, pyro.module's note that it skips a weight which does
    not require gradients (a frozen one, as it should) is not shown for every weight."""
    with warnings.catch_warnings():
        if active:
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
        yield


def parameter_groups(config: Config, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
    """Optimiser parameter groups, one per learning rate (see :func:`parameter_lr`).

    A weight shared by several modules (a VRNN's core, in model and guide) takes the rate of
    the first name it is met under, unless any of its names freezes it. Frozen weights (rate
    0) are in no group and stop requiring gradients (on the modules themselves, until another
    call sets them again), so no backward pass reaches them.
    """
    rates: dict[int, tuple[nn.Parameter, list[float]]] = {}
    for prefix, module in modules.items():
        for name, param in module.named_parameters(prefix=prefix, remove_duplicate=False):
            rates.setdefault(id(param), (param, []))[1].append(parameter_lr(config, name))
    by_lr: dict[float, list[nn.Parameter]] = {}
    for param, lrs in rates.values():
        lr = 0.0 if 0.0 in lrs else lrs[0]
        param.requires_grad_(lr > 0)
        if lr > 0:
            by_lr.setdefault(lr, []).append(param)
    if not by_lr:
        raise ValueError("lr_multipliers freeze every parameter: nothing would learn")
    return [{"params": params, "lr": lr} for lr, params in by_lr.items()]


#: The fields that weights are fitted to (warned by :func:`warm_start`): where the discovery
#: prior expects new objects (weights trained under other values are a posterior fitted to
#: another prior), and what discovery's RNN reads after its first step.
WARM_START_FIELDS = (
    "where_scale_logit",
    "where_scale_sd",
    "where_shift_sd",
    "where_slot_shift_y",
    "discovery_reads_difference",
    "centre_glimpses",
)


def warm_start(
    model: nn.Module, guide: nn.Module, checkpoint: str | Path, config: Config | None = None
) -> list[str]:
    """Copy every weight of ``checkpoint`` whose name and shape match; returns their names.

    ``checkpoint`` is a path or ``"pretrained:NAME"`` for a shipped checkpoint.

    A trained AIR gives SQAIR its image and glimpse encoders, discovery heads and decoder:
    discovery at the first frame then starts where AIR finished, and training can spend
    its steps on propagation.
    A weight whose input is wider here (same shape but a longer last dim, like SQAIR's
    discovery RNN, which also reads the propagated objects' summary after AIR's inputs) gets
    the checkpoint's columns first and zeros for the new inputs, so it starts as AIR's.

    Given this run's ``config``, a glimpse decoder that draws, or an MLP glimpse encoder that
    reads, glimpses of another size than the checkpoint's gets its output or input layer
    resampled (:func:`~sqair_pyro.checkpoint.resample_glimpse_layers`), and it warns where the
    checkpoint was trained under another discovery prior or discovery reading
    (:data:`WARM_START_FIELDS`): measured, a SQAIR run with ``where_slot_shift_y=3`` from an
    AIR trained with 0 counted 0.984 where the matching prior counted 0.991 (docs/results.md,
    "MLP-SQAIR from the new MLP-AIR"), and an MLP-AIR trained with
    ``discovery_reads_difference`` counts 0.74 without it, 0.91 with it (docs/results.md,
    "MLP-AIR that reads the difference").
    """
    if str(checkpoint).startswith("pretrained:"):
        from sqair_pyro.pretrained import pretrained_path

        checkpoint = pretrained_path(str(checkpoint).removeprefix("pretrained:"))
    payload = read_checkpoint(checkpoint)
    try:  # the check is advisory: weights under a config this version cannot read still copy
        trained = Config.from_dict(payload["config"]) if config is not None else None
    except (KeyError, ValueError, TypeError, AttributeError):
        trained = None
    if trained is not None:
        for name in WARM_START_FIELDS:
            if getattr(trained, name) != getattr(config, name):
                warnings.warn(
                    f"init_from {checkpoint} was trained with {name}={getattr(trained, name)!r}, "
                    f"this run has {getattr(config, name)!r} (--set {name}=... to match)",
                    stacklevel=2,
                )
    copied = []
    for prefix, module in (("model", model), ("guide", guide)):
        if trained is not None:  # a decoder or glimpse encoder of another glimpse size
            resample_glimpse_layers(module, payload[prefix], trained)
        own = module.state_dict()
        for name, value in payload[prefix].items():
            target = own.get(name)
            if target is None or target.dim() != value.dim():
                continue
            if target.shape == value.shape:
                own[name] = value
            elif target.shape[:-1] == value.shape[:-1] and value.shape[-1] < target.shape[-1]:
                widened = torch.zeros_like(target)
                widened[..., : value.shape[-1]] = value
                own[name] = widened
            else:
                continue
            copied.append(f"{prefix}.{name}")
        module.load_state_dict(own)
    if not copied:
        raise ValueError(f"{checkpoint} shares no weights with this model")
    return copied


def surrogate_losses(
    elbo: pyro.infer.ELBO, model: Callable, guide: Callable, images: torch.Tensor, **kwargs: Any
) -> tuple[list[tuple[torch.Tensor, list[torch.Tensor] | None]], float]:
    """``(parts, -bound)``: the surrogate losses to differentiate, each with the parameters its
    gradient is for (None: all; see :meth:`VIMCO_ELBO.surrogate_losses`), and the objective's
    value. ``kwargs`` go to the model and the guide (e.g. the training phase)."""
    if isinstance(elbo, TraceGraph_ELBO):
        loss, surrogate = elbo._loss_and_surrogate_loss(model, guide, (images,), kwargs)
        return [(surrogate, None)], float(loss.detach())
    if isinstance(elbo, VIMCO_ELBO):
        parts = elbo.surrogate_losses(model, guide, images, **kwargs)
    else:  # any Pyro ELBO with a differentiable_loss
        parts = [(elbo.differentiable_loss(model, guide, images, **kwargs), None)]
    return parts, parts[0][0].item()


def frames_for_step(config: Config, step: int) -> int:
    """The sequence-length curriculum: start short, add a frame every ``curriculum_every``."""
    grown = config.curriculum_start + step // max(config.curriculum_every, 1)
    return min(config.num_frames, grown)


class SequenceBatches:
    """Random mini-batches from a data split, reproducible from a saved generator state.

    Each data sequence is cut into windows of ``window`` frames, each a training sequence:
    the whole sequence for SQAIR (``num_frames`` = T, later cropped by the curriculum), every
    frame on its own for AIR (``num_frames`` = 1: frames as images, App. D.1).
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        window: int,
        seed: int,
        workers: Workers = ALONE,
    ) -> None:
        """``workers``: under data-parallel training this process takes its shard of the
        sequences (every ``world``-th) and its own random stream (``seed + rank``)."""
        images, counts = arrays["images"], arrays.get("counts")
        pieces = images.shape[1] // window
        if pieces < 1:
            raise ValueError(f"sequences of {images.shape[1]} frames are shorter than {window}")

        def windows(a: np.ndarray) -> np.ndarray:
            return a[:, : pieces * window].reshape(-1, window, *a.shape[2:])

        shard = workers.shard(len(images))
        self.images = windows(images[shard])
        self.counts = None if counts is None else windows(counts[shard])
        self.generator = torch.Generator().manual_seed(seed + RANK_SEED_STRIDE * workers.rank)

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: np.ndarray, num_frames: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images in [0, 1] and per-frame visible counts (None without them) of the given rows."""
        images = self.images[index, :num_frames]
        counts = None if self.counts is None else self.counts[index, :num_frames]
        return (
            torch.from_numpy(images).float() / 255,
            None if counts is None else torch.from_numpy(counts),
        )

    def sample(self, batch_size: int, num_frames: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = torch.randint(len(self), (batch_size,), generator=self.generator).numpy()
        return self.get(np.sort(index), num_frames)


class _Capture:
    """Wraps the guide and keeps its last return value (the inferred latents)."""

    def __init__(self, guide: Callable) -> None:
        self.guide = guide
        self.latents: dict[str, torch.Tensor] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        latents = self.guide(*args, **kwargs)
        # A guide that returns no latents (most Pyro guides return nothing) keeps none.
        self.latents = (
            {k: v.detach() for k, v in latents.items() if isinstance(v, torch.Tensor)}
            if isinstance(latents, dict)
            else None
        )
        return latents


def counting_accuracy(z_pres: torch.Tensor, counts: torch.Tensor | None) -> float:
    """Fraction of (particle, frame) pairs whose number of present objects equals ``counts``
    (nan without counts).

    ``z_pres`` (..., N, 1) or (..., T, N, 1) with leading particle dims; ``counts`` (B,) or (B, T).
    """
    if counts is None:
        return math.nan
    inferred = z_pres.squeeze(-1).sum(-1)
    return (inferred == counts.to(inferred.dtype)).float().mean().item()


class Trainer:
    """SVI with a torch optimiser on the objective's surrogate losses (``differentiable_loss``
    of any Pyro ELBO, or :meth:`VIMCO_ELBO.surrogate_losses`); state saved for exact resume."""

    def __init__(
        self,
        config: Config,
        device: str = "cpu",
        initialise: bool = True,
        *,
        programs: tuple[nn.Module, nn.Module] | None = None,
        objective: pyro.infer.ELBO | None = None,
        optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None = None,
        workers: Workers = ALONE,
    ) -> None:
        """Build the programs, the objective and the optimiser.

        :param initialise: ``False`` skips ``init_from`` (a run about to be restored from its
            own checkpoint needs no first weights).
        :param programs: any Pyro ``(model, guide)`` pair as nn.Modules taking the frames
            (B, T, H, W); default: ``build(config)``. (To evaluate or show a pair from its
            checkpoint later, register it as a model: :mod:`sqair_pyro.registry`.)
        :param objective: any Pyro ELBO with ``differentiable_loss``; default: the one
            ``config.objective`` names (:func:`make_objective`).
        :param optimizer: a torch optimiser from the parameter groups (each with its ``lr``,
            :func:`parameter_groups`), e.g. ``lambda groups: torch.optim.SGD(groups)``;
            default: the one ``config.optimizer`` names (:func:`make_optimizer`).
        :param workers: this process's place in data-parallel training
            (:mod:`sqair_pyro.distributed`); alone by default.
        """
        self.workers = workers
        self.config = config
        self.device = torch.device(device)
        pyro.set_rng_seed(config.seed)
        pyro.clear_param_store()
        self.model, self.guide = build(config) if programs is None else programs
        self.model.to(self.device)
        self.guide.to(self.device)
        if config.mixed_precision:
            keep_float32_outputs(self.model, self.guide)
        self.capture = _Capture(self.guide)
        #: The guide of training steps: with presence decisions explored when configured.
        self.training_guide: Callable = (
            PresenceExploration(config.presence_exploration)(self.capture)
            if config.presence_exploration
            else self.capture
        )
        self.elbo = make_objective(config) if objective is None else objective
        if config.propagation_warmup_steps and not all(
            "discover_after_first_frame" in inspect.signature(p.forward).parameters
            for p in (self.model, self.guide)
        ):
            raise ValueError(
                "propagation_warmup_steps needs programs with a discover_after_first_frame "
                f"argument (SQAIR's); {config.model_name} has none: set it to 0"
            )
        #: Names of the weights copied from ``config.init_from`` (none without a warm start).
        self.initialised: list[str] = []
        if config.init_from and initialise:
            self.initialised = warm_start(self.model, self.guide, config.init_from, config)
        broadcast_parameters((self.model, self.guide), workers)
        if workers.rank:  # its own sampling noise; rank 0 keeps a lone process's stream
            pyro.set_rng_seed(config.seed + RANK_SEED_STRIDE * workers.rank)
        groups = parameter_groups(config, {"model": self.model, "guide": self.guide})
        self.params = [p for group in groups for p in group["params"]]
        every = {id(p) for module in (self.model, self.guide) for p in module.parameters()}
        #: Whether some weights are frozen (``lr_multipliers`` of 0).
        self.frozen = len(self.params) < len(every)
        # Whose gradient is whose when model and guide learn from different objectives
        # (PIWAE): the modules' own parameters, a shared one counting as the model's.
        model_ids = {id(p) for p in self.model.parameters()}
        self.owned = (
            [p for p in self.params if id(p) in model_ids],
            [p for p in self.params if id(p) not in model_ids],
        )
        trainable = {id(p) for p in self.params}
        self.components = components(
            (f"{prefix}.{n}", p)
            for prefix, module in (("model", self.model), ("guide", self.guide))
            for n, p in module.named_parameters()
            if id(p) in trainable
        )
        #: Times the run rolled back to its best checkpoint; each divides every rate by
        #: 1 / lr_decay.
        self.rollbacks = 0
        self.optimizer = make_optimizer(config, groups) if optimizer is None else optimizer(groups)
        self.base_lrs = [group["lr"] for group in groups]
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=config.lr_decay_steps, gamma=config.lr_decay
        )
        self.step_count = 0
        self.best_validation = -math.inf
        #: Seconds of training so far, over every resume (checkpoints carry it on).
        self.elapsed_s = 0.0
        self.validations_without_improvement = 0

    def step(self, images: torch.Tensor, counts: torch.Tensor | None = None) -> dict[str, float]:
        """One SVI step on a batch; returns the bound per datum and the counting accuracy."""
        images = images.to(self.device)
        with (
            matmul_precision(self.config.mixed_precision, self.device),
            quiet_frozen(self.frozen),
            self.weighting(),
        ):
            parts, loss = surrogate_losses(
                self.elbo, self.model, self.training_guide, images, **self.phase()
            )
        if len(parts) == len(self.owned):  # the model's loss, then the guide's (unless frozen)
            parts = [(part, own) for (part, _), own in zip(parts, self.owned, strict=True) if own]
        loss = self.workers.sum(loss) / self.workers.world  # the same on every process
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss} at step {self.step_count}; "
                "the last good checkpoint is kept (try a lower --lr or --clip-norm)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        backward_parts(parts, divide_by=images.shape[0])
        average_gradients(self.params, self.workers)
        grad_norm, clipped = self.clip_gradients()
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(
                f"gradient became {grad_norm} at step {self.step_count}; "
                "the last good checkpoint is kept (try a lower --lr or --clip-norm)"
            )
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        # Object metrics where the guide returns objects (any pair may be trained).
        latents = self.capture.latents or {}
        z_pres, ids = latents.get("z_pres"), latents.get("ids")
        return {
            "new_objects": math.nan if ids is None else new_objects_per_frame(ids.cpu()),
            "bound": -loss / images.shape[0],
            "counting_accuracy": math.nan
            if z_pres is None
            else counting_accuracy(z_pres.cpu(), counts),
            "objects": math.nan if z_pres is None else z_pres.sum((-2, -1)).mean().item(),
            "grad_norm": grad_norm,
            "clipped": clipped,
            "lr": self.config.lr * self.lr_factor() * self.config.lr_decay**self.rollbacks,
        }

    def weighting(self) -> contextlib.AbstractContextManager:
        """The KL weights of this step (``config.kl_weights`` annealed over
        ``kl_anneal_steps``) as a handler around the model and the guide; validation runs
        without it, on the bound itself."""
        if not self.config.kl_weights:
            return contextlib.nullcontext()
        return LatentWeights(
            annealed_weights(self.config.kl_weights, self.step_count, self.config.kl_anneal_steps)
        )

    def phase(self) -> dict[str, bool]:
        """The training phase, as keyword arguments of the model and the guide: during the
        first ``propagation_warmup_steps`` steps, discovery in the first frame only."""
        if self.config.propagation_warmup_steps == 0:
            return {}
        return {"discover_after_first_frame": not self.warming_up()}

    def warming_up(self) -> bool:
        """Whether the propagation warm-up is still on after the steps taken so far. The
        warm-up trains a part of the model (discovery in the first frame only), so the whole
        model's validation bound may fall while it runs, as it is meant to: the loop neither
        rolls back nor counts towards early stopping then, and ranks only the validations
        from the warm-up's last step on (``best.pt`` restarts there)."""
        return self.step_count < self.config.propagation_warmup_steps

    def clip_gradients(self) -> tuple[float, float]:
        """Clip as ``config.clip`` says; returns the norm before clipping and the fraction of
        components clipped (1 or 0 for the global clip)."""
        if self.config.clip == "group":
            return clip_by_component(self.components, self.config.clip_norm)
        norm = float(nn.utils.clip_grad_norm_(self.params, self.config.clip_norm))
        return norm, float(norm > self.config.clip_norm)

    def roll_back(self, path: Path, batches: SequenceBatches) -> None:
        """Return to the weights and optimiser state of ``path`` (the best checkpoint), keep
        counting steps, and multiply every learning rate by ``lr_decay``."""
        step, elapsed, rollbacks = self.step_count, self.elapsed_s, self.rollbacks
        generator, noise = batches.generator.get_state(), torch.get_rng_state()
        self.restore(path, batches)
        self.step_count, self.elapsed_s, self.rollbacks = step, elapsed, rollbacks + 1
        # Fresh batches and sampling noise, not those that followed the best step again.
        batches.generator.set_state(generator)
        torch.set_rng_state(noise)
        self.use_base_lrs([rate * self.config.lr_decay**self.rollbacks for rate in self.base_lrs])
        # The schedule's factor at this step (milestones passed since the best step count).
        self.scheduler.last_epoch = step
        factor = self.config.lr_decay ** bisect.bisect_right(
            sorted(self.config.lr_decay_steps), step
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def lr_factor(self) -> float:
        """The schedule's current factor on every learning rate."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group["initial_lr"]

    def use_base_lrs(self, base: list[float]) -> None:
        """Give every parameter group the base rate ``base[g]``, keeping the schedule's factor."""
        for group, rate in zip(self.optimizer.param_groups, base, strict=True):
            group["lr"] = rate * group["lr"] / group["initial_lr"]
            group["initial_lr"] = rate
        self.scheduler.base_lrs = list(base)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    @torch.no_grad()
    def validate(
        self, batches: SequenceBatches, num_frames: int, batch_size: int
    ) -> tuple[float, float]:
        """The IWAE bound per datum (the training objective's value) on a whole split, and the
        average single-particle ELBO of the same particles (NaN for an objective without
        particles); under data-parallel training each process takes its shard and the sums
        are combined. Always of the whole model, whatever the training phase (discovery in
        every frame during the propagation warm-up too), so that the log's validations
        compare across the run; see :meth:`warming_up` for how the loop ranks them."""
        iwae = elbo = 0.0
        rows = np.arange(len(batches))[self.workers.shard(len(batches))]
        with quiet_frozen(self.frozen):
            for start in range(0, len(rows), batch_size):
                images, _ = batches.get(rows[start : start + batch_size], num_frames)
                images = images.to(self.device)
                if isinstance(self.elbo, VIMCO_ELBO):
                    batch_iwae, batch_elbo = self.elbo.bounds(self.model, self.guide, images)
                    iwae, elbo = iwae + batch_iwae, elbo + batch_elbo
                else:
                    iwae += -self.elbo.loss(self.model, self.guide, images)
                    elbo = math.nan
        return self.workers.sum(iwae) / len(batches), self.workers.sum(elbo) / len(batches)

    def state(self, batches: SequenceBatches) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return {
            "step": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "batch_rng": batches.generator.get_state(),
            "best_validation": self.best_validation,
            "validations_without_improvement": self.validations_without_improvement,
            "elapsed_s": self.elapsed_s,
            "rollbacks": self.rollbacks,
        }

    def save(self, path: Path, batches: SequenceBatches) -> None:
        """Rank 0 writes (the state of its own random streams); the others wait for it."""
        if self.workers.main:
            save_checkpoint(path, self.config, self.model, self.guide, **self.state(batches))
        self.workers.barrier()

    def restore(self, path: Path, batches: SequenceBatches) -> None:
        """Continue exactly where the checkpoint at ``path`` stopped."""
        payload = read_checkpoint(path, map_location=str(self.device))
        # Keys added since the checkpoint was written take their defaults.
        before = dataclasses.asdict(Config.from_dict(payload["config"]))
        now = dataclasses.asdict(self.config)
        changed = sorted(k for k in now if before.get(k) != now[k] and k not in RESUMABLE_CHANGES)
        if changed:
            raise ValueError(
                f"{path} was trained with other settings ({', '.join(changed)}); "
                "resume with the same settings or start a new --out"
            )
        missing = [key for key in RESUME_STATE if key not in payload]
        if missing:
            raise CheckpointError(
                f"{path} holds weights, not a resumable state (no {', '.join(missing)}); "
                f"start a new run from it with --set init_from={path}"
            )
        load_weights(path, "model", self.model, payload["model"])
        load_weights(path, "guide", self.guide, payload["guide"])
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{path}: its optimiser state does not fit: {error}") from None
        self.rollbacks = payload.get("rollbacks", 0)
        # A resume may change lr (RESUMABLE_CHANGES); each past rollback keeps its factor.
        self.use_base_lrs([rate * self.config.lr_decay**self.rollbacks for rate in self.base_lrs])
        torch.set_rng_state(payload["torch_rng"])
        batches.generator.set_state(payload["batch_rng"])
        if self.workers.rank:  # rank 0's streams are saved; the others start anew from here
            pyro.set_rng_seed(
                self.config.seed + RANK_SEED_STRIDE * self.workers.rank + payload["step"]
            )
            batches.generator.manual_seed(
                self.config.seed + RANK_SEED_STRIDE * self.workers.rank + payload["step"]
            )
        self.step_count = payload["step"]
        self.best_validation = payload["best_validation"]
        self.validations_without_improvement = payload["validations_without_improvement"]
        self.elapsed_s = payload.get("elapsed_s", 0.0)  # older checkpoints: from this resume


class MetricsLog:
    """Appends metrics to ``metrics.csv`` and, if available, TensorBoard."""

    FIELDS = (
        "step",
        "time_s",
        "frames",
        "bound",
        "counting_accuracy",
        "objects",
        "grad_norm",
        "clipped",
        "lr",
        "val",
        "new_objects",
        "val_elbo",
    )

    def __init__(
        self, out_dir: Path, tensorboard: bool = True, after_step: int = 0, write: bool = True
    ) -> None:
        """Append to ``out_dir/metrics.csv``; a resumed run (``after_step`` > 0) first drops
        the rows logged after its checkpoint's step, which it is about to log again.
        ``write=False`` (a data-parallel process other than rank 0): log nothing."""
        self.path = out_dir / "metrics.csv"
        self.file: Any = None
        self.tensorboard = None
        if not write:
            return
        new = not self.path.exists()
        fields = self.FIELDS
        if not new:  # a resumed run keeps its file's columns and gains any new ones
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            old = tuple(rows[0]) if rows else self.FIELDS
            fields = old + tuple(f for f in self.FIELDS if f not in old)
            kept = [row for row in rows[1:] if row and _step_of(row, old) <= after_step]
            if len(kept) < len(rows) - 1 or fields != old:
                padded = [row + [""] * (len(fields) - len(row)) for row in kept]
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerows([list(fields), *padded])
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=fields, extrasaction="ignore")
        if new:
            self.writer.writeheader()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, row: dict[str, float]) -> None:
        if self.file is None:
            return
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value is not None and value != "":
                    self.tensorboard.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _step_of(row: list[str], fields: tuple[str, ...]) -> float:
    try:
        return float(row[fields.index("step")])
    except (ValueError, IndexError):
        return math.inf


class StopRequested:
    """Turns SIGINT and SIGTERM into a request that the training loop honours between steps
    (a step is never cut in half), restoring the previous handlers on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopRequested:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingInterruptedError(RuntimeError):
    """Training was stopped by a signal; the state at the last finished step is saved."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        #: The signal's number (the command line exits with 128 plus it).
        self.signal = signal_number


def diverged(config: Config, value: float, best: float) -> bool:
    """Whether a validation bound ``value`` fell more than ``config.rollback_nats`` below
    ``best`` (never when rollback is off or nothing was validated yet)."""
    if config.rollback_nats is None or not math.isfinite(best):
        return False
    return value < best - config.rollback_nats


def split_validation(
    arrays: dict[str, np.ndarray], size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Hold out the last ``size`` training sequences for validation (never the test split)."""
    size = min(size, len(arrays["images"]) // 5)
    keys = [key for key in ("images", "counts") if key in arrays]
    return (
        {k: arrays[k][: len(arrays[k]) - size] for k in keys},
        {k: arrays[k][len(arrays[k]) - size :] for k in keys},
    )


def train(
    config: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Train ``config`` on ``data_dir/train.npz`` (or the file ``data_dir``); checkpoints in
    ``out_dir``.

    Writes ``last.pt`` every ``checkpoint_every`` steps and ``best.pt`` at the best validation
    bound; stops after ``num_steps`` or when validation stops improving. Returns ``best.pt``
    (or ``last.pt`` if never validated).
    """
    fast_numerics()
    workers, device = setup(device)
    progress = progress and workers.main
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    data = split_file(data_dir, "train")
    arrays = load_npz(data)
    check_frames(arrays["images"], config.image_size)
    if workers.main:
        available(arrays, {"training counting accuracy": ("counts",)}, str(data))
    if len(arrays["images"]) < MIN_SEQUENCES:
        raise ValueError(
            f"{data}: training needs at least {MIN_SEQUENCES} sequences (a fifth, up to "
            f"validation_size, is held out for validation), got {len(arrays['images'])}"
        )
    train_arrays, valid_arrays = split_validation(arrays, config.validation_size)
    batches = SequenceBatches(train_arrays, config.num_frames, config.seed, workers)
    if workers.any(len(batches) == 0):
        raise ValueError(
            f"{data}: too few training sequences for {workers.world} processes (each needs one)"
        )
    valid = SequenceBatches(valid_arrays, config.num_frames, seed=config.seed + 1)
    resuming = resume and last.exists()
    trainer = Trainer(config, device, initialise=not resuming, workers=workers)
    if resuming:
        trainer.restore(last, batches)
    elif not resume and last.exists():
        raise FileExistsError(f"{last} exists: pass --resume to continue, or another --out")
    log = MetricsLog(out_dir, after_step=trainer.step_count, write=workers.main)
    started, elapsed_before = time.perf_counter(), trainer.elapsed_s
    bar = tqdm(
        total=config.num_steps, initial=trainer.step_count, disable=not progress, desc="train"
    )
    with StopRequested() as stop:
        try:
            _loop(config, trainer, batches, valid, log, bar, out_dir, stop, started, elapsed_before)
        finally:
            bar.close()
            log.close()
            finish(workers)
    return best if best.exists() else last


def _loop(
    config: Config,
    trainer: Trainer,
    batches: SequenceBatches,
    valid: SequenceBatches,
    log: MetricsLog,
    bar: Any,
    out_dir: Path,
    stop: StopRequested,
    started: float,
    elapsed_before: float,
) -> None:
    """The training loop of :func:`train`: steps, logs, validations, checkpoints, stops."""
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    running: dict[str, float] = {}
    say = bar.write if trainer.workers.main else (lambda message: None)  # rank 0 speaks
    while trainer.step_count < config.num_steps:
        if trainer.workers.any(stop.received is not None):  # every process stops together
            trainer.save(last, batches)
            name = signal.Signals(stop.received or signal.SIGTERM).name
            raise TrainingInterruptedError(
                f"stopped by {name} at step {trainer.step_count}; {last} holds that state "
                "(continue with --resume)",
                stop.received or signal.SIGTERM,
            )
        frames = frames_for_step(config, trainer.step_count)
        metrics = trainer.step(*batches.sample(config.batch_size, frames))
        trainer.elapsed_s = elapsed_before + time.perf_counter() - started
        for key, value in metrics.items():  # exponential moving averages for the bar
            running[key] = value if key not in running else 0.95 * running[key] + 0.05 * value
        bar.update(1)
        step = trainer.step_count
        if step == config.propagation_warmup_steps:  # the warm-up's last step: rank anew
            trainer.best_validation = -math.inf
            trainer.validations_without_improvement = 0
        if step % config.log_every == 0:
            bar.set_postfix(
                bound=f"{running['bound']:.1f}", acc=f"{running['counting_accuracy']:.3f}"
            )
            row = {"step": step, "time_s": trainer.elapsed_s, "frames": frames}
            log.write({**row, **metrics})
        if step % config.validate_every == 0 or step == config.num_steps:
            # Always at full length, so validations compare across the curriculum.
            value, value_elbo = trainer.validate(valid, config.num_frames, 2 * config.batch_size)
            log.write(
                {"step": step, "time_s": trainer.elapsed_s, "val": value, "val_elbo": value_elbo}
            )
            if value > trainer.best_validation:
                trainer.best_validation = value
                trainer.validations_without_improvement = 0
                trainer.save(best, batches)
            elif trainer.warming_up():
                pass  # neither a rollback nor a count towards early stopping (warming_up)
            elif diverged(config, value, trainer.best_validation) and best.exists():
                if trainer.rollbacks >= config.max_rollbacks:
                    say(
                        f"stopping at step {step}: validation bound {value:.1f} is "
                        f"{trainer.best_validation - value:.1f} nats below the best after "
                        f"{trainer.rollbacks} rollbacks; best.pt holds the best state"
                    )
                    trainer.save(last, batches)
                    break
                trainer.roll_back(best, batches)
                say(
                    f"step {step}: validation bound {value:.1f} fell more than "
                    f"{config.rollback_nats} nats below the best "
                    f"({trainer.best_validation:.1f}); rolled back to best.pt, learning "
                    f"rates x{config.lr_decay:.3g}"
                )
            else:
                trainer.validations_without_improvement += 1
        if step % config.checkpoint_every == 0 or step == config.num_steps:
            trainer.save(last, batches)
        if trainer.validations_without_improvement >= config.early_stopping_patience:
            say(f"early stopping at step {step}: validation bound stopped improving")
            trainer.save(last, batches)
            break
