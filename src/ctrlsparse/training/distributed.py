"""Training in several processes (``torchrun``): one model replica and one data shard per rank.

What :func:`~ctrlsparse.fit` does inside an initialised process group:

- the model's forward pass goes through ``DistributedDataParallel``, so the weight and gate
  gradients are averaged over the ranks (the gradient of the global batch's mean loss
  when the shards have equal sizes);
- the multipliers need no communication: every violation (density, MACs) is a function of
  the gate parameters, which DDP keeps identical, so every rank takes the same dual step.
  :func:`check_identical` verifies it at every epoch's end and stops every rank on a mismatch;
- the gate noise differs per rank (each rank seeds ``seed + rank``): the averaged gate
  gradient is a Monte Carlo estimate over ``world_size`` samples of u instead of one;
- rank 0 alone writes the run directory; its refusals and errors reach every rank.

Example (two CPU processes)::

    torchrun --standalone --nproc_per_node=2 -m ctrlsparse run problems/digits_mlp.toml --out runs/ddp
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ctrlsparse.errors import CtrlsparseError

T = TypeVar("T")
__all__ = ["DistributedMismatchError", "RankError", "check_identical", "context", "init_from_env", "wrap"]


class DistributedMismatchError(CtrlsparseError, RuntimeError):
    """Ranks disagree on the gates or multipliers that must be identical everywhere."""


class RankError(CtrlsparseError, RuntimeError):
    """An error raised on rank 0 (a reused run directory, a bad checkpoint), re-raised on every rank."""


def context() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "cpu") -> str:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    gloo on CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``). Returns the device this
    rank trains on; without torchrun, ``device`` unchanged.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return device


def wrap(trainer) -> None:
    """Send the trainer's forward passes through ``DistributedDataParallel``."""
    problem = getattr(trainer, "problem", None)
    if problem is None or not hasattr(problem, "forward_model"):
        raise ValueError(
            f"{type(trainer).__name__} does not train in several processes; use GDA "
            "(the l0 method) with torchrun"
        )
    if isinstance(problem.forward_model, nn.parallel.DistributedDataParallel):
        return
    model = problem.model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    problem.forward_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)


def on_rank0(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; an exception there is raised on every rank (no rank hangs).

    Returns ``fn()`` on every rank (rank 0's result, sent to the others).
    """
    rank, world = context()
    if world == 1:
        return fn()
    outcome: list[Any] = [None]
    if rank == 0:
        try:
            outcome[0] = ("ok", fn())
        except Exception as error:
            outcome[0] = (type(error).__name__, str(error))
            dist.broadcast_object_list(outcome, src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind != "ok":
        raise RankError(f"rank 0 stopped the run ({kind}): {value}")
    return value


def all_ranks_ok(ok: bool, what: str) -> None:
    """Raise on every rank when ``ok`` is False on any of them."""
    rank, world = context()
    if world == 1:
        return
    flags = torch.tensor([0.0 if ok else 1.0])
    dist.all_reduce(flags)
    if flags.item() > 0:
        raise RankError(f"{what} failed on {int(flags.item())} of {world} ranks (this is rank {rank})")


def _fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Two float64 numbers that change when any entry of ``tensors`` does."""
    flat = torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])
    weights = torch.arange(1, len(flat) + 1, dtype=torch.float64).remainder(9973).add(1)
    return torch.stack([flat.sum(), (flat * weights).sum()])


def check_identical(trainer, epoch: int) -> None:
    """Stop every rank when their gate parameters or multipliers differ (at an epoch's end)."""
    rank, world = context()
    problem = getattr(trainer, "problem", None)
    if world == 1 or problem is None:
        return
    gates = [group.gate.parameter for group in problem.groups]
    multipliers = [c.multiplier.weight for c in problem.constraints()]
    mine = torch.stack([_fingerprint(gates), _fingerprint(multipliers)])
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    differ = [r for r in range(world) if not torch.equal(every[r], every[0])]
    if differ:
        parts = [name for i, name in enumerate(("gate parameters", "multipliers"))
                 if any(not torch.equal(every[r][i], every[0][i]) for r in differ)]  # fmt: skip
        raise DistributedMismatchError(
            f"after epoch {epoch}, ranks {differ} hold other {' and '.join(parts)} than rank 0; "
            f"every rank must take the same dual step (this is rank {rank})"
        )


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    _, world = context()
    if world == 1:
        return [obj]
    every: list[Any] = [None] * world
    dist.all_gather_object(every, obj)
    return every
