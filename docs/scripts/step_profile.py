"""Where a gated training step spends its time beyond the dense step (docs/performance.md).

    .venv-dev/bin/python docs/scripts/step_profile.py problems/bench/bert.toml --threads 2

Builds the two steps ``ctrlsparse bench overhead`` times (``overhead_steps``), profiles
``--steps`` calls of each with ``torch.profiler`` after a warm-up, and prints, per
operator, the self CPU milliseconds per step of the gated and the dense step and their
difference, largest difference first. The total row is the profiled wall time per step.
"""

import argparse
import time
from collections import defaultdict

import torch

from ctrlsparse.experiments.bench import overhead_steps
from ctrlsparse.experiments.config import load_problem


def profile(step, steps: int) -> tuple[dict[str, float], float]:
    """Self CPU ms per step of each operator, and the wall ms per step."""
    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) * 1e3 / steps
    own: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        own[event.key] += event.self_cpu_time_total / 1e3 / steps
    return own, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--open-fraction", type=float)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gated_step, dense_step = overhead_steps(load_problem(args.problem), 10 * args.steps, open_fraction=args.open_fraction)
    gated, gated_wall = profile(gated_step, args.steps)
    dense, dense_wall = profile(dense_step, args.steps)
    rows = sorted(set(gated) | set(dense), key=lambda k: dense.get(k, 0) - gated.get(k, 0))
    print(f"{'operator':<55} {'gated ms':>9} {'dense ms':>9} {'extra ms':>9}")
    for key in rows[: args.top]:
        g, d = gated.get(key, 0.0), dense.get(key, 0.0)
        print(f"{key[:55]:<55} {g:9.2f} {d:9.2f} {g - d:9.2f}")
    print(f"{'total (wall per profiled step)':<55} {gated_wall:9.2f} {dense_wall:9.2f} {gated_wall - dense_wall:9.2f}")


if __name__ == "__main__":
    main()
