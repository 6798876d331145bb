"""Sweep the dual learning rate and dual restarts on the digits problem.

Reproduces the table in docs/core.md that chose problems/digits_mlp.toml's settings:

    .venv/bin/python docs/scripts/digits_dual_sweep.py --out runs/dual-sweep

Each setting trains the model-wise (ε = 0.3) and per-layer (fc1 0.3, fc2 0.5, fc3 0.8)
problems for 300 epochs and prints the final violation (density − ε) per constraint.
"""

import argparse
import dataclasses
import itertools
from pathlib import Path

from ctrlsparse import load_problem, run_problem

PROBLEM = Path(__file__).parent.parent / "problems" / "digits_mlp.toml"
TARGETS = {"model": 0.3, "layer": {"fc1": 0.3, "fc2": 0.5, "fc3": 0.8}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dual-sweep")
    parser.add_argument("--dual-lr", type=float, nargs="+", default=[0.02, 0.1, 0.5])
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    base = load_problem(PROBLEM)
    print("| dual lr | restarts | targets | final violation per constraint | test error |")
    print("|---|---|---|---|---|")
    for dual_lr, restarts, (kind, target) in itertools.product(args.dual_lr, [True, False], TARGETS.items()):
        config = dataclasses.replace(
            base,
            optim=dataclasses.replace(base.optim, dual_lr=dual_lr, dual_restarts=restarts),
            # The core study predates the linear-ramp default (docs/dynamics.md): fixed targets.
            schedule=dataclasses.replace(base.schedule, kind="fixed"),
            sparsity=dataclasses.replace(base.sparsity, target_density=target, penalty=None),
            train=dataclasses.replace(base.train, epochs=args.epochs, log_every=10),
        )
        out = Path(args.out) / f"lr{dual_lr}-restarts{restarts}-{kind}"
        s = run_problem(config, out, progress=False)
        final = {"model": s.density, **s.densities}
        violations = {name: final[name] - eps for name, eps in s.targets.items()}
        shown = ", ".join(f"{name} {v:+.4f}" for name, v in violations.items())
        print(f"| {dual_lr:g} | {restarts} | {kind} | {shown} | {100 * s.test_error:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
