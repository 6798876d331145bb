"""What each ``ctrlsparse`` command does, and how flags are read (the parser is in :mod:`ctrlsparse.cli`).

Each command imports the library inside its function: importing this module stays free of torch,
so that ``ctrlsparse --help`` is quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ctrlsparse.errors import CtrlsparseError

LEVELS_HELP = "a number (model-wise), a list in forward order (0.5,0.3,0.7) or per layer (fc1=0.5,fc2=0.3)"


class CLIError(CtrlsparseError, ValueError):
    """Bad command-line input."""


def parse_levels(text: str, flag: str) -> float | list[float] | dict[str, float]:
    """Parse ``0.3``, ``0.5,0.3,0.7`` or ``fc1=0.5,fc2=0.3``.

    Examples:
        >>> parse_levels("fc1=0.5,fc2=0.3", "--target-density")
        {'fc1': 0.5, 'fc2': 0.3}
    """
    parts = [p.strip() for p in text.split(",")]

    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise CLIError(
                f"{flag}: cannot read {value!r} as a number in {text!r}; use {LEVELS_HELP}"
            ) from None

    if any(not p for p in parts):
        raise CLIError(f"{flag}: empty entry in {text!r}; use {LEVELS_HELP}")
    if all("=" in p for p in parts):
        pairs = [p.split("=", 1) for p in parts]
        return {name.strip(): number(value) for name, value in pairs}
    if any("=" in p for p in parts):
        raise CLIError(f"{flag}: mix of named and unnamed entries in {text!r}; use {LEVELS_HELP}")
    values = [number(p) for p in parts]
    return values[0] if len(values) == 1 else values


# Command-line flags that override a problem file key: flag attribute -> (section, key).
_RUN_OVERRIDES = {
    "method": ("sparsity", "method"),
    "gates": ("model", "gates"),
    "round_to": ("model", "round_to"),
    "block_gates": ("model", "block_gates"),
    "finetune_epochs": ("sparsity", "finetune_epochs"),
    "rda_gamma": ("optim", "rda_gamma"),
    "epochs": ("train", "epochs"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "compile": ("train", "compile"),
    "skip_below": ("train", "skip_below"),
    "dual_lr": ("optim", "dual_lr"),
    "dual_restarts": ("optim", "dual_restarts"),
    "dual_optimizer": ("optim", "dual_optimizer"),
    "dual_kp": ("optim", "dual_kp"),
    "alternating": ("optim", "alternating"),
    "augmented_lagrangian": ("optim", "augmented_lagrangian"),
    "schedule": ("schedule", "kind"),
    "schedule_epochs": ("schedule", "epochs"),
    "schedule_factor": ("schedule", "factor"),
    "schedule_fraction": ("schedule", "fraction"),
    "feasibility": ("sparsity", "feasibility"),
}


def _check_fraction(levels: float | list[float] | dict[str, float], flag: str) -> None:
    """A density or MACs level above 1 but at most 100 is most likely a percentage: say so."""
    values = levels.values() if isinstance(levels, dict) else levels if isinstance(levels, list) else [levels]
    for value in values:
        if 1 < value <= 100:
            raise CLIError(
                f"{flag}: {value:g} is not a fraction in (0, 1]; did you mean {value / 100:g} ({value:g}%)?"
            )


def cmd_run(args: argparse.Namespace) -> int:
    from ctrlsparse.experiments.build import run_problem
    from ctrlsparse.experiments.config import load_problem, parse_problem
    from ctrlsparse.training import distributed

    data = load_problem(args.problem).to_dict()
    flags = {"target_density": "--target-density", "penalty": "--penalty", "target_macs": "--target-macs",
             "macs_penalty": "--macs-penalty"}  # fmt: skip
    if any(getattr(args, key) is not None for key in flags):  # the command line's levels replace the file's
        data["sparsity"].update(
            {
                key: parse_levels(getattr(args, key), flag) if getattr(args, key) else None
                for key, flag in flags.items()
            }
        )
        for key in ("target_density", "target_macs"):
            if data["sparsity"][key] is not None:
                _check_fraction(data["sparsity"][key], flags[key])
    for attribute, (section, key) in _RUN_OVERRIDES.items():
        if getattr(args, attribute) is not None:
            data[section][key] = getattr(args, attribute)
    # Under torchrun: join the process group ("cuda" then means this rank's cuda:LOCAL_RANK).
    distributed.init_from_env(data["train"]["device"])
    data["train"]["world_size"] = distributed.context()[1]
    # The overridden problem is validated like a file, so a bad flag names its key.
    config = parse_problem(data, f"{args.problem} with the command-line options")
    if args.resume and not args.out:
        raise CLIError("--resume needs --out, the run directory to continue")
    out = Path(args.out or f"runs/{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    # A reused directory, bad targets, penalties and layer names fail before `out` is written.
    board = out / "tensorboard" if args.tensorboard else None
    summary = run_problem(
        config, out, progress=not args.quiet, checkpoint_every=args.checkpoint_every,
        resume=args.resume, overwrite=args.overwrite, tensorboard=board,
    )  # fmt: skip
    error = "n/a" if summary.test_error is None else f"{100 * summary.test_error:.2f}%"
    if summary.perplexity is not None:  # a language model
        error += f", validation perplexity {summary.perplexity:.2f}"
    if distributed.context()[0] == 0:
        kept = f"{summary.params['remaining']:,} of {summary.params['dense']:,}" if summary.params else "n/a"
        print(
            f"{out}: {summary.mode}, density {summary.realized_density:.4f} (realized, what ε bounds: "
            f"the gated layers' weights), parameters kept {kept} (all, biases and ungated layers "
            f"included), test error {error}"
        )
    return 0


def parse_path(text: str, flag: str = "--densities") -> list | dict:
    """Parse a path's targets: ``0.5,0.3,0.2,0.1``, or JSON for per-layer points
    (``[{"fc1": 0.5, "fc2": 0.4}, ...]`` or ``{"fc1": [0.5, 0.3], "fc2": [0.4, 0.2]}``).

    Examples:
        >>> parse_path("0.5,0.3,0.2")
        [0.5, 0.3, 0.2]
        >>> parse_path('{"fc1": [0.5, 0.3], "fc2": [0.4, 0.2]}')
        {'fc1': [0.5, 0.3], 'fc2': [0.4, 0.2]}
    """
    import json

    text = text.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(f"{flag}: {text!r} is not valid JSON ({error.msg})") from None
    levels = parse_levels(text, flag)
    if isinstance(levels, dict):
        raise CLIError(
            f"{flag}: {text!r} names layers; per-layer points go as JSON, e.g. "
            '\'{"fc1": [0.5, 0.3], "fc2": [0.4, 0.2]}\''
        )
    return levels if isinstance(levels, list) else [levels]


def cmd_path(args: argparse.Namespace) -> int:
    from ctrlsparse.experiments.build import PATH_KEYS, path_quantity, run_problem
    from ctrlsparse.experiments.config import load_problem, parse_problem
    from ctrlsparse.runs.checkpoint import check_run_dir
    from ctrlsparse.training.path import DensityPath

    if args.penalty is not None:
        raise CLIError(
            "--penalty: a density path lowers constrained targets, each point deployed at its ε; a "
            "penalty sweep is tune-penalty (one density) or a sweep file (reproduce)"
        )
    points = parse_path(args.densities)
    data = load_problem(args.problem).to_dict()
    for attribute, (section, key) in _RUN_OVERRIDES.items():
        if getattr(args, attribute, None) is not None:
            data[section][key] = getattr(args, attribute)
    config = parse_problem(data, f"{args.problem} with the command-line options")
    sparsity = config.sparsity
    if sparsity.method != "l0":
        raise CLIError(
            f"{args.problem}: [sparsity] method = {sparsity.method!r}; a density path trains L0 gates "
            "(method = 'l0'); magnitude pruning and l1_rda take one run per density"
        )
    if sparsity.penalty is not None or sparsity.macs_penalty is not None:
        raise CLIError(
            f"{args.problem} is penalized ([sparsity] penalty / macs_penalty); a density path lowers "
            "constrained targets: give the file a target_density (any value: the path replaces it)"
        )
    quantity = path_quantity(config)
    path = DensityPath(points, quantity=quantity, finetune=args.finetune, decay=args.decay)
    # The points replace the file's target (a model-wise path on a per-layer file, say): the
    # problem is built with the first point, in its form.
    data["sparsity"][PATH_KEYS[quantity]] = path.given[0]
    config = parse_problem(data, f"{args.problem} with the command-line options")
    out = Path(args.out)
    check_run_dir(out, args.resume, args.overwrite)
    run_problem(config, out, progress=not args.quiet, checkpoint_every=args.checkpoint_every,
                resume=args.resume, overwrite=args.overwrite, path=path)  # fmt: skip
    for point in path.points:
        error = "n/a" if point.test_error is None else f"{100 * point.test_error:.2f}%"
        asked = ", ".join(f"{name} ≤ {eps:g}" for name, eps in point.targets.items())
        print(
            f"{out / point.run}: {asked}; realized density {point.realized_density:.4f}, test error {error}"
        )
        if args.purge:
            _purge_run(out / point.run, out / point.run / "purged.pt2")
    print(f"wrote {out / 'path.json'} ({len(path.points)} points); compare them: ctrlsparse compare {out}")
    return 0


def cmd_tune_penalty(args: argparse.Namespace) -> int:
    from ctrlsparse.experiments.config import load_problem
    from ctrlsparse.experiments.tuning import tune_penalty

    _check_fraction(args.target_density, "--target-density")
    config = load_problem(args.problem)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **overrides))
    out = Path(args.out or f"runs/{config.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}")
    result = tune_penalty(
        config,
        args.target_density,
        out,
        tolerance=args.tolerance,
        max_runs=args.max_runs,
        initial_penalty=args.initial_penalty,
        progress=not args.quiet,
    )
    for h in result["history"]:
        print(f"λ = {h['penalty']:.4g}: density {h['density']:.4f}  ({h['run']})")
    verdict = "landed" if result["converged"] else "did not land"
    print(
        f"{verdict} within {args.tolerance} of ε = {args.target_density} after {result['runs']} full runs; "
        f"best λ = {result['best']['penalty']:.4g} (density {result['best']['density']:.4f})"
    )
    return 0 if result["converged"] else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ctrlsparse import reports as plot
    from ctrlsparse.experiments.sweeps import (
        load_sweep,
        run_sweep,
        sweep_dynamics_table,
        sweep_runs,
        sweep_table,
    )

    sweep = load_sweep(args.sweep)
    if args.seeds:
        sweep.seeds = [int(s) for s in args.seeds.split(",")]
    if args.settings:
        whole = args.settings.strip()
        # Labels hold commas ("Fashion ResNet-8 20 epochs, paper, per-stage"): where a label
        # contains the whole text, that is the setting asked for; otherwise commas separate patterns.
        if any(whole.lower() in s.label.lower() for s in sweep.settings):
            sweep.select([whole])
        else:
            sweep.select([p.strip() for p in whole.split(",") if p.strip()])
    out = Path(args.out or f"runs/reproduce-{sweep.name}")
    if not args.table_only:
        run_sweep(sweep, out, jobs=args.jobs)
    table = sweep_table(sweep, out)
    dynamics = sweep_dynamics_table(sweep, out)
    if dynamics:
        table += "\n## Dual dynamics\n\n" + dynamics
    (out / "table.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / 'table.md'}")
    finished = sweep_runs(sweep, out)
    if any(r.summary.test_error is not None for rs in finished.values() for r in rs):
        plot.tradeoff(finished).savefig(out / "tradeoff.png", dpi=110)
        print(f"wrote {out / 'tradeoff.png'} (test error against density, by method)")
    return 0


def cmd_bench_overhead(args: argparse.Namespace) -> int:
    import torch

    from ctrlsparse.experiments.bench import overhead
    from ctrlsparse.experiments.config import load_problem

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    timing = overhead(
        config,
        steps=args.steps,
        repetitions=args.repetitions,
        target_density=args.target_density,
        open_fraction=args.open_fraction,
        compile=args.compile,
        skip_below=args.skip_below,
    )
    setting = f"batch {config.train.batch_size}, {torch.get_num_threads()} threads"
    if args.compile:
        setting += ", torch.compile" + (" (whole gated step)" if args.compile == "step" else "")
    if args.skip_below is not None:
        setting += f", skipping units below P = {args.skip_below:g}"
    if args.open_fraction is not None:
        setting += f", {args.open_fraction:g} of the gates open"
    print(f"{config.name} ({setting}): {timing.report()}")
    return 0


def cmd_bench_purge(args: argparse.Namespace) -> int:
    import torch

    from ctrlsparse.experiments.bench import SPEEDUP_HEADER, purge_speed

    if args.threads:
        torch.set_num_threads(args.threads)
    layout = ", channels_last" if args.channels_last else ""
    setting = f"eval, batch {args.batch_size}, {torch.get_num_threads()} threads{layout}"
    rows = []
    for run in args.runs:
        timing = purge_speed(
            run, args.batch_size, args.steps, args.repetitions, channels_last=args.channels_last
        )
        print(f"{run} ({setting}): {timing.report('purged / dense')}", flush=True)
        rows.append([run, *timing.speedup_cells()])
    header = ["run", *SPEEDUP_HEADER]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    _purge_run(run_dir, Path(args.out) if args.out else run_dir / "purged.pt2")
    return 0


def _purge_run(run_dir: Path, out: Path) -> None:
    """Purge a finished run's model and export it to ``out`` (``ctrlsparse purge``)."""
    import torch

    from ctrlsparse.experiments.build import rebuild_run
    from ctrlsparse.gating import count, gate_groups, purge

    run = rebuild_run(run_dir)
    example = run.example_input
    small = purge(run.model, example).eval()
    # The batch dimension stays free, so the program serves any batch size, not the example's.
    program = torch.export.export(small, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, out)
    before, _ = count(run.model, example)
    after, _ = count(small, example)
    why = ""
    if after.params_dense < before.params_remaining:
        why = (
            " (purge also drops weights whose own gate is open but whose outputs no open unit reads; "
            "ε counts them as kept)"
        )
    elif after.params_dense > before.params_remaining and any(g.round_to > 1 for g in gate_groups(run.model)):
        why = " (round_to: purge keeps closed units, zeroed, up to an allowed count)"
    print(
        f"wrote {out}: parameters kept {after.params_dense:,} of {before.params_dense:,}; the gates keep "
        f"{before.params_remaining:,}{why}; {after.macs_dense:,} MACs per example "
        f"(dense {before.macs_dense:,}); load it with torch.export.load"
    )


