"""Sweeps of problems × settings × seeds, resumable, summarised as a markdown table.

A sweep file (TOML) lists the settings; every (setting, seed) pair is one run
directory ``OUT/<setting slug>/seed<k>``; a run whose ``summary.json`` exists is
skipped, so an interrupted sweep resumes where it stopped::

    name = "fashion"
    seeds = [0, 1, 2]
    [overrides]                      # applied to every problem file (validated like one)
    train = { epochs = 20 }          # a [[setting]] may add overrides of its own
    [[setting]]
    label = "MLP, model-wise ε=0.33"
    problem = "problems/fashion_mlp.toml"
    target_density = 0.33
    published = { density = 0.342, test_error = 0.0177 }
"""

from __future__ import annotations

import math
import re
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ctrlsparse.experiments.config import (
    ProblemConfig,
    ProblemFileError,
    load_problem,
    parse_problem,
    read_toml,
)
from ctrlsparse.problem.levels import Levels
from ctrlsparse.reports.measures import run_dynamics
from ctrlsparse.reports.tables import kept_fraction, realized_gaps
from ctrlsparse.runs import store as runs

# Two-sided 95% Student-t quantiles by degrees of freedom; 1.96 beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t confidence interval (0 for one value).

    Examples:
        >>> mean_ci([1.0, 2.0, 3.0])
        (2.0, 2.484...)
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    t = _T95.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


@dataclass
class Setting:
    """One row of the reproduction table."""

    label: str
    problem: str
    target_density: Levels = None
    penalty: Levels = None
    published: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


