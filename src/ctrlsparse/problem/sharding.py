"""Gates under FSDP2 (``torch.distributed.fsdp.fully_shard``): whole on every rank.

A gate's parameters are few (one log α per unit) and every constraint is a function of all
of them, so sharding them would buy no memory and cost a gather per density. The weights
are sharded as usual; the gates are left out of ``fully_shard`` (``ignored_params``), stay
plain tensors, and GDA averages their gradients over the ranks before each update (FSDP
reduces only the parameters it manages). Every rank then holds the same gates, the same
violations and the same multipliers, as under DDP.

Build the :class:`~ctrlsparse.SparsityProblem` before ``fully_shard`` (it reads the
layers' shapes), and the optimizer after it (on the sharded parameters)::

    model = cs.sparsify(model, example_input=x)
    problem = cs.SparsityProblem(model, target_density=0.5)
    gates = gate_parameters(model)
    for layer in model.model.layers:
        fully_shard(layer, ignored_params=gates)
    fully_shard(model, ignored_params=gates)
    opt = cs.GDA(problem, torch.optim.AdamW(model.parameters()), total_steps=N)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _dtensor() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        return None
    return DTensor


def gate_parameters(model: nn.Module) -> set[nn.Parameter]:
    """The gates' parameters of a sparsified model: what every ``fully_shard`` call must leave
    out (``ignored_params=``), so that the gates stay whole on every rank.

    Examples:
        >>> fully_shard(layer, ignored_params=gate_parameters(model))  # doctest: +SKIP
    """
    from ctrlsparse.gating import gate_groups

    return {group.gate.parameter for group in gate_groups(model)}


def is_sharded(model: nn.Module) -> bool:
    """Whether some module of ``model`` went through FSDP2's ``fully_shard``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def check_not_sharded_yet(model: nn.Module) -> None:
    """Raise when ``model``'s weights are already sharded: the problem must be built first."""
    dtensor = _dtensor()
    if dtensor is None:
        return
    for name, param in model.named_parameters():
        if isinstance(param, dtensor):
            raise ValueError(
                f"{name} is already sharded by fully_shard: build the SparsityProblem before calling "
                "fully_shard (it reads the layers' shapes), then the optimizer on the sharded model"
            )


def check_gates_whole(groups) -> None:
    """Raise, naming the gate and how to wrap, when ``fully_shard`` sharded a gate."""
    dtensor = _dtensor()
    for group in groups:
        if dtensor is not None and isinstance(group.gate.parameter, dtensor):
            where = group.name or "the model"
            raise ValueError(
                f"fully_shard sharded the gates of {where!r} ({group.kind} gate): GDA needs every gate "
                "whole on every rank. Pass ignored_params=ctrlsparse.problem.sharding.gate_parameters(model) "
                "to every fully_shard call that covers a gated module"
            )


def average_gate_gradients(groups) -> None:
    """Average the gates' gradients over the ranks (one all-reduce), as DDP would."""
    grads = [g.gate.parameter.grad for g in groups if g.gate.parameter.grad is not None]
    if not grads:  # decided gates: nothing learns
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()
