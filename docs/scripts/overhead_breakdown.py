"""Where a gated training step's time goes beyond the dense step, in stages (docs/performance.md).

    .venv-dev/bin/python docs/scripts/overhead_breakdown.py problems/fashion_resnet.toml --threads 2

Times four steps of the problem file's model in one process, on one minibatch, with
the same Adam (the order rotates every repetition; ``alternate_many``):

1. dense: the plain model, cross-entropy;
2. gated model: the sparsified model (gates drawn, weights scaled), the same loss;
3. + expected density: plus 0.1 × the differentiable expected density (eq. 12);
4. GDA step: ``GDA.step`` as ``ctrlsparse bench overhead`` builds it (Lagrangian, dual
   step, clamp, the logging transfer).

Prints each stage's median ratio to the dense step over the repetitions, with min and max.
"""

import argparse
import copy
import statistics

import torch

from ctrlsparse import SparsityProblem
from ctrlsparse.experiments.bench import alternate_many, overhead_steps, spread
from ctrlsparse.experiments.build import build_model_of, gated_model, load_data, output_fn_of
from ctrlsparse.experiments.config import load_problem
from ctrlsparse.modelio import call_model, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    torch.manual_seed(config.train.seed)
    data = load_data(config)
    dense, example = build_model_of(config, data)
    gated = gated_model(config, copy.deepcopy(dense), example)
    with_density = gated_model(config, copy.deepcopy(dense), example)
    density = SparsityProblem(with_density, lambda out, y: out, penalty=0.1).accounting
    output_fn = output_fn_of(config)
    x, y = head(data.train[0], config.train.batch_size), data.train[1][: config.train.batch_size]

    def plain(model, extra=None):
        optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.primal_lr)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(output_fn(call_model(model, x)), y)
            if extra is not None:
                loss = loss + 0.1 * extra()
            loss.backward()
            optimizer.step()

        return step

    gda_step, _ = overhead_steps(config, (args.steps + 3) * (args.repetitions + 1))
    steps = {
        "dense": plain(dense),
        "gated model": plain(gated),
        "+ expected density": plain(with_density, lambda: density.densities()[0]),
        "GDA step": gda_step,
    }
    seconds = alternate_many(steps, args.steps, args.repetitions)
    print(f"{config.name}, batch {len(y)}, {torch.get_num_threads()} threads, {args.repetitions} repetitions")
    for name, values in seconds.items():
        ratios = [a / b for a, b in zip(values, seconds["dense"])]
        print(f"  {name:<20} {1e3 * statistics.median(values):8.2f} ms   / dense {spread(ratios)}")


if __name__ == "__main__":
    main()
