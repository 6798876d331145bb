"""``lightning.Trainer`` with a density constraint.

The LightningModule's ``configure_optimizers`` returns :meth:`GDA.as_optimizer
<ctrlsparse.GDA.as_optimizer>`, and :class:`SparsityCallback` goes in the Trainer's
callbacks. Lightning runs the forward and backward passes inside the optimizer's closure
(with its gradient clipping and accumulation) and calls ``optimizer.step(closure)``: that
step adds the constraints' terms and updates the weights, the gates and the multipliers.
GDA's state travels in the checkpoint's optimizer state; the callback's own state is the
random number generator's, which draws the gates' noise (Lightning does not restore it),
so a run resumed from an epoch-end checkpoint ends bit-identical to an uninterrupted one.

Examples:
    >>> class Module(lightning.LightningModule):  # doctest: +SKIP
    ...     def configure_optimizers(self):
    ...         return self.gda.as_optimizer()
    >>> trainer = lightning.Trainer(max_epochs=5, callbacks=[SparsityCallback(gda)])  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from ctrlsparse.problem.gda import GDA


class SparsityCallback(Callback):
    """Checks that the Trainer steps this GDA over the run it was planned for, logs the
    step's densities, multipliers, violations and levels (``pl_module.log_dict``), and
    keeps the gate noise's random state in the checkpoints.

    Raises (at ``on_fit_start``, before any step):
        ValueError: the module's optimizer is not ``gda.as_optimizer()``, or the Trainer's
            number of optimizer steps (``estimated_stepping_batches``) differs from the
            GDA's ``total_steps``.

    Examples:
        >>> trainer = lightning.Trainer(max_epochs=5, callbacks=[SparsityCallback(gda)])  # doctest: +SKIP
    """

    def __init__(self, gda: GDA) -> None:
        if not isinstance(gda, GDA):
            raise TypeError(f"SparsityCallback takes the run's ctrlsparse.GDA, got {type(gda).__name__}")
        self.gda = gda

    def on_fit_start(self, trainer, pl_module) -> None:
        facade = self.gda.as_optimizer()
        found = [getattr(opt, "_optimizer", opt) for opt in trainer.optimizers]
        if facade not in found:
            names = ", ".join(type(opt).__name__ for opt in found) or "none"
            raise ValueError(
                f"the module's optimizers are {names}, not this GDA: the constraint would never be "
                "applied. Return gda.as_optimizer() from configure_optimizers()"
            )
        steps = trainer.estimated_stepping_batches
        if self.gda.total_steps != steps:
            raise ValueError(
                f"the GDA was planned for total_steps={self.gda.total_steps}, but this Trainer takes "
                f"{steps} optimizer steps (trainer.estimated_stepping_batches): build it with "
                f"GDA(..., total_steps={steps})"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = self.gda.as_optimizer().last
        if last is not None:
            pl_module.log_dict({k: v for k, v in last.scalars().items() if k != "loss"}, on_step=True)

    def state_dict(self) -> dict:
        return {"rng": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["rng"])
