"""Magnitude pruning of the same units the gates use: the baseline for structured runs.

:class:`~ctrlsparse.training.methods.MagnitudePruning` prunes the weights or channels of
plain ``nn.Linear``/``nn.Conv2d`` layers one layer at a time, which on a residual net
cuts channels that an add couples to other layers. :class:`GroupMagnitudePruning` works
on a model sparsified with fixed masks (``sparsify(model, gates="mask")``), so its units,
its counting (:class:`~ctrlsparse.gating.Accounting`, realized) and its purge are exactly
those of the gated run it is compared with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.gates import MaskGate
from ctrlsparse.gating.groups import GateGroup, gate_groups
from ctrlsparse.gating.registry import is_layer
from ctrlsparse.modelio import call_model
from ctrlsparse.problem.gda import GDAStep
from ctrlsparse.problem.levels import MODEL, Levels, parse_levels
from ctrlsparse.runs.records import RunSummary
from ctrlsparse.training.methods import check_pruning, prune_due

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def unit_scores(model: nn.Module, group: GateGroup) -> torch.Tensor:
    """Root mean square of every layer weight a unit owns (rows it produces, columns it feeds).

    The mean over the whole coupled group, as Torch-Pruning's group importance does, so a
    residual channel shared by four convolutions is judged by all four.
    """
    modules = dict(model.named_modules())
    squares = torch.zeros(group.num_units)
    counts = torch.zeros(group.num_units)
    for s in group.slices:
        module = modules[s.module]
        if s.param != "weight" or s.dim is None or not is_layer(module):
            continue
        weight = module.weight.detach().cpu()
        dims = [d for d in range(weight.dim()) if d != s.dim]
        per_position = weight.pow(2).sum(dims) if dims else weight.pow(2)
        squares.index_add_(0, s.units, per_position[s.positions])
        counts.index_add_(0, s.units, torch.full((len(s.units),), weight.numel() / weight.shape[s.dim]))
    return (squares / counts.clamp_min(1)).sqrt()


class GroupMagnitudePruning:
    """Train dense, close the units of smallest weight magnitude until every target holds, fine-tune.

    Pruning happens once, at the start of epoch ``prune_epoch + 1`` (or in :meth:`finish`
    when training ends first). Units are closed one at a time, smallest
    :func:`unit_scores` first, among the units that touch a layer whose realized density
    is still above its target (any unit for a model-wise target); a group keeps at
    least one unit open, as :func:`~ctrlsparse.purge` does.

    Args:
        model: a model sparsified with ``gates="mask"``.
        loss_fn: ``loss_fn(output, y)`` → scalar.
        target_density: ε in (0, 1]: a number (model-wise), ``{layer: ε}`` or a list.
        optimizer: trains the weights before and after pruning.
        prune_epoch: the number of dense epochs; needs ``steps_per_epoch`` (``fit`` sets it).

    Examples:
        >>> model = cs.sparsify(net, example_input=x, gates="mask")  # doctest: +SKIP
        >>> trainer = GroupMagnitudePruning(model, F.cross_entropy, 0.3,
        ...                                 torch.optim.SGD(model.parameters(), lr=0.1), prune_epoch=4)
        ...  # doctest: +SKIP
        >>> summary = cs.fit(trainer, train_batches, epochs=6)  # doctest: +SKIP
    """

    method = "magnitude"
    mode = "pruned"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        target_density: Levels,
        optimizer: torch.optim.Optimizer,
        prune_epoch: int,
    ) -> None:
        groups = gate_groups(model)
        kinds = sorted({type(g.gate).__name__ for g in groups if not isinstance(g.gate, MaskGate)})
        if not groups or kinds:
            raise ValueError(
                "GroupMagnitudePruning needs a model sparsified with gates='mask'"
                + (f"; found {', '.join(kinds)} gates" if kinds else "")
            )
        if any(g.kind == "weight" for g in groups):
            raise ValueError(
                "GroupMagnitudePruning prunes units; for structure='weight' use MagnitudePruning"
            )
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.accounting = Accounting(model)
        self.targets = parse_levels(target_density, self.accounting.layers, "target_density")
        check_pruning(self.targets, prune_epoch)
        self.prune_epoch = prune_epoch
        self.pruned = False
        self.steps = 0
        self.steps_per_epoch: int | None = None

    def densities(self) -> tuple[float, dict[str, float]]:
        """Realized density of the model and of each layer."""
        with torch.no_grad():
            total, per_layer = self.accounting.densities(realized=True)
        return float(total), {n: float(v) for n, v in per_layer.items()}

    def _violated(self) -> list[str]:
        density, per_layer = self.densities()
        values = {MODEL: density, **per_layer}
        return [name for name, eps in self.targets.items() if values[name] > eps + 1e-9]

    @torch.no_grad()
    def prune(self) -> None:
        """Close units, smallest magnitude first, until every target holds (once)."""
        if self.pruned:
            return
        groups = self.accounting.groups
        candidates = []  # (score, group index, unit, layers the unit touches)
        for g, group in enumerate(groups):
            touched: list[set[str]] = [set() for _ in range(group.num_units)]
            for s in group.slices:
                for unit in s.units.unique().tolist():
                    touched[unit].add(s.module)
            for unit, score in enumerate(unit_scores(self.model, group).tolist()):
                candidates.append((score, g, unit, touched[unit]))
        candidates.sort(key=lambda c: c[0])
        open_units = [group.num_units for group in groups]
        violated = self._violated()
        while violated:
            layers = None if MODEL in violated else set(violated)
            choice = next(
                (
                    c
                    for c in candidates
                    if open_units[c[1]] > 1
                    and groups[c[1]].gate.mask[c[2]] > 0
                    and (layers is None or c[3] & layers)
                ),
                None,
            )
            if choice is None:
                warnings.warn(
                    f"magnitude pruning cannot meet the target of {', '.join(violated)}: every unit "
                    "that touches it is closed except one per group",
                    stacklevel=2,
                )
                break
            groups[choice[1]].gate.mask[choice[2]] = 0
            open_units[choice[1]] -= 1
            violated = self._violated()
        self.pruned = True

    def step(self, inputs: Any, targets: torch.Tensor) -> GDAStep:
        """One optimizer step; the first step of epoch ``prune_epoch + 1`` prunes before it."""
        if prune_due(self):
            self.prune()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(call_model(self.model, inputs), targets)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        density, densities = self.densities()
        return GDAStep(float(loss.detach()), density, densities, {}, {})

    def state_dict(self) -> dict:
        """The optimizer's state and the step counter; the masks are buffers of the model."""
        return {"steps": self.steps, "pruned": self.pruned, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.pruned = state["steps"], state["pruned"]
        self.optimizer.load_state_dict(state["optimizer"])

    def finish(self) -> bool:
        """Prune if training ended before ``prune_epoch``; True when that changed the model."""
        pruned_now = not self.pruned
        self.prune()
        return pruned_now

    def summary(self) -> RunSummary:
        density, densities = self.densities()
        return RunSummary(
            method=self.method,
            mode=self.mode,
            targets=dict(self.targets),
            penalties={},
            density=density,
            densities=densities,
            realized_density=density,
            realized_densities=densities,
        )
