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
from dataclasses import dataclass
from typing import Any

from torch import nn

from ctrlsparse.runs.checkpoint import CheckpointError, rng_state, set_rng_state
from ctrlsparse.training import distributed


@dataclass
class Position:
    """Where a run continues: ``epoch`` (1-based) after ``batches_done`` of its batches."""

    step: int
    epoch: int
    batches_done: int
    test_error: float | None
    example_input: Any
    train_seconds: float


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