def cmd_plot(args: argparse.Namespace) -> int:
    from ctrlsparse import reports as plot

    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "dynamics.png": plot.dynamics(run_dir, smooth=args.smooth, log_multipliers=args.log_multipliers),
        "gates.png": plot.gates(run_dir),
    }
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=110)
        print(f"wrote {out / name}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ctrlsparse import reports as plot
    from ctrlsparse.reports.tables import SIZE_NOTE, Results, comparison_table, dynamics_table
    from ctrlsparse.runs.store import is_path, label_runs, load_path, load_run, problem_of

    runs = label_runs([load_run(path) for path in args.runs if not is_path(path)])
    for path in filter(is_path, args.runs):  # a density path's directory stands for its points
        runs += load_path(path)
    problems = sorted({problem_of(run) for run in runs})
    if len(problems) > 1 and not args.allow_mixed:
        raise CLIError(
            f"the runs solve different problems ({', '.join(problems)}); "
            "pass --allow-mixed to compare them anyway"
        )
    table = comparison_table(runs) + "\n" + SIZE_NOTE + "\n"
    dynamics = dynamics_table([run for run in runs if run.series != "path"])  # points have no metrics
    if dynamics:
        table += "\n## Dual dynamics\n\n" + dynamics
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot.comparison(runs).savefig(out / "comparison.png", dpi=110)
        traced = [run for run in runs if run.series != "path"]  # a path's points have no traces
        if any(run.summary.all_targets() for run in traced):
            plot.traces(traced, tail=0.2).savefig(out / "traces.png", dpi=110)
        title = f"# ctrlsparse comparison: {', '.join(problems)}\n\n"
        figures = "\n![control and trade-off](comparison.png)\n"
        if any(run.summary.test_error is not None for run in runs):
            plot.front(runs).savefig(out / "front.png", dpi=110)
            figures += "\n![test error against realized density and MACs](front.png)\n"
        if (out / "traces.png").exists():
            figures += "\n![density and multiplier traces](traces.png)\n"
        (out / "report.md").write_text(title + table + figures)
        Results({run.name: run.summary for run in runs}).write(out / "results.json")
        print(f"wrote {out / 'report.md'} with its figures, and {out / 'results.json'}")
    return 0
