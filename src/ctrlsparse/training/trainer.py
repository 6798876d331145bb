"""The training loop: epochs of GDA steps, evaluation with test-time gates, a run directory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ctrlsparse.errors import NonFiniteLossError
from ctrlsparse.gating.counting import count, macs_summary
from ctrlsparse.modelio import Inputs, call_model, head, logits, to_device
from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.runs import store as runs
from ctrlsparse.runs.records import GDAStep, RunSummary
from ctrlsparse.training import distributed
from ctrlsparse.training.monitor import Monitor, require_tensorboard
from ctrlsparse.training.path import DensityPath
from ctrlsparse.training.resume import Checkpointer, Position


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Inputs, torch.Tensor]],
    output_fn: Callable[[Any], torch.Tensor] | None = None,
) -> float:
    """Classification error (fraction in [0, 1]; of next tokens for a language model) with the
    deterministic test-time gates (eq. 13).

    Inputs may be a tensor, a tuple or a dict of tensors (:mod:`ctrlsparse.modelio`).
    ``output_fn`` maps the model's output to logits; by default the output itself, its
    ``.logits`` (Hugging Face ``ModelOutput``) or its first element.

    Examples:
        >>> error = evaluate(model, Batches(x_test, y_test, 512))  # doctest: +SKIP
        >>> error = evaluate(bert, batches, output_fn=lambda out: out.logits)  # doctest: +SKIP
    """
    output_fn = output_fn or logits
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wrong = total = 0
    try:
        for x, y in batches:
            x, y = to_device(x, device), y.to(device)
            wrong += int((output_fn(call_model(model, x)).argmax(-1) != y).sum())
            total += y.numel()  # one label per example, or per token of a language model
    finally:
        model.train(was_training)
    return wrong / max(total, 1)


class Trainer(Protocol):
    """What :func:`fit` drives: :class:`~ctrlsparse.GDA`, :class:`~ctrlsparse.training.methods.L1RDA`,
    :class:`~ctrlsparse.training.methods.MagnitudePruning`, or your own."""

    model: nn.Module
    steps_per_epoch: int | None

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> GDAStep: ...

    def finish(self) -> bool:
        """After the last step; True when it changed the model's outputs (e.g. a last pruning)."""
        ...

    def summary(self) -> RunSummary: ...

    # Optional: ``begin(total_steps, steps_per_epoch)`` before the first step (GDA fixes its
    # schedules there); ``decision_due`` and ``decide()`` for a feasibility phase.


def summarize(trainer: Trainer, example_input: Inputs, test_error: float | None) -> RunSummary:
    """Final numbers of a run, as written to ``summary.json``: the trainer's own, test error, counts.

    ``macs`` holds the dense MACs (Linear and convolution layers, one example), the expected
    ones under the gates (eq. 12, independent gates) and the realized ones: those of the
    purged model, counted by ``torch.utils.flop_counter`` (see :func:`~ctrlsparse.gating.counting.macs_of`).
    """
    summary = trainer.summary()
    total, _ = count(trainer.model, example_input)
    summary.test_error = test_error
    summary.params = {"dense": total.params_dense, "remaining": total.params_remaining}
    summary.macs = macs_summary(trainer.model, example_input, total)
    return summary


def start_feasibility_phase(trainer: Trainer, measure: Callable[[], float] | None = None) -> None:
    """Decide the trainer's gates when its feasibility phase is due, with the test error
    (``measure()``) on both sides of the decision in ``decision.test_error_before`` and
    ``test_error_decided``. A trainer without a phase, or not yet at it, is left alone.

    Examples:
        >>> start_feasibility_phase(gda, lambda: evaluate(model, test_batches))  # doctest: +SKIP
    """
    if not getattr(trainer, "decision_due", False):
        return
    before = measure() if measure is not None else None
    decision = trainer.decide()
    decision.test_error_before = before
    if measure is not None:
        decision.test_error_decided = measure()


