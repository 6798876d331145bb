"""Where a gated training step spends its time beyond the dense step (docs/performance.md).

    .venv-dev/bin/python docs/scripts/step_profile.py problems/bench_bert.toml --threads 2

Builds the two steps ``ctrlsparse bench overhead`` times (``overhead_steps``), profiles
``--steps`` calls of each with ``torch.profiler`` after a warm-up, and prints, per
operator, the self CPU milliseconds per step of the gated and the dense step and their
difference, largest difference first. The total row is the profiled wall time per step.

``--python`` adds a ``cProfile`` of the gated step: the ctrlsparse and cooper functions
with the most cumulative time, in milliseconds per step (cProfile slows Python down, so
read these as shares, not as times).
"""

import argparse
import cProfile
import pstats
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
    parser.add_argument("--skip-below", type=float, help="the gated step skips units below this P(z != 0)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--python", action="store_true", help="also cProfile the gated step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    gated_step, dense_step = overhead_steps(
        config, 20 * args.steps, open_fraction=args.open_fraction, skip_below=args.skip_below
    )
    gated, gated_wall = profile(gated_step, args.steps)
    dense, dense_wall = profile(dense_step, args.steps)
    rows = sorted(set(gated) | set(dense), key=lambda k: dense.get(k, 0) - gated.get(k, 0))
    print(f"{'operator':<55} {'gated ms':>9} {'dense ms':>9} {'extra ms':>9}")
    for key in rows[: args.top]:
        g, d = gated.get(key, 0.0), dense.get(key, 0.0)
        print(f"{key[:55]:<55} {g:9.2f} {d:9.2f} {g - d:9.2f}")
    total = "total (wall per profiled step)"
    print(f"{total:<55} {gated_wall:9.2f} {dense_wall:9.2f} {gated_wall - dense_wall:9.2f}")
    if args.python:
        python_profile(gated_step, args.steps, args.top)


def python_profile(step, steps: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = [(cumulative, f"{path.split('site-packages/')[-1].split('src/')[-1]}:{line}({name})")
            for (path, line, name), (_, _, _, cumulative, _) in stats.items()
            if "ctrlsparse" in path or "cooper" in path]  # fmt: skip
    print(f"\n{'function (cProfile, gated step)':<80} {'ms/step':>8}")
    for cumulative, where in sorted(rows, reverse=True)[:top]:
        print(f"{where[:80]:<80} {1e3 * cumulative / steps:8.2f}")


if __name__ == "__main__":
    main()
