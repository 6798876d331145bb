"""GDA's whole step through ``torch.compile``: ``GDA(..., compile="step")``.

A step on a minibatch is two compiled regions with the step's one host transfer between them:

1. the Lagrangian: the forward pass (gate sampling included), the expected densities, the
   constraint states and cooper's primal and dual Lagrangians, summed as
   :class:`~ctrlsparse.problem.dual.OneBackwardSimultaneousOptimizer` sums them. Its backward
   is compiled with it (AOTAutograd), so ``.backward()`` runs a compiled graph;
2. the updates: the primal optimizer's step, the dual step with cooper's projection onto
   λ ≥ 0, the clamp of the gate parameters and the dual restarts.

Between them GDA reads the logged numbers and checks them (one host transfer, before any
update: :func:`~ctrlsparse.problem.readout.read_step`), eagerly, as in the eager step.
Levels enter the first region through one tensor written in place
(:attr:`StackedConstraints.level_tensor <ctrlsparse.problem.stacking.StackedConstraints.level_tensor>`),
so a moving target ramp does not recompile it; the feasibility phase does, once.

Where a region's first call fails (no C++ compiler, an untraceable model) GDA warns and runs
that region eagerly from then on: the Lagrangian's failure comes before its backward pass
and the updates' before any parameter moves, so no step is lost or applied twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cooper
import torch

from ctrlsparse.modelio import Inputs
from ctrlsparse.problem.dual import BeforeUpdate, lagrangian_sum

STEP = "step"
"""``GDA(..., compile="step")``: the forward, backward, Lagrangian and updates compiled."""
COMPILE_CHOICES = (False, True, STEP)


def check_compile(compile: bool | str) -> bool | str:
    """``compile`` as given, or a ``ValueError`` naming the valid choices."""
    if compile is False or compile is True or compile == STEP:
        return compile
    raise ValueError(
        f"compile must be False (eager), True (torch.compile the model's forward) or {STEP!r} "
        f"(forward, backward, Lagrangian and updates), got {compile!r}"
    )


class CompiledStep:
    """The two compiled regions of a GDA step on a minibatch (module docstring).

    Args:
        problem: the GDA's problem.
        optimizer: the GDA's cooper optimizer (simultaneous, one backward pass).
        after_update: what GDA does after both optimizers' steps, given the targets'
            violations (None in penalized mode): the clamp of the gates and the restarts.
    """

    def __init__(self, problem, optimizer, after_update: Callable[[torch.Tensor | None], None]) -> None:
        self.problem, self.optimizer, self._after_update = problem, optimizer, after_update
        self._lagrangian: Callable | None = torch.compile(self._eager_lagrangian)
        # One graph or none: a graph break would let a first graph update before a later one fails.
        self._update: Callable | None = torch.compile(self._eager_update, fullgraph=True)
        self._lagrangian_checked = self._update_checked = False

    def _eager_lagrangian(self, inputs: Inputs, targets: torch.Tensor | None):
        state = self.problem._cmp_state(inputs, targets, None, False)
        total = lagrangian_sum(
            state.compute_primal_lagrangian().lagrangian, state.compute_dual_lagrangian().lagrangian
        )
        violations = [constraint_state.violation for constraint_state in state.observed_constraints.values()]
        return total, state.loss, state.misc, violations

    def _eager_update(self, violation: torch.Tensor | None) -> None:
        self.optimizer.primal_step()
        self.optimizer.dual_step()
        self._after_update(violation)

    def roll(self, inputs: Inputs, targets: torch.Tensor | None, before_update: BeforeUpdate) -> None:
        """Zero the gradients, backpropagate the Lagrangian, call ``before_update(cmp_state)``,
        then update (the primal and dual steps and ``after_update``)."""
        problem, optimizer = self.problem, self.optimizer
        problem._refresh_levels()  # written eagerly: the compiled region reads the tensor
        optimizer.zero_grad()
        try:
            total, loss, misc, violations = self._lagrangian(inputs, targets)
            if total is not None:
                total.backward()
        except Exception as error:
            if self._lagrangian_checked:
                raise
            _warn(error, "the forward pass, backward pass and Lagrangian")
            self._lagrangian = self._eager_lagrangian
            optimizer.zero_grad()
            total, loss, misc, violations = self._lagrangian(inputs, targets)
            if total is not None:
                total.backward()
        self._lagrangian_checked = True
        observed = problem.stacking.wrap(violations, problem.dual_frozen)
        problem.last_state = state = cooper.CMPState(loss, observed, misc)
        if before_update is not None:
            before_update(state)
        target = problem.target_constraint
        violation = None if target is None else observed[target].violation.detach()
        if self._update_checked:
            self._update(violation)
            return
        try:
            self._update(violation)
        except Exception as error:
            _warn(error, "the updates")
            self._update = self._eager_update
            self._update(violation)
        self._update_checked = True


def _warn(error: Exception, region: str) -> None:
    reason = f"{type(error).__name__}: {error}"
    warnings.warn(f"torch.compile failed ({reason}); GDA runs {region} eagerly", stacklevel=4)
