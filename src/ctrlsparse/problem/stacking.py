"""A problem's named constraints as at most two cooper constraints, one entry per name.

Every target (density or MACs, model-wise or per layer) is one entry of the ``"constrained"``
cooper constraint, whose multiplier is a vector with one entry per target; every penalty is
one entry of ``"penalized"``, whose multiplier stays at λ. One vector constraint costs the
same few operators however many targets it holds (docs/performance.md, "What each
constraint costs"). Until commit bbe3fe8 each name was its own cooper constraint; states
saved that way are regrouped when they load (:meth:`StackedConstraints.regroup`,
:meth:`StackedConstraints.regroup_dual_state`), so checkpoints written before still resume.
"""

from __future__ import annotations

from collections.abc import Mapping

import cooper
import torch
from cooper.formulations import AugmentedLagrangian, Lagrangian
from cooper.formulations.formulations import ContributionStore
from cooper.multipliers import DenseMultiplier
from cooper.penalty_coefficients import DensePenaltyCoefficient

CONSTRAINED = "constrained"
"""The name of the cooper constraint that holds every target (learned multipliers)."""
PENALIZED = "penalized"
"""The name of the cooper constraint that holds every penalty (multipliers fixed at λ)."""


class VectorLagrangian(Lagrangian):
    r"""cooper's Lagrangian formulation for one vector of violations with no strict
    violations and no constraint features, the stacked constraints' case:
    :math:`\lambda^\top g(\theta)` with the multiplier detached in the primal Lagrangian
    and the violation detached in the dual one, each one ``dot`` (cooper's general
    formulation evaluates the multiplier as a copy and takes an ``einsum``, a few more
    small operators forward and backward on every step).
    """

    def compute_contribution_to_primal_lagrangian(self, constraint_state, multiplier):
        if not constraint_state.contributes_to_primal_update:
            return None
        value = multiplier.weight.detach()
        return ContributionStore(torch.dot(value, constraint_state.violation), value, None)

    def compute_contribution_to_dual_lagrangian(self, constraint_state, multiplier):
        if not constraint_state.contributes_to_dual_update:
            return None
        value = multiplier.weight
        return ContributionStore(torch.dot(value, constraint_state.violation.detach()), value.detach(), None)


