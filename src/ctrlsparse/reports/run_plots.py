"""Figures of one run: multiplier and density dynamics, and its gates (matplotlib, Agg backend).

Every figure colours a constraint or layer the same way: the model in black, layers
in forward order from a qualitative palette (a sequential one beyond ten layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ctrlsparse.gating.gates import ARMGate, HardConcrete  # noqa: E402
from ctrlsparse.problem.levels import MODEL  # noqa: E402
from ctrlsparse.runs.records import RunSummary  # noqa: E402
from ctrlsparse.runs.store import MODEL as MODEL_FILE  # noqa: E402
from ctrlsparse.runs.store import RunFormatError, load_run, read_metrics  # noqa: E402


def layer_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A colour per layer name (forward order), and black for the model.

    Examples:
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


def _history(source: str | Path | Sequence[dict]) -> tuple[list[dict], RunSummary | None, str]:
    """Records, summary (None for a run in progress) and a title from a run directory or records."""
    if isinstance(source, str | Path):
        path = Path(source)
        records = read_metrics(path)
        try:
            summary = load_run(path).summary
        except RunFormatError:
            summary = None  # a run still in progress has no summary yet
        return records, summary, path.name
    return list(source), None, "run"


def _targets_from(records: list[dict], summary: RunSummary | None) -> tuple[dict, dict]:
    """(targets, penalties) of a run; without a summary, read off the last record."""
    if summary is not None:
        return summary.all_targets(), summary.all_penalties()
    last = records[-1]
    targets, penalties = {}, {}
    values = {MODEL: last["density"], **last["densities"], **last.get("macs", {})}
    for name, violation in last["violations"].items():
        level = values[name] - violation
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

    Examples:
        >>> fig = dynamics("runs/demo/constrained-model")  # doctest: +SKIP
        >>> fig.savefig("dynamics.png")  # doctest: +SKIP
    """
    records, summary, title = _history(source)
    if not records:
        raise RunFormatError(f"{title}: no metrics recorded")
    steps = np.array([r["step"] for r in records])
    layers = list(records[0]["densities"])
    macs_names = list(records[0].get("macs", {}))
    colors = layer_colors([MODEL, *layers])
    macs_colors = layer_colors(macs_names) if macs_names else {}
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
    series.update({n: np.array([r["macs"][n] for r in records]) for n in macs_names})
    for name, values in series.items():
        color = macs_colors.get(name, colors.get(name))
        style = "-." if name in macs_names else "-"
        ax_dens.plot(steps, values, color=color, ls=style, lw=2.0 if name == MODEL else 1.2, label=name)
        if name in targets:
            # The level in force at each step (the records' "levels"; older runs: value −
            # violation), so a ramped target is drawn as it moved, not only at its final ε.
            if "levels" in records[0]:
                level = np.array([r["levels"].get(name, np.nan) for r in records], dtype=float)
            else:
                level = values - np.array([r["violations"].get(name, np.nan) for r in records])
            if np.isnan(level).all():  # no constraint logged (a pruned run): its final ε
                level = np.full_like(values, targets[name])
            ax_dens.plot(steps, level, color=color, ls="--", lw=1.0)
    feasibility = None if summary is None else summary.feasibility
    if feasibility:
        for ax in axes.flat:
            ax.axvline(feasibility["step"], color="0.5", lw=0.8, ls=":")
        ax_dens.annotate("gates decided", (feasibility["step"], 0.98), fontsize=8, ha="right", va="top",
                         xytext=(-3, 0), textcoords="offset points")  # fmt: skip
    ax_dens.set_ylabel("expected density" + (" / MACs fraction" if macs_names else ""))
    ax_dens.set_ylim(0, 1.02)
    ax_dens.set_title(
        "Expected density" + (" and MACs (dash-dot)" if macs_names else "") + " (dashed: target level)"
    )

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
    mode = "" if summary is None else summary.mode
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
                prefix = key[: -len(suffix)]
                with torch.no_grad():
                    gate.parameter.data = value.float().flatten()
                    decided = state.get(prefix + ".decided")  # the feasibility phase fixed them: 0 or 1
                    # "fc1.input_gate" -> "fc1 input"
                    root, _, kind = prefix.rpartition(".")
                    p = gate.prob_active() if decided is None else (decided.float().flatten() > 0).float()
                    probs[f"{root} {kind.removesuffix('_gate')}"] = p.numpy()
    if not probs:
        raise RunFormatError(f"{path}: holds no gate parameters")
    return probs


def gates(run_dir: str | Path) -> Figure:
    """Histogram of P(gate active) per layer at the end of training (eq. 12).

    Bimodal histograms — mass near 0 and near 1 — show gates that have decided.

    Examples:
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
