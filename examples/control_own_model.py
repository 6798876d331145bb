"""Defaults only, on a model that is not in the library: does every constraint land on ε?

    .venv-dev/bin/python examples/control_own_model.py --epochs 12 --targets layer

A conv net with BatchNorm (three conv blocks, two Linear layers) learns the 8x8 digits
with ``cs.GDA(problem, Adam(lr=5e-3))`` and ``cs.fit`` — no dual setting — under a
model-wise density target (0.25), per-layer targets (0.6, 0.4, 0.3, 0.4 on the first
four layers; channel units couple consecutive layers) or a MACs budget (0.3). It prints
each constraint's realized value − ε (test-time gates, eq. 13), the expected value − ε
before the feasibility phase, the units the phase closed and opened, and test errors.
"""

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs

TARGETS = ("model", "layer", "macs")


def conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--targets", choices=TARGETS, default="layer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = cs.load_dataset("digits")
    model = cs.sparsify(conv_net(), example_input=data.train[0][:2])
    if args.targets == "layer":
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)][:4]
        levels = {"target_density": dict(zip(names, (0.6, 0.4, 0.3, 0.4)))}
    elif args.targets == "macs":
        levels = {"target_macs": 0.3}
    else:
        levels = {"target_density": 0.25}
    problem = cs.SparsityProblem(model, F.cross_entropy, **levels)
    opt = cs.GDA(problem, torch.optim.Adam(model.parameters(), lr=5e-3))
    train = cs.Batches(*data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    summary = cs.fit(opt, train, args.epochs, test_batches=cs.Batches(*data.test, 512), progress=False)
    decision = summary.feasibility
    targets = problem.targets_all
    before = decision["expected_before"]
    print(json.dumps({
        "steps": summary.steps,
        "realized - eps": {n: round(summary.realized[n] - e, 4) for n, e in targets.items()},
        "expected before the phase - eps": {n: round(before[n] - e, 4) for n, e in targets.items()},
        "closed / opened": [decision["closed"], decision["opened"]],
        "test error before the phase / final %": [round(100 * decision["test_error_before"], 2),
                                                  round(100 * summary.test_error, 2)],
        "MACs realized / dense": round(summary.macs["realized"] / summary.macs["dense"], 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
