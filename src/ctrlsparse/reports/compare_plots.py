"""Figures that compare runs: control, traces, and the error/density trade-off (matplotlib, Agg backend).

Every figure colours a constraint or layer the same way: the model in black, layers
in forward order from a qualitative palette (a sequential one beyond ten layers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ctrlsparse.problem.levels import MODEL, ConstraintKey  # noqa: E402
from ctrlsparse.reports.measures import constraint_value  # noqa: E402
from ctrlsparse.reports.run_plots import layer_colors  # noqa: E402
from ctrlsparse.runs.records import RunSummary  # noqa: E402
from ctrlsparse.runs.store import Run, problem_of  # noqa: E402

MAX_LABELS = 8
"""The trade-off panel names its points only up to this many runs."""
_MODE_STYLE = {"constrained": ("o", "C0"), "penalized": ("s", "C1"), "pruned": ("^", "C2")}


def comparison(runs: Sequence[Run]) -> Figure:
    """Control (achieved vs requested density) and trade-off (error vs density) plots of runs.

    Constrained runs' constraints sit on the diagonal of the control panel when they
    hit their targets; penalized runs are placed by their λ in a panel of their own,
    since λ says nothing in advance about the density it gives.

    Examples:
        >>> fig = comparison([load_run("runs/a"), load_run("runs/b")])  # doctest: +SKIP
        >>> fig.savefig("comparison.png")  # doctest: +SKIP
    """
    names = []
    for run in runs:
        names += [n for n in run.summary.densities if n not in names]
    colors = layer_colors([MODEL, *names])
    fig, (ax_ctrl, ax_pen, ax_err) = plt.subplots(1, 3, figsize=(15, 4.6))

    def achieved(summary: RunSummary, name: str) -> float:
        """The deployed model's value (realized, test-time gates) where the run recorded it."""
        realized = summary.realized
        if name in realized:
            return realized[name]
        return summary.density if name == MODEL else summary.densities[name]

    def layer_of(name: str) -> str:  # "macs" -> model, "macs:fc1" -> fc1
        return ConstraintKey.parse(name).scope

    def style(name: str, marker: str) -> dict:
        # The model as a larger open marker: a layer at the same point stays visible inside it.
        if name == MODEL:
            return {
                "marker": marker,
                "s": 110,
                "facecolors": "none",
                "edgecolors": "black",
                "linewidths": 1.6,
            }
        return {"marker": marker, "s": 40, "color": colors[name]}

    for run in runs:
        for name, eps in run.summary.targets.items():
            ax_ctrl.scatter(eps, achieved(run.summary, name), zorder=3, **style(name, "o"))
        for name, eps in run.summary.macs_targets.items():  # MACs budgets: triangles
            ax_ctrl.scatter(eps, achieved(run.summary, name), zorder=3, **style(layer_of(name), "^"))
        for name, lam in run.summary.penalties.items():
            ax_pen.scatter(lam, achieved(run.summary, name), zorder=3, **style(name, "s"))
    ax_ctrl.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="achieved = requested")
    ax_ctrl.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="requested ε (density; ▲ MACs)", ylabel="achieved (realized) value"
    )
    ax_ctrl.set_title("Constrained: control of density and MACs")
    penalized = [run for run in runs if run.summary.penalties]
    if penalized:
        lams = [lam for run in penalized for lam in run.summary.penalties.values()]
        if min(lams) > 0 and max(lams) / min(lams) > 10:
            ax_pen.set_xscale("log")
        elif max(lams) > 0:
            ax_pen.set_xlim(0, 1.25 * max(lams))
    else:
        ax_pen.text(0.5, 0.5, "no penalized run", ha="center", va="center", transform=ax_pen.transAxes)
    ax_pen.set(ylim=(0, 1), xlabel="penalty λ", ylabel="achieved (realized) density")
    ax_pen.set_title("Penalized: density wherever λ lands")
    handles = [
        plt.Line2D(
            [], [], marker="o", ls="", label=n, color=colors[n], mfc="none" if n == MODEL else colors[n]
        )
        for n in [MODEL, *names]
        if any(
            n in r.summary.targets
            or n in r.summary.penalties
            or any(layer_of(m) == n for m in r.summary.macs_targets)
            for r in runs
        )
    ]
    ax_ctrl.legend(handles=[*handles, *ax_ctrl.get_legend_handles_labels()[0]], fontsize=8, loc="upper left")

    # The deployed model's density (realized, eq. 13), as on the other panels.
    points = [(run.name, _deployed_density(run.summary), 100 * run.summary.test_error, run.summary.mode)
              for run in runs if run.summary.test_error is not None]  # fmt: skip
    errors = [error for _, _, error, _ in points]
    span = (max(errors) - min(errors)) or 1.0 if errors else 1.0
    for i, (name, density, error, mode) in enumerate(points):
        marker, color = _MODE_STYLE.get(mode, ("s", "C1"))
        ax_err.scatter(density, error, marker=marker, s=50, color=color)
        if len(points) <= MAX_LABELS:  # more: their names would cover each other (front.png has the curves)
            ax_err.annotate(name, (density, error), fontsize=8, textcoords="offset points",
                            xytext=_label_offset(points[:i], density, error, span))  # fmt: skip
    for mode in dict.fromkeys(r.summary.mode for r in runs if r.summary.test_error is not None):
        marker, color = _MODE_STYLE.get(mode, ("s", "C1"))
        ax_err.scatter([], [], marker=marker, color=color, label=mode)
    ax_err.legend(fontsize=8, loc="upper right")
    ax_err.set(xlabel="realized model density (deployed model)", ylabel="test error (%)")
    ax_err.set_xlim(0, 1)
    ax_err.set_title("Trade-off: error vs density")
    for ax in (ax_ctrl, ax_pen, ax_err):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _deployed_density(summary: RunSummary) -> float:
    """The model density of the deployed model (test-time gates), else the expected one."""
    return summary.realized_density if summary.realized_density is not None else summary.density


