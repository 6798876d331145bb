r"""Sparsity as a constrained minimization problem (Gallego-Posada et al., 2022).

.. math::
    \min_{\tilde\theta,\phi}\ \mathbb E_z[\mathcal L(\tilde\theta\odot z)]
    \quad\text{s.t.}\quad \frac{\mathbb E_z[\|z\|_0]}{|\theta|} \le \epsilon

for the whole model or per layer. The expected L0 norm is eq. 16 of Louizos et al.
(2018) summed over the gated layers; densities are fractions in [0, 1].

Penalized mode is the same problem with each multiplier frozen at its penalty
:math:`\lambda` (a constraint ``density <= 0`` whose multiplier is never updated): the
Lagrangian term :math:`\lambda\,(\text{density} - \epsilon)` has the same primal gradient
as :math:`\lambda\,\text{density}` for any constant :math:`\epsilon`, so this is exactly
the classic penalty :math:`\lambda\,\mathbb E\|z\|_0 / |\theta|`. Louizos et al. write
the penalty per parameter, :math:`\lambda_\text{count}\,\mathbb E\|z\|_0`; the two agree
when :math:`\lambda = \lambda_\text{count}\cdot|\theta|` (see :func:`penalty_from_per_parameter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import cooper
import torch
from torch import nn

from ctrlsparse.choices import TARGET
from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.gates import ARMGate, Estimator, antithetic
from ctrlsparse.modelio import Inputs, call_model, forward_order
from ctrlsparse.problem.levels import MODEL, ConstraintKey, Levels, Quantity, check_levels, parse_levels
from ctrlsparse.problem.macs import MacsAccounting
from ctrlsparse.problem.params import params_density
from ctrlsparse.problem.reachability import check_jointly_reachable, unit_share
from ctrlsparse.problem.schedules import TargetSchedule
from ctrlsparse.problem.shape import group_units, shape_levels, shape_values
from ctrlsparse.problem.sharding import check_not_sharded_yet
from ctrlsparse.problem.stacking import CONSTRAINED, StackedConstraints


def penalty_from_per_parameter(lambda_count: float, model: nn.Module) -> float:
    r"""Convert Louizos et al.'s per-parameter penalty to ctrlsparse's density penalty.

    Louizos et al. add :math:`\lambda_\text{count}\,\mathbb E\|z\|_0`; ctrlsparse adds
    :math:`\lambda\,\mathbb E\|z\|_0/|\theta|`, so :math:`\lambda=\lambda_\text{count}|\theta|`.

    Examples:
        >>> # lambda = 0.1 / N with N = 60000 MNIST training images
        >>> penalty_from_per_parameter(0.1 / 60000, model)  # doctest: +SKIP
    """
    return lambda_count * Accounting(model).num_sparsifiable


class SparsityProblem(cooper.ConstrainedMinimizationProblem):
    """Task loss subject to expected-L0 density constraints, or penalized by them.

    Args:
        model: a model with gates (see :func:`ctrlsparse.sparsify`).
        loss_fn: ``loss_fn(model(inputs), targets)`` → scalar task loss; it receives the
            model's output as it is (a Hugging Face model's ``ModelOutput``, say:
            ``lambda out, y: F.cross_entropy(out.logits, y)``). Inputs may be a tensor, a
            tuple (``model(*inputs)``) or a dict (``model(**inputs)``). None: the model
            computes its own loss, read from its output's ``loss`` (a Hugging Face model
            given ``labels``), or you compute it and pass it to :meth:`GDA.step`
            (``step(loss=...)``; docs/howto/loops.md).
        target_density: maximum expected density ε in (0, 1]: a number (one model-wise
            constraint), ``{layer: ε}`` (one constraint per listed layer, ``"model"``
            allowed as a key) or a list (one per gated layer, forward order).
        penalty: λ ≥ 0 of penalized mode, in the same forms; its multiplier is fixed at
            λ and never updated. A layer cannot have both a target and a penalty.
        weight_decay: coefficient of the gated L2 term ``weight_decay / 2 * E[||θ||²]``
            (eq. 15 and 17), added to the objective; 0 disables it.
        example_input: if given, one forward pass on it fixes the layers' forward order
            (which a target list follows); otherwise registration order is used.
        augmented_lagrangian: if a number c > 0, targets use cooper's Augmented
            Lagrangian formulation, adding ``c/2 · relu(density − ε)²`` to the primal
            Lagrangian; None (default) is the plain Lagrangian.
        target_macs: maximum expected MACs / dense MACs in (0, 1], for the model (a number)
            or per layer (``{layer: ε}`` or a list), alone or with ``target_density``. MACs
            count the Linear and convolution layers on one example (``example_input``, or
            the one :func:`~ctrlsparse.sparsify` was given). A layer's expected MACs are its
            dense MACs times the expected fraction of its weight entries that are active,
            the product of its open-input and open-output fractions under independent gates:
            exactly what purging removes. Constraints are named ``"macs"`` and
            ``"macs:<layer>"``.
        macs_penalty: λ ≥ 0 of a penalized MACs term, in the same forms.
        target_params: a parameter budget for the model, instead of ``target_density``: a
            fraction in (0, 1] of all its parameters (embeddings and LM head included) or a
            count (``"1.3e9"``); see :mod:`~ctrlsparse.problem.params`.
        target_shape: for a decoder LM, ``{"heads", "kv_heads", "intermediate", "hidden"}``
            counts every block must keep (``"layers"`` may only repeat the model's); one
            constraint ``"shape:<gate group>"`` per group, see :mod:`~ctrlsparse.problem.shape`.

    Every target is one entry of a single cooper constraint, ``"constrained"``, and every
    penalty one entry of ``"penalized"``: a step's cost does not grow with the number of
    targets. :attr:`constraint_names` lists the entries; :meth:`multiplier` reads one.

    Examples:
        >>> problem = SparsityProblem(model, torch.nn.functional.cross_entropy,
        ...                           target_density={"fc1": 0.5, "fc2": 0.3})  # doctest: +SKIP
        >>> budget = SparsityProblem(model, F.cross_entropy, target_macs=0.4)  # doctest: +SKIP
        >>> problem.multiplier("fc1")  # fc1's multiplier now  # doctest: +SKIP
        >>> own_loss = SparsityProblem(model, target_density=0.3)  # GDA.step(loss=...)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        target_density: Levels = None,
        penalty: Levels = None,
        weight_decay: float = 0.0,
        example_input: torch.Tensor | None = None,
        augmented_lagrangian: float | None = None,
        target_macs: Levels = None,
        macs_penalty: Levels = None,
        target_params: float | str | None = None,
        target_shape: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be a callable loss_fn(output, targets) or None (the model's own loss, or "
                f"GDA.step(loss=...)), got {type(loss_fn).__name__}; targets go in target_density="
            )
        check_not_sharded_yet(model)
        self.model = model
        self.loss_fn = loss_fn
        accounting = Accounting(model)
        self.accounting = Accounting(model, forward_order(model, accounting.layers, example_input))
        self.groups = self.accounting.groups
        names = self.accounting.layers
        if MODEL in names:
            raise ValueError(f"a layer is named {MODEL!r}, the name of the model-wise constraint; rename it")
        if target_params is not None:
            if target_density is not None:
                raise ValueError(
                    "give target_params or target_density, not both: both bound the model's size"
                )
            target_density = params_density(model, self.accounting, target_params)
        self.shape_targets = (
            {} if target_shape is None else shape_levels(model, self.accounting, target_shape)
        )
        self.targets, self.penalties = check_levels(
            parse_levels(target_density, names, "target_density"),
            parse_levels(penalty, names, "penalty"),
            "target_density",
            "penalty",
        )
        self._macs: MacsAccounting | None = None
        self.macs_targets, self.macs_penalties = self._macs_levels(target_macs, macs_penalty, example_input)
        if not (self.targets_all or self.penalties or self.macs_penalties):
            raise ValueError(
                "give a target_density, target_params, target_macs or target_shape (constrained mode), "
                "or a penalty or macs_penalty (penalized mode)"
            )
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.weight_decay = weight_decay
        self._arm_gates = [group.gate for group in self.groups if isinstance(group.gate, ARMGate)]
        # Denominator of the model density: every parameter some gate can switch off.
        self.num_sparsifiable = self.accounting.num_sparsifiable

        penalties = {**self.penalties, **self.macs_penalties}
        targets = self.targets_all
        levels = {**targets, **{name: 0.0 for name in penalties}}
        init = {**{name: 0.0 for name in targets}, **penalties}
        # Model-wise first, then layers in forward order: a stable order for logs and plots.
        if augmented_lagrangian is not None and not (
            augmented_lagrangian > 0 and math.isfinite(augmented_lagrangian)
        ):
            raise ValueError(
                f"augmented_lagrangian must be a finite number > 0 or None, got {augmented_lagrangian!r}"
            )
        self.augmented_lagrangian = augmented_lagrangian
        device = next(model.parameters()).device
        self.constraint_names: list[str] = sorted(levels, key=self._constraint_order)
        """Every constraint's name: model-wise, then layers in forward order (densities, then MACs)."""
        # Every target one entry of one cooper constraint, every penalty one of another (stacking.py).
        self.stacking = StackedConstraints(self.constraint_names, targets, init, device, augmented_lagrangian)
        for kind, constraint in self.stacking.constraints.items():
            setattr(self, kind, constraint)
        # Every constraint's level at rest: ε for targets, 0 for penalties. A target schedule
        # (GDA's) moves the targets' levels; the problem only reads them (levels).
        self._resting_levels = {name: levels[name] for name in self.constraint_names}
        self.schedule: TargetSchedule | None = None
        """The target schedule whose levels the constraints are held to (GDA attaches its own)."""
        self._levels_view: Mapping[str, float] = MappingProxyType({})
        # The schedule and its revision the view was built for; None: rebuild it at the next read.
        self._levels_for: tuple | None = None
        # What the forward pass calls: the model, or its DistributedDataParallel wrapper (fit sets it).
        self.forward_model: nn.Module | None = None
        self.dual_frozen = False
        """True during the feasibility phase: no multiplier is updated."""
        if self.targets_all:
            check_jointly_reachable(self)

    def macs_levels(self, levels: Levels, what: str = "target_macs") -> dict[str, float]:
        """MACs budgets in any form ``target_macs`` takes (a number for the model), as
        ``{constraint name: level}``; ``what`` names them in errors.

        Raises:
            ValueError: the problem has no MACs accounting (it was built without
                ``target_macs`` or ``macs_penalty``), or the levels are malformed.
        """
        if self._macs is None:
            raise ValueError(f"{what}: this problem counts no MACs; build it with target_macs")
        return self._macs.levels(levels, what)

    def _macs_levels(self, target_macs: Levels, macs_penalty: Levels, example_input) -> tuple[dict, dict]:
        """The MACs budgets and penalties, checked against what no gate can remove (the MACs
        accounting is built only when there is one)."""
        if target_macs is None and macs_penalty is None:
            return {}, {}
        self._macs = MacsAccounting(self.model, self.accounting, example_input)
        targets, penalties = check_levels(
            self._macs.levels(target_macs, "target_macs"),
            self._macs.levels(macs_penalty, "macs_penalty"),
            "target_macs",
            "macs_penalty",
        )
        for name, eps in targets.items():
            floor = self._macs.floor(name)
            if eps < floor:
                raise ValueError(
                    f"target_macs for {name!r} is {eps!r}, but {floor:.4f} of its MACs are in layers "
                    "or entries no gate can remove; ask for at least that, or gate more layers"
                )
        return targets, penalties

    def retarget(self, targets: Mapping[str, float]) -> None:
        """Give the target constraints new levels ε, ``{constraint name: ε}`` for each of
        :attr:`targets_all` (a density path, :class:`~ctrlsparse.DensityPath`, lowers them
        during one run); the multipliers and the gates carry on.

        :meth:`GDA.retarget <ctrlsparse.GDA.retarget>` is the call to make during training:
        it also moves the target schedule's ramp to start from the levels in force.

        Raises:
            ValueError: a name is not a target of this problem, or one is missing (the
                constraints are fixed when the problem is built), a level lies outside
                (0, 1], a MACs budget below what no gate can remove, a shape target, or
                targets no gate setting reaches together.

        Examples:
            >>> problem.retarget({"model": 0.2})  # doctest: +SKIP
        """
        given, have = set(targets), set(self.targets_all)
        if given != have:
            unknown, missing = sorted(given - have), sorted(have - given)
            raise ValueError(
                f"retarget needs a level for each target constraint of the problem, {sorted(have)}; "
                + (f"unknown: {unknown}" if unknown else "")
                + ("; " if unknown and missing else "")
                + (f"missing: {missing}" if missing else "")
            )
        if any(name in self.shape_targets for name in targets):
            raise ValueError(
                "shape targets are unit counts fixed with the problem: they cannot be retargeted"
            )
        for name, eps in targets.items():
            TARGET.check(eps, f"the new target for {name!r}")
            if name in self.macs_targets and eps < self._macs.floor(name):
                raise ValueError(
                    f"the new MACs budget for {name!r} is {eps!r}, but {self._macs.floor(name):.4f} of its "
                    "MACs are in layers or entries no gate can remove"
                )
        old = (dict(self.targets), dict(self.macs_targets), dict(self._resting_levels))
        for name, eps in targets.items():
            (self.macs_targets if name in self.macs_targets else self.targets)[name] = float(eps)
            self._resting_levels[name] = float(eps)
        self._levels_for = None  # the levels view reads the resting levels: rebuild it
        try:
            check_jointly_reachable(self)
        except ValueError:
            self.targets, self.macs_targets, self._resting_levels = old
            raise

    @property
    def levels(self) -> Mapping[str, float]:
        """The level each constraint is held to now (read-only): the target schedule's for the
        targets (ε when there is none, before the first step and in the feasibility phase), 0
        for penalties. Only :class:`~ctrlsparse.TargetSchedule` writes levels."""
        return self._refresh_levels()

    def _refresh_levels(self) -> Mapping[str, float]:
        """:attr:`levels`, and the level tensor the violations subtract, rebuilt when the
        schedule moved a level (or was replaced), not at every step."""
        schedule, built_for = self.schedule, self._levels_for
        revision = None if schedule is None else schedule.revision
        if built_for is None or built_for[0] is not schedule or built_for[1] != revision:
            moved = schedule.levels if schedule is not None else {}
            view = {name: moved.get(name, rest) for name, rest in self._resting_levels.items()}
            self._levels_view, self._levels_for = MappingProxyType(view), (schedule, revision)
            self.stacking.hold_levels(view)
        return self._levels_view

    def unit_share(self, name: str) -> float:
        """The most one unit can change constraint ``name``'s value when every unit is open
        (see :func:`~ctrlsparse.problem.reachability.unit_share`)."""
        return unit_share(self, name)

    def _constraint_order(self, name: str) -> tuple[int, int]:
        """Model-wise density, model-wise MACs, then layers' densities and MACs in forward order."""
        key = ConstraintKey.parse(name)
        if key.quantity is Quantity.SHAPE:
            return (4, list(group_units(self.accounting)).index(name))
        macs = key.quantity is Quantity.MACS
        if key.layer is None:
            return (int(macs), 0)
        return (2 + int(macs), self.accounting.layers.index(key.layer))

    @property
    def targets_all(self) -> dict[str, float]:
        """Every constraint with a target: ``{name: ε}``, densities, MACs budgets, then shape targets."""
        return {**self.targets, **self.macs_targets, **self.shape_targets}

    @property
    def mode(self) -> str:
        """``"constrained"`` when any multiplier is learned, else ``"penalized"``."""
        return "constrained" if self.targets_all else "penalized"

    @property
    def has_arm_gates(self) -> bool:
        """Whether some gate is an ARM gate (its gradient estimate needs a second forward pass)."""
        return bool(self._arm_gates)

    def is_penalized(self, name: str) -> bool:
        return name in self.penalties or name in self.macs_penalties

    @property
    def dense_macs(self) -> dict[str, int] | None:
        """Dense MACs of each Linear/convolution layer (one example), when a MACs budget is set,
        and of each decoder LM's attention module (its scores and values, :mod:`~ctrlsparse.problem.macs`)."""
        if self._macs is None:
            return None
        return {**self._macs.dense, **{a.name: a.dense for a in self._macs.attention}}

    def expected_macs(self, realized: bool = False, units: torch.Tensor | None = None) -> tuple:
        """Expected (or realized) MACs fraction of the model and ``{layer: fraction}`` of the
        gated layers; needs a MACs budget (it knows the layers' MACs)."""
        if self._macs is None:
            raise ValueError("this problem has no MACs budget: pass target_macs= or macs_penalty=")
        vector = self.accounting.vector(realized) if units is None else units
        return self._macs.fractions(self.accounting.per_param(realized, units), vector)

    def constraint_values(self, realized: bool = False, units: torch.Tensor | None = None) -> dict:
        """The constrained value of every constraint (density or MACs fraction), by name:
        expected (differentiable), realized (test-time gates, eq. 13) or at ``units``."""
        per_param = self.accounting.per_param(realized, units)
        model_density, densities = self.accounting.densities_from(per_param)
        values = {}
        vector = self.accounting.vector(realized) if units is None else units
        macs = self._macs.fractions(per_param, vector) if self._macs is not None else None
        for name in self.constraint_names:
            key = ConstraintKey.parse(name)
            if key.quantity is Quantity.SHAPE:
                continue
            whole, layers = macs if key.quantity is Quantity.MACS else (model_density, densities)
            values[name] = whole if key.layer is None else layers[key.layer]
        if self.shape_targets:
            values.update(shape_values(self.accounting, list(self.shape_targets), vector))
        return values

    def target_values_at(self, units: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The values of the target constraints at unit values ``units`` (None: expected)."""
        values = self.constraint_values(units=units)
        return {name: values[name] for name in self.targets_all}

    def constraint_units(self) -> dict[str, torch.Tensor]:
        """The units (indices into the concatenated gates) that count in each target constraint."""
        starts = self.accounting.offsets
        ranges = {id(g): torch.arange(start, start + g.num_units) for g, start in zip(self.groups, starts)}
        every = torch.cat(list(ranges.values()))
        units = {}
        for name in self.targets_all:
            key = ConstraintKey.parse(name)
            if key.layer is None:
                units[name] = every
                continue
            if key.quantity is Quantity.SHAPE:
                units[name] = group_units(self.accounting)[name]
                continue
            # A layer's density counts every slice of it; its MACs, the weight's alone.
            density = key.quantity is Quantity.DENSITY
            touching = [
                ranges[id(g)]
                for g in self.groups
                if any(s.module == key.layer and (density or s.param == "weight") for s in g.slices)
            ]
            units[name] = torch.cat(touching) if touching else every[:0]
        return units

    def expected_densities(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Expected model density and ``{layer: expected density}`` (differentiable)."""
        return self.accounting.densities()

    def realized_densities(self) -> tuple[float, dict[str, float]]:
        """Density of the model and of each layer under the test-time gates (eq. 13)."""
        with torch.no_grad():
            model_density, densities = self.accounting.densities(realized=True)
        return float(model_density), {name: float(d) for name, d in densities.items()}

    def multiplier(self, name: str) -> torch.Tensor:
        """The multiplier of constraint ``name`` now: a 0-d view of its entry in the cooper
        constraint's multiplier vector (``problem.multiplier("fc1").fill_(0.5)`` under
        ``torch.no_grad()`` sets it). An unknown name raises ``KeyError`` listing the names."""
        return self.stacking.multiplier(name)

    def multiplier_values(self) -> dict[str, torch.Tensor]:
        """``{name: multiplier}`` of every constraint, in :attr:`constraint_names` order."""
        return {name: self.multiplier(name) for name in self.constraint_names}

    @property
    def target_constraint(self) -> cooper.Constraint | None:
        """The cooper constraint holding every target (None in penalized mode)."""
        return self.stacking.constraints.get(CONSTRAINED)

    def load_state_dict(self, state_dict: dict) -> None:
        """cooper's ``load_state_dict``; it also reads the layout of ctrlsparse before the
        constraints were stacked, one cooper constraint per name (``{"fc1": {"weight": [λ]}}``)."""
        super().load_state_dict(self.stacking.regroup(state_dict))

    def dual_parameters(self):
        """The multipliers' parameters in the constraints' order.

        cooper's own iterates over a ``set`` of multipliers, whose order changes from one
        process to the next: a dual optimizer's state saved by one process would then be
        loaded onto the wrong multipliers by another (a resumed run would diverge).
        """
        seen: dict[int, torch.nn.Parameter] = {}
        for _, constraint in self.named_constraints():
            for parameter in constraint.multiplier.parameters():
                seen.setdefault(id(parameter), parameter)
        return iter(seen.values())

    @property
    def layers(self) -> list[str]:
        """Names of the layers with sparsifiable parameters, in forward order."""
        return self.accounting.layers

    def _state(self, objective, misc: dict) -> cooper.CMPState:
        per_param = self.accounting.per_param()
        model_density, layer_densities = self.accounting.density_vector(per_param)
        densities = dict(zip(self.accounting.layers, layer_densities.unbind()))
        values = {MODEL: model_density, **densities}
        misc.update(density=model_density.detach(), densities=densities, layer_densities=layer_densities)
        vector = self.accounting.vector() if self._macs is not None or self.shape_targets else None
        if self._macs is not None:
            macs, macs_layers = self._macs.fractions(per_param, vector)
            values[ConstraintKey.macs(MODEL).name] = macs
            values.update({ConstraintKey.macs(layer).name: v for layer, v in macs_layers.items()})
            misc["macs"] = {n: values[n] for n in self.constraint_names
                            if ConstraintKey.parse(n).quantity is Quantity.MACS}  # fmt: skip
        if self.shape_targets:
            values.update(shape_values(self.accounting, list(self.shape_targets), vector))
        if not torch.compiler.is_compiling():  # a compiled step refreshes them before it is called
            self._refresh_levels()
        return cooper.CMPState(objective, self.stacking.states(values, self.dual_frozen), misc)

    def compute_cmp_state(
        self,
        inputs: Inputs | None = None,
        targets: torch.Tensor | None = None,
        loss: torch.Tensor | None = None,
        backpropagated: bool = False,
    ) -> cooper.CMPState:
        """The loss and the constraints on a minibatch (``inputs``, ``targets``), or, when the loss
        was ``backpropagated`` already (its gradient is in ``.grad``, :meth:`GDA.backward`), the
        constraints alone: the objective holds only the weight-decay term and ``loss`` (None
        when nobody observed it) is only logged."""
        self.last_state = self._cmp_state(inputs, targets, loss, backpropagated)
        return self.last_state

    def _cmp_state(self, inputs, targets, loss, backpropagated: bool) -> cooper.CMPState:
        """:meth:`compute_cmp_state` without recording it (what a compiled step traces)."""
        if backpropagated:
            objective = 0.5 * self.weight_decay * self.accounting.expected_l2() if self.weight_decay else None
            return self._state(objective, {"loss": loss})
        outputs = call_model(self.forward_model or self.model, inputs)
        loss = self._task_loss(outputs, targets)
        objective = loss
        if self._arm_gates and self.model.training and not self.dual_frozen:
            objective = objective + self._arm_estimator_term(inputs, targets, loss)
        if self.weight_decay:
            l2 = self.accounting.expected_l2()
            objective = objective + 0.5 * self.weight_decay * l2
        return self._state(objective, {"loss": loss.detach()})

    def _task_loss(self, outputs, targets: torch.Tensor | None) -> torch.Tensor:
        """``loss_fn(outputs, targets)``, or the model's own loss when there is no ``loss_fn``."""
        if self.loss_fn is not None:
            return self.loss_fn(outputs, targets)
        loss = outputs.get("loss") if isinstance(outputs, dict) else getattr(outputs, "loss", None)
        if loss is None:
            raise ValueError(
                f"this SparsityProblem has no loss_fn and the model's output ({type(outputs).__name__}) "
                "carries no loss: pass loss_fn=, give the model its labels (a Hugging Face model returns "
                "output.loss), or compute the loss yourself and call GDA.step(loss=loss)"
            )
        return loss

    def _arm_estimator_term(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """Zero-valued term carrying the ARM/AR estimate of the loss gradient to every ARM gate.

        The ARM estimator needs the loss at the antithetic gates: a second forward pass
        on the same minibatch, without a graph (Li & Ji, 2019). A model in training mode
        updates BatchNorm running statistics in that pass too.
        """
        antithetic_loss = None
        if any(gate.estimator is Estimator.ARM for gate in self._arm_gates):
            with torch.no_grad(), antithetic(self._arm_gates):
                antithetic_loss = self._task_loss(call_model(self.model, inputs), targets)
        return torch.stack([gate.estimator_term(loss, antithetic_loss) for gate in self._arm_gates]).sum()

    def compute_violations(self) -> cooper.CMPState:
        """The constraints alone (they need no data): what an alternating dual step looks at."""
        return self._state(None, {})
