"""Target schedules: the level each constraint asks for as training goes.

The final level is always the target ε. Every schedule starts from the value the
model had at its first step (``initial``):

- ``fixed``: ε from the start.
- ``linear`` (the default of :class:`~ctrlsparse.GDA`): from ``initial`` to ε, updated
  every step, over a ``fraction`` of the run's steps (default a third) or over ``epochs``
  epochs.
- ``geometric``: ``initial · factor^epoch``, never below ε (updated once per epoch).
- ``dynamic``: multiply the level by ``factor`` only after an epoch that ended with
  the constraint satisfied (value ≤ level); "tighten once the current level is met".

The schedule owns the levels in force (:attr:`TargetSchedule.levels`): it alone writes
them, the :class:`~ctrlsparse.SparsityProblem` reads them (``problem.levels``, read-only),
and the feasibility phase asks the schedule to hold them at ε (:meth:`TargetSchedule.hold`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctrlsparse.choices import Choice


class ScheduleKind(Choice):
    FIXED = "fixed"
    LINEAR = "linear"
    GEOMETRIC = "geometric"
    DYNAMIC = "dynamic"


ScheduleKind._noun = "schedule"

DEFAULT_RAMP = 1 / 3
"""Default length of the linear ramp: the first third of the run (docs/dynamics.md, docs/control.md)."""


@dataclass
class TargetSchedule:
    """How a constraint's level moves from the initial density to its target ε.

    Args:
        kind: ``"fixed"``, ``"linear"``, ``"geometric"`` or ``"dynamic"``.
        epochs: length of the linear ramp in epochs; None ramps over ``fraction`` of the run.
        factor: shrink factor per epoch of the geometric and dynamic schedules, in (0, 1).
        fraction: length of the linear ramp as a fraction of the run's steps, in (0, 1]
            (used when ``epochs`` is None).

    Examples:
        >>> s = TargetSchedule("linear", epochs=4)
        >>> [round(s.level(e, target=0.2, initial=1.0), 2) for e in range(6)]
        [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]
        >>> TargetSchedule("linear", fraction=0.25).ramp_steps(total_steps=1000)
        250
    """

    kind: ScheduleKind | str = ScheduleKind.LINEAR
    epochs: int | None = None
    factor: float = 0.8
    fraction: float = DEFAULT_RAMP

    def __post_init__(self) -> None:
        self.kind = ScheduleKind.parse(self.kind)
        self.initial: dict[str, float] | None = None  # each constraint's value at the first step
        self.levels: dict[str, float] = {}  # the level of each target constraint now (ε until started)
        self.origin = 0  # the step the ramp starts at: 0, or where restart() began a new one
        self.revision = 0  # counts the changes of the levels: the problem rebuilds its view on a change
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"schedule epochs must be >= 1, got {self.epochs!r}")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"schedule factor must lie in (0, 1), got {self.factor!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"schedule fraction must lie in (0, 1], got {self.fraction!r}")

    def ramp_steps(self, total_steps: int, steps_per_epoch: int | None = None) -> int:
        """Steps of the linear ramp (0 for the other kinds) in a run of ``total_steps``."""
        if self.kind is not ScheduleKind.LINEAR:
            return 0
        if self.epochs is None:
            return max(1, round(self.fraction * total_steps))
        if not steps_per_epoch:
            raise ValueError(
                f"a ramp of {self.epochs} epochs needs steps_per_epoch (fit() sets it from the batches); "
                "or give the ramp as a fraction of the run: TargetSchedule('linear', fraction=...)"
            )
        return self.epochs * steps_per_epoch

    def level_at(self, step: int, ramp_steps: int, target: float, initial: float) -> float:
        """The linear ramp's level at ``step`` (0 = the first step)."""
        start = max(initial, target)
        return start + (target - start) * min(step / max(ramp_steps, 1), 1.0)

    def level(self, epoch: int, target: float, initial: float, previous: float | None = None,
              density: float | None = None) -> float:  # fmt: skip
        """The level for ``epoch`` (0 = the first epoch).

        ``previous`` and ``density`` (the level and the density at the end of the epoch
        before) are what the dynamic schedule looks at.
        """
        start = max(initial, target)
        if self.kind is ScheduleKind.FIXED:
            return target
        if self.kind is ScheduleKind.LINEAR:
            return start + (target - start) * min(epoch / (self.epochs or 1), 1.0)
        if self.kind is ScheduleKind.GEOMETRIC:
            return max(target, start * self.factor**epoch)
        if previous is None:  # dynamic, first epoch
            return max(target, start * self.factor)
        met = density is not None and density <= previous
        return max(target, previous * self.factor) if met else previous

    def hold(self, targets: dict[str, float]) -> None:
        """Hold every level at its target ε from now on (the levels before a run starts, and
        the feasibility phase's)."""
        self.levels.update(targets)
        self.revision += 1

    def restart(self, step: int) -> None:
        """Start a new ramp at ``step`` from the levels in force, towards the problem's targets
        (which :meth:`GDA.retarget <ctrlsparse.GDA.retarget>` has just changed). Before the
        first step there is nothing to start from: the ramp begins at the initial values."""
        if self.initial is not None:
            self.initial, self.origin = dict(self.levels), step

    def advance(self, problem, step: int, ramp_steps: int, steps_per_epoch: int | None) -> None:
        """Set the levels for ``step`` (every step for the linear ramp, at each epoch boundary
        for the geometric and dynamic ones); the first call records the initial values."""
        if self.kind is ScheduleKind.FIXED:
            return
        if self.initial is None:  # one host transfer, at the first step
            with torch.no_grad():
                values = problem.constraint_values()
            self.initial = {name: float(values[name]) for name in problem.targets_all}
        if self.kind is ScheduleKind.LINEAR:
            levels = {name: self.level_at(step - self.origin, ramp_steps, target, self.initial[name])
                      for name, target in problem.targets_all.items()}  # fmt: skip
            if levels != self.levels:  # past the ramp they stay at ε
                self.levels, self.revision = levels, self.revision + 1
            return
        if step % steps_per_epoch:
            return
        with torch.no_grad():
            values = problem.constraint_values()
        epoch = step // steps_per_epoch
        for name, target in problem.targets_all.items():
            previous = None if epoch == 0 else self.levels[name]
            value = float(values[name])
            self.levels[name] = self.level(epoch, target, self.initial[name], previous, value)
        self.revision += 1

    def state_dict(self) -> dict:
        """The initial values the levels start from, the levels in force and the ramp's first step."""
        initial = None if self.initial is None else dict(self.initial)
        return {"initial": initial, "levels": dict(self.levels), "origin": self.origin}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`. A state saved before the schedule held the levels
        has none; :meth:`GDA.load_state_dict <ctrlsparse.GDA.load_state_dict>` adds them."""
        self.initial = None if state["initial"] is None else dict(state["initial"])
        if "levels" in state:
            self.levels = dict(state["levels"])
            self.revision += 1
        self.origin = state.get("origin", 0)
