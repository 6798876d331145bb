"""Operators a gated training step runs beyond the dense step's (docs/performance.md).

    .venv-dev/bin/python docs/scripts/op_count.py problems/fashion_resnet.toml

Counts the ATen operators each step dispatches (forward, backward, optimizer and dual
updates; a ``TorchDispatchMode`` sees every one) for the two steps ``ctrlsparse bench
overhead`` times, and prints the totals and the operators the gated step runs most often
beyond the dense one. Unlike a timing, the count is exact and the same on every machine:
it measures the fixed, per-step cost of the gates (each operator costs a few
microseconds of dispatch and autograd bookkeeping whatever its size), which is what
dominates the ratio on small models. ``--target-density`` replaces the problem file's
targets by one model-wise target: the difference is what the extra constraints cost.
``--where`` charges each operator of the gated step to the innermost ctrlsparse, cooper or
``torch.optim`` function on the stack; the backward pass's operators go to the function that
called ``backward()`` (``problem/dual.py:roll``).
"""

import argparse
import collections
import traceback

from torch.utils._python_dispatch import TorchDispatchMode

from ctrlsparse.experiments.bench import overhead_steps
from ctrlsparse.experiments.config import load_problem

SOURCES = ("ctrlsparse/", "cooper/", "torch/optim/")
"""The code an operator is charged to with ``--where``: its innermost caller in one of these
packages (installed, or ctrlsparse's ``src/``)."""


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/src/ctrlsparse/" not in path and "site-packages/" not in path:
            continue  # this script, the dispatch mode, the user's own code
        package_path = path.split("/src/")[-1].split("site-packages/")[-1]
        if package_path.startswith(SOURCES):
            return f"{package_path}:{frame.name}"
    return "autograd engine (backward)"


class _Count(TorchDispatchMode):
    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.where = where
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[_caller() if self.where else str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_operators(step, where: bool = False) -> collections.Counter:
    """The operators one call of ``step`` dispatches, by name (by calling function with
    ``where``), after three calls that let the optimizers create their state."""
    for _ in range(3):
        step()
    with _Count(where) as mode:
        step()
    return mode.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument(
        "--target-density",
        type=float,
        help="one model-wise target instead of the problem file's (how much the per-layer constraints cost)",
    )
    parser.add_argument(
        "--where",
        action="store_true",
        help="also count the gated step's operators by the ctrlsparse, cooper or torch.optim function "
        "that ran them",
    )
    args = parser.parse_args()
    gated, dense = overhead_steps(load_problem(args.problem), 100, target_density=args.target_density)
    counts = {"gated": count_operators(gated), "dense": count_operators(dense)}
    extra = counts["gated"] - counts["dense"]
    print(
        f"{args.problem}: {sum(counts['gated'].values())} operators per gated step, "
        f"{sum(counts['dense'].values())} per dense step ({sum(extra.values())} more)"
    )
    print("  most frequent extra: " + ", ".join(f"{op} {n}" for op, n in extra.most_common(args.top)))
    if args.where:
        for caller, n in count_operators(gated, where=True).most_common(args.top):
            print(f"  {n:5d}  {caller}")


if __name__ == "__main__":
    main()
