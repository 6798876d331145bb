"""The constrained step inside trainers that own the loop.

- :mod:`ctrlsparse.integrations.transformers`: a callback for Hugging Face's ``Trainer``;
- :mod:`ctrlsparse.integrations.lightning`: a callback for ``lightning.Trainer``.

Both hand the trainer :meth:`GDA.as_optimizer <ctrlsparse.GDA.as_optimizer>` as its
optimizer: the trainer does the forward and backward passes, accumulation, clipping and
the LR schedule; the optimizer's ``step`` adds the constraints and updates the weights,
the gates and the multipliers; its ``state_dict`` carries GDA's state into the trainer's
checkpoints. Accelerate needs no module: ``accelerator.prepare(gda.as_optimizer())``
(docs/howto/loops.md).
"""
