"""Conditional computation: gated ``nn.Linear`` / ``nn.Conv2d`` layers compute only their
live units (opt-in, ``GDA(..., skip_below=...)``).

A unit is *dead* when P(z != 0) (eq. 12) is below a threshold. :func:`refresh` decides
it from the gate parameters, with one host transfer, every so many steps (never per
layer per step). Until the next refresh a dead unit's gate is exactly 0 in every sample,
and the layers whose weight it gates skip it:

- an ``"input"`` group on a Linear's columns: ``linear(x[..., live], W[:, live], b)``;
- an ``"output"`` group on a Linear's or Conv2d's rows and bias: the live rows only, and
  zeros scattered into the dead outputs' places;
- the same for a producer whose every output goes into a normalisation the group gates
  (a conv before its BatchNorm, every conv feeding a residual stream through its BN): the
  gated BN multiplies a dead channel by 0 whatever the conv computed.

For the gates drawn, outputs and gradients equal the unskipped layers': the skipped
products are products with zeros, or outputs a zero gate erases. BatchNorm's running
statistics of a dead channel see zeros instead of the conv's outputs (its gate scales
that channel by 0 in training; at test time, eq. 13 closes a unit this far below the
threshold unless the threshold is above about 0.3). What changes is the estimator: a
dead unit would otherwise be open in a sample with probability below the threshold (at
log α = -10, 2.2e-4). Eval mode computes every unit and forces no gate, so test-time
outputs never depend on the threshold.

Position i must be unit i; other groups (heads, weight gates, units mapped through a
concat) compute as before.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ctrlsparse.gating.groups import SKIP_ATTRIBUTE, GateGroup, GateScale, gate_groups


def _skippable(model: nn.Module, group: GateGroup) -> list[tuple[nn.Module, str]]:
    """The (layer, "in" | "out") pairs that may skip ``group``'s dead units: the Linear or
    Conv2d whose own weight the group gates (position i being unit i), and the producers
    whose every output goes into a gated normalisation (``group.silent``), which then sees
    zeros where it would have multiplied the outputs by 0."""
    if group.kind not in ("input", "output"):
        return []
    sites = []
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for param, chain in module.parametrizations.items():
            for scale in chain:
                if isinstance(scale, GateScale) and scale.group is group:
                    sites.append((module, param, scale))
    if any(s.mapping is not None for _, _, s in sites):
        return []
    found = []
    weights = [(m, s) for m, p, s in sites if p == "weight"]
    if len(weights) == 1:
        module, scale = weights[0]
        if group.kind == "input" and isinstance(module, nn.Linear) and scale.dim == 1:
            found.append((module, "in"))
        if group.kind == "output" and _plain(module) and scale.dim == 0:
            found.append((module, "out"))
    for name in group.silent:
        module = model.get_submodule(name)
        rows = [s for s in group.slices if s.module == name and s.param == "weight" and s.dim == 0]
        if _plain(module) and len(rows) == 1 and _identity(rows[0], module):
            found.append((module, "out"))
    return found


def _plain(module: nn.Module) -> bool:
    """A Linear, or a Conv2d without groups (a grouped conv's rows read slices of the input)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _identity(rows, module: nn.Module) -> bool:
    every = torch.arange(module.weight.shape[0])
    return torch.equal(rows.positions.cpu(), every) and torch.equal(rows.units.cpu(), every)


def _forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Linear's or Conv2d's forward over its live inputs and outputs only (in training
    mode: eval mode computes every unit, so its outputs never depend on the threshold)."""
    if not self.training:
        return type(self).forward(self, x)
    live = getattr(self, SKIP_ATTRIBUTE)
    weight, bias = self.weight, self.bias
    rows, columns = live.get("out"), live.get("in")
    rows = rows.to(weight.device) if rows is not None else None
    columns = columns.to(weight.device) if columns is not None else None
    if rows is not None:
        weight = weight.index_select(0, rows)
        bias = bias.index_select(0, rows) if bias is not None else None
    if isinstance(self, nn.Linear):
        if columns is not None:
            x, weight = x.index_select(-1, columns), weight.index_select(1, columns)
        out = F.linear(x, weight, bias)
        dim = -1
    else:
        out = self._conv_forward(x, weight, bias)
        dim = out.dim() - 3  # channels: 1 for a batch, 0 for one unbatched image
    if rows is None:
        return out
    shape = list(out.shape)
    shape[dim] = self.weight.shape[0]
    # In place into fresh zeros (which need no gradient): the out-of-place index_copy would
    # first copy the whole zero tensor, a full-width pass the step does not need.
    return out.new_zeros(shape).index_copy_(dim % out.dim(), rows, out)


def check(below: float | None, every: int) -> None:
    """Refuse a threshold outside (0, 1) or a refresh interval that is not a positive integer."""
    if below is not None and not 0.0 < below < 1.0:
        raise ValueError(f"skip_below must lie in (0, 1), got {below!r}")
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"skip_every must be an integer >= 1, got {every!r}")


def refresh(model: nn.Module, below: float) -> int:
    """Decide the dead units of every skippable group (P(z != 0) < ``below``), force their
    gates to 0 and let their layers skip them; returns the number of dead units.

    One host transfer for the whole model. A layer whose units are all live computes as
    usual (the plain forward, nothing sliced).

    Examples:
        >>> import ctrlsparse as cs
        >>> net = cs.sparsify(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)), "paper")
        >>> with torch.no_grad():
        ...     net[0].input_gate.gate.log_alpha[:3] = -10.0
        >>> refresh(net, below=1e-3)
        3
    """
    check(below, 1)
    found = [(group, _skippable(model, group)) for group in gate_groups(model)]
    found = [(group, where) for group, where in found if where]
    if not found:
        return 0
    with torch.no_grad():
        masks = [group.prob_active().flatten() >= below for group, _ in found]
        flags = torch.cat(masks).tolist()  # the refresh's one host transfer
    start, dead = 0, 0
    for (group, where), mask in zip(found, masks):
        here = flags[start : start + len(mask)]
        start += len(mask)
        dead += here.count(False)
        _apply(group, where, mask, here)
    return dead


def live_masks(model: nn.Module) -> list[torch.Tensor]:
    """Each gate group's live mask (an empty tensor where nothing is skipped): what a
    checkpoint keeps so that a resumed run skips what the interrupted one skipped."""
    return [g.live.detach().clone() if g.live is not None else torch.empty(0) for g in gate_groups(model)]


def load_live_masks(model: nn.Module, masks: list[torch.Tensor]) -> None:
    """Skip again what :func:`live_masks` recorded."""
    groups = gate_groups(model)
    if len(masks) != len(groups):
        raise ValueError(f"the saved skip decision has {len(masks)} gate groups, this model {len(groups)}")
    for group, mask in zip(groups, masks):
        where = _skippable(model, group)
        if where:
            mask = mask.to(group.gate.parameter.device).flatten() > 0 if mask.numel() else None
            here = mask.tolist() if mask is not None else [True] * group.num_units
            _apply(group, where, mask, here)


def _apply(group: GateGroup, where: list[tuple[nn.Module, str]], mask, flags: list[bool]) -> None:
    parameter = group.gate.parameter
    group.live = None if all(flags) else mask.to(parameter.dtype).reshape(parameter.shape)
    for module, side in where:
        plan = dict(getattr(module, SKIP_ATTRIBUTE, {}))
        if all(flags):
            plan.pop(side, None)
        else:  # a layer keeps one unit even when all are dead: its gate is 0, so it adds 0
            live = [i for i, f in enumerate(flags) if f] or [0]
            plan[side] = torch.tensor(live, dtype=torch.long, device=mask.device)
        _install(module, plan)


def _install(module: nn.Module, plan: dict[str, torch.Tensor]) -> None:
    if plan:
        setattr(module, SKIP_ATTRIBUTE, plan)
        module.forward = types.MethodType(_forward, module)
    elif hasattr(module, SKIP_ATTRIBUTE):
        delattr(module, SKIP_ATTRIBUTE)
        del module.forward  # back to the class's forward


def stop(model: nn.Module) -> None:
    """Every layer computes all its units again, and no gate is forced to 0."""
    for group in gate_groups(model):
        group.live = None
    for module in model.modules():
        if hasattr(module, SKIP_ATTRIBUTE):
            _install(module, {})
