"""How much max pooling's time depends on the data: LeNet-5's first pooling on the
activations of ctrlsparse's gated model and of the reference's (docs/performance.md, "The
step on the user's path").

    git --git-dir=/work/.mirror/gallego-posada+constrained_sparsity/repo archive HEAD | tar -x -C /tmp/reference
    .venv-dev/bin/python docs/scripts/pool_data.py /tmp/reference --threads 1

Both models are built as ``reference_overhead.py`` builds them (each with its own
initialisation: the reference doubles its initial weights) and trained for ``--steps``
steps of their training step on the same minibatch of Fashion-MNIST. Then the same
``nn.MaxPool2d(2)`` runs on each model's first ReLU output (128 x 20 x 24 x 24, the same
shape), alternating, and the script prints the share of zeros in each and the median
milliseconds per call. The reference's model started from ctrlsparse's weights
(``--same-start``, what ``reference_overhead.py --same-start`` does) closes the gap.
"""

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from reference_overhead import PROBLEMS, load_reference, reference_step  # noqa: E402

from ctrlsparse.experiments.bench import overhead_steps  # noqa: E402
from ctrlsparse.experiments.build import load_data  # noqa: E402
from ctrlsparse.experiments.config import load_problem  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="checkout of gallego-posada/constrained_sparsity")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each model first")
    parser.add_argument("--repetitions", type=int, default=101)
    parser.add_argument("--same-start", action="store_true", help="the reference starts from our weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = load_reference(args.reference.resolve())
    config = load_problem(PROBLEMS / "fashion_lenet5.toml")
    user_adam = lambda m: torch.optim.Adam(m.parameters(), lr=7e-4)  # noqa: E731
    ours, _ = overhead_steps(config, 10 * args.steps + 100, primal=user_adam)
    gated = inspect.getclosurevars(ours).nonlocals["gda"].model
    data = load_data(config)
    x, y = data.train[0][: config.train.batch_size], data.train[1][: config.train.batch_size]
    reference = reference_step(models, "lenet5", x, y, like=gated if args.same_start else None)
    theirs = inspect.getclosurevars(reference).nonlocals["model"]
    for _ in range(args.steps):
        ours()
        reference()
    activations = {}
    gated.relu1.register_forward_hook(lambda m, i, o: activations.__setitem__("ctrlsparse", o.detach()))
    theirs.convs[1].register_forward_hook(lambda m, i, o: activations.__setitem__("reference", o.detach()))
    with torch.no_grad():
        gated(x)
        theirs(x)
    pool = nn.MaxPool2d(2)
    seconds = {name: [] for name in activations}
    for r in range(args.repetitions):
        for name in list(activations) if r % 2 == 0 else list(activations)[::-1]:
            start = time.perf_counter()
            pool(activations[name])
            seconds[name].append(time.perf_counter() - start)
    start_from = "ctrlsparse's weights" if args.same_start else "its own initialisation"
    print(f"after {args.steps} steps, the reference from {start_from}; {args.threads} thread(s)")
    for name, a in activations.items():
        zeros = float((a == 0).float().mean())
        milliseconds = 1e3 * statistics.median(seconds[name])
        print(f"  {name:<10} {tuple(a.shape)}: {zeros:.2f} zeros, pooling {milliseconds:.3f} ms")
    ratios = [a / b for a, b in zip(seconds["ctrlsparse"], seconds["reference"])]
    print(f"  ctrlsparse / reference: {statistics.median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
