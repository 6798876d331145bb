"""Operators a gated training step runs beyond the dense step's (docs/performance.md).

    .venv-dev/bin/python docs/scripts/op_count.py problems/fashion_resnet.toml

Counts the ATen operators each step dispatches (forward, backward, optimizer and dual
updates; a ``TorchDispatchMode`` sees every one) for the two steps ``ctrlsparse bench
overhead`` times, and prints the totals and the operators the gated step runs most often
beyond the dense one. Unlike a timing, the count is exact and the same on every machine:
it measures the fixed, per-step cost of the gates (each operator costs a few
microseconds of dispatch and autograd bookkeeping whatever its size), which is what
dominates the ratio on small models.
"""

import argparse
import collections

from torch.utils._python_dispatch import TorchDispatchMode

from ctrlsparse.experiments.bench import overhead_steps
from ctrlsparse.experiments.config import load_problem


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_operators(step) -> collections.Counter:
    """The operators one call of ``step`` dispatches, by name, after three calls that let the
    optimizers create their state."""
    for _ in range(3):
        step()
    with _Count() as mode:
        step()
    return mode.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    gated, dense = overhead_steps(load_problem(args.problem), 100)
    counts = {"gated": count_operators(gated), "dense": count_operators(dense)}
    extra = counts["gated"] - counts["dense"]
    print(
        f"{args.problem}: {sum(counts['gated'].values())} operators per gated step, "
        f"{sum(counts['dense'].values())} per dense step ({sum(extra.values())} more)"
    )
    print("  most frequent extra: " + ", ".join(f"{op} {n}" for op, n in extra.most_common(args.top)))


if __name__ == "__main__":
    main()
