"""GDA's whole step through ``torch.compile``: ``GDA(..., compile="step")``.

A step on a minibatch runs in this order:

1. the Lagrangian, compiled: the forward pass (gate sampling included), the expected
   densities, the constraint states and cooper's primal and dual Lagrangians, summed as
   :class:`~ctrlsparse.problem.dual.OneBackwardSimultaneousOptimizer` sums them. Its backward
   pass is compiled with it (AOTAutograd), so ``.backward()`` runs a compiled graph;
2. the step's one host transfer (:class:`~ctrlsparse.problem.readout.StepReader`), eager: the
   logged numbers, checked before any update;
3. the primal optimizer's step, eager: the optimizer the user built, as they built it (a
   fused Adam is one kernel already; compiled, its step would check guards on every
   parameter and optimizer state at each call, which costs more than it saves on the CPU);
4. the dual update, eager: the dual optimizer's step, cooper's projection onto λ ≥ 0, the
   clamp of the gate parameters and the dual restarts. A handful of small operators: a
   compiled region of its own checked guards on the multipliers, the dual optimizer's
   state and every gate parameter at each call, and made the MLP's step slower (3.88 ms
   against 3.60 eager, docs/scripts/compile_dual.py, docs/performance.md).

Levels enter the Lagrangian through one tensor written in place
(:attr:`StackedConstraints.level_tensor <ctrlsparse.problem.stacking.StackedConstraints.level_tensor>`),
so a moving target ramp does not recompile it; the feasibility phase does, once.

Where the compiled region's first call fails (no C++ compiler, an untraceable model) GDA
warns and runs it eagerly from then on: the failure comes before its backward pass has
written a gradient, so no step is lost or applied twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cooper
import torch

from ctrlsparse.modelio import Inputs
from ctrlsparse.problem.dual import BeforeUpdate, lagrangian_sum

STEP = "step"
"""``GDA(..., compile="step")``: the forward, backward and Lagrangian compiled, the updates eager."""


def check_compile(compile: bool | str) -> bool | str:
    """``compile`` as given, or a ``ValueError`` naming the valid choices.

    Examples:
        >>> check_compile("step")
        'step'
    """
    if compile is False or compile is True or compile == STEP:
        return compile
    raise ValueError(
        f"compile must be False (eager), True (torch.compile the model's forward) or {STEP!r} "
        f"(forward, backward and Lagrangian), got {compile!r}"
    )


class CompiledStep:
    """The compiled region of a GDA step on a minibatch, and its eager updates (module docstring).

    Args:
        problem: the GDA's problem.
        optimizer: the GDA's cooper optimizer (simultaneous, one backward pass).
        after_update: what GDA does after both optimizers' steps, given the targets'
            violations (None in penalized mode): the clamp of the gates and the restarts.
    """

    def __init__(self, problem, optimizer, after_update: Callable[[torch.Tensor | None], None]) -> None:
        self.problem, self.optimizer = problem, optimizer
        self._lagrangian = _Region(
            self._eager_lagrangian,
            "the forward pass, Lagrangian and backward pass",
            optimizer.zero_grad,
            _backward,
        )
        self._after_update = after_update

    def _eager_lagrangian(self, inputs: Inputs, targets: torch.Tensor | None):
        state = self.problem._cmp_state(inputs, targets, None, False)
        total = lagrangian_sum(
            state.compute_primal_lagrangian().lagrangian, state.compute_dual_lagrangian().lagrangian
        )
        violations = [constraint_state.violation for constraint_state in state.observed_constraints.values()]
        # Only the Lagrangian is backpropagated (right after the call, its graph freed then): the
        # rest leaves the region detached, so the compiled backward takes no zero gradients for it.
        return total, state.loss.detach(), _detached(state.misc), [v.detach() for v in violations]

    def _dual_update(self, violation: torch.Tensor | None) -> None:
        self.optimizer.dual_step()
        self._after_update(violation)

    def roll(self, inputs: Inputs, targets: torch.Tensor | None, before_update: BeforeUpdate) -> None:
        """Backpropagate the Lagrangian, call ``before_update(cmp_state)``, then update (the
        primal and dual steps and ``after_update``)."""
        problem = self.problem
        problem._refresh_levels()  # written eagerly: the compiled region reads the tensor
        self.optimizer.zero_grad()  # torch.compile does not trace it
        _, loss, misc, violations = self._lagrangian(inputs, targets)
        observed = problem.stacking.wrap(violations, problem.dual_frozen)
        problem.last_state = state = cooper.CMPState(loss, observed, misc)
        if before_update is not None:
            before_update(state)
        # The user's optimizer, as they built it: its step is one fused kernel or their own choice,
        # and compiled it would guard on every parameter and state tensor at each call.
        self.optimizer.primal_step()
        target = problem.target_constraint
        self._dual_update(None if target is None else observed[target].violation.detach())


class _Region:
    """``function`` through ``torch.compile``; eager from then on, with a warning, where its
    first compiled call fails (a compiler fails before the function's first operation runs).
    ``then(result)`` runs after each call (the backward pass, whose compiled graph may be built
    at its first call); ``reset`` undoes what a failed call may have done (the gradients)."""

    def __init__(
        self,
        function: Callable,
        what: str,
        reset: Callable[[], None] = lambda: None,
        then: Callable = lambda result: None,
    ) -> None:
        self.function, self.what, self.reset, self.then = function, what, reset, then
        self._call: Callable | None = None

    @property
    def compiled(self) -> bool:
        """Whether the region runs compiled (not before its first call, nor after a failure)."""
        return self._call is not None and self._call is not self.function

    def __call__(self, *args):
        if self._call is not None:
            result = self._call(*args)
            self.then(result)
            return result
        try:
            compiled = torch.compile(self.function)
            result = compiled(*args)
            self.then(result)
            self._call = compiled
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            warnings.warn(f"torch.compile failed ({reason}); GDA runs {self.what} eagerly", stacklevel=4)
            self._call = self.function
            self.reset()
            result = self.function(*args)
            self.then(result)
        return result


def _detached(misc):
    """``misc`` with every tensor in it detached, its dicts rebuilt."""
    if isinstance(misc, dict):
        return {key: _detached(value) for key, value in misc.items()}
    return misc.detach() if isinstance(misc, torch.Tensor) else misc


def _backward(result: tuple) -> None:
    if result[0] is not None:
        result[0].backward()