class StackedConstraints:
    """The cooper constraints of ``names`` (in that order): targets in :data:`CONSTRAINED`,
    the others (penalties, level 0) in :data:`PENALIZED`; a kind without names is left out.

    Args:
        names: every constraint's name, in the problem's order.
        targets: the names that have a target (the rest are penalties).
        init: each name's initial multiplier (0 for a target, λ for a penalty).
        device: where the multipliers live.
        augmented_lagrangian: cooper's Augmented Lagrangian coefficient for the targets, or None.
    """

    def __init__(self, names: list[str], targets, init: dict[str, float], device, augmented_lagrangian=None):
        self.names = list(names)
        members = {
            CONSTRAINED: [n for n in names if n in targets],
            PENALIZED: [n for n in names if n not in targets],
        }
        self.members = {kind: kind_names for kind, kind_names in members.items() if kind_names}
        """The names whose entries each cooper constraint holds, in entry order."""
        self.slots = {name: (kind, i) for kind, ns in self.members.items() for i, name in enumerate(ns)}
        self.constraints: dict[str, cooper.Constraint] = {}
        for kind, kind_names in self.members.items():
            multiplier = DenseMultiplier(init=torch.tensor([init[n] for n in kind_names], device=device))
            kwargs = {"formulation_type": VectorLagrangian}
            if augmented_lagrangian is not None and kind == CONSTRAINED:
                kwargs["formulation_type"] = AugmentedLagrangian
                kwargs["penalty_coefficient"] = DensePenaltyCoefficient(
                    torch.full((len(kind_names),), float(augmented_lagrangian), device=device)
                )
            self.constraints[kind] = cooper.Constraint(
                cooper.ConstraintType.INEQUALITY, multiplier=multiplier, **kwargs
            )
        self._levels_key = tuple(targets[name] for name in self.members.get(CONSTRAINED, []))
        self.level_tensor = torch.tensor(self._levels_key, dtype=torch.get_default_dtype(), device=device)
        """The targets' levels in entry order (ε until :meth:`hold_levels` writes others), written in
        place: a compiled step reads each new value from the same tensor instead of recompiling."""

    @property
    def stacked_names(self) -> list[str]:
        """The names in the order of their entries: the constraints' order, then each one's entries."""
        return [name for names in self.members.values() for name in names]

    def multiplier(self, name: str) -> torch.Tensor:
        """A 0-d view of ``name``'s entry in its constraint's multiplier vector.

        Raises:
            KeyError: no constraint is called ``name`` (the message lists those there are).
        """
        if name not in self.slots:
            raise KeyError(f"no constraint named {name!r}; constraints: {', '.join(self.names)}")
        kind, index = self.slots[name]
        return self.constraints[kind].multiplier.weight.detach()[index]

    def states(self, values: dict[str, torch.Tensor], dual_frozen: bool) -> dict:
        """cooper's ``{constraint: ConstraintState}``: each kind's values stacked, minus their
        levels (:attr:`level_tensor` for the targets; a penalty's level is 0, its violation the
        value itself)."""
        violations = []
        for kind, names in self.members.items():
            value = torch.stack([values[name] for name in names])
            violations.append(value - self.level_tensor if kind == CONSTRAINED else value)
        return self.wrap(violations, dual_frozen)

    def wrap(self, violations: list[torch.Tensor], dual_frozen: bool) -> dict:
        """cooper's ``{constraint: ConstraintState}`` of each kind's violation vector, in the
        order of :attr:`constraints`."""
        return {
            constraint: cooper.ConstraintState(
                violation=violation,
                # Penalized mode: the multiplier stays at lambda; none moves in the feasibility phase.
                contributes_to_dual_update=kind == CONSTRAINED and not dual_frozen,
            )
            for (kind, constraint), violation in zip(self.constraints.items(), violations)
        }

    def hold_levels(self, levels: Mapping[str, float]) -> None:
        """Write the targets' ``levels`` into :attr:`level_tensor` (one small copy, only when
        they changed)."""
        key = tuple(levels[name] for name in self.members.get(CONSTRAINED, []))
        if key != self._levels_key:
            with torch.no_grad():
                self.level_tensor.copy_(torch.tensor(key, dtype=self.level_tensor.dtype))
            self._levels_key = key

    def per_name_layout(self, state_dict: dict) -> bool:
        """Whether a problem's ``state_dict`` was saved with one cooper constraint per name."""
        saved = set(state_dict.get("multipliers", {})) | set(state_dict.get("penalty_coefficients", {}))
        return not saved <= set(self.members)

    def regroup(self, state_dict: dict) -> dict:
        """A problem's ``state_dict`` in the stacked layout, from either layout: stacked
        (returned as it is) or one cooper constraint per name.

        Raises:
            ValueError: a saved name is not a constraint here (the message lists those there are).
        """
        if not self.per_name_layout(state_dict):
            return state_dict
        saved = set(state_dict.get("multipliers", {})) | set(state_dict.get("penalty_coefficients", {}))
        unknown = sorted(saved - set(self.slots))
        if unknown:
            raise ValueError(
                f"the saved multipliers name {', '.join(map(repr, unknown))}; this problem's constraints are "
                f"{', '.join(self.names)}"
            )
        regrouped: dict[str, dict] = {}
        for part, attribute in (
            ("multipliers", "multiplier"),
            ("penalty_coefficients", "penalty_coefficient"),
        ):
            merged = {}
            for kind, constraint in self.constraints.items():
                owner = getattr(constraint, attribute)
                if owner is not None:
                    merged[kind] = {key: value.detach().clone() for key, value in owner.state_dict().items()}
            for name, entries in state_dict.get(part, {}).items():
                kind, index = self.slots[name]
                if kind not in merged:
                    raise ValueError(f"the saved {part} hold {name!r}, which has none in this problem")
                for key, value in entries.items():
                    merged[kind][key][index] = value.reshape(())
            regrouped[part] = merged
        return regrouped

    def regroup_dual_state(self, state: dict) -> dict:
        """The dual optimizer's ``state_dict`` for the stacked multipliers, from one saved with
        one multiplier per name (the caller knows the layout, :meth:`per_name_layout`). Each
        stacked multiplier's state is its names' states side by side; a 0-d entry (Adam's step
        count) is the same for all of them."""
        members = list(self.members.values())
        groups = state["param_groups"]
        saved = [index for group in groups for index in group["params"]]
        if len(groups) != 1 or len(saved) != len(self.names):
            return state  # not a state of this problem: the optimizer's own check speaks
        position = dict(zip(self.names, saved))
        regrouped = {}
        for new_index, names in enumerate(members):
            old = [state["state"].get(position[name]) for name in names]
            present = [entry for entry in old if entry]
            if not present:  # a multiplier the optimizer never stepped (a penalty's)
                continue
            entry = {}
            for key, value in present[0].items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    parts = [o[key] if o else torch.zeros_like(value) for o in old]
                    entry[key] = torch.cat([part.reshape(-1) for part in parts])
                else:
                    entry[key] = value
            regrouped[new_index] = entry
        return {"state": regrouped, "param_groups": [{**groups[0], "params": list(range(len(members)))}]}
