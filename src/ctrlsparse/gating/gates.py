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

from collections.abc import Callable

import torch

from ctrlsparse.choices import Choice
from ctrlsparse.gating.arm import ARM_SCALE, ARMGate, Estimator, Squash, antithetic
from ctrlsparse.gating.gate import Gate
from ctrlsparse.gating.hard_concrete import LOG_ALPHA_RANGE, STRETCH, TEMPERATURE, HardConcrete


class MaskGate(Gate):
    """Fixed 0/1 gates: no learnable parameter, P(z != 0) is the mask itself.

    Gate-free methods that prune whole units (magnitude pruning of the same channel groups,
    :class:`~ctrlsparse.training.GroupMagnitudePruning`) use it so their units, counting and
    purge are exactly those of the gated runs they are compared with.

    Examples:
        >>> gate = MaskGate((3,))
        >>> gate.mask[1] = 0
        >>> gate().tolist()
        [1.0, 0.0, 1.0]
    """

    parameter_range = (0.0, 1.0)
    method = "mask"

    def __init__(self, shape: tuple[int, ...], drop_rate: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape))

    @property
    def parameter(self) -> torch.Tensor:
        return self.mask

    def prob_active(self) -> torch.Tensor:
        return self.mask

    def sample(self) -> torch.Tensor:
        return self.mask

    def deterministic(self) -> torch.Tensor:
        return self.mask

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}, active={int(self.mask.sum())}"


class GateKind(Choice):
    """Which gate :func:`~ctrlsparse.sparsify` attaches to each group."""

    HARD_CONCRETE = "hard_concrete"
    ARM = "arm"
    MASK = "mask"


GateKind._noun = "gate kind"

GateFactory = Callable[..., Gate]
"""``factory(shape, drop_rate=...)`` → a :class:`Gate`, e.g. ``functools.partial(ARMGate, k=5)``."""


def make_gate(gates: str | GateKind | GateFactory, shape: tuple[int, ...], drop_rate: float) -> Gate:
    """A gate tensor of kind ``gates`` (``"hard_concrete"``, ``"arm"`` or a factory).

    Examples:
        >>> make_gate("arm", (3,), 0.5).prob_active().shape
        torch.Size([3])
    """
    if callable(gates) and not isinstance(gates, str):
        return gates(shape, drop_rate=drop_rate)
    kind = GateKind.parse(gates)
    return {GateKind.HARD_CONCRETE: HardConcrete, GateKind.ARM: ARMGate, GateKind.MASK: MaskGate}[kind](
        shape, drop_rate
    )


__all__ = [
    "ARM_SCALE",
    "LOG_ALPHA_RANGE",
    "STRETCH",
    "TEMPERATURE",
    "ARMGate",
    "Estimator",
    "Gate",
    "GateFactory",
    "GateKind",
    "HardConcrete",
    "MaskGate",
    "Squash",
    "antithetic",
    "make_gate",
]