def fit(
    trainer: Trainer,
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    test_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    run_dir: str | Path | None = None,
    log_every: int = 1,
    config: dict | None = None,
    progress: bool = True,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
    path: DensityPath | Sequence[float] | Mapping | None = None,
) -> RunSummary:
    """Train for ``epochs`` epochs of ``trainer.step`` (e.g. :meth:`GDA.step`), evaluating after each epoch.

    Before the first step it tells the trainer the run's length (``trainer.begin``: GDA's
    target ramp, dual step and feasibility phase count in fractions of it). At the start of
    GDA's feasibility phase it measures the test error before and after the gates are
    decided (``summary.feasibility``, :func:`start_feasibility_phase`).

    Writes, when ``run_dir`` is given: ``config.json`` (``config``) at the start,
    ``metrics.jsonl`` as training goes (every ``log_every`` steps and at every epoch's
    end, that record with ``test_error``), a checkpoint (``checkpoint.pt``, the one before
    kept as ``checkpoint.prev.pt``) at every epoch's end and every ``checkpoint_every``
    steps, then ``summary.json`` and ``model.pt``. ``output_fn`` is passed to
    :func:`evaluate`; ``lr_scheduler`` (e.g. ``MultiStepLR`` on the primal optimizer) is
    stepped at the end of every epoch. ``progress`` shows a tqdm bar (about ten lines a run
    when stderr is not a terminal); ``tensorboard=DIR`` also writes every logged record as
    TensorBoard scalars (:class:`~ctrlsparse.training.monitor.TensorBoard`).

    ``path`` (a :class:`~ctrlsparse.training.path.DensityPath`, or its list of targets,
    loosest first) makes the run a density path: it lowers the GDA's targets point by point
    and gives each point a decided, trained model of its own, in ``run_dir/<point>/`` with
    ``summary.json`` and ``model.pt``, and ``run_dir/path.json`` listing them all (the
    points are also in ``path.points``). The run itself has no feasibility phase then.

    A ``run_dir`` that already holds a run is refused unless ``resume=True`` (continue from
    its last complete checkpoint; ``config`` must equal the one it was started with) or
    ``overwrite=True`` (start afresh). A resumed run ends bit-identical to an uninterrupted
    one on CPU. Batches with ``state_dict``/``load_state_dict`` (like
    :class:`~ctrlsparse.data.Batches`) resume mid-epoch; any other iterable resumes at the
    last epoch boundary (mid-epoch checkpoints are not taken for it).

    The loop is short and built from parts you can reuse in a loop of your own:
    :class:`~ctrlsparse.training.resume.Checkpointer` (the run directory),
    :class:`~ctrlsparse.training.monitor.Monitor` (records, TensorBoard, progress),
    :func:`start_feasibility_phase` and :func:`evaluate`.

    Raises:
        NonFiniteLossError: the loss or a violation became NaN/inf; the message names the
            step, which was not applied; ``metrics.jsonl`` and the last checkpoint are intact.
        RunDirectoryError: ``run_dir`` is in use and neither ``resume`` nor ``overwrite`` is set.
        CheckpointError: ``resume`` without a usable checkpoint, or with another configuration.

    Returns:
        the summary (see :func:`summarize`).

    Examples:
        >>> summary = fit(GDA(problem), Batches(x, y, 128, shuffle=True), epochs=10,
        ...               test_batches=Batches(x_test, y_test, 512), run_dir="runs/mine")  # doctest: +SKIP
        >>> summary = fit(opt, batches, epochs=10, run_dir="runs/mine", resume=True)  # doctest: +SKIP
    """
    _check_settings(epochs, log_every, checkpoint_every, run_dir, resume, overwrite)
    rank, world = distributed.context()
    path = None if path is None else _bound_path(path, trainer, world, progress)
    if tensorboard is not None:  # before any work: a missing package fails here
        require_tensorboard()
    keeper = None if run_dir is None else Checkpointer(run_dir, trainer, lr_scheduler, train_batches, config,
                                                       epochs, world)  # fmt: skip
    resuming = keeper is not None and keeper.prepare(resume, overwrite)
    model = trainer.model
    if world > 1 and hasattr(train_batches, "shard"):  # each rank takes its share of every batch
        train_batches.shard(rank, world)
    steps_per_epoch = _tell_length(trainer, train_batches, epochs)
    at, offset = (Position(), None) if keeper is None else keeper.open(resuming, checkpoint_every)
    if path is not None:
        path.start(trainer, at.step, run_dir)
    if world > 1:  # after restoring: DDP registers the parameters that learn (decided gates do not)
        distributed.wrap(trainer)
    monitor = Monitor(
        run_dir, offset, tensorboard, progress, epochs, steps_per_epoch, at.step, rank, log_every
    )
    measure = None if test_batches is None else partial(evaluate, model, test_batches, output_fn)
    device = next(model.parameters()).device
    started = time.monotonic() - at.train_seconds
    try:
        for epoch in range(at.epoch, epochs + 1):
            model.train()
            first = at.batches_done + 1 if epoch == at.epoch else 1
            for batch, (x, y) in enumerate(train_batches, start=first):
                x, y = to_device(x, device), y.to(device)
                at.example_input = head(x) if at.example_input is None else at.example_input
                start_feasibility_phase(trainer, measure)
                step = _step(trainer, x, y, at.step + 1, epoch, run_dir)
                at.step += 1
                end_of_epoch = batch == steps_per_epoch
                error = measure() if end_of_epoch and measure is not None else None
                at.test_error = at.test_error if error is None else error
                monitor.record(step, at.step, epoch, batch, end_of_epoch, error)
                took = path is not None and path.due(at.step)
                if took:  # the point's model is trained on the side; the run is put back as it was
                    path.take(trainer, train_batches, measure, at.example_input, run_dir, config, summarize)
                due = keeper is not None and keeper.mid_epoch_due(at.step, end_of_epoch, checkpoint_every)
                if due or (took and keeper is not None and keeper.mid_epoch and not end_of_epoch):
                    keeper.save(at, monitor.offset, epoch, batch, time.monotonic() - started)
            if lr_scheduler is not None:
                lr_scheduler.step()
            distributed.check_identical(trainer, epoch)
            if keeper is not None:
                keeper.save(at, monitor.offset, epoch + 1, 0, time.monotonic() - started)
    finally:
        monitor.close()
    if at.example_input is None:
        raise ValueError("train_batches yielded no minibatch")
    test_error = measure() if trainer.finish() and measure is not None else at.test_error
    summary = summarize(trainer, at.example_input, test_error)
    summary.steps, summary.train_seconds, summary.world_size = at.step, time.monotonic() - started, world
    if run_dir is not None and rank == 0:
        runs.write_summary(run_dir, summary)
        torch.save(model.state_dict(), Path(run_dir) / runs.MODEL)
    return summary


