"""Checkpoints: written atomically, read back with clear errors, rebuilt from the file alone."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sqair_pyro.build import build
from sqair_pyro.config import Config
from sqair_pyro.data.format import file_kind
from sqair_pyro.errors import one_line

FORMAT = "sqair-pyro-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, corrupt or of another kind."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} exists and is not a regular file; write elsewhere")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(
    path: str | os.PathLike,
    config: Config,
    model: nn.Module,
    guide: nn.Module,
    **extra: Any,
) -> Path:
    """Save the config, the model's and guide's weights, and ``extra`` training state."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        **extra,
    }
    return save_atomic(with_checksum(payload), path)


def _digest(value: Any, h: Any) -> None:
    """Feed ``value`` (nested dicts, lists, tensors, numbers, strings) into the hash ``h``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        h.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _digest(value[key], h)
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for item in value:
            _digest(item, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


def checksum(payload: dict[str, Any]) -> str:
    """SHA-256 of everything in a checkpoint payload but its ``checksum`` entry."""
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "checksum"}, h)
    return h.hexdigest()


def with_checksum(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its :func:`checksum`, which :func:`read_checkpoint` verifies."""
    return {**payload, "checksum": checksum(payload)}


#: torch's older (non-zip) format starts with a pickled magic number: these bytes, after the
#: pickle header of whichever protocol wrote it.
LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", map_location: str = "cpu"
) -> Any:
    """A file written by ``torch.save``, loaded as data only (``weights_only``).

    Anything else (an empty, text, image or video file, a data ``.npz``, a damaged archive,
    a pickle of objects that could run code) is one :class:`CheckpointError` naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    with path.open("rb") as f:
        head = f.read(32)
    if head.startswith(b"PK"):  # torch's zip format: one folder holding data.pkl
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(f"cannot read {what} {path}: truncated or damaged") from None
        if not any(name.endswith("/data.pkl") for name in names):
            raise CheckpointError(
                f"{path} is not a {what}: a zip archive without torch's data.pkl (a .npz data "
                "file?)"
            )
    elif not (head.startswith(b"\x80") and LEGACY_MAGIC in head):
        raise CheckpointError(
            f"{path} is not a {what}: found {file_kind(head)}, not a file written by torch.save"
        )
    try:
        with warnings.catch_warnings():  # torch's advice on its formats is not for users here
            warnings.simplefilter("ignore")
            # Data only: tensors, containers and numbers. A pickle that would run code is refused.
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # objects other than data: never run them
        raise CheckpointError(
            f"cannot read {what} {path}: it holds objects other than tensors and plain "
            "data, and loading those could run code; refused"
        ) from error
    except Exception as error:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"cannot read {what} {path}: {one_line(error)}") from error


#: What every checkpoint holds besides its format, version and checksum.
REQUIRED = {"config": dict, "model": dict, "guide": dict}


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dictionary, checked to be one of ours."""
    path = Path(path)
    payload = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sqair-pyro checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}")
    if "checksum" in payload and payload["checksum"] != checksum(payload):  # older: none
        raise CheckpointError(f"{path} is corrupt: its contents do not match its checksum")
    for key, kind in REQUIRED.items():
        if key not in payload:
            raise CheckpointError(f"{path} is not a complete checkpoint: it has no {key!r}")
        if not isinstance(payload[key], kind):
            found = type(payload[key]).__name__
            raise CheckpointError(
                f"{path} is damaged: its {key!r} is a {found}, not a {kind.__name__}"
            )
    return payload


#: What a weights-only checkpoint keeps: enough to evaluate, show, forecast and warm-start
#: (``init_from``) from it, and its training clock; not enough to resume training exactly.
WEIGHT_KEYS = ("format", "version", "config", "model", "guide", "step", "elapsed_s")


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``checkpoint``'s weights alone (:data:`WEIGHT_KEYS`: no optimiser, scheduler or
    random-number state) to ``out``, atomically and with its checksum: the file to share or
    commit, about a third of a training state's size."""
    source, out = Path(checkpoint), Path(out)
    payload = read_checkpoint(source)  # first: a missing or damaged source is said as such
    if out.exists() and out.samefile(source):
        raise CheckpointError(f"{out} is the checkpoint itself: write its weights to another file")
    return save_atomic(with_checksum({k: payload[k] for k in WEIGHT_KEYS if k in payload}), out)


def state_mismatch(module: nn.Module, state: dict[str, Any]) -> str | None:
    """How ``state`` fails to fit ``module``'s parameters and buffers, in one line, or None."""
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    reshaped = [
        key
        for key in own
        if key in state
        and (not isinstance(state[key], torch.Tensor) or state[key].shape != own[key].shape)
    ]
    if not (missing or unexpected or reshaped):
        return None
    parts = [
        f"{len(keys)} {label} (first: {keys[0]})"
        for keys, label in (
            (missing, "missing"),
            (unexpected, "unexpected"),
            (reshaped, "of another shape"),
        )
        if keys
    ]
    return "weights " + ", ".join(parts)


def load_weights(path: str | os.PathLike, name: str, module: nn.Module, state: Any) -> None:
    """Load the ``name`` weights of checkpoint ``path`` into ``module``, or say in one line
    why they do not fit it."""
    problem = state_mismatch(module, state)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} does not match its config: {name} {problem}")
    nonfinite = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if nonfinite:
        raise CheckpointError(
            f"checkpoint {path}: {len(nonfinite)} of its {name} weights are not finite "
            f"(first: {nonfinite[0]}); it was written by a run that diverged"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {path}: cannot load its {name}: {one_line(error)}"
        ) from error


def resample_glimpse_layers(module: nn.Module, state: dict[str, Any], trained: Config) -> None:
    """Resample, in ``state`` (weights of ``module`` trained under ``trained``), every layer
    that reads or draws glimpses of another size than ``module``'s: each submodule with a
    ``resample_state(state, prefix, trained_size)`` (the MLP glimpse decoder's output layer,
    the MLP glimpse encoder's input layer) under each name it is shared by, given the size in
    the field of ``trained`` that its ``resampled_from`` names (a decoder's, by default)."""
    for name, sub in module.named_modules(remove_duplicate=False):
        if hasattr(sub, "resample_state"):
            field = getattr(sub, "resampled_from", "decoded_glimpse")
            sub.resample_state(state, f"{name}.", getattr(trained, field))


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Config, nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild ``(config, model, guide, payload)`` from a checkpoint file alone; with
    ``overrides``, config fields changed first (e.g. a guide option switched on over trained
    weights: the weights must still fit the programs it builds, but a glimpse of another size
    is resampled, :func:`resample_glimpse_layers`)."""
    payload = read_checkpoint(path, map_location)
    try:
        config = Config.from_dict(payload["config"])
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {error}") from error
    trained = config
    if overrides:
        config = config.replace(**overrides)  # ValueError names a key or value it refuses
    try:
        model, guide = build(config)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        changed = f" with {dict(overrides)}" if overrides else ""
        raise CheckpointError(
            f"checkpoint {path}{changed} holds an invalid config: {error}"
        ) from error
    if overrides:
        resample_glimpse_layers(model, payload["model"], trained)
        resample_glimpse_layers(guide, payload["guide"], trained)
    load_weights(path, "model", model, payload["model"])
    load_weights(path, "guide", guide, payload["guide"])
    return config, model.to(map_location), guide.to(map_location), payload
