"""What scaling a Linear's input instead of its weight saves (docs/performance.md).

    .venv-dev/bin/python docs/scripts/input_scaling.py --width 2048 --batch 256 --threads 2

A three-layer MLP of width ``--width`` (``structure="paper"``: one gate per input of each
layer), sparsified twice in one process: as ctrlsparse builds it (a hidden layer whose
batch has fewer rows than the layer has outputs multiplies its input by the gates) and
with every gate on the weights. Times a forward, backward and Adam step of each,
alternating (``alternate_many``), and prints the median ratio input path / weight path
with min and max, and each step's peak memory (``peak_memory``).
"""

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.experiments.bench import alternate_many, peak_memory, spread
from ctrlsparse.gating.groups import remove_input_scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w = args.width
    plain = nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))
    inputs = cs.sparsify(plain, "paper", example_input=torch.zeros(2, w))
    weights = copy.deepcopy(inputs)
    remove_input_scaling(weights)
    x, y = torch.randn(args.batch, w), torch.randint(0, 10, (args.batch,))

    def step_of(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        return step

    steps = {"input path": step_of(inputs), "weight path": step_of(weights)}
    seconds = alternate_many(steps, args.steps, args.repetitions)
    ratios = [a / b for a, b in zip(seconds["input path"], seconds["weight path"])]
    print(f"width {w}, batch {args.batch}, {torch.get_num_threads()} threads, {args.repetitions} repetitions")
    for name, step in steps.items():
        ms = 1e3 * statistics.median(seconds[name])
        print(f"  {name}: {ms:.2f} ms per step, peak {peak_memory(step) / 2**20:.1f} MiB")
    print(f"  input path / weight path: {spread(ratios)}")


if __name__ == "__main__":
    main()
