"""Target schedules: the density level each constraint asks for as training goes.

The final level is always the target ε. Every schedule starts from the density the
model had at its first step (``initial``) and is updated once per epoch:

- ``fixed``: ε from the start.
- ``linear``: from ``initial`` to ε in equal steps over ``epochs`` epochs.
- ``geometric``: ``initial · factor^epoch``, never below ε.
- ``dynamic``: multiply the level by ``factor`` only after an epoch that ended with
  the constraint satisfied (density ≤ level); "tighten once the current level is met".
"""

from __future__ import annotations

from dataclasses import dataclass

from ctrlsparse.choices import Choice


class ScheduleKind(Choice):
    FIXED = "fixed"
    LINEAR = "linear"
    GEOMETRIC = "geometric"
    DYNAMIC = "dynamic"


ScheduleKind._noun = "schedule"


@dataclass
class TargetSchedule:
    """How a constraint's level moves from the initial density to its target ε.

    Args:
        kind: ``"fixed"``, ``"linear"``, ``"geometric"`` or ``"dynamic"``.
        epochs: length of the linear ramp, in epochs.
        factor: shrink factor per epoch of the geometric and dynamic schedules, in (0, 1).

    Example:
        >>> s = TargetSchedule("linear", epochs=4)
        >>> [round(s.level(e, target=0.2, initial=1.0), 2) for e in range(6)]
        [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]
    """

    kind: ScheduleKind | str = ScheduleKind.FIXED
    epochs: int = 10
    factor: float = 0.8

    def __post_init__(self) -> None:
        self.kind = ScheduleKind.parse(self.kind)
        if self.epochs < 1:
            raise ValueError(f"schedule epochs must be >= 1, got {self.epochs!r}")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"schedule factor must lie in (0, 1), got {self.factor!r}")

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
            return start + (target - start) * min(epoch / self.epochs, 1.0)
        if self.kind is ScheduleKind.GEOMETRIC:
            return max(target, start * self.factor**epoch)
        if previous is None:  # dynamic, first epoch
            return max(target, start * self.factor)
        met = density is not None and density <= previous
        return max(target, previous * self.factor) if met else previous