@dataclass
class Sweep:
    name: str
    seeds: list[int]
    settings: list[Setting]
    overrides: dict = field(default_factory=dict)

    def config(self, setting: Setting, seed: int) -> ProblemConfig:
        """The problem file of ``setting`` with the sweep's overrides, target/penalty and seed."""
        data = load_problem(setting.problem).to_dict()
        for overrides in (self.overrides, setting.overrides):
            for section, values in overrides.items():
                data.setdefault(section, {}).update(values)
        data["sparsity"].update(target_density=setting.target_density, penalty=setting.penalty)
        data["train"]["seed"] = seed
        return parse_problem(data, f"{setting.problem} (with the overrides of sweep {self.name!r})")

    def select(self, patterns: list[str]) -> None:
        """Keep only the settings whose label contains one of ``patterns`` (case-insensitive).

        Examples:
            >>> sweep = load_sweep("problems/sweeps/control.toml")  # doctest: +SKIP
            >>> sweep.select(["ResNet"])  # rerun or tabulate the ResNet rows alone  # doctest: +SKIP
        """
        kept = [s for s in self.settings if any(p.lower() in s.label.lower() for p in patterns)]
        if not kept:
            labels = "; ".join(repr(s.label) for s in self.settings)
            asked = ", ".join(patterns)
            raise ValueError(f"no setting of sweep {self.name!r} matches {asked}; its settings: {labels}")
        self.settings = kept


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file.

    Problem paths are taken relative to the working directory, else to the sweep file.
    """
    path = Path(path)
    data = read_toml(path, "sweep file")
    unknown = sorted(set(data) - {"name", "seeds", "overrides", "setting"})
    if unknown:
        raise ProblemFileError(
            f"{path}: unknown key {unknown[0]!r}; valid keys: name, seeds, overrides, setting"
        )
    seeds = data.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise ProblemFileError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    settings = []
    for i, entry in enumerate(data.get("setting", []), start=1):
        valid = {"label", "problem", "target_density", "penalty", "published", "overrides"}
        bad = sorted(set(entry) - valid)
        if bad:
            raise ProblemFileError(
                f"{path}: [[setting]] {i}: unknown key {bad[0]!r}; valid keys: {', '.join(sorted(valid))}"
            )
        if "label" not in entry or "problem" not in entry:
            raise ProblemFileError(f"{path}: [[setting]] {i} needs a label and a problem")
        setting = Setting(**entry)
        candidates = [Path(setting.problem), path.parent / setting.problem]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ProblemFileError(f"{path}: [[setting]] {i}: no problem file {setting.problem!r}")
        setting.problem = str(found)
        settings.append(setting)
    if not settings:
        raise ProblemFileError(f"{path}: no [[setting]] entries")
    sweep = Sweep(data.get("name", path.stem), seeds, settings, data.get("overrides", {}))
    for setting in settings:  # fail on a bad problem, override or target before any training
        sweep.config(setting, seeds[0])
    return sweep


def _run_one(config: ProblemConfig, run_dir: Path) -> None:
    import torch

    from ctrlsparse.experiments.build import resume_or_run

    torch.set_num_threads(1)  # parallel runs share the cores; a resumed run needs the same threads
    resume_or_run(config, run_dir, progress=False)


def run_sweep(sweep: Sweep, out: str | Path, jobs: int = 1) -> list[Path]:
    """Train every (setting, seed) run that has no ``summary.json`` yet, resuming interrupted ones
    from their checkpoints; return all run dirs."""
    out = Path(out)
    todo, all_dirs = [], []
    for setting in sweep.settings:
        for seed in sweep.seeds:
            run_dir = out / setting.slug / f"seed{seed}"
            all_dirs.append(run_dir)
            if not (run_dir / runs.SUMMARY).exists():
                todo.append((sweep.config(setting, seed), run_dir))
    print(f"{sweep.name}: {len(all_dirs) - len(todo)} runs done, {len(todo)} to go", flush=True)
    if jobs <= 1:
        for config, run_dir in todo:
            _run_one(config, run_dir)
            print(f"finished {run_dir}", flush=True)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(_run_one, config, run_dir): run_dir for config, run_dir in todo}
            for future, run_dir in futures.items():
                future.result()
                print(f"finished {run_dir}", flush=True)
    return all_dirs


def _fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "–"
    mean, ci = mean_ci([scale * v for v in values])
    mean = round(mean, digits) + 0.0  # no "-0.000" for a mean of rounding noise
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _finished(sweep: Sweep, setting: Setting, out: Path) -> list[runs.Run]:
    paths = [out / setting.slug / f"seed{seed}" for seed in sweep.seeds]
    return [runs.load_run(path) for path in paths if (path / runs.SUMMARY).exists()]


def sweep_table(sweep: Sweep, out: str | Path) -> str:
    """Markdown table over the finished runs: mean ± 95% CI over seeds, published numbers beside."""
    out = Path(out)
    lines = [
        "| setting | seeds | expected density | worst violation | realized density | worst realized − ε "
        "| highest realized − ε | params % | MACs % | test error % | published density | published error % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in sweep.settings:
        summaries = [run.summary for run in _finished(sweep, setting, out)]
        finals = [{"model": s.density, **s.densities} for s in summaries]
        # Per run, the violation of largest magnitude (signed: + above target, − below).
        violations = [
            max((f[name] - eps for name, eps in s.targets.items()), key=abs, default=float("nan"))
            for s, f in zip(summaries, finals)
        ]
        gaps = [realized_gaps(s) for s in summaries]
        worst = [max(g.values(), key=abs) for g in gaps if g]
        highest = max((max(g.values()) for g in gaps if g), default=None)
        pub = setting.published
        lines.append(
            f"| {setting.label} | {len(summaries)} | {_fmt([s.density for s in summaries])} "
            f"| {_fmt([v for v in violations if not math.isnan(v)], digits=4)} "
            f"| {_fmt([s.realized_density for s in summaries])} "
            f"| {_fmt(worst, digits=4)} | {'–' if highest is None else f'{highest:+.4f}'} "
            f"| {_fmt([kept_fraction(s.params) for s in summaries], 100, 1)} "
            f"| {_fmt([kept_fraction(s.macs) for s in summaries], 100, 1)} "
            f"| {_fmt([s.test_error for s in summaries if s.test_error is not None], 100, 2)} "
            f"| {pub.get('density', '–')} | {100 * pub['test_error'] if 'test_error' in pub else '–'} |"
        )
    return "\n".join(lines) + "\n"


def sweep_runs(sweep: Sweep, out: str | Path) -> dict[str, list[runs.Run]]:
    """``{setting label: its finished runs}`` (the input of :func:`ctrlsparse.reports.tradeoff`)."""
    return {setting.label: _finished(sweep, setting, Path(out)) for setting in sweep.settings}


def sweep_dynamics_table(sweep: Sweep, out: str | Path) -> str:
    """Markdown table of the dual-dynamics measures (worst constraint of each run; mean ± 95% CI).

    The final-violation column also gives its maximum over the seeds: the number to hold
    against a tolerance such as "every constraint within 0.005 of its target".
    """
    out = Path(out)
    lines = [
        "| setting | seeds | steps to feasible | worst |final violation| | overshoot "
        "| density p2p (last 20%) | multiplier p2p (last 20%) | test error % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in sweep.settings:
        # Constrained runs only: penalties and pruning have no multiplier dynamics.
        finished = [run for run in _finished(sweep, setting, out) if run.summary.mode == "constrained"]
        if not finished:
            continue
        measures = [list(run_dynamics(run.metrics(), run.summary.all_targets()).values()) for run in finished]
        steps = [max(m.steps_to_feasible or math.inf for m in ms) for ms in measures]
        never = sum(math.isinf(x) for x in steps)
        shown_steps = _fmt([x for x in steps if not math.isinf(x)], digits=0) + (
            f" ({never} never)" if never else ""
        )
        worst = [max(abs(m.final_violation) for m in ms) for ms in measures]
        lines.append(
            f"| {setting.label} | {len(finished)} | {shown_steps} "
            f"| {_fmt(worst, digits=4)} (max {max(worst):.4f}) "
            f"| {_fmt([max(m.overshoot for m in ms) for ms in measures], digits=4)} "
            f"| {_fmt([max(m.density_p2p for m in ms) for ms in measures], digits=4)} "
            f"| {_fmt([max(m.multiplier_p2p for m in ms) for ms in measures], digits=3)} "
            f"| {_fmt([e for r in finished if (e := r.summary.test_error) is not None], 100, 2)} |"
        )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
