r"""Simultaneous gradient descent-ascent on the Lagrangian of a :class:`SparsityProblem`.

.. math::
    \theta_{t+1} = \text{primal\_step}\big(\nabla_\theta \mathcal L(\theta_t, \lambda_t)\big),\qquad
    \lambda_{t+1} = \big[\lambda_t + \eta_\lambda\,(\text{density}_t - \epsilon)\big]_+

built on cooper's ``SimultaneousOptimizer`` (or its alternating primal-then-dual
optimizer). Penalized constraints never take a dual step, so penalized and
constrained runs go through this same loop. The dual update is SGD ascent (the
paper's), nuPI (Sohrabi et al., 2024: a PI controller on the violation that damps the
multiplier's oscillation) or Adam ascent; target schedules move each constraint's level
from the initial density to ε (see :mod:`ctrlsparse.problem.schedules`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cooper.optim import AlternatingPrimalDualOptimizer, RollOut, SimultaneousOptimizer, nuPI

from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.levels import MODEL
from ctrlsparse.problem.schedules import TargetSchedule

DEFAULT_PRIMAL_LR = 7e-4
"""Adam learning rate of Gallego-Posada et al.'s MNIST runs."""
DEFAULT_DUAL_LR = 1e-4
"""Dual SGD learning rate of Gallego-Posada et al.'s MNIST runs (~94k steps); short runs need larger."""
DUAL_OPTIMIZERS = ("sgd", "nupi", "adam")


def make_dual_optimizer(
    name: str, params, lr: float, kp: float = 0.0, ema_nu: float = 0.0
) -> torch.optim.Optimizer:
    """The dual ascent optimizer ``name`` over the multipliers (``maximize=True``).

    ``"nupi"`` is cooper's nuPI with proportional gain ``kp`` and integral gain 1 (``kp = 0``
    is SGD ascent); ``ema_nu`` smooths its error signal. ``"adam"`` is Adam ascent.
    """
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, maximize=True)
    if name == "nupi":
        return nuPI(params, lr=lr, Kp=kp, Ki=1.0, ema_nu=ema_nu, maximize=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, maximize=True)
    raise ValueError(f"unknown dual optimizer {name!r}; valid dual optimizers: {', '.join(DUAL_OPTIMIZERS)}")


@dataclass
class GDAStep:
    """What one primal-dual step saw and did.

    Attributes:
        loss: task loss on the minibatch (without the gated L2 term).
        density: expected model density before the step.
        densities: expected density per gated layer before the step.
        multipliers: value of each constraint's multiplier after the step.
        violations: density − ε per constraint before the step (ε = 0 for penalties).
    """

    loss: float
    density: float
    densities: dict[str, float]
    multipliers: dict[str, float]
    violations: dict[str, float]


class _OneBackwardSimultaneousOptimizer(SimultaneousOptimizer):
    """cooper's simultaneous update with one backward pass instead of two.

    The primal Lagrangian carries gradients only to the primal parameters (multipliers
    enter it detached) and the dual Lagrangian only to the multipliers (violations enter
    it detached), so the gradient of their sum is both gradients at once; one autograd
    pass saves the engine's fixed cost, which is a visible share of a small model's step.
    """

    def roll(self, compute_cmp_state_kwargs: dict | None = None) -> RollOut:
        self.zero_grad()
        cmp_state = self.cmp.compute_cmp_state(**(compute_cmp_state_kwargs or {}))
        primal_store = cmp_state.compute_primal_lagrangian()
        dual_store = cmp_state.compute_dual_lagrangian()
        total = primal_store.lagrangian
        if dual_store.lagrangian is not None:
            total = total + dual_store.lagrangian
        total.backward()
        self.primal_step()
        self.dual_step()
        return RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)


