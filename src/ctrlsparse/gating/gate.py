"""The interface every gate kind shares: a learnable parameter, P(z != 0), samples."""

from __future__ import annotations

import torch
from torch import nn


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

    def fusion_key(self) -> tuple | None:
        """None, or a key shared by gates of one kind and settings that can sample together
        (:meth:`~ctrlsparse.gating.hard_concrete.HardConcrete.sample_all`)."""
        return None

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep :attr:`parameter` inside :attr:`parameter_range` (call after an optimizer step)."""
        self.parameter.clamp_(*self.parameter_range)
