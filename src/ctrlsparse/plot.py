"""Figures of a run's dynamics, its gates, and comparisons of runs (matplotlib, Agg backend).

Every figure colours a constraint or layer the same way: the model in black, layers
in forward order from a qualitative palette (a sequential one beyond ten layers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ctrlsparse.gating.gates import ARMGate, HardConcrete  # noqa: E402
from ctrlsparse.problem import MODEL  # noqa: E402
from ctrlsparse.runs import MODEL as MODEL_FILE  # noqa: E402
from ctrlsparse.runs import Run, RunFormatError, load_run, problem_of, read_metrics  # noqa: E402


def layer_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A colour per layer name (forward order), and black for the model.

    Example:
        >>> layer_colors(["fc1", "fc2"])["model"]
        (0.0, 0.0, 0.0, 1.0)
    """
    layers = [n for n in names if n != MODEL]
    cmap = plt.get_cmap("tab10") if len(layers) <= 10 else plt.get_cmap("viridis")
    positions = range(len(layers)) if len(layers) <= 10 else np.linspace(0, 0.92, len(layers))
    colors = {name: cmap(p) for name, p in zip(layers, positions)}
    colors[MODEL] = (0.0, 0.0, 0.0, 1.0)
    return colors


def _ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """Exponential moving average with weight ``smooth`` on the past (0 = none); NaNs skipped."""
    if smooth <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    avg = np.nan
    for i, v in enumerate(values):
        if np.isfinite(v):
            avg = v if not np.isfinite(avg) else smooth * avg + (1 - smooth) * v
        out[i] = avg
    return out


def _history(source: str | Path | Sequence[dict]) -> tuple[list[dict], dict, str]:
    """Records, summary (may be empty) and a title from a run directory or a list of records."""
    if isinstance(source, str | Path):
        path = Path(source)
        records = read_metrics(path)
        try:
            summary = load_run(path).summary
        except RunFormatError:
            summary = {}  # a run still in progress has no summary yet
        return records, summary, path.name
    return list(source), {}, "run"


def _targets_from(records: list[dict], summary: dict) -> tuple[dict, dict]:
    """(targets, penalties) of a run; without a summary, read off the last record."""
    if summary:
        return summary["targets"], summary["penalties"]
    last = records[-1]
    targets, penalties = {}, {}
    for name, violation in last["violations"].items():
        level = (last["density"] if name == MODEL else last["densities"][name]) - violation
        # A penalty is the constraint "density <= 0" with its multiplier fixed at lambda.
        if abs(level) < 1e-9:
            penalties[name] = last["multipliers"][name]
        else:
            targets[name] = level
    return targets, penalties