class GDA:
    """One primal-dual step per minibatch.

    Args:
        problem: the sparsity problem.
        primal_optimizer: optimizer of the weights *and* the gates; defaults to
            ``Adam(model.parameters(), lr=7e-4)``.
        dual_lr: learning rate of the dual ascent on the multipliers.
        dual_restarts: reset a multiplier to exactly 0 whenever its constraint is
            satisfied (Gallego-Posada et al., 2022). On by default: without restarts the
            multiplier built up during the first descent keeps pushing after the target
            is reached, and gates pushed to P(active) ~ 0 get no gradient from the loss
            to reopen, so the density ends below the target (digits MLP, ε = 0.3:
            final density 0.237 without restarts, 0.303 with; docs/core.md).
        dual_optimizer: ``"sgd"`` (default, the paper's), ``"nupi"`` or ``"adam"``.
            Every option without restarts ended 0.05-0.17 below its target; with restarts
            none beat SGD by more than the seed-to-seed spread (docs/dynamics.md).
        dual_kp, dual_ema_nu: nuPI's proportional gain and error smoothing.
        alternating: update the primal variables first, then the multipliers on the
            violations at the new point (cooper's alternating optimizer); the densities
            need no data, so this costs no second forward pass.
        schedule: how each constraint's level moves to its target, per epoch; needs
            ``steps_per_epoch`` (``fit`` sets it). None keeps ε from the first step.
            What lands on the target (the dual-dynamics study, docs/dynamics.md): SGD
            ascent with restarts, a linear ramp from the initial density to ε over the
            first third of training, and a dual lr large enough to track it
            (``TargetSchedule("linear", epochs=epochs // 3)``, the default of problem
            files): every constraint ended within 0.0013 of its target on the digits
            MLP, 0.0019 on the Fashion-MNIST MLP and 0.0024 on LeNet-5, with test error
            no worse than a fixed target's (whose digits runs end up to 0.0066 above).

    The default ``schedule=None`` is a fixed target because a schedule counts in epochs
    and this object does not know the length of training; pass one as below.

    Example:
        >>> opt = GDA(problem, torch.optim.Adam(model.parameters(), lr=7e-4), dual_lr=0.05,
        ...           schedule=TargetSchedule("linear", epochs=epochs // 3))  # doctest: +SKIP
        >>> step = opt.step(x, y)  # doctest: +SKIP
        >>> step.density, step.multipliers  # doctest: +SKIP
    """

    def __init__(
        self,
        problem: SparsityProblem,
        primal_optimizer: torch.optim.Optimizer | None = None,
        dual_lr: float = DEFAULT_DUAL_LR,
        dual_restarts: bool = True,
        dual_optimizer: str = "sgd",
        dual_kp: float = 0.0,
        dual_ema_nu: float = 0.0,
        alternating: bool = False,
        schedule: TargetSchedule | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if not dual_lr > 0:
            raise ValueError(f"dual_lr must be positive, got {dual_lr!r}")
        if primal_optimizer is None:
            primal_optimizer = torch.optim.Adam(problem.model.parameters(), lr=DEFAULT_PRIMAL_LR)
        optimized = {id(p) for group in primal_optimizer.param_groups for p in group["params"]}
        for group in problem.groups:
            if id(group.gate.parameter) not in optimized:
                raise ValueError(
                    f"the primal optimizer does not update the {group.kind} gates of {group.name!r}; "
                    "build it on model.parameters() after calling sparsify()"
                )
        self.problem = problem
        self.primal_optimizer = primal_optimizer
        self.dual_lr = dual_lr
        self.dual_restarts = dual_restarts
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.steps = 0
        # Every multiplier is in the dual optimizer; penalized ones receive no gradient
        # (their ConstraintState does not contribute to the dual update), so it skips them.
        self.dual_optimizer = make_dual_optimizer(
            dual_optimizer, problem.dual_parameters(), dual_lr, dual_kp, dual_ema_nu
        )
        kind = AlternatingPrimalDualOptimizer if alternating else _OneBackwardSimultaneousOptimizer
        self._cooper = kind(problem, primal_optimizer, self.dual_optimizer)
        # Gate parameters grouped by the range they are clamped into.
        self._clamp_groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for group in problem.groups:
            self._clamp_groups.setdefault(group.gate.parameter_range, []).append(group.gate.parameter)
        self._initial: dict[str, float] | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.problem.model

    def step(self, inputs, targets: torch.Tensor) -> GDAStep:
        """One primal descent and dual ascent step on a minibatch."""
        if self.schedule is not None:
            self._advance_schedule()
        rollout = self._cooper.roll(compute_cmp_state_kwargs={"inputs": inputs, "targets": targets})
        problem = self.problem
        with torch.no_grad():  # keep the gate parameters in range: two kernels per gate kind
            for (low, high), params in self._clamp_groups.items():
                torch._foreach_clamp_min_(params, low)
                torch._foreach_clamp_max_(params, high)
        # The violations the dual step saw (after the primal step when alternating).
        states = rollout.cmp_state.observed_constraints
        if self.dual_restarts:
            with torch.no_grad():
                for name, constraint in problem.named_constraints():
                    if not problem.is_penalized(name):
                        # Zero the multiplier where this step's violation is <= 0, without a host sync.
                        satisfied = states[constraint].violation.detach().reshape(1) <= 0
                        constraint.multiplier.weight.masked_fill_(satisfied, 0.0)
        self.steps += 1
        return self._record(problem.last_state)

    def finish(self) -> bool:
        """Called by :func:`~ctrlsparse.fit` after the last step: nothing to do, the model is unchanged."""
        return False

    def summary(self) -> dict:
        """Final densities and multipliers, as ``summary.json`` records them."""
        problem = self.problem
        with torch.no_grad():
            model_density, densities = problem.expected_densities()
        realized, realized_densities = problem.realized_densities()
        kinds = dict.fromkeys(group.gate.method for group in problem.groups)
        return {
            "method": "+".join(kinds),
            "mode": problem.mode,
            "targets": problem.targets,
            "penalties": problem.penalties,
            "density": float(model_density),
            "densities": {name: float(d) for name, d in densities.items()},
            "realized_density": realized,
            "realized_densities": realized_densities,
            "multipliers": {
                name: float(c.multiplier.weight.detach()) for name, c in problem.named_constraints()
            },
        }

    def _advance_schedule(self) -> None:
        """At each epoch boundary, set every target's level from the schedule."""
        if not self.steps_per_epoch:
            raise ValueError("a target schedule needs steps_per_epoch (fit() sets it from the batches)")
        if self.steps % self.steps_per_epoch:
            return
        problem = self.problem
        with torch.no_grad():
            model_density, densities = problem.expected_densities()
        current = {
            name: float(model_density if name == MODEL else densities[name]) for name in problem.targets
        }
        if self._initial is None:
            self._initial = current
        epoch = self.steps // self.steps_per_epoch
        for name, target in problem.targets.items():
            previous = None if epoch == 0 else problem.levels[name]
            problem.levels[name] = self.schedule.level(
                epoch, target, self._initial[name], previous, current[name]
            )

    def _record(self, cmp_state) -> GDAStep:
        # One host transfer for every logged scalar.
        misc = cmp_state.misc
        names = [name for name, _ in self.problem.named_constraints()]
        constraints = [c for _, c in self.problem.named_constraints()]
        layer_names = list(misc["densities"])
        values = torch.cat(
            [
                misc["loss"].reshape(1),
                misc["density"].reshape(1),
                torch.stack([misc["densities"][n].detach() for n in layer_names]),
                torch.cat([c.multiplier.weight.detach() for c in constraints]),
                torch.stack([cmp_state.observed_constraints[c].violation.detach() for c in constraints]),
            ]
        ).tolist()
        n_layers, n_constraints = len(layer_names), len(names)
        densities = values[2 : 2 + n_layers]
        multipliers = values[2 + n_layers : 2 + n_layers + n_constraints]
        violations = values[2 + n_layers + n_constraints :]
        return GDAStep(
            loss=values[0],
            density=values[1],
            densities=dict(zip(layer_names, densities)),
            multipliers=dict(zip(names, multipliers)),
            violations=dict(zip(names, violations)),
        )
