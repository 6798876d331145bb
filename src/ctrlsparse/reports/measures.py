"""Measures of a run's dual dynamics, computed from its history (``metrics.jsonl`` records)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ctrlsparse.problem.levels import MODEL


@dataclass
class ConstraintDynamics:
    """How one constraint's density and multiplier moved.

    Attributes:
        steps_to_feasible: first step whose value was at most the target ε (None: never; the
            ramped level instead when no target is given). Measured against the ramped level,
            every ramped run would count as feasible from its first step.
        final_violation: density − level at the last record.
        overshoot: deepest dip below the level after first feasibility (≥ 0).
        density_std, density_p2p: standard deviation and peak-to-peak of the density
            over the last ``tail`` fraction of the records.
        multiplier_std, multiplier_p2p: the same for the multiplier.
    """

    steps_to_feasible: int | None
    final_violation: float
    overshoot: float
    density_std: float
    density_p2p: float
    multiplier_std: float
    multiplier_p2p: float


def _spread(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return 0.0, 0.0
    return statistics.pstdev(values), max(values) - min(values)


def constraint_value(record: dict, name: str) -> float:
    """The constrained value of ``name`` in a step record: the model's or a layer's density,
    or a MACs fraction (``"macs"``, ``"macs:<layer>"``).

    Examples:
        >>> constraint_value({"density": 0.4, "densities": {"fc1": 0.5}, "macs": {"macs": 0.3}}, "macs")
        0.3
    """
    if name == MODEL:
        return record["density"]
    if name in record["densities"]:
        return record["densities"][name]
    return record["macs"][name]


def constraint_dynamics(
    records: list[dict], name: str, tail: float = 0.2, target: float | None = None
) -> ConstraintDynamics:
    """The measures of constraint ``name`` (``"model"`` or a layer name) over ``records``.

    The level at each record is density − violation, so target schedules are followed;
    feasibility is against ``target`` (ε) when given.

    Examples:
        >>> constraint_dynamics(load_run("runs/a").metrics(), "model")  # doctest: +SKIP
    """
    if not records:
        raise ValueError("no records to measure")
    densities = [constraint_value(r, name) for r in records]
    violations = [r["violations"][name] for r in records]
    multipliers = [r["multipliers"][name] for r in records]
    first = next((i for i, v in enumerate(violations) if v <= 0), None)
    overshoot = 0.0 if first is None else max(0.0, -min(violations[first:]))
    if target is not None:
        first = next((i for i, d in enumerate(densities) if d <= target), None)
    start = min(int(math.floor(len(records) * (1 - tail))), len(records) - 1)
    density_std, density_p2p = _spread(densities[start:])
    multiplier_std, multiplier_p2p = _spread(multipliers[start:])
    return ConstraintDynamics(
        steps_to_feasible=None if first is None else records[first]["step"],
        final_violation=violations[-1],
        overshoot=overshoot,
        density_std=density_std,
        density_p2p=density_p2p,
        multiplier_std=multiplier_std,
        multiplier_p2p=multiplier_p2p,
    )


def run_dynamics(
    records: list[dict], targets: dict[str, float], tail: float = 0.2
) -> dict[str, ConstraintDynamics]:
    """Measures of every constrained (not penalized) constraint of a run."""
    return {name: constraint_dynamics(records, name, tail, eps) for name, eps in targets.items()}
