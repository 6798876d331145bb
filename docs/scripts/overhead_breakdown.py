"""Where a gated MLP training step spends its time beyond the dense step (docs/performance.md).

    .venv/bin/python docs/scripts/overhead_breakdown.py --threads 2

Times, in one process with alternating repetitions, the dense MLP 784-300-100 step and
three gated variants: the gated layers alone (task loss only), plus the expected-density
penalty term, and the full GDA step. Prints each median relative to dense.
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import ctrlsparse as cs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repetitions", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    dense = cs.mlp(784)

    def plain_step(model, loss):
        opt = torch.optim.Adam(model.parameters(), lr=7e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss(model).backward()
            opt.step()

        return step

    layers_only = cs.sparsify(copy.deepcopy(dense), "paper")
    with_density = cs.sparsify(copy.deepcopy(dense), "paper")
    density_problem = cs.SparsityProblem(with_density, F.cross_entropy, penalty=0.1)
    full = cs.sparsify(copy.deepcopy(dense), "paper")
    gda = cs.GDA(cs.SparsityProblem(full, F.cross_entropy, target_density=0.33))
    steps = {
        "dense": plain_step(dense, lambda m: F.cross_entropy(m(x), y)),
        "gated layers, task loss only": plain_step(layers_only, lambda m: F.cross_entropy(m(x), y)),
        "+ expected-density term": plain_step(
            with_density, lambda m: F.cross_entropy(m(x), y) + 0.1 * density_problem.expected_densities()[0]
        ),
        "full GDA step": lambda: gda.step(x, y),
    }
    times = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(10):
            step()
    for _ in range(args.repetitions):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    dense_median = statistics.median(times["dense"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32s} {1e3 * median:6.2f} ms  {median / dense_median:.2f}x dense")


if __name__ == "__main__":
    main()
