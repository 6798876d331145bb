"""Settings that follow from the length of training (docs/control.md).

:class:`~ctrlsparse.GDA` fixes them once, in ``begin``, when it learns the run's number of
steps: how long the target ramps, when the feasibility phase starts, the Adam dual step
(``DUAL_TRAVEL / total_steps``) and the gates' learning-rate floor
(``GATE_TRAVEL / total_steps``). A loop of unknown length states the ramp instead
(``ramp_steps``): the settings then assume a run three ramps long, and the feasibility
phase starts when the user calls :meth:`GDA.decide <ctrlsparse.GDA.decide>`. With neither,
it warns and assumes ``FALLBACK_STEPS`` with a fixed target and no phase.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import torch

from ctrlsparse.problem.kernels import can_fuse
from ctrlsparse.problem.schedules import DEFAULT_RAMP, ScheduleKind, TargetSchedule

DUAL_TRAVEL = 40.0
"""The default dual step: Adam ascent with ``lr = DUAL_TRAVEL / total_steps``, so a multiplier
can climb to O(10) within a fraction of any run (docs/control.md)."""
GATE_TRAVEL = 30.0
"""The gates learn at least at ``GATE_TRAVEL / total_steps``: with Adam a gate parameter moves
about lr per step, and closing a gate takes a log α travel of a few units (docs/control.md)."""
DEFAULT_FEASIBILITY = 0.1
"""Default length of the feasibility phase: the last tenth of the run."""
FALLBACK_STEPS = 10_000
"""The horizon GDA assumes when nobody tells it the length of training (it warns once)."""


class Horizon(NamedTuple):
    """What a run of ``total_steps`` steps implies.

    Attributes:
        total_steps: the run's length, or None when it was not given.
        steps: the length the settings assume (``FALLBACK_STEPS`` when unknown).
        schedule: this run's own copy of the target schedule.
        ramp_steps: steps over which the target moves to ε.
        phase_start: the step the feasibility phase starts at, or None.
    """

    total_steps: int | None
    steps: int
    schedule: TargetSchedule
    ramp_steps: int
    phase_start: int | None


def _check_steps(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def plan(
    total_steps: int | None,
    steps_per_epoch: int | None,
    schedule: TargetSchedule | None,
    feasibility: float,
    ramp_steps: int | None = None,
) -> Horizon:
    """The :class:`Horizon` of a run; raises ``ValueError`` when the ramp and phase do not fit.

    ``ramp_steps`` fixes the linear ramp's length in steps, whatever the run's length; with
    ``total_steps`` unknown, the settings assume a run of ``ramp_steps / DEFAULT_RAMP`` steps
    (the default ramp's share of a run) and there is no automatic feasibility phase.

    Examples:
        >>> h = plan(900, 30, None, 0.1)
        >>> h.ramp_steps, h.phase_start
        (300, 810)
        >>> h = plan(None, None, None, 0.1, ramp_steps=200)  # a loop of unknown length
        >>> h.ramp_steps, h.steps, h.phase_start
        (200, 600, None)
    """
    _check_steps("total_steps", total_steps)
    _check_steps("ramp_steps", ramp_steps)
    if ramp_steps is not None and schedule is not None and schedule.kind is not ScheduleKind.LINEAR:
        raise ValueError(
            f"ramp_steps sets the length of a linear ramp; the schedule is {schedule.kind.value!r}: "
            "drop one of them"
        )
    if total_steps is None and ramp_steps is not None:
        schedule = dataclasses.replace(schedule or TargetSchedule("linear"))
        return Horizon(None, round(ramp_steps / DEFAULT_RAMP), schedule, ramp_steps, None)
    known = total_steps is not None
    if not known:
        warnings.warn(
            "GDA does not know the length of training: pass total_steps=<epochs x batches> (fit() "
            "does it for you). Using a fixed target, the dual step of a "
            f"{FALLBACK_STEPS}-step run and no feasibility phase.",
            stacklevel=4,
        )
    steps = int(total_steps) if known else FALLBACK_STEPS
    if schedule is None:
        schedule = TargetSchedule("linear") if known else TargetSchedule("fixed")
    schedule = dataclasses.replace(schedule)  # its state is this run's
    ramp = (ramp_steps or schedule.ramp_steps(steps, steps_per_epoch)) if known else 0
    if schedule.kind not in (ScheduleKind.LINEAR, ScheduleKind.FIXED) and not steps_per_epoch:
        raise ValueError(
            f"a {schedule.kind.value} schedule changes the level once per epoch and needs "
            "steps_per_epoch (fit() sets it from the batches)"
        )
    phase = max(1, round(feasibility * steps)) if known and feasibility > 0 else 0
    if known and ramp + phase > steps:
        raise ValueError(
            f"the target ramp ({ramp} steps) and the feasibility phase ({phase} steps) "
            f"do not fit in a run of {steps} steps: shorten the ramp (schedule) or the phase "
            "(feasibility=...)"
        )
    return Horizon(
        int(total_steps) if known else None, steps, schedule, ramp, steps - phase if phase else None
    )


def give_gates_their_group(
    optimizer: torch.optim.Optimizer, gates: list[torch.Tensor], lr: float | None, floor: float
) -> None:
    """Move ``gates`` into parameter groups of their own at ``lr`` (default: the group's lr, at
    least ``floor``), with the group's other settings and no weight decay.

    Where the group leaves ``foreach`` and ``fused`` to torch's defaults (per-tensor loops
    on the CPU), the gates' group updates all its tensors together: with Adam's or AdamW's
    fused kernel (one call for every gate tensor: 46 µs a step against 116 µs per-tensor and
    121 µs with ``foreach`` for LeNet-5's four gate tensors on the CPU,
    docs/scripts/optimizer_kernels.py), else with ``torch._foreach`` calls. Same update
    rule, one implementation or the other.
    """
    gate_ids = {id(p) for p in gates}
    for group in list(optimizer.param_groups):
        own = [p for p in group["params"] if id(p) in gate_ids]
        if not own:
            continue
        gate_lr = lr if lr is not None else max(group["lr"], floor)
        others = [p for p in group["params"] if id(p) not in gate_ids]
        if not others:
            group["lr"] = gate_lr
            continue
        group["params"] = others
        settings = {k: v for k, v in group.items() if k != "params"}
        settings.update(lr=gate_lr, **({"weight_decay": 0.0} if "weight_decay" in group else {}))
        if settings.get("foreach") is None and not settings.get("fused"):
            if can_fuse(optimizer, own, settings):
                settings["fused"] = True
            elif "foreach" in settings:
                settings["foreach"] = True
        optimizer.add_param_group({"params": own, **settings})
