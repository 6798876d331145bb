"""Why ``compile="step"`` runs the dual update eagerly (docs/performance.md, "The step on the
user's path, and the compiled step").

    git worktree add --detach /tmp/ctrlsparse-00ab611 00ab611
    PYTHONPATH=/tmp/ctrlsparse-00ab611/src .venv-dev/bin/python docs/scripts/compile_dual.py --repetitions 31

Until commit 8e346ab the step compiled the dual update (the dual optimizer's step, the
projection, the clamp and the restarts) as a second region. This script, run against a
checkout of a commit before that one, times two ``GDA(..., compile="step")`` steps on the MLP
problem and the dense step with its forward compiled, alternating in one process: one step
as that commit built it, one with the dual region replaced by its eager function (what
``compile="step"`` runs now). The first compiled steps take a few minutes on the CPU.
"""

import argparse
import inspect
import statistics
from pathlib import Path

import torch

from ctrlsparse.experiments.bench import alternate_many, overhead_steps, spread
from ctrlsparse.experiments.config import load_problem

PROBLEM = Path(__file__).parents[2] / "problems" / "fashion_mlp.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repetitions", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_problem(PROBLEM)
    total = (args.steps + 1) * (args.repetitions + 10)
    compiled_dual, dense_compiled = overhead_steps(config, total, compile="step")
    eager_dual, _ = overhead_steps(config, total, compile="step")
    step = inspect.getclosurevars(eager_dual).nonlocals["gda"]._compiled_step
    if not hasattr(step, "_eager_dual_update"):
        raise SystemExit("this checkout runs the dual update eagerly already: use a commit before 8e346ab")
    step._dual_update._call = step._eager_dual_update
    steps = {"dense compiled": dense_compiled, "compiled dual": compiled_dual, "eager dual": eager_dual}
    seconds = alternate_many(steps, args.steps, args.repetitions)
    for name in ("compiled dual", "eager dual"):
        ratios = [a / b for a, b in zip(seconds[name], seconds["dense compiled"])]
        print(f"  compile='step', {name} / dense compiled: {spread(ratios)}")
    ratios = [a / b for a, b in zip(seconds["eager dual"], seconds["compiled dual"])]
    print(f"  eager dual / compiled dual: {spread(ratios)}")
    for name, values in seconds.items():
        print(f"  {name}: {1e3 * statistics.median(values):.3f} ms per step")


if __name__ == "__main__":
    main()
