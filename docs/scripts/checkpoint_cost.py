"""docs/scale.md: the time and size of one checkpoint, for the problems named on the command line.

    .venv-dev/bin/python docs/scripts/checkpoint_cost.py problems/digits_mlp.toml problems/fashion_mlp_defaults.toml

Each problem is built as ``ctrlsparse run`` builds it, trained for 20 steps (so the optimizers
have state), then its checkpoint is captured and written REPS times (median [min, max]), next
to the time of one training step for scale.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ctrlsparse.experiments.build import build
from ctrlsparse.experiments.config import load_problem
from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.training.resume import Position, capture

REPS = 7


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    print(
        "| problem | parameters | checkpoint size (MB) | capture + write (ms) | load (ms) | one step (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for path in paths:
        config = load_problem(path)
        experiment = build(config)
        trainer = experiment.trainer
        trainer.begin(len(experiment.train) * config.train.epochs, len(experiment.train))
        batches = (batch for _ in range(config.train.epochs) for batch in experiment.train)
        steps = []
        for _ in range(20):
            x, y = next(batches)
            start = time.perf_counter()
            trainer.step(x, y)
            steps.append(time.perf_counter() - start)
        at = Position(20, 1, 20, None, x[:1], 0.0)
        writes, loads = [], []
        with tempfile.TemporaryDirectory() as run_dir:
            for _ in range(REPS):
                start = time.perf_counter()
                state = capture(trainer, trainer.model, None, experiment.train, at, 0, config.to_dict(),
                                config.train.epochs, 1)  # fmt: skip
                checkpoints.save_checkpoint(run_dir, state)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                checkpoints.load_checkpoint(run_dir)
                loads.append(time.perf_counter() - start)
            size = (Path(run_dir) / checkpoints.CHECKPOINT).stat().st_size
        params = sum(p.numel() for p in trainer.model.parameters())

        def ms(values):
            return f"{1e3 * statistics.median(values):.1f} [{1e3 * min(values):.1f}, {1e3 * max(values):.1f}]"

        print(
            f"| {config.name} | {params:,} | {size / 1e6:.2f} | {ms(writes)} | {ms(loads)} | {ms(steps[5:])} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
