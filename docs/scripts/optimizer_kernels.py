"""Per-tensor, ``foreach`` and fused optimizer steps on gate- and multiplier-sized tensors
(docs/performance.md, "Where the time goes").

    .venv-dev/bin/python docs/scripts/optimizer_kernels.py --threads 2

GDA gives the gates a parameter group of their own and the multipliers an optimizer of
their own; this times the three implementations torch offers for such groups, alternating
them in one process (``alternate_many``: the order rotates every repetition), and prints
the median microseconds per step with min and max. The tensors: LeNet-5-Caffe's four gate
tensors (20 and 50 channels, 800 and 500 inputs), the MLP's three (784, 300, 100 inputs),
one multiplier vector of 8 entries (the ResNet's per-stage targets, stacked), and the
weights and biases of LeNet-5-Caffe and of the MLP 784-300-100 (the primal Adam that
``ctrlsparse.problem.kernels.adam`` builds).
"""

import argparse
import statistics

import torch

from ctrlsparse.experiments.bench import alternate_many

GROUPS = {
    "LeNet-5 gates": [20, 50, 800, 500],
    "MLP gates": [784, 300, 100],
    # Weights and biases, flattened (the kernels are element-wise): the primal Adam's other group.
    "LeNet-5 weights": [500, 20, 25_000, 50, 400_000, 500, 5_000, 10],
    "MLP weights": [235_200, 300, 30_000, 100, 1_000, 10],
}
KINDS = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def stepper(optimizer: type, sizes: list[int], **settings):
    params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    return optimizer(params, lr=1e-3, **settings).step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repetitions", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {}
    for group, sizes in GROUPS.items():
        for kind, settings in KINDS.items():
            cases[f"Adam, {group}, {kind}"] = stepper(torch.optim.Adam, sizes, **settings)
    for kind, settings in KINDS.items():
        ascent = {"maximize": True, **settings}
        cases[f"Adam ascent, 8 multipliers, {kind}"] = stepper(torch.optim.Adam, [8], **ascent)
        if kind != "fused":
            cases[f"SGD ascent, 8 multipliers, {kind}"] = stepper(torch.optim.SGD, [8], **ascent)
    cases["SGD ascent, 8 multipliers, fused"] = stepper(torch.optim.SGD, [8], maximize=True, fused=True)
    seconds = alternate_many(cases, args.steps, args.repetitions)
    threads, repetitions = torch.get_num_threads(), args.repetitions
    print(f"{threads} threads, {repetitions} repetitions of {args.steps} steps: µs per step")
    for name, values in seconds.items():
        micro = [1e6 * v for v in values]
        print(f"  {name:<44} {statistics.median(micro):7.1f} ({min(micro):.1f}–{max(micro):.1f})")


if __name__ == "__main__":
    main()
