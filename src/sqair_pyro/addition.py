"""The addition experiment (paper Sec. 4.1, Table 1 column six, App. D.4): a supervised probe.

A 19-way classifier learns the sum of the digits visible in a frame from the model's latents
of that frame, and is tested on held-out sequences; its accuracy measures how much of the
digits' identity the unsupervised representation holds. As in App. D.4:

- features per frame: the concatenated ``z_what`` of the ``N`` object slots, each multiplied
  by its ``z_pres`` (:func:`frame_features`), from one posterior sample of the frozen guide
  (``features="sample"``, the paper's protocol) or with every continuous latent at its
  posterior mean and only ``z_pres`` sampled (``features="mean"``: less noise, since most
  z_what dims have a posterior scale near their spread over the data);
- target per frame: the sum of the labels of the digits visible in it, 0 when none
  (:func:`frame_sums`); with at most two digits, 19 classes (0 to 18);
- classifier: an MLP with two hidden layers of 256 ELU units and a softmax output, trained
  with Adam (:class:`SumClassifier`, :func:`train_classifier`);
- posterior draws of the training frames: the paper trains its probe for 10^7 iterations on
  latents of the model, which we read as drawn anew as it goes; ``draws=D`` extracts ``D``
  independent posterior samples of every training frame and gives epoch ``e`` the draw
  ``e mod D`` (``D=1``: one fixed draw, which the probe can overfit to). Test frames get
  one draw either way.

AIR sees each frame alone; SQAIR infers each sequence, and its slots are ordered by when the
objects were first seen (:func:`sqair_pyro.models.state.compact`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from sqair_pyro.config import Config
from sqair_pyro.data import check_frames
from sqair_pyro.evaluate import ADDITION_FORMAT
from sqair_pyro.infer import latent_means

#: The per-frame features of the probe: z_what drawn (the paper's), or at its posterior mean.
FEATURES = ("sample", "mean")

__all__ = [
    "SumClassifier",
    "accuracy",
    "addition_checkpoint",
    "addition_experiment",
    "extract_features",
    "frame_features",
    "frame_sums",
    "majority_class",
    "num_classes",
    "train_classifier",
]


#: Classes of MNIST digits; data with larger labels get as many classes as they need.
DIGIT_CLASSES = 10


def frame_sums(labels: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Per frame, the sum of the labels of the digits visible in it (0 when none).

    :param labels: (S, M) digit classes, -1 for padding; :param visible: (S, T, M) bools.
    :returns: (S, T) int64.
    """
    labels = np.asarray(labels)
    visible = np.asarray(visible, dtype=bool)
    if labels.ndim != 2 or visible.ndim != 3 or visible.shape[::2] != labels.shape:
        raise ValueError(
            f"labels (S, M) and visible (S, T, M) do not match: {labels.shape}, {visible.shape}"
        )
    real = (labels >= 0)[:, None, :] & visible
    return np.where(real, labels[:, None, :], 0).sum(-1).astype(np.int64)


def num_classes(max_digits: int, digit_classes: int = DIGIT_CLASSES) -> int:
    """How many sums there are for up to ``max_digits`` objects of ``digit_classes`` classes
    (0 .. digit_classes - 1): 19 for two MNIST digits."""
    return max(max_digits, 1) * (digit_classes - 1) + 1


def frame_features(z_what: torch.Tensor, z_pres: torch.Tensor) -> torch.Tensor:
    """``z_what * z_pres`` of every slot, concatenated: (..., N, D), (..., N, 1) -> (..., N*D)."""
    if z_what.shape[:-1] != z_pres.shape[:-1] or z_pres.shape[-1] != 1:
        raise ValueError(
            f"z_what (..., N, D) and z_pres (..., N, 1): {z_what.shape}, {z_pres.shape}"
        )
    return (z_what * z_pres).flatten(-2)


