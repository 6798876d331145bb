"""The penalty-search baseline: bisect λ until a penalized run lands near a target density.

This is what users do without constraints (Gallego-Posada et al., 2022): every probe
is a full training run. ``ctrlsparse compare`` shows how many it took next to the
single constrained run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from ctrlsparse.choices import TARGET
from ctrlsparse.experiments.build import resume_or_run
from ctrlsparse.experiments.config import ProblemConfig
from ctrlsparse.runs import store as runs

Runner = Callable[[ProblemConfig, Path, bool], dict]


def tune_penalty(
    config: ProblemConfig,
    target_density: float,
    out: str | Path,
    tolerance: float = 0.01,
    max_runs: int = 12,
    initial_penalty: float = 1.0,
    progress: bool = True,
    runner: Runner = resume_or_run,
) -> dict:
    """Search the model-wise penalty λ until the final density is within ``tolerance``.

    Bracketing first multiplies or divides λ by 10 until one run lands above and one
    below ``target_density``; then each probe interpolates log density linearly in
    log λ between the two ends of the bracket (density falls roughly as a power of λ),
    kept inside the middle 80% of the bracket so a bad guess still shrinks it; a
    bracket end with density 0 falls back to the geometric mean (bisection in log λ).
    Each probe writes its own run directory under ``out``, named by its λ: running the same
    search again reuses finished probes and resumes interrupted ones. ``out/tuning.json`` lists
    every probe, and the run that landed (or came closest) gets ``tuning_runs`` in its
    ``summary.json``.

    Returns:
        ``{"target_density", "tolerance", "runs", "converged", "best", "history"}``.

    Examples:
        >>> config = load_problem("problems/digits_mlp.toml")  # doctest: +SKIP
        >>> result = tune_penalty(config, 0.3, "runs/tune")  # doctest: +SKIP
        >>> result["runs"], result["best"]["penalty"]  # doctest: +SKIP
    """
    TARGET.check(target_density, "target_density")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance!r}")
    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs!r}")
    if not initial_penalty > 0:
        raise ValueError(f"initial_penalty must be > 0, got {initial_penalty!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    # Largest λ landing above / smallest λ landing below the target, with their densities.
    too_dense: tuple[float, float] | None = None
    too_sparse: tuple[float, float] | None = None
    penalty = initial_penalty
    for probe in range(1, max_runs + 1):
        sparsity = dataclasses.replace(config.sparsity, target_density=None, penalty=penalty)
        run_dir = out / f"probe{probe:02d}-penalty{penalty:.4g}"
        summary = runner(dataclasses.replace(config, sparsity=sparsity), run_dir, progress)
        history.append({"penalty": penalty, "density": summary.density, "run": str(run_dir)})
        if abs(summary.density - target_density) <= tolerance:
            break
        if summary.density > target_density:
            too_dense = (penalty, summary.density)
        else:
            too_sparse = (penalty, summary.density)
        if too_sparse is None:
            penalty *= 10.0
        elif too_dense is None:
            penalty /= 10.0
        else:
            penalty = _interpolate(too_dense, too_sparse, target_density)
    best = min(history, key=lambda h: abs(h["density"] - target_density))
    result = {
        "target_density": target_density,
        "tolerance": tolerance,
        "runs": len(history),
        "converged": abs(best["density"] - target_density) <= tolerance,
        "best": best,
        "history": history,
    }
    runs.write_json(out / "tuning.json", result)
    if (Path(best["run"]) / runs.SUMMARY).exists():
        best_summary = runs.read_summary(best["run"])
        best_summary.tuning_runs = len(history)
        best_summary.tuning_target = target_density
        runs.write_summary(best["run"], best_summary)
    return result


def _interpolate(too_dense: tuple[float, float], too_sparse: tuple[float, float], target: float) -> float:
    """The λ where log density, linear in log λ through both bracket ends, meets ``target``."""
    (lam_a, dens_a), (lam_b, dens_b) = too_dense, too_sparse
    log_a, log_b = math.log(lam_a), math.log(lam_b)
    if dens_b <= 0.0:  # no log-log line through a density of 0
        return math.sqrt(lam_a * lam_b)
    fraction = (math.log(dens_a) - math.log(target)) / (math.log(dens_a) - math.log(dens_b))
    fraction = min(max(fraction, 0.1), 0.9)
    return math.exp(log_a + fraction * (log_b - log_a))
