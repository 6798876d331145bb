"""GDA as a ``torch.optim.Optimizer``, for loops that call ``optimizer.step()`` themselves.

Hugging Face's ``Trainer``, Lightning and Accelerate own the backward pass, gradient
accumulation, clipping and the learning-rate scheduler, and then call ``optimizer.step()``
and save ``optimizer.state_dict()`` in their checkpoints. :class:`GDAOptimizer` is what
they get: its ``step`` is :meth:`GDA.step <ctrlsparse.GDA.step>` on the gradients they
accumulated (the constraints' terms are added there, then the primal and dual updates),
its parameter groups and state are the primal optimizer's (so schedulers and gradient
clipping see the weights and the gates), and its ``state_dict`` is GDA's whole state:
multipliers, levels, the schedule's position and the feasibility decision ride along in
the trainer's own checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ctrlsparse.runs.records import GDAStep

if TYPE_CHECKING:
    from ctrlsparse.problem.gda import GDA


class GDAOptimizer(torch.optim.Optimizer):
    """A GDA behind the ``torch.optim.Optimizer`` interface (:meth:`GDA.as_optimizer
    <ctrlsparse.GDA.as_optimizer>` builds it).

    ``step(closure)`` runs the closure (Lightning's forward and backward) and records its
    loss for the logs; ``step()`` alone steps on the gradients already in ``.grad``.
    :attr:`last` is the :class:`~ctrlsparse.GDAStep` of the last step.

    Examples:
        >>> opt = cs.GDA(problem, torch.optim.AdamW(model.parameters()), total_steps=100)  # doctest: +SKIP
        >>> trainer = Trainer(model, args, optimizers=(opt.as_optimizer(), None))  # doctest: +SKIP
    """

    def __init__(self, gda: GDA) -> None:
        self.gda = gda
        self.last: GDAStep | None = None
        # Not Optimizer.__init__: the parameter groups and state are the primal optimizer's own
        # objects (a scheduler built on this optimizer then schedules them); __setstate__ sets
        # up the hooks torch's Optimizer machinery expects.
        torch.optim.Optimizer.__setstate__(self, {"defaults": gda.primal_optimizer.defaults})

    @property
    def param_groups(self) -> list[dict]:
        return self.gda.primal_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict]) -> None:
        self.gda.primal_optimizer.param_groups = groups

    @property
    def state(self) -> dict:
        return self.gda.primal_optimizer.state

    @state.setter
    def state(self, state: dict) -> None:
        self.gda.primal_optimizer.state = state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.gda.primal_optimizer.zero_grad(set_to_none)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if isinstance(loss, torch.Tensor):
                self.gda.observe(loss)
        self.last = self.gda.step()
        return loss

    def state_dict(self) -> dict:
        return self.gda.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.gda.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"GDAOptimizer({type(self.gda.primal_optimizer).__name__}, steps={self.gda.steps})"
