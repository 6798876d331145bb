"""What :func:`~ctrlsparse.fit` saves in a checkpoint and how it continues from one.

A checkpoint taken after step ``s`` holds the model, the trainer (:meth:`GDA.state_dict`:
optimizers, multipliers, levels, counters), the learning-rate schedule, the data order
(the batches' ``state_dict``: shuffling generator at the epoch's start and the position in
it), every global random number generator, the length of ``metrics.jsonl`` and the run's
configuration. Restoring all of it makes the continued run compute exactly what the
uninterrupted one would have (bit for bit on CPU with the same threads and world size).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.runs import store as runs
from ctrlsparse.runs.checkpoint import CheckpointError, rng_state, set_rng_state
from ctrlsparse.training import distributed


@dataclass
class Position:
    """Where a run is: ``step`` steps done, in ``epoch`` (1-based) after ``batches_done`` of
    its batches; the last test error, the example input the summary counts with, and the
    training time so far."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0
    test_error: float | None = None
    example_input: Any = None
    train_seconds: float = 0.0


class Checkpointer:
    """:func:`~ctrlsparse.fit`'s run directory: refusing or clearing a used one, a fresh run's
    ``config.json``, checkpoints (:func:`capture`) and continuing from the last (:func:`restore`).

    Every rank builds one and calls :meth:`save` (the checkpoint gathers every rank's random
    state); rank 0 alone writes.

    Examples:
        >>> keeper = Checkpointer("runs/mine", gda, None, batches, config, epochs=10)  # doctest: +SKIP
        >>> resuming = keeper.prepare(resume=True, overwrite=False)  # doctest: +SKIP
        >>> at, metrics_offset = keeper.open(resuming, checkpoint_every=None)  # doctest: +SKIP
    """

    def __init__(
        self, run_dir: str | Path, trainer, lr_scheduler, batches, config: dict | None, epochs: int,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        self.run_dir = Path(run_dir)
        self.trainer, self.lr_scheduler, self.batches = trainer, lr_scheduler, batches
        self.config, self.epochs, self.world_size = config, epochs, world_size
        self.mid_epoch = hasattr(batches, "state_dict") and hasattr(batches, "load_state_dict")
        """Whether the batches can resume mid-epoch (else checkpoints are taken at epoch ends only)."""

    def prepare(self, resume: bool, overwrite: bool) -> bool:
        """Check the run directory (rank 0 decides; its refusal stops every rank); True when resuming.

        Raises:
            RunDirectoryError: the directory holds a run and neither ``resume`` nor ``overwrite``.
        """
        return distributed.on_rank0(lambda: checkpoints.prepare_run_dir(self.run_dir, resume, overwrite))

    def open(self, resuming: bool, checkpoint_every: int | None) -> tuple[Position, int | None]:
        """Where the run starts: a fresh run's position (its directory and ``config.json``
        written by rank 0), or the last checkpoint's, with the length of ``metrics.jsonl`` it
        recorded (None for a fresh run)."""
        if checkpoint_every and not self.mid_epoch:
            warnings.warn(
                f"{type(self.batches).__name__} has no state_dict: checkpoints are taken at epoch ends only",
                stacklevel=3,
            )
        if resuming:
            return self.restore()
        if distributed.context()[0] == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            runs.write_json(self.run_dir / runs.CONFIG, self.config or {})
        return Position(), None

    def mid_epoch_due(self, step: int, end_of_epoch: bool, checkpoint_every: int | None) -> bool:
        """Whether to checkpoint after ``step`` inside an epoch (epoch ends always are)."""
        return not end_of_epoch and self.mid_epoch and bool(checkpoint_every) and step % checkpoint_every == 0

    def restore(self) -> tuple[Position, int]:
        """Load the last complete checkpoint into the run; its position and the length of
        ``metrics.jsonl`` it recorded."""
        state = checkpoints.load_checkpoint(self.run_dir)
        model = self.trainer.model
        at = restore(state, self.trainer, model, self.lr_scheduler, self.batches, self.config, self.epochs,
                     self.world_size)  # fmt: skip
        return at, state["metrics_offset"]

    def save(
        self, at: Position, metrics_offset: int, epoch: int, batches_done: int, train_seconds: float
    ) -> None:
        """Checkpoint the run where it continues, ``epoch`` after ``batches_done`` of its batches
        (a collective: every rank calls it)."""
        at.epoch, at.batches_done, at.train_seconds = epoch, batches_done, train_seconds
        state = capture(self.trainer, self.trainer.model, self.lr_scheduler, self.batches, at, metrics_offset,
                        self.config, self.epochs, self.world_size)  # fmt: skip
        distributed.on_rank0(lambda: checkpoints.save_checkpoint(self.run_dir, state))


def _normal(config: dict | None) -> Any:
    return json.loads(json.dumps(config, sort_keys=True))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix or "config": data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return flat


def config_differences(saved: dict | None, given: dict | None) -> list[str]:
    """``"section.key: saved → given"`` for every setting that differs.

    Examples:
        >>> config_differences({"train": {"seed": 0}}, {"train": {"seed": 1}})
        ['train.seed: 0 → 1']
    """
    old, new = _flatten(_normal(saved)), _flatten(_normal(given))
    missing = object()
    return [
        f"{key}: {old.get(key, '(unset)')} → {new.get(key, '(unset)')}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]


def capture(
    trainer, model: nn.Module, lr_scheduler, batches, position: Position, metrics_offset: int,
    config: dict | None, epochs: int, world_size: int,
) -> dict:  # fmt: skip
    """The checkpoint of a run at ``position``."""
    return {
        "step": position.step,
        "epoch": position.epoch,
        "batches_done": position.batches_done,
        "epochs": epochs,
        "world_size": world_size,
        "config": json.dumps(_normal(config), sort_keys=True),
        "model": model.state_dict(),
        "trainer": trainer.state_dict() if hasattr(trainer, "state_dict") else None,
        "lr_scheduler": None if lr_scheduler is None else lr_scheduler.state_dict(),
        "data": batches.state_dict() if hasattr(batches, "state_dict") else None,
        "rng": distributed.gather(rng_state()),  # one per rank (a collective: every rank calls capture)
        "metrics_offset": metrics_offset,
        "test_error": position.test_error,
        "example_input": position.example_input,
        "train_seconds": position.train_seconds,
    }


def restore(
    state: dict, trainer, model: nn.Module, lr_scheduler, batches, config: dict | None, epochs: int,
    world_size: int,
) -> Position:  # fmt: skip
    """Load a checkpoint into a freshly built run (each rank its own RNG states); refuse one
    whose configuration, number of epochs or world size differs.

    Raises:
        CheckpointError: the configuration, the number of epochs or the world size differ
            (named), or the checkpoint lacks state this run needs.
    """
    differences = config_differences(json.loads(state["config"]), config)
    if state["epochs"] != epochs:
        differences.append(f"epochs: {state['epochs']} → {epochs}")
    if state["world_size"] != world_size:
        differences.append(f"world size: {state['world_size']} → {world_size} processes")
    if differences:
        raise CheckpointError(
            "cannot resume: this run's setup differs from the checkpoint's ("
            + "; ".join(differences)
            + "). Resume with the same settings, or start afresh with --overwrite"
        )
    if state["trainer"] is not None:
        if not hasattr(trainer, "load_state_dict"):
            raise CheckpointError(f"{type(trainer).__name__} has no load_state_dict: it cannot resume")
        trainer.load_state_dict(state["trainer"])  # before the model: pruning masks need their slots
    model.load_state_dict(state["model"])
    if lr_scheduler is not None and state["lr_scheduler"] is not None:
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    resumable = state["data"] is not None and hasattr(batches, "load_state_dict")
    if state["batches_done"] and not resumable:
        raise CheckpointError("the checkpoint is mid-epoch but the training batches cannot resume there")
    if resumable:
        batches.load_state_dict(state["data"])
    set_rng_state(state["rng"][distributed.context()[0]])
    return Position(
        state["step"], state["epoch"], state["batches_done"], state["test_error"], state["example_input"],
        state["train_seconds"],
    )  # fmt: skip