def _label_offset(placed: list[tuple], density: float, error: float, span: float) -> tuple[int, int]:
    """A label's offset in points: below the ones already placed near it (closer than 0.15 in
    density and a tenth of the errors' span), so that neighbours' names do not overlap."""
    near = sum(abs(d - density) < 0.15 and abs(e - error) < 0.1 * span for _, d, e, _ in placed)
    return (5, 4 - 11 * near)


def traces(runs: Sequence[Run], tail: float | None = None) -> Figure:
    """Density and multiplier traces of several runs overlaid, one column per constraint.

    For comparing dual-update options on one problem: each run is one line (in the
    run's colour across panels), each constraint's target a dashed black line.

    Args:
        tail: if given, also zoom the density axis onto the last ``tail`` fraction of steps.

    Examples:
        >>> traces([load_run("runs/sgd"), load_run("runs/nupi")]).savefig("traces.png")  # doctest: +SKIP
    """
    constraints = []
    for run in runs:
        constraints += [n for n in run.summary.all_targets() if n not in constraints]
    if not constraints:
        raise ValueError("traces need constrained runs; these runs only have penalties")
    rows = 3 if tail else 2
    # Not sharing x: the zoom row spans only the last steps.
    fig, axes = plt.subplots(
        rows, len(constraints), figsize=(4.8 * len(constraints) + 2.5, 2.8 * rows), squeeze=False
    )
    cmap = plt.get_cmap("tab10")
    for i, run in enumerate(runs):
        records = run.metrics()
        steps = np.array([r["step"] for r in records])
        for j, name in enumerate(constraints):
            if name not in run.summary.all_targets():
                continue
            density = np.array([constraint_value(r, name) for r in records])
            axes[0, j].plot(steps, density, color=cmap(i % 10), lw=1.1, label=run.name)
            if name in records[0]["multipliers"]:  # pruned runs have a target but no multiplier
                multiplier = np.array([r["multipliers"][name] for r in records])
                axes[1, j].plot(steps, multiplier, color=cmap(i % 10), lw=1.1, label=run.name)
            if tail:
                start = int(len(steps) * (1 - tail))
                axes[2, j].plot(steps[start:], density[start:], color=cmap(i % 10), lw=1.1)
    for j, name in enumerate(constraints):
        eps = next(run.summary.all_targets()[name] for run in runs if name in run.summary.all_targets())
        for row in [0, 2] if tail else [0]:
            axes[row, j].axhline(eps, color="black", ls="--", lw=1)
        axes[0, j].set_title(f"{name}: expected density (ε = {eps:g} dashed)")
        axes[1, j].set_title(f"{name}: multiplier")
        axes[-1, j].set_xlabel("step")
        if tail:
            axes[2, j].set_title(f"{name}: density, last {100 * tail:.0f}% of steps")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], color=cmap(i % 10), label=run.name)
        for i, run in enumerate(runs)
        if run.summary.targets
    ]
    axes[0, -1].legend(
        handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False
    )
    fig.tight_layout()
    return fig


