import json

import pytest

from ctrlsparse.experiments.config import parse_problem
from ctrlsparse.experiments.tuning import tune_penalty
from ctrlsparse.reports.tables import comparison_table
from ctrlsparse.runs import RunSummary, load_run, write_json, write_summary

CONFIG = parse_problem({"name": "toy"})


def _runner(density_of):
    """A stand-in for a training run: density = density_of(λ), written like fit() would."""
    calls = []

    def run(config, run_dir, progress):
        lam = config.sparsity.penalty
        assert config.sparsity.target_density is None
        calls.append(lam)
        summary = RunSummary(
            method="hard_concrete", mode="penalized", targets={}, penalties={"model": lam},
            density=density_of(lam), densities={}, realized_density=density_of(lam), test_error=0.1,
            multipliers={"model": lam}, params={"dense": 1, "remaining": 1},
            macs={"dense": 1, "remaining": 1},
        )  # fmt: skip
        run_dir.mkdir(parents=True)
        write_json(run_dir / "config.json", {"name": "toy"})
        write_summary(run_dir, summary)
        return summary

    return run, calls


def test_bisection_brackets_then_lands(tmp_path):
    run, calls = _runner(lambda lam: 1.0 / (1.0 + lam))  # density 0.25 at λ = 3
    result = tune_penalty(CONFIG, 0.25, tmp_path, tolerance=0.005, runner=run, progress=False)
    assert result["converged"] and abs(result["best"]["density"] - 0.25) <= 0.005
    assert calls[:2] == [1.0, 10.0]  # bracketing by factors of 10
    assert all(1.0 <= lam <= 10.0 for lam in calls[2:])  # then search inside the bracket
    assert result["runs"] == len(calls) == len(json.loads((tmp_path / "tuning.json").read_text())["history"])
    best = load_run(result["best"]["run"])
    assert best.summary.tuning_runs == len(calls)
    assert f"| {len(calls)} (tuned to ε=0.25) |" in comparison_table([best])


def test_power_law_density_lands_on_the_first_interpolated_probe(tmp_path):
    # density = 0.5 λ^-0.7 is a line in log-log: the interpolation hits the target at once,
    # where bisection in log λ would still need several probes.
    run, calls = _runner(lambda lam: 0.5 * lam**-0.7)
    result = tune_penalty(CONFIG, 0.2, tmp_path, tolerance=0.001, runner=run, progress=False)
    assert calls[:2] == [1.0, 10.0] and len(calls) == 3
    assert calls[2] == pytest.approx(2.5 ** (1 / 0.7))
    assert result["converged"] and result["best"]["density"] == pytest.approx(0.2)


def test_bracket_end_at_density_zero_falls_back_to_bisection(tmp_path):
    run, calls = _runner(lambda lam: 0.0 if lam >= 10 else 0.5)
    tune_penalty(CONFIG, 0.25, tmp_path, max_runs=3, runner=run, progress=False)
    assert calls == [1.0, 10.0, pytest.approx(10**0.5)]


def test_gives_up_after_max_runs(tmp_path):
    run, calls = _runner(lambda lam: 0.9)  # λ never moves the density
    result = tune_penalty(CONFIG, 0.3, tmp_path, max_runs=3, runner=run, progress=False)
    assert not result["converged"] and result["runs"] == 3 and calls == [1.0, 10.0, 100.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_density": 0.0}, "target_density"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"max_runs": 0}, "max_runs"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"target_density": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        tune_penalty(CONFIG, out=tmp_path, **args)
