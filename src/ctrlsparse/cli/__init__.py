"""Command line: ``ctrlsparse run``, ``tune-penalty``, ``reproduce``, ``bench``, ``purge``, ``plot``
and ``compare``. The commands themselves are in :mod:`ctrlsparse.cli.commands`.

Importing this module imports neither torch nor the training code: ``ctrlsparse --help`` prints
at once, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence

from ctrlsparse import __version__
from ctrlsparse.cli.commands import (
    LEVELS_HELP,
    CLIError,
    cmd_bench_overhead,
    cmd_bench_purge,
    cmd_compare,
    cmd_path,
    cmd_plot,
    cmd_purge,
    cmd_reproduce,
    cmd_run,
    cmd_tune_penalty,
    parse_levels,
)
from ctrlsparse.errors import CtrlsparseError

__all__ = ["CLIError", "build_parser", "main", "parse_levels"]

# The values of ctrlsparse.problem.schedules.ScheduleKind, spelled out because that module imports
# torch (tests/test_cli.py checks that the two agree).
SCHEDULES = ("fixed", "linear", "geometric", "dynamic")


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown option is reported with this command's usage.

    argparse hands a subcommand's unrecognized arguments back to the top-level parser, whose
    usage line does not show the subcommand's options.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = [o for action in self._actions for o in action.option_strings]
            named = []
            for extra in extras:
                close = difflib.get_close_matches(extra.split("=")[0], options, n=1)
                named.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
            self.error(f"unrecognized arguments: {' '.join(named)}")
        return namespace, extras


def _add_compile(parser: argparse.ArgumentParser, default, help: str) -> None:
    """``--compile`` (True) or ``--compile step`` (``GDA(..., compile="step")``)."""
    choices = [True, "step"]
    parser.add_argument("--compile", nargs="?", const=True, default=default, choices=choices, help=help)


def build_parser() -> argparse.ArgumentParser:
    """The ``ctrlsparse`` argument parser, one subparser per command.

    Examples:
        >>> build_parser().parse_args(["purge", "runs/mine"]).command
        'purge'
    """
    parser = argparse.ArgumentParser(prog="ctrlsparse", description="Sparsity as a constraint you state.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    run = sub.add_parser("run", help="train a problem file and write a run directory")
    run.add_argument("problem", help="problem file (TOML), e.g. problems/digits_mlp.toml")
    levels = run.add_mutually_exclusive_group()
    levels.add_argument("--target-density", help=f"constrained mode: {LEVELS_HELP}")
    levels.add_argument("--penalty", help=f"penalized mode, λ >= 0: {LEVELS_HELP}")
    run.add_argument(
        "--target-macs",
        help=f"MACs budget, expected / dense MACs in (0, 1], with or without --target-density: {LEVELS_HELP}",
    )
    run.add_argument("--macs-penalty", help=f"penalized MACs term, λ >= 0: {LEVELS_HELP}")
    run.add_argument(
        "--feasibility",
        type=float,
        help="fraction of the run at its end for the feasibility phase (default 0.1: decide the gates so "
        "every realized density is <= its target, then train the open weights)",
    )
    run.add_argument(
        "--no-feasibility", dest="feasibility", action="store_const", const=0.0,
        help="no feasibility phase (paper reproductions)",
    )  # fmt: skip
    run.add_argument(
        "--method",
        choices=["l0", "l1_rda", "magnitude"],
        help="l0: gated expected-L0 problem (default); l1_rda: ℓ1 penalty trained with RDA "
        "(takes --penalty); magnitude: train dense, prune to --target-density",
    )
    run.add_argument("--gates", choices=["hard_concrete", "arm"], help="gate kind of the l0 method")
    run.add_argument(
        "--round-to", type=int, help="keep each layer's open channels/neurons in multiples of this (e.g. 8)"
    )
    run.add_argument(
        "--block-gates",
        action=argparse.BooleanOptionalAction,
        help="with --round-to N: one gate per block of N units instead of rounding the decision",
    )
    run.add_argument("--finetune-epochs", type=int, help="magnitude: epochs of fine-tuning after pruning")
    run.add_argument("--rda-gamma", type=float, help="l1_rda: γ of β_t = γ√t (first step is grad/γ)")
    run.add_argument("--epochs", type=int, help="override the problem file's epochs")
    run.add_argument("--seed", type=int, help="override the problem file's seed")
    _add_compile(run, None, "torch.compile the model's forward (GDA); --compile step compiles the whole step")
    run.add_argument(
        "--skip-below", type=float, help="Linear/Conv2d layers skip units with P(z != 0) below this (GDA)"
    )
    run.add_argument(
        "--dual-lr", type=float, help="dual learning rate (default: 40 / steps for Adam ascent, 1e-4 for SGD)"
    )
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
        choices=SCHEDULES,
        help="target schedule (default linear: initial density to the target over a third of training)",
    )
    run.add_argument(
        "--schedule-epochs", type=int, help="epochs of the linear schedule (default: --schedule-fraction)"
    )
    run.add_argument(
        "--schedule-fraction", type=float, help="the linear ramp's share of the run's steps (default 1/3)"
    )
    run.add_argument("--schedule-factor", type=float, help="shrink factor of geometric/dynamic schedules")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda")
    run.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its last complete checkpoint (same settings)",
    )  # fmt: skip
    again.add_argument("--overwrite", action="store_true", help="delete the run in --out and start afresh")
    run.add_argument(
        "--checkpoint-every", type=int, metavar="N",
        help="also checkpoint every N steps (always: at every epoch's end)",
    )  # fmt: skip
    run.add_argument(
        "--tensorboard", action="store_true",
        help="also write TensorBoard scalars into OUT/tensorboard (pip install 'ctrlsparse[tensorboard]')",
    )  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    path = sub.add_parser(
        "path", help="one run through decreasing targets, a deployed model per point (error-density front)"
    )
    path.add_argument("problem", help="problem file with targets, e.g. problems/fashion_lenet5_defaults.toml")
    path.add_argument(
        "--densities", required=True,
        help="the targets, loosest first: 0.5,0.3,0.2,0.1 (in the form of the file's target: density, "
        "MACs budget or parameter budget), or JSON per layer: '{\"fc1\": [0.5, 0.3], \"fc2\": [0.4, 0.2]}'",
    )  # fmt: skip
    path.add_argument(
        "--finetune", type=float, default=0.1,
        help="each point's training of its open weights, as a fraction of the run (default 0.1; all points "
        "together at most half the run)",
    )  # fmt: skip
    path.add_argument(
        "--no-decay", dest="decay", action="store_false",
        help="train each point at the run's learning rates (default: decay them linearly to zero)",
    )  # fmt: skip
    path.add_argument("--out", required=True, help="directory: one sub-run per point and path.json")
    path.add_argument("--epochs", type=int, help="override the problem file's epochs (the whole path's run)")
    path.add_argument("--seed", type=int, help="override the problem file's seed")
    path.add_argument("--device", help="torch device, e.g. cpu or cuda")
    path.add_argument("--penalty", help=argparse.SUPPRESS)  # refused with a reason
    path_again = path.add_mutually_exclusive_group()
    path_again.add_argument("--resume", action="store_true", help="continue the path in --out after a stop")
    path_again.add_argument("--overwrite", action="store_true", help="delete the path in --out, start afresh")
    path.add_argument("--checkpoint-every", type=int, metavar="N", help="also checkpoint every N steps")
    path.add_argument("--purge", action="store_true", help="also export each point's purged.pt2")
    path.add_argument("--quiet", action="store_true", help="no progress bar")
    path.set_defaults(func=cmd_path)

    compare = sub.add_parser("compare", help="compare finished runs in a table")
    compare.add_argument("runs", nargs="+", help="run directories, or density paths' (their points)")
    compare.add_argument("--out", help="directory to write report.md, comparison.png and traces.png into")
    compare.add_argument("--allow-mixed", action="store_true", help="compare runs of different problems")
    compare.set_defaults(func=cmd_compare)
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
    tune.set_defaults(func=cmd_tune_penalty)

    repro = sub.add_parser("reproduce", help="run a sweep file (settings x seeds) resumably and tabulate it")
    repro.add_argument("sweep", help="sweep file (TOML), e.g. problems/sweeps/fashion.toml")
    repro.add_argument("--out", help="directory of the run directories and table.md")
    repro.add_argument("--seeds", help="override the sweep's seeds, e.g. 0,1,2")
    repro.add_argument(
        "--settings",
        help="only the settings whose label contains this text, or one of these comma-separated "
        "patterns, e.g. 'ResNet,LeNet'",
    )
    repro.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    repro.add_argument("--table-only", action="store_true", help="only tabulate the finished runs")
    repro.set_defaults(func=cmd_reproduce)

    bench = sub.add_parser("bench", help="benchmarks of your problem (ratios measured in one process)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    ov = bench_sub.add_parser("overhead", help="gated vs dense training step time")
    ov.add_argument("problem", help="problem file (TOML)")
    ov.add_argument("--steps", type=int, default=100, help="steps per repetition")
    ov.add_argument("--repetitions", type=int, default=7, help="alternating repetitions (>= 5 recommended)")
    ov.add_argument("--target-density", type=float, help="model-wise target instead of the problem file's")
    ov.add_argument("--open-fraction", type=float, help="open this fraction of the gates, close the rest")
    ov.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    _add_compile(ov, False, "torch.compile both models' forward passes; --compile step: the whole gated step")
    ov.add_argument(
        "--skip-below", type=float, help="the gated step skips units with P(z != 0) below this (e.g. 1e-3)"
    )
    ov.set_defaults(func=cmd_bench_overhead)
    pu = bench_sub.add_parser(
        "purge",
        help="purged vs dense inference time of finished runs: speed-up against the FLOP and work ideals",
    )
    pu.add_argument("runs", nargs="+", metavar="run", help="run directories")
    pu.add_argument("--batch-size", type=int, default=256)
    pu.add_argument("--steps", type=int, default=50, help="forward passes per repetition")
    pu.add_argument("--repetitions", type=int, default=7)
    pu.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    pu.add_argument(
        "--channels-last", action="store_true", help="time both models and the batch in channels_last format"
    )
    pu.set_defaults(func=cmd_bench_purge)

    pg = sub.add_parser("purge", help="remove a run's closed units and export the model as purged.pt2")
    pg.add_argument("run", help="run directory")
    pg.add_argument("--out", help="file to write (default RUN/purged.pt2, a torch.export ExportedProgram)")
    pg.set_defaults(func=cmd_purge)

    plot = sub.add_parser("plot", help="draw dynamics.png and gates.png of a run")
    plot.add_argument("run", help="run directory")
    plot.add_argument("--out", help="directory for the figures (default: the run directory)")
    plot.add_argument("--smooth", type=float, help="EMA weight in [0, 1) for the training loss")
    plot.add_argument("--log-multipliers", action="store_true", help="log-scale the multiplier axis")
    plot.set_defaults(func=cmd_plot)
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