_METHOD_LABELS = {
    "hard_concrete": "hard concrete (L0, constrained)",
    "arm": "ARM (L0, constrained)",
    "l1_rda": "ℓ1-RDA (λ tuned)",
    "magnitude": "magnitude pruning",
}


def _method_of(run: Run) -> str:
    """The curve a run belongs to: its method and, where the method has a choice, structure.

    Pruning whole neurons and pruning single weights to the same density are different
    trade-offs, so they get separate curves; ℓ1-RDA is always unstructured.
    """
    method = run.summary.method
    targets = run.summary.targets
    if method == "magnitude" and targets and all(v == 1.0 for v in targets.values()):
        return "dense (nothing pruned)"  # the same trainer at target 1.0: the dense baseline
    label = _METHOD_LABELS.get(method, method)
    structure = "weight" if method == "l1_rda" else run.config.get("model", {}).get("structure", "neuron")
    return f"{label}, {'by weight' if structure == 'weight' else 'by neuron/channel'}"


def tradeoff(settings: Mapping[str, Sequence[Run]]) -> Figure:
    """Test error against realized density per setting (mean ± 95% CI over its seeds), by method.

    One panel per problem; each method's settings (per structure: neurons/channels or
    single weights) are joined in order of density, so the curve lowest at a density is
    the method to pick there.

    Args:
        settings: ``{setting label: finished runs (its seeds)}``, e.g. from a sweep.

    Examples:
        >>> tradeoff({"MLP, ARM, ε=0.1": [load_run("runs/m/arm/seed0")]}).savefig("t.png")  # doctest: +SKIP
    """
    from ctrlsparse.experiments.sweeps import mean_ci  # reproduce imports the training stack

    points: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    for runs in settings.values():
        runs = [run for run in runs if run.summary.test_error is not None]
        if not runs:
            continue
        # The realized density: the test error is measured with the test-time gates.
        density, density_ci = mean_ci([run.summary.realized_density for run in runs])
        error, error_ci = mean_ci([100 * run.summary.test_error for run in runs])
        problem = problem_of(runs[0])
        method = _method_of(runs[0])
        points.setdefault(problem, {}).setdefault(method, []).append((density, density_ci, error, error_ci))
    if not points:
        raise ValueError("no finished run with a test error to plot")
    fig, axes = plt.subplots(1, len(points), figsize=(5.2 * len(points) + 3.2, 4.2), squeeze=False)
    methods = list(dict.fromkeys(m for by_method in points.values() for m in by_method))
    for ax, (problem, by_method) in zip(axes[0], points.items()):
        for method, values in by_method.items():
            values.sort()
            d, dci, e, eci = (np.array(column) for column in zip(*values))
            color = f"C{methods.index(method) % 10}"
            ax.errorbar(d, e, xerr=dci, yerr=eci, color=color, marker="o", ms=5, capsize=3, lw=1.2)
        ax.set(xlabel="realized model density (test-time gates)", ylabel="test error (%)", title=problem)
        ax.set_xlim(0, max(0.5, ax.get_xlim()[1]))
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i % 10}", marker="o", label=m) for i, m in enumerate(methods)]
    axes[0, -1].legend(
        handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False
    )
    fig.tight_layout()
    return fig


