"""Mixed precision: matrix products in bfloat16, everything else in float32.

Under :func:`matmul_precision` the matrix products of linear, convolutional and recurrent
layers run in bfloat16 (measured on this machine's CPU: a 2048x2048 product 4.5x faster than
float32). :func:`keep_float32_outputs` casts every such layer's output back to float32 at once,
so activations, distribution parameters, samples, densities, log-weights and their logsumexp
are float32 as before: bfloat16 has 8 bits of mantissa, and a bound of thousands of nats
cannot be formed in it. The spatial transformer, the MLP glimpse decoder, the subpixel
decoder's output layer and the heads that output distribution parameters run in float32
(:func:`full_precision`), and ``VIMCO_ELBO`` forms every density with autocast off
(:func:`float32_densities`). With MLP decoders log p(x | z) of given latents is then the
float32 value; the subpixel decoder's glimpses carry the rounding of its bfloat16 hidden
layers, a few nats of a 5-frame pedestrian sequence's log weight (docs/results.md, "Mixed
precision").
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyro
import torch
from torch import nn

#: Layers whose products autocast lowers to bfloat16.
LOW_PRECISION_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.RNNCellBase)
LOW_PRECISION = torch.bfloat16
_HOOKED = "_sqair_float32_outputs"

F = TypeVar("F", bound=Callable[..., Any])


def _to_float32(module: nn.Module, inputs: Any, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.dtype != torch.float32:
        if output.is_floating_point():
            return output.float()
    return None


def keep_float32_outputs(*modules: nn.Module) -> None:
    """Make every low-precision layer inside ``modules`` return float32 (idempotent)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, LOW_PRECISION_LAYERS) and not getattr(layer, _HOOKED, False):
                layer.register_forward_hook(_to_float32)
                setattr(layer, _HOOKED, True)


@contextlib.contextmanager
def matmul_precision(enabled: bool, device: torch.device | str = "cpu") -> Iterator[None]:
    """bfloat16 matrix products inside the block when ``enabled`` (see the module doc)."""
    with torch.autocast(torch.device(device).type, dtype=LOW_PRECISION, enabled=enabled):
        yield


@contextlib.contextmanager
def float32_densities(device: torch.device | str = "cpu") -> Iterator[None]:
    """Autocast off inside the block: densities are formed in float32 even within
    :func:`matmul_precision` (autocast would lower e.g. ``linalg.vecdot`` to bfloat16)."""
    with torch.autocast(torch.device(device).type, enabled=False):
        yield


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast off and its floating tensor arguments in float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or not torch.is_autocast_enabled(tensors[0].device.type):
            return fn(*args, **kwargs)
        args = tuple(
            a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
        )
        with torch.autocast(tensors[0].device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def fast_numerics() -> None:
    """The process-wide settings every command runs under, training and evaluation alike.

    Denormal floats are flushed to zero: a float32 backward pass otherwise spends most of its
    time on them (docs/results.md, "Mixed precision"). Pyro's argument validation is off: its
    support and constraint checks of every sample site (``eq``, ``all``, ``gt`` over each
    site's value) took a tenth of a log p(x) estimate, and our data and programs are checked
    where they are read. Neither changes a result beyond float32's smallest normal numbers
    (docs/results.md, "Evaluation under training's numerics").
    """
    torch.set_flush_denormal(True)
    pyro.enable_validation(False)
