"""L0-ARM gates (Li & Ji, 2019): exactly binary Bernoulli gates whose loss gradient is
estimated with ARM (Yin & Zhou, 2019) from a second, antithetic forward pass."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ctrlsparse.choices import Choice
from ctrlsparse.gating.gate import Gate
from ctrlsparse.gating.hard_concrete import LOG_ALPHA_RANGE


class Squash(Choice):
    """The function g of an ARM gate's probability :math:`\\pi = g(k\\phi)`."""

    SIGMOID = "sigmoid"
    HARD_SIGMOID = "hard_sigmoid"


Squash._noun = "squash function"


class Estimator(Choice):
    """Which ARM-family estimator of the loss gradient an :class:`ARMGate` uses."""

    ARM = "arm"
    AR = "ar"


Estimator._noun = "estimator"

ARM_SCALE = 7.0
"""k of Li & Ji's (2019) released code (their default), for both g."""
# Slope of the hard sigmoid clip(x / 7 + 1/2, 0, 1) of Li & Ji's code.
_HARD_SIGMOID_SLOPE = 1.0 / 7.0


class ARMGate(Gate):
    r"""A tensor of independent Bernoulli gates trained with the ARM estimator (Li & Ji, 2019).

    :math:`z \sim \text{Bernoulli}(\pi)` with :math:`\pi = g(k\phi)`, g the sigmoid or the
    hard sigmoid :math:`\text{clip}(x/7 + 1/2, 0, 1)`. A training sample draws
    :math:`u \sim \mathcal U(0, 1)` per gate and returns :math:`z = 1[u < \pi]`; under
    :func:`antithetic` the same ``u`` gives the antithetic sample :math:`1[u > 1 - \pi]`.
    With :math:`f` the minibatch loss, the ARM estimate (Yin & Zhou, 2019) of
    :math:`\partial\,\mathbb E[f(z)]/\partial(\text{logit}\,\pi)` is
    :math:`(f(1[u > 1-\pi]) - f(1[u < \pi]))(u - \tfrac12)` and the one-pass AR estimate
    is :math:`f(1[u < \pi])(1 - 2u)`; :meth:`estimator_term` turns either into the
    gradient with respect to :math:`\phi` by the chain rule
    :math:`\partial\pi/\partial\phi = k\,g'(k\phi)` over
    :math:`\partial\pi/\partial\,\text{logit}\,\pi = \pi(1-\pi)` — just :math:`k` for the
    sigmoid. (Li & Ji's code uses :math:`k` for the hard sigmoid too, which is biased;
    here the estimate stays unbiased for both, at the price of a large variance where a
    hard-sigmoid :math:`\pi` nears 0 or 1.) The test-time gate is :math:`1[\phi > 0]`.

    Args:
        shape: shape of the gate tensor.
        drop_rate: initial probability of a gate being dropped; ``phi`` starts where
            :math:`\pi = 1 - \text{drop\_rate}`, plus N(0, (0.01/k)²) noise (Li & Ji's code).
        k: the scale in :math:`\pi = g(k\phi)`.
        squash: ``"sigmoid"`` (default, Li & Ji's) or ``"hard_sigmoid"``.
        estimator: ``"arm"`` (two forward passes, lower variance) or ``"ar"`` (one pass).

    Examples:
        >>> gate = ARMGate((4,), drop_rate=0.5)
        >>> z = gate()  # a sample in {0, 1}^4
        >>> bool(((z == 0) | (z == 1)).all())
        True
    """

    method = "arm"

    def __init__(
        self,
        shape: tuple[int, ...] | int,
        drop_rate: float = 0.5,
        k: float = ARM_SCALE,
        squash: str | Squash = Squash.SIGMOID,
        estimator: str | Estimator = Estimator.ARM,
    ) -> None:
        super().__init__()
        if not 0.0 < drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in (0, 1), got {drop_rate!r}")
        if not (k > 0 and math.isfinite(k)):
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        self.drop_rate, self.k = drop_rate, float(k)
        self.squash = Squash.parse(squash)
        self.estimator = Estimator.parse(estimator)
        # k * phi stays where the hard concrete's log_alpha stays: sigmoid(+-10) is saturated.
        self.parameter_range = (LOG_ALPHA_RANGE[0] / self.k, LOG_ALPHA_RANGE[1] / self.k)
        self.phi = nn.Parameter(torch.empty(shape))
        self.antithetic = False
        self._u: torch.Tensor | None = None
        self.reset_parameters()

    @property
    def parameter(self) -> nn.Parameter:
        return self.phi

    def reset_parameters(self) -> None:
        """Re-draw ``phi`` around the value where P(active) is ``1 - drop_rate``."""
        keep = 1.0 - self.drop_rate
        if self.squash is Squash.SIGMOID:
            logit = math.log(keep) - math.log(self.drop_rate)
        else:
            logit = (keep - 0.5) / _HARD_SIGMOID_SLOPE
        with torch.no_grad():
            self.phi.normal_(logit / self.k, 1e-2 / self.k)
        self._u = None

    def prob_active(self) -> torch.Tensor:
        r""":math:`\pi = g(k\phi)`, differentiable in ``phi``."""
        x = self.k * self.phi
        if self.squash is Squash.SIGMOID:
            return torch.sigmoid(x)
        return (x * _HARD_SIGMOID_SLOPE + 0.5).clamp(0.0, 1.0)

    def sample(self) -> torch.Tensor:
        """:math:`1[u < \\pi]` with a fresh ``u``; under :func:`antithetic`, :math:`1[u > 1 - \\pi]`."""
        with torch.no_grad():
            pi = self.prob_active()
            if self.antithetic:
                if self._u is None:
                    raise RuntimeError("an antithetic ARM sample needs a regular sample first")
                return (self._u > 1.0 - pi).to(self.phi.dtype)
            self._u = torch.rand_like(self.phi)
            return (self._u < pi).to(self.phi.dtype)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate :math:`1[\\phi > 0]` (that is, :math:`\\pi > 1/2`)."""
        return (self.phi > 0).to(self.phi.dtype)

    def estimator_term(self, loss: torch.Tensor, antithetic_loss: torch.Tensor | None) -> torch.Tensor:
        r"""A term that is 0 in value and whose gradient in ``phi`` is the ARM (or AR) estimate.

        Add it to the objective after a forward pass at the last sample (``loss``) and,
        for ``"arm"``, one at its antithetic sample (``antithetic_loss``, no graph needed).
        """
        if self._u is None:
            raise RuntimeError("the ARM estimate needs a training forward pass first")
        u = self._u
        loss = loss.detach()
        if self.estimator is Estimator.AR:
            estimate = loss * (1.0 - 2.0 * u)
        else:
            if antithetic_loss is None:
                raise ValueError("the ARM estimator needs the loss at the antithetic sample")
            estimate = (antithetic_loss.detach() - loss) * (u - 0.5)
        with torch.no_grad():
            if self.squash is Squash.SIGMOID:
                scale = self.k  # k * g'(k phi) / (pi (1 - pi)) with g' = pi (1 - pi)
            else:
                pi = self.prob_active()
                inside = (pi > 0) & (pi < 1)  # g' = 0 where the hard sigmoid saturates
                scale = torch.where(
                    inside, self.k * _HARD_SIGMOID_SLOPE / (pi * (1 - pi)).clamp_min(1e-12), 0.0
                )
            grad = scale * estimate
        return (grad * (self.phi - self.phi.detach())).sum()

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.phi.shape)}, drop_rate={self.drop_rate}, k={self.k:g}, "
            f"squash={self.squash.value}, estimator={self.estimator.value}"
        )


@contextmanager
def antithetic(gates: Iterable[ARMGate]) -> Iterator[None]:
    """Within this block the ARM ``gates`` return their antithetic samples.

    Examples:
        >>> gate = ARMGate((3,)); z = gate()
        >>> with antithetic([gate]):
        ...     z_anti = gate()
    """
    gates = list(gates)
    for gate in gates:
        gate.antithetic = True
    try:
        yield
    finally:
        for gate in gates:
            gate.antithetic = False
