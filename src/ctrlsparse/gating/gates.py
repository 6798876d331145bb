"""Stochastic gates: one per group of parameters, with a closed-form P(gate != 0).

A gate ``z`` multiplies a group of parameters. Every gate kind shares the interface of
:class:`Gate`: a learnable :attr:`~Gate.parameter`, a differentiable
:meth:`~Gate.prob_active` (so the *expected* L0 norm is differentiable), a training
sample and a deterministic test-time gate.

- :class:`HardConcrete` (Louizos, Welling & Kingma, 2018, section 2.2): a
  reparameterized sample of the hard concrete distribution, which puts finite mass on
  exactly 0 and exactly 1; the loss gradient reaches ``log_alpha`` through the sample.
- :class:`ARMGate` (Li & Ji, 2019): an exactly binary Bernoulli gate. The loss
  gradient reaches ``phi`` through the ARM estimator (Yin & Zhou, 2019), which needs
  the loss at a second, antithetic gate sample; :class:`~ctrlsparse.SparsityProblem`
  computes it (under :func:`antithetic`) and adds :meth:`ARMGate.estimator_term`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ctrlsparse.choices import Choice

# Settings of Louizos et al. (2018), section 4: beta = 2/3, (gamma, zeta) = (-0.1, 1.1).
TEMPERATURE = 2.0 / 3.0
STRETCH = (-0.1, 1.1)
# log_alpha is clamped into this range after every primal step: beyond it P(active)
# saturates (sigmoid(+-8.4)) and Adam's normalised steps would push it without bound.
LOG_ALPHA_RANGE = (-10.0, 10.0)
# Keeps logit(u) finite when sampling u ~ U(0, 1).
_EPS = 1e-6


class Gate(nn.Module):
    """Interface of a tensor of independent stochastic gates.

    Subclasses implement :meth:`prob_active`, :meth:`sample` and :meth:`deterministic`
    and set :attr:`parameter_range`, the interval :class:`~ctrlsparse.GDA` clamps the
    learnable :attr:`parameter` into after every primal step.
    """

    parameter_range: tuple[float, float]
    method: str = "gates"
    """What a run's ``summary.json`` records as its ``method``."""

    @property
    def parameter(self) -> nn.Parameter:
        """The gates' learnable tensor (``log_alpha`` or ``phi``)."""
        raise NotImplementedError

    def prob_active(self) -> torch.Tensor:
        """P(z != 0) per gate, differentiable in :attr:`parameter`."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor:
        raise NotImplementedError

    def deterministic(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep :attr:`parameter` inside :attr:`parameter_range` (call after an optimizer step)."""
        self.parameter.clamp_(*self.parameter_range)


class HardConcrete(Gate):
    r"""A tensor of independent hard concrete gates.

    Training mode samples (eq. 10–11)

    .. math::
        u \sim \mathcal U(0,1),\quad s = \sigma\big((\log u - \log(1-u) + \log\alpha)/\beta\big),
        \quad z = \min(1, \max(0, s(\zeta-\gamma)+\gamma)),

    one sample per call (so one per minibatch when a layer calls it once per forward).
    Eval mode returns the deterministic test-time gate (eq. 13)
    :math:`\hat z = \min(1, \max(0, \sigma(\log\alpha)(\zeta-\gamma)+\gamma))`.

    Args:
        shape: shape of the gate tensor (``(n_groups,)`` for neuron gates, the weight's
            shape for weight gates).
        drop_rate: initial probability of a gate being dropped; ``log_alpha`` starts at
            ``log((1 - drop_rate) / drop_rate)`` plus N(0, 0.01²) noise (section 4).
        temperature: :math:`\beta`.
        stretch: :math:`(\gamma, \zeta)` with :math:`\gamma < 0` and :math:`\zeta > 1`.

    Example:
        >>> gate = HardConcrete((4,), drop_rate=0.5)
        >>> z = gate()  # a sample in [0, 1]^4 with exact zeros and ones
        >>> gate.prob_active().shape
        torch.Size([4])
    """

    parameter_range = LOG_ALPHA_RANGE
    method = "hard_concrete"

    def __init__(
        self,
        shape: tuple[int, ...] | int,
        drop_rate: float = 0.5,
        temperature: float = TEMPERATURE,
        stretch: tuple[float, float] = STRETCH,
    ) -> None:
        super().__init__()
        if not 0.0 < drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in (0, 1), got {drop_rate!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        gamma, zeta = stretch
        if not (gamma < 0.0 and zeta > 1.0):
            raise ValueError(f"stretch (gamma, zeta) needs gamma < 0 < 1 < zeta, got {stretch!r}")
        self.drop_rate = drop_rate
        self.temperature = temperature
        self.gamma, self.zeta = float(gamma), float(zeta)
        # Constant shift of eq. 12: P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)).
        self._prob_shift = temperature * math.log(-self.gamma / self.zeta)
        self.log_alpha = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``log_alpha`` around the value that keeps a gate with ``1 - drop_rate``."""
        mean = math.log(1.0 - self.drop_rate) - math.log(self.drop_rate)
        with torch.no_grad():
            self.log_alpha.normal_(mean, 1e-2)

    def prob_active(self) -> torch.Tensor:
        """P(z != 0) per gate, eq. 12 — differentiable in ``log_alpha``."""
        return torch.sigmoid(self.log_alpha - self._prob_shift)

    def sample(self) -> torch.Tensor:
        """A reparameterized hard concrete sample, eq. 10–11."""
        # logit(u) = log u - log(1 - u), with u clamped into [eps, 1 - eps]: one kernel.
        noise = torch.logit(torch.rand_like(self.log_alpha), eps=_EPS)
        s = torch.sigmoid((noise + self.log_alpha) / self.temperature)
        return torch.add(self.gamma, s, alpha=self.zeta - self.gamma).clamp_(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate, eq. 13."""
        return (torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    @property
    def parameter(self) -> nn.Parameter:
        return self.log_alpha

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.log_alpha.shape)}, drop_rate={self.drop_rate}, "
            f"temperature={self.temperature:.4g}, stretch=({self.gamma}, {self.zeta})"
        )


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

    Example:
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

    Example:
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


class GateKind(Choice):
    """Which gate :func:`~ctrlsparse.sparsify` attaches to each group."""

    HARD_CONCRETE = "hard_concrete"
    ARM = "arm"


GateKind._noun = "gate kind"

GateFactory = Callable[..., Gate]
"""``factory(shape, drop_rate=...)`` → a :class:`Gate`, e.g. ``functools.partial(ARMGate, k=5)``."""


def make_gate(gates: str | GateKind | GateFactory, shape: tuple[int, ...], drop_rate: float) -> Gate:
    """A gate tensor of kind ``gates`` (``"hard_concrete"``, ``"arm"`` or a factory).

    Example:
        >>> make_gate("arm", (3,), 0.5).prob_active().shape
        torch.Size([3])
    """
    if callable(gates) and not isinstance(gates, str):
        return gates(shape, drop_rate=drop_rate)
    kind = GateKind.parse(gates)
    return HardConcrete(shape, drop_rate) if kind is GateKind.HARD_CONCRETE else ARMGate(shape, drop_rate)
