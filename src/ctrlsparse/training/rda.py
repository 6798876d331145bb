r"""ℓ1-regularized dual averaging (RDA), the optimizer Xu et al. (2021) pair with ℓ1 sparsity.

SGD with an ℓ1 penalty almost never produces exact zeros: each step moves a weight by
a gradient-sized amount and the penalty's subgradient only nudges it across 0. RDA
(Xiao, 2010) instead solves, at every step, a problem whose closed-form solution is a
soft-threshold of the *averaged* gradient, so every weight whose average gradient stays
below λ in magnitude is exactly 0. Xu et al. make it work for networks with "proper
initialization and adaptivity": centre the proximal term at the initial weights
:math:`w_0` (not at 0, which would start every weight at 0) and let its weight grow as
:math:`\beta_t = \gamma\sqrt t`:

.. math::
    w_{t+1} = \operatorname{shrink}\Big(w_0 - \tfrac{t}{\beta_t}\,\bar g_t,\ \tfrac{t}{\beta_t}\,\lambda\Big),
    \qquad \bar g_t = \tfrac1t \textstyle\sum_{i \le t} g_i,\qquad
    \operatorname{shrink}(v, \tau) = \operatorname{sign}(v)\max(|v| - \tau, 0).

The step from :math:`w_t` to :math:`w_{t+1}` is about :math:`g_t/(\gamma\sqrt t)`, so
:math:`1/\gamma` plays the role of an initial learning rate decaying as :math:`1/\sqrt t`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class RDA(torch.optim.Optimizer):
    r"""ℓ1-regularized dual averaging centred at the initial weights, :math:`\beta_t = \gamma\sqrt t`.

    Args:
        params: parameters or parameter groups (a group may set its own ``penalty``
            and ``gamma``: give biases ``penalty=0`` to leave them unpenalized).
        gamma: :math:`\gamma > 0`; the first step is :math:`g_1/\gamma`.
        penalty: :math:`\lambda \ge 0`, the coefficient of :math:`\lambda\|w\|_1`.

    The state of a parameter is its initial value :math:`w_0`, the gradient sum and
    the step count ``t`` (parameters without a gradient in a step are not counted).

    Examples:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.1]))
        >>> opt = RDA([w], gamma=1.0, penalty=0.5)
        >>> w.grad = torch.tensor([0.2, 0.0]); opt.step()
        >>> w.tolist()  # shrink([1 - 0.2, 0.1], 0.5)
        [0.30000001192092896, 0.0]
    """

    def __init__(self, params: Iterable, gamma: float = 1.0, penalty: float = 0.0) -> None:
        if not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if not (penalty >= 0 and math.isfinite(penalty)):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        super().__init__(params, {"gamma": gamma, "penalty": penalty})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            gamma, penalty = group["gamma"], group["penalty"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["initial"] = p.detach().clone()
                    state["grad_sum"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["grad_sum"].add_(p.grad)
                ratio = math.sqrt(t) / gamma  # t / beta_t
                # w_0 - (t / beta_t) * (grad_sum / t), then shrink by (t / beta_t) * lambda.
                v = state["initial"] - state["grad_sum"] / (gamma * math.sqrt(t))
                p.copy_(v.sign() * (v.abs() - ratio * penalty).clamp_min(0.0))
        return loss
