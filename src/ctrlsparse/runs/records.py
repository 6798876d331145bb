"""What a run records at each logged step: :class:`GDAStep` (what a trainer's step returns)
and :class:`StepRecord` (one line of ``metrics.jsonl``).

Both are plain dataclasses of Python numbers, so tests build fake runs from them and
reports read them without torch.

Examples:
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
    """What one training step saw and did (what :meth:`GDA.step <ctrlsparse.GDA.step>` returns).

    Examples:
        >>> step = GDAStep(loss=0.5, density=0.4, densities={"fc1": 0.4}, multipliers={"model": 0.1},
        ...                violations={"model": 0.1})
        >>> step.violations["model"] > 0  # above its level: the multiplier will grow
        True

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

    def scalars(self) -> dict[str, float]:
        """Flat ``{tag: value}``: ``loss``, ``density/model``, ``density/<layer>``,
        ``multiplier/<constraint>``, ``violation/<constraint>``, ``level/<constraint>`` and
        ``macs/<constraint>``: the TensorBoard tags, and the keys the trainer integrations log.

        Examples:
            >>> GDAStep(0.5, 0.4, {"fc1": 0.4}, {"model": 0.1}, {"model": 0.1}).scalars()["multiplier/model"]
            0.1
        """
        scalars = {"loss": self.loss, "density/model": self.density}
        groups = {"density": self.densities, "multiplier": self.multipliers,
                  "violation": self.violations, "level": self.levels, "macs": self.macs}  # fmt: skip
        for prefix, values in groups.items():
            scalars.update({f"{prefix}/{name}": value for name, value in values.items()})
        return scalars


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


class SummaryFormatError(ValueError):
    """A ``summary.json`` lacks a key every run records, or holds a value of the wrong kind."""


@dataclass
class RunSummary:
    """A run's final numbers: the one schema of ``summary.json``.

    The trainers build it (:meth:`GDA.summary <ctrlsparse.GDA.summary>` and the other
    methods' ``summary()``), ``fit`` completes and returns it, and
    :func:`~ctrlsparse.runs.load_run` reads it back; nothing else writes the file.

    Attributes:
        method: the gate kind(s) (``"hard_concrete"``, ``"arm"``, ``"l1_rda"``, ...).
        mode: ``"constrained"``, ``"penalized"`` or ``"pruned"``.
        targets: ε per density constraint (``"model"`` or a layer); empty when penalized.
        penalties: λ per penalized constraint.
        density: expected model density at the end (eq. 12).
        densities: expected density per gated layer.
        realized_density: fraction of sparsifiable parameters whose test-time gate (eq. 13)
            is non-zero.
        realized_densities: the same per gated layer.
        realized: realized value of each constraint (density or MACs fraction).
        multipliers: each constraint's final multiplier.
        test_error: final test error, or None without test data.
        params: ``{"dense", "remaining"}`` parameter counts.
        macs: ``{"dense", "expected", "realized", ...}`` MACs for one example.
        feasibility: what the feasibility phase decided, or None.
        settings: the horizon settings GDA chose (total steps, ramp, dual optimizer, ...).
        macs_targets: ε per MACs constraint.
        macs_penalties: λ per penalized MACs term.
        steps: steps trained.
        train_seconds: wall-clock training time (excluded from bit-identity checks).
        world_size: processes the run trained in.
        tuning_runs: on the run ``tune-penalty`` picked, the number of full runs it took.
        tuning_target: on that run, the density the search aimed at.
        perplexity: a language model's validation perplexity (:func:`~ctrlsparse.training.lm.perplexity`).

    Examples:
        >>> s = RunSummary(method="hard_concrete", mode="constrained", targets={"model": 0.3},
        ...                penalties={}, density=0.3, densities={"fc1": 0.3}, realized_density=0.29)
        >>> RunSummary.from_dict(s.to_dict()) == s
        True
        >>> RunSummary.from_dict({"mode": "constrained", "targets": {}, "penalties": {}, "density": 0.3})
        Traceback (most recent call last):
        ...
        ctrlsparse.runs.records.SummaryFormatError: missing keys densities, realized_density
    """

    method: str
    mode: str
    targets: dict[str, float]
    penalties: dict[str, float]
    density: float
    densities: dict[str, float]
    realized_density: float
    realized_densities: dict[str, float] = field(default_factory=dict)
    realized: dict[str, float] = field(default_factory=dict)
    multipliers: dict[str, float] = field(default_factory=dict)
    test_error: float | None = None
    params: dict[str, int] = field(default_factory=dict)
    macs: dict = field(default_factory=dict)
    feasibility: dict | None = None
    settings: dict = field(default_factory=dict)
    macs_targets: dict[str, float] = field(default_factory=dict)
    macs_penalties: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    train_seconds: float = 0.0
    world_size: int = 1
    tuning_runs: int | None = None
    tuning_target: float | None = None
    perplexity: float | None = None

    REQUIRED = ("mode", "targets", "penalties", "density", "densities", "realized_density")

    def all_targets(self) -> dict[str, float]:
        """ε of every constraint: density targets, then MACs budgets."""
        return {**self.targets, **self.macs_targets}

    def all_penalties(self) -> dict[str, float]:
        """λ of every penalized term: density, then MACs."""
        return {**self.penalties, **self.macs_penalties}

    def to_dict(self) -> dict:
        """The JSON object; tuning fields only on a tuned run, perplexity only on a language model's."""
        data = asdict(self)
        for key in ("tuning_runs", "tuning_target", "perplexity"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        """Read a ``summary.json`` object; keys this version does not know are ignored.

        Raises:
            SummaryFormatError: naming the missing keys, or a key whose value has the wrong kind.
        """
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise SummaryFormatError(f"missing keys {', '.join(missing)}")
        for key in ("targets", "penalties", "densities"):
            if not isinstance(data[key], dict):
                raise SummaryFormatError(f"{key!r} should be an object, got {data[key]!r}")
        for key in ("density", "realized_density"):
            if not isinstance(data[key], int | float):
                raise SummaryFormatError(f"{key!r} should be a number, got {data[key]!r}")
        optional = ("test_error", "feasibility", "tuning_runs", "tuning_target")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and (v is not None or k in optional)}
        values.setdefault("method", "hard_concrete")
        return cls(**values)
