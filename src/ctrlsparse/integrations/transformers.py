"""Hugging Face ``transformers.Trainer`` with a density constraint.

The Trainer gets :meth:`GDA.as_optimizer <ctrlsparse.GDA.as_optimizer>` as its optimizer
and :class:`SparsityCallback` among its callbacks. The Trainer computes the loss (the
model's own, or ``compute_loss_func``), backpropagates it, accumulates and clips the
gradients, and calls ``optimizer.step()``: that step adds the constraints' terms and
updates the weights, the gates and the multipliers. ``optimizer.pt`` in each checkpoint
holds GDA's state (multipliers, levels, the schedule's position, the feasibility
decision), so ``resume_from_checkpoint`` continues the constrained run where it stopped.

Examples:
    >>> from ctrlsparse.integrations.transformers import SparsityCallback  # doctest: +SKIP
    >>> model = cs.sparsify(model, example_input=batch)  # doctest: +SKIP
    >>> opt = cs.GDA(cs.SparsityProblem(model, target_density=0.3),
    ...              torch.optim.AdamW(model.parameters(), lr=5e-4),
    ...              total_steps=args.max_steps)  # doctest: +SKIP
    >>> trainer = Trainer(model, args, train_dataset=data)  # doctest: +SKIP
    >>> attach(trainer, opt)  # the optimizer and the callback  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

from transformers import TrainerCallback

from ctrlsparse.problem.gda import GDA


class SparsityCallback(TrainerCallback):
    """Checks that the Trainer steps this GDA over the run it was planned for, and adds the
    step's densities, multipliers, violations and levels to the Trainer's logs
    (:meth:`GDAStep.scalars <ctrlsparse.GDAStep.scalars>`; TensorBoard, W&B, ...).

    Raises (at ``on_train_begin``, before any step):
        ValueError: the Trainer's optimizer is not ``gda.as_optimizer()``, or the Trainer's
            number of optimizer steps differs from the GDA's ``total_steps``.

    Examples:
        >>> trainer = Trainer(model, args, optimizers=(opt.as_optimizer(), None),
        ...                   callbacks=[SparsityCallback(opt)])  # doctest: +SKIP
    """

    def __init__(self, gda: GDA) -> None:
        if not isinstance(gda, GDA):
            raise TypeError(f"SparsityCallback takes the run's ctrlsparse.GDA, got {type(gda).__name__}")
        self.gda = gda

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        facade = self.gda.as_optimizer()
        inner = optimizer
        while inner is not None and inner is not facade and hasattr(inner, "optimizer"):
            inner = inner.optimizer  # Accelerate's AcceleratedOptimizer wraps it
        if inner is not facade:
            raise ValueError(
                f"the Trainer's optimizer is {type(inner).__name__}, not this GDA: the constraint would "
                "never be applied. Pass Trainer(..., optimizers=(gda.as_optimizer(), None))"
            )
        if self.gda.total_steps != state.max_steps:
            raise ValueError(
                f"the GDA was planned for total_steps={self.gda.total_steps}, but this Trainer takes "
                f"{state.max_steps} optimizer steps (epochs x batches / gradient_accumulation_steps): "
                f"build it with GDA(..., total_steps={state.max_steps}), or set "
                "TrainingArguments(max_steps=...)"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        last = self.gda.as_optimizer().last
        if logs is None or last is None or "loss" not in logs:  # training logs only, not evaluation's
            return
        scalars = {k: v for k, v in last.scalars().items() if k != "loss"}
        logs.update(scalars)  # seen by the callbacks after this one (attach() puts it first)
        if state.log_history and state.log_history[-1].get("loss") == logs["loss"]:
            state.log_history[-1].update(scalars)  # the Trainer copied logs there before the callbacks


def attach(trainer, gda: GDA) -> SparsityCallback:
    """Constrain a built ``transformers.Trainer``: its optimizer becomes ``gda.as_optimizer()``
    and a :class:`SparsityCallback` goes first among its callbacks (so the reporting ones,
    TensorBoard or W&B, log the densities and multipliers too). Call it before ``train()``.

    Raises:
        ValueError: the Trainer already has another optimizer.

    Examples:
        >>> trainer = Trainer(model, args, train_dataset=data)  # doctest: +SKIP
        >>> opt = cs.GDA(problem, torch.optim.AdamW(model.parameters()), total_steps=1000)  # doctest: +SKIP
        >>> attach(trainer, opt)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """
    facade = gda.as_optimizer()
    if trainer.optimizer is not None and trainer.optimizer is not facade:
        raise ValueError(
            f"this Trainer already has an optimizer ({type(trainer.optimizer).__name__}); build it "
            "without optimizers=, or pass optimizers=(gda.as_optimizer(), None)"
        )
    trainer.optimizer = facade
    callback = SparsityCallback(gda)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback
