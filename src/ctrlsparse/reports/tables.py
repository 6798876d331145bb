"""Comparison tables of finished runs (markdown)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctrlsparse.reports.measures import run_dynamics
from ctrlsparse.runs.records import RunSummary
from ctrlsparse.runs.store import Run


def _levels(levels: dict[str, float], symbol: str) -> str:
    return ", ".join(f"{symbol}[{name}]={value:g}" for name, value in levels.items())


def kept_fraction(counts: dict) -> float | None:
    """Realized (or, in runs written before MACs budgets, remaining) over dense counts.

    Examples:
        >>> kept_fraction({"dense": 200, "expected": 90, "realized": 80})
        0.4
    """
    kept = counts.get("realized", counts.get("remaining"))
    return kept / counts["dense"] if counts.get("dense") and kept is not None else None


def _percent(counts: dict) -> str:
    fraction = kept_fraction(counts)
    return "–" if fraction is None else f"{100 * fraction:.1f}%"


def realized_gaps(summary: RunSummary) -> dict[str, float]:
    """Realized value − ε of every target constraint of a run (densities and MACs budgets).

    Examples:
        >>> s = RunSummary("hard_concrete", "constrained", {"model": 0.3}, {}, 0.3, {}, 0.2981)
        >>> realized_gaps(s)
        {'model': -0.0019}
    """
    targets = summary.all_targets()
    realized = summary.realized or {"model": summary.realized_density, **summary.realized_densities}
    return {n: round(realized[n] - e, 6) for n, e in targets.items() if realized.get(n) is not None}


def _gaps(summary: RunSummary) -> str:
    return ", ".join(f"{n} {v:+.4f}" for n, v in realized_gaps(summary).items()) or "–"


def _runs_needed(summary: RunSummary) -> str:
    """Full training runs it took to reach this result: 1 for a constrained run, the probe count
    for a penalty found by ``tune-penalty``, unknown for a penalty chosen by hand."""
    if summary.tuning_runs is not None:
        return f"{summary.tuning_runs} (tuned to ε={summary.tuning_target:g})"
    return "1" if summary.mode in ("constrained", "pruned") else "–"


def comparison_table(runs: Sequence[Run]) -> str:
    """A markdown table: one row per run with its setting, final densities, error, multipliers,
    and the number of full runs it took to get there (penalty searches count every probe).

    Examples:
        >>> print(comparison_table([load_run("runs/demo/penalized")]))  # doctest: +SKIP
    """
    header = (
        "| run | method | mode | target ε / penalty λ | expected density | layer densities "
        "| realized density (what ε bounds) | realized − ε | parameters kept | MACs kept | test error "
        "| multipliers | full runs |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for run in runs:
        s = run.summary
        setting = "; ".join(
            x
            for x in (
                _levels(s.all_targets(), "ε"),
                _levels(s.all_penalties(), "λ"),
            )
            if x
        )
        layers = ", ".join(f"{name} {d:.3f}" for name, d in s.densities.items())
        error = "–" if s.test_error is None else f"{100 * s.test_error:.2f}%"
        multipliers = ", ".join(f"{name} {value:.3g}" for name, value in s.multipliers.items())
        lines.append(
            f"| {run.name} | {s.method} | {s.mode} | {setting} "
            f"| {s.density:.4f} | {layers} "
            f"| {s.realized_density:.4f} | {_gaps(s)} | {_percent(s.params)} | {_percent(s.macs)} "
            f"| {error} | {multipliers} | {_runs_needed(s)} |"
        )
    return "\n".join(lines) + "\n"


SIZE_NOTE = (
    "Density is the kept fraction of the sparsifiable weights (the gated layers' weights), "
    "which ε bounds; parameters kept counts every parameter, biases and ungated layers included."
)
"""The one-line reason printed under every table that shows both sizes."""


@dataclass
class Results:
    """The finished runs of one ``ctrlsparse compare`` (``results.json`` in its ``--out``
    folder): ``{run name: its summary}``. The docs quote ``make demo`` from a committed copy,
    ``docs/results/demo.json``, and a test checks them against it.

    Examples:
        >>> r = Results({"a": RunSummary("hard_concrete", "constrained", {"model": 0.3}, {}, 0.3, {}, 0.29)})
        >>> Results.from_dict(r.to_dict()).runs["a"].realized_density
        0.29
    """

    runs: dict[str, RunSummary]

    def to_dict(self) -> dict:
        return {"runs": {name: summary.to_dict() for name, summary in self.runs.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Results:
        return cls({name: RunSummary.from_dict(summary) for name, summary in data["runs"].items()})

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Results:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _kept(counts: dict) -> str:
    kept = counts.get("realized", counts.get("remaining"))
    if not counts.get("dense") or kept is None:
        return "–"
    return f"{100 * kept / counts['dense']:.1f}% ({kept:,} of {counts['dense']:,})"


def results_table(results: Results) -> str:
    """The short table of the README and docs/core.md: per run its setting, the density ε
    bounds (realized, on the deployed model) beside the parameters it keeps, the layers'
    realized densities, the gaps to ε, test error and multipliers; :data:`SIZE_NOTE` says why the
    two sizes differ.

    Examples:
        >>> print(results_table(Results.read("docs/results/demo.json")))  # doctest: +SKIP
    """
    lines = [
        "| run | mode | target ε / penalty λ | density (what ε bounds) | parameters kept "
        "| layer densities | realized − ε | test error | multipliers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results.runs.items():
        setting = "; ".join(x for x in (_levels(s.all_targets(), "ε"), _levels(s.all_penalties(), "λ")) if x)
        layers = ", ".join(f"{n} {s.realized_densities.get(n, d):.3f}" for n, d in s.densities.items())
        error = "–" if s.test_error is None else f"{100 * s.test_error:.2f}%"
        multipliers = ", ".join(f"{n} {v:.3g}" for n, v in s.multipliers.items())
        lines.append(
            f"| {name} | {s.mode} | {setting} | {s.realized_density:.4f} | {_kept(s.params)} "
            f"| {layers} | {_gaps(s)} | {error} | {multipliers} |"
        )
    return "\n".join(lines) + "\n\n" + SIZE_NOTE + "\n"


def dynamics_table(runs: Sequence[Run]) -> str:
    """A markdown table of the dual-dynamics measures of every constraint of the constrained runs.

    Examples:
        >>> print(dynamics_table([load_run("runs/demo/constrained-layer")]))  # doctest: +SKIP
    """
    lines = [
        "| run | constraint | ε | steps to feasible | final violation | overshoot "
        "| density std / p2p (last 20%) | multiplier std / p2p (last 20%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        targets = run.summary.all_targets()
        if run.summary.mode != "constrained":  # penalties and pruning have no dual dynamics
            continue
        for name, m in run_dynamics(run.metrics(), targets).items():
            feasible = "never" if m.steps_to_feasible is None else str(m.steps_to_feasible)
            lines.append(
                f"| {run.name} | {name} | {targets[name]:g} | {feasible} | {m.final_violation:+.4f} "
                f"| {m.overshoot:.4f} | {m.density_std:.4f} / {m.density_p2p:.4f} "
                f"| {m.multiplier_std:.3g} / {m.multiplier_p2p:.3g} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
