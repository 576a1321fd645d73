"""Data-parallel training with PyTorch's own distributed package, as ``torchrun`` launches it.

Every process builds the same programs (same seed, then rank 0's weights broadcast), draws
its own batches from its own shard of the training data with its own random stream, and
after each backward pass the gradients are averaged over the processes with one all-reduce,
so every process takes the same optimiser step. Validation is split over the processes and
summed, so every decision (best checkpoint, rollback, early stop, a Ctrl-C) is the same
everywhere; only rank 0 writes checkpoints and logs. gloo on CPU, nccl on CUDA.

    torchrun --nproc_per_node=2 -m sqair_pyro train --preset mlp-sqair --data data/mm --out runs/x
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["ALONE", "Workers", "average_gradients", "broadcast_parameters", "finish", "setup"]


@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes (``rank`` of ``world``)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints, logs and progress bars."""
        return self.rank == 0

    def shard(self, size: int) -> slice:
        """This process's share of ``size`` items: every ``world``-th from ``rank``."""
        return slice(self.rank, size, self.world)

    def sum(self, value: float) -> float:
        """``value`` summed over the processes (itself when alone)."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item())

    def any(self, flag: bool) -> bool:
        """Whether any process says ``flag``."""
        return self.sum(float(flag)) > 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


#: A process that trains alone.
ALONE = Workers()


def setup(device: str = "cpu") -> tuple[Workers, str]:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``...): gloo on CPU, nccl on CUDA, where each process takes
    the GPU of its ``LOCAL_RANK``. Without torchrun: one process, ``Workers(0, 1)``.

    :returns: the workers and the device this process should use.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return ALONE, device
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # gloo for the small CPU tensors (sums of losses, flags), nccl for CUDA ones.
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size()), device


def broadcast_parameters(modules: Iterable[nn.Module], workers: Workers) -> None:
    """Give every process rank 0's parameters and buffers."""
    if workers.world == 1:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[nn.Parameter], workers: Workers) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce; a
    parameter without a gradient counts as a zero one, and keeps no gradient where no
    process has one, so an optimiser skips it as a lone process would)."""
    if workers.world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    had = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [had])
    dist.all_reduce(flat)
    flat /= workers.world
    offset = 0
    for p, g, seen in zip(params, grads, flat[-len(params) :].tolist(), strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(p).clone() if seen > 0 else None
        offset += g.numel()


def finish(workers: Workers) -> None:
    """Leave the process group (at the end of a data-parallel run)."""
    if workers.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
