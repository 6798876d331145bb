import math

import pytest

from ctrlsparse.reports.measures import constraint_dynamics


def _records(densities, multipliers, target):
    return [
        {
            "step": i + 1,
            "density": d,
            "densities": {},
            "multipliers": {"model": m},
            "violations": {"model": d - target},
        }
        for i, (d, m) in enumerate(zip(densities, multipliers))
    ]


def test_saw_tooth_by_hand():
    # Descends to 0.3 at step 4, dips to 0.28, then a saw-tooth 0.30/0.32 for the rest.
    densities = [0.8, 0.6, 0.4, 0.3, 0.28, 0.32, 0.30, 0.32, 0.30, 0.32]
    multipliers = [0.1, 0.2, 0.3, 0.0, 0.0, 0.05, 0.0, 0.05, 0.0, 0.05]
    m = constraint_dynamics(_records(densities, multipliers, 0.3), "model")
    assert m.steps_to_feasible == 4
    assert m.final_violation == pytest.approx(0.02)
    assert m.overshoot == pytest.approx(0.02)
    assert m.density_p2p == pytest.approx(0.02)  # last 20%: [0.30, 0.32]
    assert m.density_std == pytest.approx(0.01)
    assert m.multiplier_p2p == pytest.approx(0.05) and m.multiplier_std == pytest.approx(0.025)


def test_damped_oscillation_by_hand():
    target = 0.5
    densities = [target + 0.2 * (-0.5) ** k for k in range(10)]  # 0.7, 0.4, 0.55, 0.475, ...
    m = constraint_dynamics(_records(densities, [0.0] * 10, target), "model")
    assert m.steps_to_feasible == 2
    assert m.overshoot == pytest.approx(0.1)
    tail = densities[8:]
    assert m.density_p2p == pytest.approx(abs(tail[0] - tail[1]))
    assert m.final_violation == pytest.approx(0.2 * (-0.5) ** 9)


def test_never_feasible():
    m = constraint_dynamics(_records([0.9, 0.8], [0.1, 0.2], 0.3), "model")
    assert m.steps_to_feasible is None and m.overshoot == 0.0 and math.isclose(m.final_violation, 0.5)


def test_a_ramped_run_is_feasible_when_it_reaches_epsilon_not_its_ramped_level():
    """Under a linear ramp the density tracks a level that starts at 1: against the level every
    step is feasible; against ε = 0.3 the run becomes feasible at step 5."""
    densities = [0.9, 0.7, 0.5, 0.35, 0.3, 0.29, 0.3]
    levels = [0.95, 0.75, 0.55, 0.4, 0.3, 0.3, 0.3]
    records = [
        {"step": i + 1, "density": d, "densities": {}, "multipliers": {"model": 0.0},
         "violations": {"model": d - level}}
        for i, (d, level) in enumerate(zip(densities, levels))
    ]  # fmt: skip
    assert constraint_dynamics(records, "model").steps_to_feasible == 1
    assert constraint_dynamics(records, "model", target=0.3).steps_to_feasible == 5