@torch.no_grad()
def extract_features(
    guide: nn.Module,
    config: Config,
    images: np.ndarray,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool = False,
    features: str = "sample",
) -> torch.Tensor:
    """Per-frame features of one posterior sample of the frozen guide.

    :param images: uint8 (S, T, H, W) sequences.
    :param features: ``"sample"`` (z_what drawn) or ``"mean"`` (z_what and z_where at their
        posterior means, z_pres drawn; :class:`sqair_pyro.infer.LatentMeans`).
    :returns: (S, T, N * D) float32 features (:func:`frame_features`).
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    images = np.asarray(images)
    check_frames(images, config.image_size)
    pyro.set_rng_seed(seed)
    num_seq, num_frames = images.shape[:2]
    out = []
    starts = range(0, num_seq, batch_size)
    for start in tqdm(starts, disable=not progress, desc="latents", unit="batch"):
        frames = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        frames = frames.float() / 255.0
        b = frames.shape[0]
        with latent_means(features == "mean"):
            latents = guide(frames)  # one posterior sample, (B, T, N, .)
        if "z_pres" in latents:  # a model of objects: their appearances
            per_frame = frame_features(latents["z_what"], latents["z_pres"])
        else:  # one latent vector per frame (a VRNN): all of it, as the paper (App. D.4)
            per_frame = latents["z"]
        out.append(per_frame.reshape(b, num_frames, -1).float().cpu())
    return torch.cat(out)


class SumClassifier(nn.Module):
    """The probe of App. D.4: two hidden layers of 256 ELU units, logits of the sums."""

    def __init__(self, in_features: int, classes: int = 19, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def train_classifier(
    features: torch.Tensor | list[torch.Tensor],
    targets: torch.Tensor,
    classes: int = 19,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> SumClassifier:
    """Train :class:`SumClassifier` with Adam (default settings) on (F, K) features and (F,)
    integer targets by cross-entropy; minibatches shuffled with ``seed``. A list of (F, K)
    features (posterior draws of the same frames) gives epoch ``e`` the draw ``e mod len``."""
    draws = [
        torch.as_tensor(f, dtype=torch.float32)
        for f in (features if isinstance(features, list) else [features])
    ]
    targets = torch.as_tensor(targets, dtype=torch.long)
    if not draws or any(f.dim() != 2 or f.shape != draws[0].shape for f in draws):
        raise ValueError(f"features must be (F, K), each draw alike: {[f.shape for f in draws]}")
    if targets.shape != draws[0].shape[:1]:
        raise ValueError(f"features (F, K) and targets (F,): {draws[0].shape}, {targets.shape}")
    if len(targets) == 0:
        raise ValueError("no training examples")
    if targets.min() < 0 or targets.max() >= classes:
        raise ValueError(
            f"targets must lie in [0, {classes}), got {targets.min()}..{targets.max()}"
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = SumClassifier(draws[0].shape[1], classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    for epoch in tqdm(range(epochs), disable=not progress, desc="classifier", unit="epoch"):
        features_now = draws[epoch % len(draws)]
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(classifier(features_now[index]), targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval()
    return classifier


@torch.no_grad()
def accuracy(classifier: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> float:
    """The fraction of examples whose most probable class is the target."""
    predicted = classifier(torch.as_tensor(features, dtype=torch.float32)).argmax(-1)
    return (predicted == torch.as_tensor(targets)).float().mean().item()


def majority_class(targets: torch.Tensor | np.ndarray) -> int:
    """The most frequent class (the smallest one on ties)."""
    return int(np.bincount(np.asarray(targets).ravel()).argmax())


def _check(arrays: Mapping[str, np.ndarray], name: str) -> None:
    missing = [key for key in ("images", "labels", "visible") if key not in arrays]
    if missing:
        raise ValueError(
            f"the {name} data have no {', '.join(missing)}: the addition probe needs each "
            "object's class (labels) and when it is visible (visible)"
        )
    if len(arrays["images"]) == 0:
        raise ValueError(f"the {name} split holds no sequences")


def addition_experiment(
    model: nn.Module,
    guide: nn.Module,
    config: Config,
    train_arrays: Mapping[str, np.ndarray],
    test_arrays: Mapping[str, np.ndarray],
    num_train: int | None = 2000,
    num_test: int | None = 500,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    features: str = "sample",
    draws: int = 1,
) -> dict[str, Any]:
    """Train the sum probe on the first ``num_train`` training sequences' latents and test it
    on the first ``num_test`` test sequences (None: all); every frame is one example, with
    ``draws`` posterior samples of each training frame (the module's docstring).

    ``model`` is not used by the probe (it takes the guide's latents), only accepted so every
    experiment has the same signature. Deterministic for ``seed``. ``features`` as in
    :func:`extract_features`.

    :returns: ``accuracy`` (test), ``train_accuracy`` (on the first draw), ``chance`` (the
        training split's majority class, scored on the test frames), ``majority_class``,
        ``num_classes``, sizes (``num_train_sequences``, ``num_train_frames``, ...),
        ``feature_dim``, ``epochs``, ``seed``, ``features``, ``draws``, ``model_name`` and
        ``wall_time_s``.
    """
    del model  # the probe reads the guide's posterior only
    started = time.perf_counter()
    _check(train_arrays, "training")
    _check(test_arrays, "test")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("draws", draws)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if draws > epochs:
        raise ValueError(f"draws ({draws}) must not exceed epochs ({epochs}): each epoch uses one")
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    train_n = len(train_arrays["images"]) if num_train is None else int(num_train)
    test_n = len(test_arrays["images"]) if num_test is None else int(num_test)
    train_n = min(train_n, len(train_arrays["images"]))
    test_n = min(test_n, len(test_arrays["images"]))
    max_digits = max(train_arrays["labels"].shape[1], test_arrays["labels"].shape[1])
    largest = max(int(np.max(a["labels"], initial=0)) for a in (train_arrays, test_arrays))
    classes = num_classes(max_digits, max(largest + 1, DIGIT_CLASSES))

    def features_of(arrays: Mapping[str, np.ndarray], n: int, draw_seed: int) -> torch.Tensor:
        inputs = extract_features(
            guide,
            config,
            arrays["images"][:n],
            seed=draw_seed,
            progress=progress,
            features=features,
        )
        return inputs.flatten(0, 1)

    def sums(arrays: Mapping[str, np.ndarray], n: int) -> torch.Tensor:
        return torch.from_numpy(frame_sums(arrays["labels"][:n], arrays["visible"][:n])).flatten()

    # Draw d of the training frames uses seed + 2d, the test frames seed + 1.
    train_draws = [features_of(train_arrays, train_n, seed + 2 * d) for d in range(int(draws))]
    train_x, train_y = train_draws[0], sums(train_arrays, train_n)
    test_x, test_y = features_of(test_arrays, test_n, seed + 1), sums(test_arrays, test_n)
    classifier = train_classifier(
        train_draws, train_y, classes, epochs, batch_size, lr, seed=seed, progress=progress
    )
    majority = majority_class(train_y)
    return {
        "format": ADDITION_FORMAT,
        "accuracy": accuracy(classifier, test_x, test_y),
        "train_accuracy": accuracy(classifier, train_x, train_y),
        "chance": (test_y == majority).float().mean().item(),
        "majority_class": majority,
        "num_classes": classes,
        "num_train_sequences": train_n,
        "num_test_sequences": test_n,
        "num_train_frames": len(train_y),
        "num_test_frames": len(test_y),
        "feature_dim": int(train_x.shape[1]),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "features": features,
        "draws": int(draws),
        "model_name": config.model_name,
        "wall_time_s": time.perf_counter() - started,
    }


def addition_checkpoint(
    checkpoint: str | os.PathLike, data_dir: str | os.PathLike, **kwargs: Any
) -> dict[str, Any]:
    """:func:`addition_experiment` for a checkpoint and a data directory holding ``train.npz``
    and ``test.npz``; keyword arguments go to :func:`addition_experiment`.

    Raises ``CheckpointError``, ``FileNotFoundError`` or ``ValueError`` for bad input.
    """
    from sqair_pyro.checkpoint import load_checkpoint
    from sqair_pyro.data import load_npz

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data directory (with train.npz and test.npz) not found: {data_dir}"
        )
    config, model, guide, payload = load_checkpoint(checkpoint)
    train_arrays = load_npz(data_dir / "train.npz")
    test_arrays = load_npz(data_dir / "test.npz")
    report = addition_experiment(model, guide, config, train_arrays, test_arrays, **kwargs)
    report.update(
        checkpoint=str(checkpoint), checkpoint_step=payload.get("step"), data=str(data_dir)
    )
    return report
