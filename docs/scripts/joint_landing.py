"""The best joint landing of Fashion ResNet-8's per-stage targets, by exhaustive search (docs/control.md).

    .venv-dev/bin/python docs/scripts/joint_landing.py problems/fashion_resnet.toml

With channel units a conv's density is (open input fraction) × (open output fraction),
and a stage's residual channels are shared by its block's second conv, its shortcut and
the next stage's inputs, so per-stage targets constrain each other. This enumerates every
choice of open counts of the stage-residual groups (R1, R2, R3); given those, each block's
own group (B1, B2, B3) opens as many units as its constraints allow, which is optimal
since it counts only in its own stage. It prints the choices whose worst shortfall below ε,
in units of each constraint's one-unit share, is smallest, next to what the feasibility
phase picks (``select_units``) from random starts. Every enumerated value is the
problem's own accounting (``SparsityProblem.target_values_at``), checked against the
product formula at the start.
"""

import argparse
import itertools
import math
import warnings

import torch

from ctrlsparse.experiments.build import build
from ctrlsparse.experiments.config import load_problem
from ctrlsparse.problem.feasibility import decide, select_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", nargs="?", default="problems/fashion_resnet.toml")
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    problem = build(load_problem(args.problem)).trainer.problem
    names = list(problem.targets_all)
    eps = problem.targets_all
    share = {n: max(0.005, problem.unit_share(n)) for n in names}
    sizes = [g.num_units for g in problem.groups]  # R1, B1, B2, R2, B3, R3 for ResNet-8
    r1, b1, b2, r2, b3, r3 = range(6)

    def values(f):  # the density of each per-stage constraint from the groups' open fractions
        return {
            "layer1.0.conv1": f[r1] * f[b1],
            "layer1.0.conv2": f[b1] * f[r1],
            "layer2.0.conv1": f[r1] * f[b2],
            "layer2.0.conv2": f[b2] * f[r2],
            "layer2.0.shortcut.0": f[r1] * f[r2],
            "layer3.0.conv1": f[r2] * f[b3],
            "layer3.0.conv2": f[b3] * f[r3],
            "layer3.0.shortcut.0": f[r2] * f[r3],
        }

    def units(counts):
        open_ = torch.zeros(sum(sizes))
        for start, count in zip(problem.accounting.offsets, counts):
            open_[start : start + count] = 1.0
        return open_

    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # the formula is the problem's accounting
        counts = [int(torch.randint(0, s + 1, (1,), generator=generator)) for s in sizes]
        got = problem.target_values_at(units(counts))
        want = values([c / s for c, s in zip(counts, sizes)])
        assert all(math.isclose(float(got[n]), want[n], abs_tol=1e-6) for n in names), (counts, got, want)

    def worst(counts):
        v = values([c / s for c, s in zip(counts, sizes)])
        gaps = {n: eps[n] - v[n] for n in names}
        return None if min(gaps.values()) < -1e-9 else (max(g / share[n] for n, g in gaps.items()), gaps)

    def most(group, limit):  # the largest count of ``group`` with every product at most its bound
        return max(
            c for c in range(sizes[group] + 1) if all(c / sizes[group] * f <= e + 1e-9 for f, e in limit)
        )

    found = []
    for c1, c2, c3 in itertools.product(*(range(sizes[g] + 1) for g in (r1, r2, r3))):
        f1, f2, f3 = c1 / sizes[r1], c2 / sizes[r2], c3 / sizes[r3]
        counts = [0] * 6
        counts[r1], counts[r2], counts[r3] = c1, c2, c3
        counts[b1] = most(b1, [(f1, eps["layer1.0.conv1"]), (f1, eps["layer1.0.conv2"])])
        counts[b2] = most(b2, [(f1, eps["layer2.0.conv1"]), (f2, eps["layer2.0.conv2"])])
        counts[b3] = most(b3, [(f2, eps["layer3.0.conv1"]), (f3, eps["layer3.0.conv2"])])
        result = worst(counts)
        if result is not None:
            found.append((result[0], counts, result[1]))
    found.sort(key=lambda t: t[0])
    print(f"{len(found)} feasible choices of (R1, B1, B2, R2, B3, R3) open counts, sizes {sizes}")
    for ratio, counts, gaps in found[:3]:
        print(
            f"  worst shortfall {ratio:.3f} shares  counts {counts}  "
            + " ".join(f"{g:+.3f}" for g in gaps.values())
        )
    for seed in range(args.starts):
        scores = torch.rand(sum(sizes), generator=torch.Generator().manual_seed(seed))
        start = (scores > 0.3 * seed / max(1, args.starts - 1)).float()
        chosen = select_units(problem, start, scores)
        counts = [int(chosen[a : a + s].sum()) for a, s in zip(problem.accounting.offsets, sizes)]
        ratio, gaps = worst(counts)
        print(f"  phase from start {seed}: {ratio:.3f} shares  counts {counts}")
    with warnings.catch_warnings(record=True) as caught:  # what a run's user is told
        warnings.simplefilter("always")
        decide(problem)
    for warning in caught:
        print(f"the phase warns: {warning.message}")


if __name__ == "__main__":
    main()
