"""Command line: ``ctrlsparse run``, ``tune-penalty``, ``reproduce``, ``bench``, ``plot`` and ``compare``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.experiments.config import load_problem, parse_problem
from ctrlsparse.problem.schedules import ScheduleKind
from ctrlsparse.runs.store import label_runs, load_run, problem_of

_LEVELS_HELP = "a number (model-wise), a list in forward order (0.5,0.3,0.7) or per layer (fc1=0.5,fc2=0.3)"


class CLIError(CtrlsparseError, ValueError):
    """Bad command-line input."""


def parse_levels(text: str, flag: str) -> float | list[float] | dict[str, float]:
    """Parse ``0.3``, ``0.5,0.3,0.7`` or ``fc1=0.5,fc2=0.3``.

    Example:
        >>> parse_levels("fc1=0.5,fc2=0.3", "--target-density")
        {'fc1': 0.5, 'fc2': 0.3}
    """
    parts = [p.strip() for p in text.split(",")]

    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise CLIError(
                f"{flag}: cannot read {value!r} as a number in {text!r}; use {_LEVELS_HELP}"
            ) from None

    if any(not p for p in parts):
        raise CLIError(f"{flag}: empty entry in {text!r}; use {_LEVELS_HELP}")
    if all("=" in p for p in parts):
        pairs = [p.split("=", 1) for p in parts]
        return {name.strip(): number(value) for name, value in pairs}
    if any("=" in p for p in parts):
        raise CLIError(f"{flag}: mix of named and unnamed entries in {text!r}; use {_LEVELS_HELP}")
    values = [number(p) for p in parts]
    return values[0] if len(values) == 1 else values


# Command-line flags that override a problem file key: flag attribute -> (section, key).
_RUN_OVERRIDES = {
    "method": ("sparsity", "method"),
    "gates": ("model", "gates"),
    "finetune_epochs": ("sparsity", "finetune_epochs"),
    "rda_gamma": ("optim", "rda_gamma"),
    "epochs": ("train", "epochs"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "dual_lr": ("optim", "dual_lr"),
    "dual_restarts": ("optim", "dual_restarts"),
    "dual_optimizer": ("optim", "dual_optimizer"),
    "dual_kp": ("optim", "dual_kp"),
    "alternating": ("optim", "alternating"),
    "augmented_lagrangian": ("optim", "augmented_lagrangian"),
    "schedule": ("schedule", "kind"),
    "schedule_epochs": ("schedule", "epochs"),
    "schedule_factor": ("schedule", "factor"),
}


def _cmd_run(args: argparse.Namespace) -> int:
    from ctrlsparse.experiments.build import run_problem  # imports torch: keep `--help` fast

    data = load_problem(args.problem).to_dict()
    if args.target_density is not None or args.penalty is not None:
        target = parse_levels(args.target_density, "--target-density") if args.target_density else None
        penalty = parse_levels(args.penalty, "--penalty") if args.penalty else None
        data["sparsity"].update(target_density=target, penalty=penalty)
    for attribute, (section, key) in _RUN_OVERRIDES.items():
        if getattr(args, attribute) is not None:
            data[section][key] = getattr(args, attribute)
    # The overridden problem is validated like a file, so a bad flag names its key.
    config = parse_problem(data, f"{args.problem} with the command-line options")
    out = Path(args.out or f"runs/{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    # Bad targets, penalties and layer names fail while building, before `out` is created.
    summary = run_problem(config, out, progress=not args.quiet)
    error = "n/a" if summary["test_error"] is None else f"{100 * summary['test_error']:.2f}%"
    print(f"{out}: {summary['mode']}, density {summary['density']:.4f}, test error {error}")
    return 0


def _cmd_tune_penalty(args: argparse.Namespace) -> int:
    from ctrlsparse.experiments.tuning import tune_penalty

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


def _cmd_reproduce(args: argparse.Namespace) -> int:
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
    if any(r.summary["test_error"] is not None for rs in finished.values() for r in rs):
        plot.tradeoff(finished).savefig(out / "tradeoff.png", dpi=110)
        print(f"wrote {out / 'tradeoff.png'} (test error against density, by method)")
    return 0


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    import torch

    from ctrlsparse.experiments.bench import overhead

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    timing = overhead(
        config,
        steps=args.steps,
        repetitions=args.repetitions,
        target_density=args.target_density,
        open_fraction=args.open_fraction,
    )
    setting = f"batch {config.train.batch_size}, {torch.get_num_threads()} threads"
    if args.open_fraction is not None:
        setting += f", {args.open_fraction:g} of the gates open"
    print(f"{config.name} ({setting}): {timing.report()}")
    return 0


def _cmd_bench_purge(args: argparse.Namespace) -> int:
    import torch

    from ctrlsparse.experiments.bench import purge_speed

    if args.threads:
        torch.set_num_threads(args.threads)
    timing = purge_speed(args.run, batch_size=args.batch_size, steps=args.steps, repetitions=args.repetitions)
    setting = f"eval, batch {args.batch_size}, {torch.get_num_threads()} threads"
    print(f"{args.run} ({setting}): {timing.report('purged / dense')}")
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    import torch

    from ctrlsparse.experiments.build import rebuild_run
    from ctrlsparse.gating import count, purge

    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir / "purged.pt2"
    run = rebuild_run(run_dir)
    example = run.example_input
    small = purge(run.model, example).eval()
    # The batch dimension stays free, so the program serves any batch size, not the example's.
    program = torch.export.export(small, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, out)
    before, _ = count(run.model, example)
    after, _ = count(small, example)
    print(
        f"wrote {out}: {after.params_dense:,} parameters (gated model {before.params_dense:,}, "
        f"{before.params_remaining:,} active), {after.macs_dense:,} MACs per example "
        f"(dense {before.macs_dense:,}); load it with torch.export.load"
    )
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
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


def _cmd_compare(args: argparse.Namespace) -> int:
    from ctrlsparse import reports as plot
    from ctrlsparse.reports.tables import comparison_table, dynamics_table

    runs = label_runs([load_run(path) for path in args.runs])
    problems = sorted({problem_of(run) for run in runs})
    if len(problems) > 1 and not args.allow_mixed:
        raise CLIError(
            f"the runs solve different problems ({', '.join(problems)}); "
            "pass --allow-mixed to compare them anyway"
        )
    table = comparison_table(runs)
    dynamics = dynamics_table(runs)
    if dynamics:
        table += "\n## Dual dynamics\n\n" + dynamics
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot.comparison(runs).savefig(out / "comparison.png", dpi=110)
        if any(run.summary["targets"] for run in runs):
            plot.traces(runs, tail=0.2).savefig(out / "traces.png", dpi=110)
        title = f"# ctrlsparse comparison: {', '.join(problems)}\n\n"
        figures = "\n![control and trade-off](comparison.png)\n"
        if (out / "traces.png").exists():
            figures += "\n![density and multiplier traces](traces.png)\n"
        (out / "report.md").write_text(title + table + figures)
        print(f"wrote {out / 'report.md'} with its figures")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctrlsparse", description="Sparsity as a constraint you state.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train a problem file and write a run directory")
    run.add_argument("problem", help="problem file (TOML), e.g. problems/digits_mlp.toml")
    levels = run.add_mutually_exclusive_group()
    levels.add_argument("--target-density", help=f"constrained mode: {_LEVELS_HELP}")
    levels.add_argument("--penalty", help=f"penalized mode, λ >= 0: {_LEVELS_HELP}")
    run.add_argument(
        "--method",
        choices=["l0", "l1_rda", "magnitude"],
        help="l0: gated expected-L0 problem (default); l1_rda: ℓ1 penalty trained with RDA "
        "(takes --penalty); magnitude: train dense, prune to --target-density",
    )
    run.add_argument("--gates", choices=["hard_concrete", "arm"], help="gate kind of the l0 method")
    run.add_argument("--finetune-epochs", type=int, help="magnitude: epochs of fine-tuning after pruning")
    run.add_argument("--rda-gamma", type=float, help="l1_rda: γ of β_t = γ√t (first step is grad/γ)")
    run.add_argument("--epochs", type=int, help="override the problem file's epochs")
    run.add_argument("--seed", type=int, help="override the problem file's seed")
    run.add_argument("--dual-lr", type=float, help="override the dual SGD learning rate")
    run.add_argument(
        "--dual-restarts",
        action=argparse.BooleanOptionalAction,
        help="reset a multiplier to 0 when its constraint is satisfied (default: the problem file's)",
    )
    run.add_argument("--dual-optimizer", choices=["sgd", "nupi", "adam"], help="dual ascent method")
    run.add_argument("--dual-kp", type=float, help="nuPI proportional gain (0: SGD ascent)")
    run.add_argument(
        "--alternating", action=argparse.BooleanOptionalAction, help="primal step, then dual step"
    )
    run.add_argument(
        "--augmented-lagrangian", type=float, help="Augmented Lagrangian penalty coefficient c > 0"
    )
    run.add_argument(
        "--schedule",
        choices=[kind.value for kind in ScheduleKind],
        help="target schedule (default linear: initial density to the target over a third of training)",
    )
    run.add_argument(
        "--schedule-epochs", type=int, help="epochs of the linear schedule (default: a third of training)"
    )
    run.add_argument("--schedule-factor", type=float, help="shrink factor of geometric/dynamic schedules")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda")
    run.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    compare = sub.add_parser("compare", help="compare finished runs in a table")
    compare.add_argument("runs", nargs="+", help="run directories")
    compare.add_argument("--out", help="directory to write report.md, comparison.png and traces.png into")
    compare.add_argument("--allow-mixed", action="store_true", help="compare runs of different problems")
    compare.set_defaults(func=_cmd_compare)
    tune = sub.add_parser("tune-penalty", help="search a penalty λ until a penalized run lands on a density")
    tune.add_argument("problem", help="problem file (TOML)")
    tune.add_argument("--target-density", type=float, required=True, help="model-wise density to land on")
    tune.add_argument("--tolerance", type=float, default=0.01, help="|density - ε| that counts as landed")
    tune.add_argument("--max-runs", type=int, default=12, help="give up after this many full runs")
    tune.add_argument("--initial-penalty", type=float, default=1.0, help="first λ to try")
    tune.add_argument("--epochs", type=int, help="override the problem file's epochs")
    tune.add_argument("--seed", type=int, help="override the problem file's seed")
    tune.add_argument("--out", help="directory for the probe runs and tuning.json")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(func=_cmd_tune_penalty)

    repro = sub.add_parser("reproduce", help="run a sweep file (settings x seeds) resumably and tabulate it")
    repro.add_argument("sweep", help="sweep file (TOML), e.g. problems/sweeps/fashion.toml")
    repro.add_argument("--out", help="directory of the run directories and table.md")
    repro.add_argument("--seeds", help="override the sweep's seeds, e.g. 0,1,2")
    repro.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    repro.add_argument("--table-only", action="store_true", help="only tabulate the finished runs")
    repro.set_defaults(func=_cmd_reproduce)

    bench = sub.add_parser("bench", help="benchmarks of your problem (ratios measured in one process)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    ov = bench_sub.add_parser("overhead", help="gated vs dense training step time")
    ov.add_argument("problem", help="problem file (TOML)")
    ov.add_argument("--steps", type=int, default=100, help="steps per repetition")
    ov.add_argument("--repetitions", type=int, default=7, help="alternating repetitions (>= 5 recommended)")
    ov.add_argument("--target-density", type=float, help="model-wise target instead of the problem file's")
    ov.add_argument("--open-fraction", type=float, help="open this fraction of the gates, close the rest")
    ov.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ov.set_defaults(func=_cmd_bench_overhead)
    pu = bench_sub.add_parser("purge", help="purged vs dense inference time of a finished run")
    pu.add_argument("run", help="run directory")
    pu.add_argument("--batch-size", type=int, default=256)
    pu.add_argument("--steps", type=int, default=50, help="forward passes per repetition")
    pu.add_argument("--repetitions", type=int, default=7)
    pu.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    pu.set_defaults(func=_cmd_bench_purge)

    pg = sub.add_parser("purge", help="remove a run's closed units and export the model as purged.pt2")
    pg.add_argument("run", help="run directory")
    pg.add_argument("--out", help="file to write (default RUN/purged.pt2, a torch.export ExportedProgram)")
    pg.set_defaults(func=_cmd_purge)

    plot = sub.add_parser("plot", help="draw dynamics.png and gates.png of a run")
    plot.add_argument("run", help="run directory")
    plot.add_argument("--out", help="directory for the figures (default: the run directory)")
    plot.add_argument("--smooth", type=float, help="EMA weight in [0, 1) for the training loss")
    plot.add_argument("--log-multipliers", action="store_true", help="log-scale the multiplier axis")
    plot.set_defaults(func=_cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # Library errors (downloads, imports, purge checks included) and bad values print as one
    # message; anything else is a bug and keeps its traceback.
    except (CtrlsparseError, ValueError, TypeError, FloatingPointError) as err:
        print(f"ctrlsparse {args.command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, FloatingPointError) else 2


if __name__ == "__main__":
    sys.exit(main())