def dynamics(
    source: str | Path | Sequence[dict],
    smooth: float | None = None,
    log_multipliers: bool = False,
) -> Figure:
    """Multipliers, densities (with targets dashed), training loss and test error against step.

    Args:
        source: a run directory or the records of its ``metrics.jsonl``.
        smooth: EMA weight for the training loss (default: more for longer runs).
        log_multipliers: log-scale the multiplier axis.

    Example:
        >>> fig = dynamics("runs/demo/constrained-model")  # doctest: +SKIP
        >>> fig.savefig("dynamics.png")  # doctest: +SKIP
    """
    records, summary, title = _history(source)
    if not records:
        raise RunFormatError(f"{title}: no metrics recorded")
    steps = np.array([r["step"] for r in records])
    layers = list(records[0]["densities"])
    colors = layer_colors([MODEL, *layers])
    targets, penalties = _targets_from(records, summary)
    if smooth is None:
        smooth = float(np.clip(1 - 10 / max(len(records), 1), 0, 0.98))

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    ax_mult, ax_dens, ax_loss, ax_err = axes.flat

    for name in records[0]["multipliers"]:
        values = np.array([r["multipliers"][name] for r in records])
        label = f"{name} (fixed λ={penalties[name]:g})" if name in penalties else name
        ax_mult.plot(
            steps, values, color=colors[name], lw=1.4, ls=":" if name in penalties else "-", label=label
        )
    ax_mult.set_ylabel("multiplier λ")
    ax_mult.set_title("Lagrange multipliers")
    if log_multipliers:
        ax_mult.set_yscale("symlog", linthresh=1e-3)

    series = {MODEL: np.array([r["density"] for r in records])}
    series.update({n: np.array([r["densities"][n] for r in records]) for n in layers})
    for name, values in series.items():
        ax_dens.plot(steps, values, color=colors[name], lw=2.0 if name == MODEL else 1.2, label=name)
        if name in targets:
            # The level in force at each step: density − violation, so a ramped target
            # (TargetSchedule) is drawn as it moved, not only at its final ε.
            level = values - np.array([r["violations"].get(name, np.nan) for r in records])
            if np.isnan(level).all():  # no constraint logged (a pruned run): its final ε
                level = np.full_like(values, targets[name])
            ax_dens.plot(steps, level, color=colors[name], ls="--", lw=1.0)
    ax_dens.set_ylabel("expected density")
    ax_dens.set_ylim(0, 1.02)
    ax_dens.set_title("Expected density (dashed: target level)")

    loss = np.array([r["loss"] if r["loss"] is not None else np.nan for r in records], dtype=float)
    ax_loss.plot(steps, loss, color="0.75", lw=0.8, label="per step")
    ax_loss.plot(steps, _ema(loss, smooth), color="C3", lw=1.5, label=f"EMA ({smooth:.2f})")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("Training loss")
    if np.nanmin(loss) > 0 and np.nanmax(loss) / max(np.nanmin(loss), 1e-12) > 20:
        ax_loss.set_yscale("log")

    evals = [r for r in records if r.get("test_error") is not None]
    if evals:
        ax_err.plot(
            [r["step"] for r in evals], [100 * r["test_error"] for r in evals], color="C2", marker=".", lw=1.2
        )
        final = 100 * evals[-1]["test_error"]
        ax_err.annotate(
            f"{final:.2f}%", (evals[-1]["step"], final), textcoords="offset points", xytext=(-30, 8)
        )
    else:
        ax_err.text(0.5, 0.5, "no evaluation recorded", ha="center", va="center", transform=ax_err.transAxes)
    ax_err.set_ylabel("test error (%)")
    ax_err.set_xlabel("step")
    ax_err.set_title("Test error (test-time gates)")

    ncol = 1 if len(layers) < 6 else 2
    for ax in (ax_mult, ax_dens, ax_loss):
        ax.legend(fontsize=8, ncol=ncol, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    mode = summary.get("mode", "")
    fig.suptitle(f"{title}" + (f" — {mode}" if mode else ""))
    fig.tight_layout()
    return fig


def _gate_probabilities(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / MODEL_FILE
    if not path.exists():
        raise RunFormatError(f"{path}: no such file (is {run_dir} a finished run?)")
    state = torch.load(path, map_location="cpu")
    # Hard concrete gates: eq. 12 with the settings every ctrlsparse gate uses; ARM gates:
    # pi = g(k phi) with the k and g the run's problem file recorded.
    model = load_run(run_dir).config.get("model", {})
    kinds = {
        ".gate.log_alpha": HardConcrete((1,)),
        ".gate.phi": ARMGate((1,), k=model.get("arm_k", 7.0), squash=model.get("arm_squash", "sigmoid")),
    }
    probs = {}
    for key, value in state.items():
        for suffix, gate in kinds.items():
            if key.endswith(suffix):
                with torch.no_grad():
                    gate.parameter.data = value.float().flatten()
                    # "fc1.input_gate" -> "fc1 input"
                    root, _, kind = key[: -len(suffix)].rpartition(".")
                    probs[f"{root} {kind.removesuffix('_gate')}"] = gate.prob_active().numpy()
    if not probs:
        raise RunFormatError(f"{path}: holds no gate parameters")
    return probs


def gates(run_dir: str | Path) -> Figure:
    """Histogram of P(gate active) per layer at the end of training (eq. 12).

    Bimodal histograms — mass near 0 and near 1 — show gates that have decided.

    Example:
        >>> gates("runs/demo/constrained-model").savefig("gates.png")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    probs = _gate_probabilities(run_dir)
    colors = layer_colors(list(probs))
    n = len(probs)
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, (name, p) in zip(axes.flat, probs.items()):
        ax.hist(p, bins=bins, color=colors[name])
        ax.set_title(f"{name} ({len(p)} gates)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("P(gate active)")
        ax.set_ylabel("gates")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name} — gate probabilities at the end of training")
    fig.tight_layout()
    return fig


_MODE_STYLE = {"constrained": ("o", "C0"), "penalized": ("s", "C1"), "pruned": ("^", "C2")}


def comparison(runs: Sequence[Run]) -> Figure:
    """Control (achieved vs requested density) and trade-off (error vs density) plots of runs.

    Constrained runs' constraints sit on the diagonal of the control panel when they
    hit their targets; penalized runs are placed by their λ in a panel of their own,
    since λ says nothing in advance about the density it gives.

    Example:
        >>> fig = comparison([load_run("runs/a"), load_run("runs/b")])  # doctest: +SKIP
        >>> fig.savefig("comparison.png")  # doctest: +SKIP
    """
    names = []
    for run in runs:
        names += [n for n in run.summary["densities"] if n not in names]
    colors = layer_colors([MODEL, *names])
    fig, (ax_ctrl, ax_pen, ax_err) = plt.subplots(1, 3, figsize=(15, 4.6))

    def achieved(summary: dict, name: str) -> float:
        return summary["density"] if name == MODEL else summary["densities"][name]

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
        for name, eps in run.summary["targets"].items():
            ax_ctrl.scatter(eps, achieved(run.summary, name), zorder=3, **style(name, "o"))
        for name, lam in run.summary["penalties"].items():
            ax_pen.scatter(lam, achieved(run.summary, name), zorder=3, **style(name, "s"))
    ax_ctrl.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="achieved = requested")
    ax_ctrl.set(xlim=(0, 1), ylim=(0, 1), xlabel="requested density ε", ylabel="achieved expected density")
    ax_ctrl.set_title("Constrained: control of density")
    penalized = [run for run in runs if run.summary["penalties"]]
    if penalized:
        lams = [lam for run in penalized for lam in run.summary["penalties"].values()]
        if min(lams) > 0 and max(lams) / min(lams) > 10:
            ax_pen.set_xscale("log")
        elif max(lams) > 0:
            ax_pen.set_xlim(0, 1.25 * max(lams))
    else:
        ax_pen.text(0.5, 0.5, "no penalized run", ha="center", va="center", transform=ax_pen.transAxes)
    ax_pen.set(ylim=(0, 1), xlabel="penalty λ", ylabel="achieved expected density")
    ax_pen.set_title("Penalized: density wherever λ lands")
    handles = [
        plt.Line2D(
            [], [], marker="o", ls="", label=n, color=colors[n], mfc="none" if n == MODEL else colors[n]
        )
        for n in [MODEL, *names]
        if any(n in r.summary["targets"] or n in r.summary["penalties"] for r in runs)
    ]
    ax_ctrl.legend(handles=[*handles, *ax_ctrl.get_legend_handles_labels()[0]], fontsize=8, loc="upper left")

    for run in runs:
        s = run.summary
        if s["test_error"] is None:
            continue
        marker, color = _MODE_STYLE.get(s["mode"], ("s", "C1"))
        ax_err.scatter(s["density"], 100 * s["test_error"], marker=marker, s=50, color=color)
        ax_err.annotate(
            run.name,
            (s["density"], 100 * s["test_error"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(5, 4),
        )
    for mode in dict.fromkeys(r.summary["mode"] for r in runs if r.summary["test_error"] is not None):
        marker, color = _MODE_STYLE.get(mode, ("s", "C1"))
        ax_err.scatter([], [], marker=marker, color=color, label=mode)
    ax_err.legend(fontsize=8, loc="upper right")
    ax_err.set(xlabel="final expected model density", ylabel="test error (%)")
    ax_err.set_xlim(0, 1)
    ax_err.set_title("Trade-off: error vs density")
    for ax in (ax_ctrl, ax_pen, ax_err):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def traces(runs: Sequence[Run], tail: float | None = None) -> Figure:
    """Density and multiplier traces of several runs overlaid, one column per constraint.

    For comparing dual-update options on one problem: each run is one line (in the
    run's colour across panels), each constraint's target a dashed black line.

    Args:
        tail: if given, also zoom the density axis onto the last ``tail`` fraction of steps.

    Example:
        >>> traces([load_run("runs/sgd"), load_run("runs/nupi")]).savefig("traces.png")  # doctest: +SKIP
    """
    constraints = []
    for run in runs:
        constraints += [n for n in run.summary["targets"] if n not in constraints]
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
            if name not in run.summary["targets"]:
                continue
            density = np.array([r["density"] if name == MODEL else r["densities"][name] for r in records])
            axes[0, j].plot(steps, density, color=cmap(i % 10), lw=1.1, label=run.name)
            if name in records[0]["multipliers"]:  # pruned runs have a target but no multiplier
                multiplier = np.array([r["multipliers"][name] for r in records])
                axes[1, j].plot(steps, multiplier, color=cmap(i % 10), lw=1.1, label=run.name)
            if tail:
                start = int(len(steps) * (1 - tail))
                axes[2, j].plot(steps[start:], density[start:], color=cmap(i % 10), lw=1.1)
    for j, name in enumerate(constraints):
        eps = next(run.summary["targets"][name] for run in runs if name in run.summary["targets"])
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
        if run.summary["targets"]
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
    method = run.summary.get("method", "hard_concrete")
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

    Example:
        >>> tradeoff({"MLP, ARM, ε=0.1": [load_run("runs/m/arm/seed0")]}).savefig("t.png")  # doctest: +SKIP
    """
    from ctrlsparse.reproduce import mean_ci  # reproduce imports the training stack

    points: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    for runs in settings.values():
        runs = [run for run in runs if run.summary["test_error"] is not None]
        if not runs:
            continue
        # The realized density: the test error is measured with the test-time gates.
        density, density_ci = mean_ci([run.summary["realized_density"] for run in runs])
        error, error_ci = mean_ci([100 * run.summary["test_error"] for run in runs])
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
