"""The dual side of GDA: the ascent optimizers of the multipliers, and cooper's simultaneous
update with one backward pass."""

from __future__ import annotations

import torch
from cooper.optim import RollOut, SimultaneousOptimizer, nuPI

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


class OneBackwardSimultaneousOptimizer(SimultaneousOptimizer):
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
