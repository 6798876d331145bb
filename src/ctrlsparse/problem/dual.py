"""The dual side of GDA: the ascent optimizers of the multipliers, and cooper's simultaneous
update with one backward pass."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from cooper import CMPState
from cooper.optim import AlternatingPrimalDualOptimizer, RollOut, SimultaneousOptimizer, nuPI

from ctrlsparse.problem.kernels import adam

BeforeUpdate = Callable[[CMPState], None] | None

DUAL_OPTIMIZERS = ("sgd", "nupi", "adam")


def make_dual_optimizer(
    name: str, params, lr: float, kp: float = 0.0, ema_nu: float = 0.0
) -> torch.optim.Optimizer:
    """The dual ascent optimizer ``name`` over the multipliers (``maximize=True``).

    ``"nupi"`` is cooper's nuPI with proportional gain ``kp`` and integral gain 1 (``kp = 0``
    is SGD ascent); ``ema_nu`` smooths its error signal. ``"adam"`` is Adam ascent. The
    multipliers are one or two tensors (targets and penalties, one entry per name), so SGD
    takes its per-tensor step (15 µs on the CPU against 21 µs for ``foreach``) and Adam its
    fused kernel where the device has one (30 µs against 45 µs per-tensor).
    """
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, maximize=True, foreach=False)
    if name == "nupi":
        return nuPI(params, lr=lr, Kp=kp, Ki=1.0, ema_nu=ema_nu, maximize=True)
    if name == "adam":
        return adam(params, lr=lr, maximize=True)
    raise ValueError(f"unknown dual optimizer {name!r}; valid dual optimizers: {', '.join(DUAL_OPTIMIZERS)}")


class OneBackwardSimultaneousOptimizer(SimultaneousOptimizer):
    """cooper's simultaneous update with one backward pass instead of two.

    The primal Lagrangian carries gradients only to the primal parameters (multipliers
    enter it detached) and the dual Lagrangian only to the multipliers (violations enter
    it detached), so the gradient of their sum is both gradients at once; one autograd
    pass saves the engine's fixed cost, which is a visible share of a small model's step.

    ``before_update(cmp_state)`` runs after the backward pass and before any update: GDA
    reads the step's numbers there (one host transfer) and stops on a non-finite loss.
    With ``accumulated``, the loss's gradient is already in the primal ``.grad``
    (:meth:`ctrlsparse.GDA.backward`): it is kept, and the Lagrangian's other terms add to it.
    """

    def roll(
        self,
        compute_cmp_state_kwargs: dict | None = None,
        before_update: BeforeUpdate = None,
        accumulated: bool = False,
    ) -> RollOut:
        _zero_grad(self, accumulated)
        cmp_state = self.cmp.compute_cmp_state(**(compute_cmp_state_kwargs or {}))
        primal_store = cmp_state.compute_primal_lagrangian()
        dual_store = cmp_state.compute_dual_lagrangian()
        _backward(primal_store.lagrangian, dual_store.lagrangian)
        if before_update is not None:
            before_update(cmp_state)
        self.primal_step()
        self.dual_step()
        return RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)


class CheckedAlternatingOptimizer(AlternatingPrimalDualOptimizer):
    """cooper's alternating update (primal step, then the dual step on the violations at the
    new point), with ``before_update(cmp_state)`` between the backward pass and the primal step;
    ``accumulated`` as in :class:`OneBackwardSimultaneousOptimizer`."""

    def roll(
        self,
        compute_cmp_state_kwargs: dict | None = None,
        before_update: BeforeUpdate = None,
        accumulated: bool = False,
    ) -> RollOut:
        kwargs = compute_cmp_state_kwargs or {}
        _zero_grad(self, accumulated)
        cmp_state = self.cmp.compute_cmp_state(**kwargs)
        primal_store = cmp_state.compute_primal_lagrangian()
        _backward(primal_store.lagrangian)
        if before_update is not None:
            before_update(cmp_state)
        self.primal_step()
        with torch.no_grad():  # the violations are functions of the gates alone: no forward pass
            new_state = self.cmp.compute_violations()
        dual_store = new_state.compute_dual_lagrangian()
        dual_store.backward()
        self.dual_step()
        return RollOut(cmp_state.loss, new_state, primal_store, dual_store)


def _zero_grad(optimizer, accumulated: bool) -> None:
    """Both optimizers' gradients, or only the multipliers' when the primal ones hold the loss's."""
    if accumulated:
        for dual in optimizer.dual_optimizers:
            dual.zero_grad()
    else:
        optimizer.zero_grad()


def lagrangian_sum(*terms: torch.Tensor | float | None) -> torch.Tensor | None:
    """The sum of the Lagrangian terms that exist and carry a graph, None when none does (with the
    loss already backpropagated, the primal term may be None or constant: no constraint contributes)."""
    live = [t for t in terms if isinstance(t, torch.Tensor) and t.requires_grad]
    if not live:
        return None
    total = live[0]
    for term in live[1:]:
        total = total + term
    return total


def _backward(*terms: torch.Tensor | float | None) -> None:
    """Backpropagate :func:`lagrangian_sum` of the terms, where there is one."""
    total = lagrangian_sum(*terms)
    if total is not None:
        total.backward()


def roll(optimizer, problem, kwargs: dict, before_update: BeforeUpdate, read: list, compile: bool) -> RollOut:
    """``optimizer.roll`` on ``problem``; with ``compile``, through a ``torch.compile``'d forward,
    and again eagerly (with a warning) when that fails before ``before_update`` ran, that is
    before any update: ``read`` is what ``before_update`` appends to."""
    if not compile:
        return optimizer.roll(compute_cmp_state_kwargs=kwargs, before_update=before_update)
    eager = problem.forward_model
    problem.forward_model = torch.compile(eager or problem.model)
    try:
        return optimizer.roll(compute_cmp_state_kwargs=kwargs, before_update=before_update)
    except Exception as error:
        if read:  # the forward and backward ran: not the compiler's failure
            raise
        problem.forward_model = eager
        reason = f"{type(error).__name__}: {error}"
        warnings.warn(f"torch.compile failed ({reason}); GDA goes on eagerly", stacklevel=3)
        return optimizer.roll(compute_cmp_state_kwargs=kwargs, before_update=before_update)
