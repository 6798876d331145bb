"""What a run records at each logged step: :class:`GDAStep` (what a trainer's step returns)
and :class:`StepRecord` (one line of ``metrics.jsonl``).

Both are plain dataclasses of Python numbers, so tests build fake runs from them and
reports read them without torch.

Example:
    >>> step = GDAStep(loss=0.5, density=0.4, densities={"fc1": 0.4}, multipliers={"model": 0.1},
    ...                violations={"model": 0.1}, levels={"model": 0.3})
    >>> record = StepRecord.of(step, step_count=10, epoch=1)
    >>> StepRecord.from_dict(record.to_dict()) == record
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class GDAStep:
    """What one training step saw and did.

    Attributes:
        loss: task loss on the minibatch (without the gated L2 term).
        density: expected model density before the step.
        densities: expected density per gated layer before the step.
        multipliers: each constraint's multiplier in this step's Lagrangian (before the
            step's dual update; after a dual restart the next step shows 0).
        violations: value − level per constraint before the step (level 0 for penalties).
        levels: the level each constraint was held to at this step (the target schedule's).
        macs: expected MACs / dense MACs of each MACs constraint (``"macs"``,
            ``"macs:<layer>"``); empty without a MACs budget.
    """

    loss: float
    density: float
    densities: dict[str, float]
    multipliers: dict[str, float]
    violations: dict[str, float]
    levels: dict[str, float] = field(default_factory=dict)
    macs: dict[str, float] = field(default_factory=dict)


@dataclass
class StepRecord(GDAStep):
    """One line of ``metrics.jsonl``: a step's numbers with its place in the run.

    Attributes:
        step: steps done when it was recorded (1 for the first).
        epoch: the epoch it belongs to (1-based).
        test_error: the test error, on the record of each epoch's last step; else None.
    """

    step: int = 0
    epoch: int = 0
    test_error: float | None = None

    @classmethod
    def of(cls, step: GDAStep, step_count: int, epoch: int, test_error: float | None = None) -> StepRecord:
        """The record of ``step``, the ``step_count``-th step of the run, in ``epoch``."""
        values = {f.name: getattr(step, f.name) for f in fields(GDAStep)}
        return cls(**values, step=step_count, epoch=epoch, test_error=test_error)

    def to_dict(self) -> dict:
        """The JSON line; ``test_error`` only where it was measured."""
        data = {"step": self.step, "epoch": self.epoch, **{k: v for k, v in asdict(self).items()
                                                             if k not in ("step", "epoch")}}  # fmt: skip
        if data["test_error"] is None:
            del data["test_error"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StepRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
