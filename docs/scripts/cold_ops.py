"""What a small operator costs right after a training step's backward pass
(docs/performance.md, "Against the reference implementation").

    .venv-dev/bin/python docs/scripts/cold_ops.py --threads 1
    .venv-dev/bin/python docs/scripts/cold_ops.py --threads 2

Runs a dense LeNet-5-Caffe forward and backward (batch 128, random data) and, right
after each backward pass, five operators on an 8-entry tensor, each timed alone with
``time.perf_counter``: ``add_``, the same ``add_`` again, ``mul_`` and ``sigmoid`` (kernels
not run yet since the backward pass), and ``add_`` once more. Prints the median
microseconds of each over ``--steps`` steps. The first operator after the backward pass
costs an order of magnitude more than the same operator run again, and each operator
that has not run since costs about three times its warm cost, whatever the number of
threads: a small operator's price inside a step depends on what ran before it.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

OPERATORS = ("add_, first after backward", "add_ again", "mul_", "sigmoid", "add_ once more")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )  # fmt: skip
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    small = torch.randn(8)
    seconds: dict[str, list[float]] = {name: [] for name in OPERATORS}
    for _ in range(args.steps):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        marks = [time.perf_counter()]
        for run in (
            lambda: small.add_(1.0),
            lambda: small.add_(1.0),
            lambda: small.mul_(1.0),
            lambda: torch.sigmoid(small),
            lambda: small.add_(1.0),
        ):
            run()
            marks.append(time.perf_counter())
        for name, start, end in zip(OPERATORS, marks, marks[1:]):
            seconds[name].append(end - start)
    threads = torch.get_num_threads()
    print(f"{threads} threads, {args.steps} steps: median µs of each operator after the backward pass")
    for name in OPERATORS:
        print(f"  {name:<28} {1e6 * statistics.median(seconds[name]):7.1f}")


if __name__ == "__main__":
    main()
