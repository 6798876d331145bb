"""Whether the skip path costs anything when it does not pay: every gate open, skipping off
and on, in one process (docs/performance.md, "Gated step against the dense step").

    .venv-dev/bin/python docs/scripts/skip_cost.py problems/fashion_mlp.toml --steps 100 --repetitions 21

``ctrlsparse bench overhead --open-fraction 1.0`` with and without ``--skip-below`` times
each variant against the dense step in its own process; on this machine a small model's
step moves by up to 2× from one process to the next, more than the difference being
looked for. This script builds the three steps of one problem file in one process, the
gated step without skipping, the gated step with ``skip_below`` (every gate open, so no
unit is skipped and only the skip decisions run) and the dense step, alternates them
(the order rotates every repetition) and prints each gated step over the dense step and
the per-repetition ratio skipping on / off, as medians with min and max.
"""

import argparse

import torch

from ctrlsparse.experiments.bench import alternate_many, overhead_steps, spread
from ctrlsparse.experiments.config import load_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repetitions", type=int, default=21)
    parser.add_argument("--skip-below", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    total = (args.steps + 1) * (args.repetitions + 4)
    off, dense = overhead_steps(config, total, open_fraction=1.0)
    on, _ = overhead_steps(config, total, open_fraction=1.0, skip_below=args.skip_below)
    steps = {"skipping off": off, "skipping on": on, "dense": dense}
    seconds = alternate_many(steps, args.steps, args.repetitions)
    threads = torch.get_num_threads()
    print(f"{config.name}, every gate open, {threads} threads, {args.repetitions} repetitions")
    for name in ("skipping off", "skipping on"):
        ratios = [a / b for a, b in zip(seconds[name], seconds["dense"])]
        print(f"  {name} / dense: {spread(ratios)}")
    on_off = [a / b for a, b in zip(seconds["skipping on"], seconds["skipping off"])]
    print(f"  skipping on / off: {spread(on_off)}")


if __name__ == "__main__":
    main()
