"""Which implementation of an optimizer's update ctrlsparse picks for the optimizers it builds.

torch's Adam has three implementations of one update rule: a loop over the tensors (the
CPU default), ``foreach`` (the tensors' updates batched per operation) and ``fused`` (one
kernel for the whole group). On the CPU the fused kernel takes a third of the loop's time
for LeNet-5's weights (docs/scripts/optimizer_kernels.py, docs/performance.md). Where
ctrlsparse builds the primal optimizer itself (``GDA``'s default, problem files), it asks
for the fused kernel whenever every parameter can take it; an optimizer you pass is left
as you built it, except the gates' own group (:func:`~ctrlsparse.problem.horizon.give_gates_their_group`).
The update rule is the same; the last bits of the numbers can differ.
"""

from __future__ import annotations

import torch

FUSABLE = (torch.optim.Adam, torch.optim.AdamW)
"""Optimizers whose fused kernel takes a parameter group of tensors in one call."""


def can_fuse(optimizer: torch.optim.Optimizer | type, params, settings: dict) -> bool:
    """Whether ``params`` can take ``optimizer``'s fused update (an Adam or AdamW, floating
    point tensors on a device with fused kernels, no differentiable updates)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    kind = optimizer if isinstance(optimizer, type) else type(optimizer)
    devices = _get_fused_kernels_supported_devices()
    return (
        kind in FUSABLE
        and "fused" in settings
        and not settings.get("differentiable")
        and all(p.is_floating_point() and p.device.type in devices for p in params)
    )


def adam(params, lr: float, **settings) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, **settings)``, with the fused kernel where every
    parameter can take it and ``settings`` leave the implementation to torch.

    ``params`` is an iterable of tensors or of parameter groups (dicts), as for torch's Adam.

    Examples:
        >>> opt = adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
        >>> opt.defaults["fused"]
        True
    """
    params = list(params)
    tensors = []
    for entry in params:  # tensors, (name, tensor) pairs or parameter groups
        if isinstance(entry, dict):
            tensors += [p[1] if isinstance(p, tuple) else p for p in entry["params"]]
        else:
            tensors.append(entry[1] if isinstance(entry, tuple) else entry)
    implementation_left = settings.get("foreach") is None and settings.get("fused") is None
    if implementation_left and can_fuse(torch.optim.Adam, tensors, {"fused": None, **settings}):
        settings = {**settings, "fused": True}
    return torch.optim.Adam(params, lr=lr, **settings)