def _check_settings(epochs, log_every, checkpoint_every, run_dir, resume, overwrite) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1 or None, got {checkpoint_every!r}")
    if run_dir is None and (resume or overwrite or checkpoint_every):
        raise ValueError("resume, overwrite and checkpoint_every need a run_dir")


def _bound_path(path, trainer: Trainer, world: int, progress: bool) -> DensityPath:
    """The density path, checked against the trainer's problem before any work (one process only)."""
    path = DensityPath.of(path)
    if world > 1:
        raise ValueError("a density path runs in one process (its points' training is not distributed)")
    path.bind(trainer)
    path.progress = progress
    return path


def _tell_length(trainer: Trainer, batches, epochs: int) -> int:
    """Tell the trainer the run's length (schedules, dual step, feasibility phase); batches
    per epoch, 0 when the batches have no length."""
    steps_per_epoch = len(batches) if isinstance(batches, Sized) else 0
    if trainer.steps_per_epoch is None:  # target schedules and pruning epochs count in epochs
        trainer.steps_per_epoch = steps_per_epoch or None
    if hasattr(trainer, "begin"):
        trainer.begin(epochs * steps_per_epoch if steps_per_epoch else None, steps_per_epoch or None)
    return steps_per_epoch


def _step(trainer: Trainer, x, y, step_count: int, epoch: int, run_dir: Path | None) -> GDAStep:
    """``trainer.step(x, y)``; a non-finite loss stops the run with where its files are."""
    try:
        step = trainer.step(x, y)
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error} (epoch {epoch}){_kept(run_dir)}") from None
    if not math.isfinite(step.loss):  # trainers that do not check before updating
        raise NonFiniteLossError(
            f"loss became {step.loss} at step {step_count} (epoch {epoch}){_kept(run_dir)}"
        )
    return step


def _kept(run_dir: Path | None) -> str:
    if run_dir is None:
        return "; stopping"
    kept = run_dir / checkpoints.CHECKPOINT
    return f"; metrics so far are in {run_dir / runs.METRICS}" + (
        f", the last good checkpoint is {kept} (--resume continues from it)" if kept.exists() else ""
    )