def _curve_of(run: Run) -> str:
    """The curve of the front a run belongs to."""
    if run.series == "path":
        return "density path (one run, constrained)"
    if run.summary.mode == "penalized" and run.summary.method in ("hard_concrete", "arm"):
        return "L0 penalized (λ sweep)"
    if run.summary.mode == "constrained" and run.summary.method in ("hard_concrete", "arm"):
        return "separate constrained runs"
    return _method_of(run)


def _setting_of(run: Run) -> tuple:
    """What a run asked for, seeds aside: its curve and its targets or penalties."""
    summary = run.summary
    asked = {**summary.targets, **summary.macs_targets, **summary.penalties, **summary.macs_penalties}
    return (_curve_of(run), tuple(sorted((name, round(value, 9)) for name, value in asked.items())))


def _macs_fraction(summary: RunSummary) -> float | None:
    macs = summary.macs or {}
    if not macs.get("dense") or macs.get("realized") is None:
        return None
    return macs["realized"] / macs["dense"]


def front(runs: Sequence[Run]) -> Figure:
    """The accuracy–density front: test error against realized density and, where the runs
    recorded MACs, against the realized MACs fraction; one curve per kind of run (a density
    path's points, separate constrained runs, a penalized sweep, magnitude pruning), each
    setting's seeds as its mean and 95% interval (Student t).

    Examples:
        >>> runs = load_path("runs/path/seed0") + [load_run("runs/eps0.3")]  # doctest: +SKIP
        >>> front(runs).savefig("front.png")  # doctest: +SKIP
    """
    from ctrlsparse.experiments.sweeps import mean_ci  # reproduce imports the training stack

    settings: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.summary.test_error is not None:
            settings.setdefault(_setting_of(run), []).append(run)
    if not settings:
        raise ValueError("no finished run with a test error to plot")
    with_macs = all(_macs_fraction(r.summary) is not None for group in settings.values() for r in group)
    panels = 2 if with_macs else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels + 3.4, 4.3), squeeze=False)
    curves = list(dict.fromkeys(key[0] for key in settings))
    for column, measure in enumerate([_deployed_density, _macs_fraction][:panels]):
        ax = axes[0, column]
        for i, curve in enumerate(curves):
            values = []
            for key, group in settings.items():
                if key[0] != curve:
                    continue
                x, x_ci = mean_ci([measure(run.summary) for run in group])
                y, y_ci = mean_ci([100 * run.summary.test_error for run in group])
                values.append((x, x_ci, y, y_ci))
            values.sort()
            x, x_ci, y, y_ci = (np.array(c) for c in zip(*values))
            path = curve.startswith("density path")
            style = {"marker": "o", "lw": 1.6, "ls": "-"} if path else {"marker": "s", "lw": 1.0, "ls": "--"}
            ax.errorbar(x, y, xerr=x_ci, yerr=y_ci, color=f"C{i % 10}", ms=5, capsize=3, label=curve, **style)
        xlabel = "realized model density (test-time gates)" if column == 0 else "realized MACs / dense MACs"
        ax.set(xlabel=xlabel, ylabel="test error (%)")
        ax.set_xlim(0, min(1.02, max(0.55, ax.get_xlim()[1])))
        ax.grid(alpha=0.3)
    problems = sorted({problem_of(run) for group in settings.values() for run in group})
    axes[0, 0].set_title(f"Front: {', '.join(problems)} (mean, 95% interval over seeds)", fontsize=10)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig
