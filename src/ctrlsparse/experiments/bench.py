"""Benchmarks a user can run on their own problem: gated vs dense training step time, and
purged vs dense inference time.

Both models are timed in one process, alternating repetitions (gated, dense, gated,
...), so drifts of the machine hit both alike; the result is the ratio of medians and
its spread over repetitions. Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ctrlsparse.experiments.build import build_model_of, gated_model, load_data, rebuild_run
from ctrlsparse.experiments.config import ProblemConfig
from ctrlsparse.gating import gate_groups, purge
from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.gda import GDA
from ctrlsparse.problem.schedules import TargetSchedule


@dataclass
class Timing:
    """Per-step seconds of each repetition, and the ratio gated / dense."""

    gated: list[float]
    dense: list[float]

    @property
    def ratios(self) -> list[float]:
        return [g / d for g, d in zip(self.gated, self.dense)]

    def report(self, label: str = "gated / dense") -> str:
        ratios = self.ratios
        gated_ms, dense_ms = 1e3 * statistics.median(self.gated), 1e3 * statistics.median(self.dense)
        return (
            f"{label}: median ratio {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} repetitions); "
            f"median step {gated_ms:.2f} ms vs {dense_ms:.2f} ms"
        )


def _time(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def alternate(gated: Callable[[], None], dense: Callable[[], None], steps: int, repetitions: int) -> Timing:
    """Time ``steps`` calls of each function per repetition, alternating which goes first."""
    for _ in range(max(1, steps // 10)):  # warm-up: allocator, Adam state, caches
        gated()
        dense()
    timing = Timing([], [])
    for r in range(repetitions):
        if r % 2 == 0:
            timing.gated.append(_time(gated, steps))
            timing.dense.append(_time(dense, steps))
        else:
            timing.dense.append(_time(dense, steps))
            timing.gated.append(_time(gated, steps))
    return timing


def _primal(config: ProblemConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optim.primal == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.optim.primal_lr)
    return torch.optim.SGD(model.parameters(), lr=config.optim.primal_lr, momentum=0.9)


def overhead(
    config: ProblemConfig,
    steps: int = 100,
    repetitions: int = 5,
    target_density: float | None = None,
    open_fraction: float | None = None,
) -> Timing:
    """Gated training step (forward, expected densities, backward, primal and dual update)
    against the same dense model's step with the same primal optimizer, on the problem's data.

    ``target_density`` (model-wise) replaces the problem file's sparsity setting. The
    gates start at the problem's drop rate (the early-training cost) unless
    ``open_fraction`` is given: then that fraction of each layer's gates, chosen at
    random, is opened (log α = 10) and the rest closed (log α = −10), as in a model
    trained to that density, whose closed groups conditional computation skips.

    Examples:
        >>> print(overhead(load_problem("problems/fashion_mlp.toml")).report())  # doctest: +SKIP
    """
    torch.manual_seed(config.train.seed)
    data = load_data(config)
    dense, example = build_model_of(config, data)
    gated = gated_model(config, copy.deepcopy(dense), example)
    if target_density is not None:
        levels = {"target_density": target_density}
    else:
        levels = {"target_density": config.sparsity.target_density, "penalty": config.sparsity.penalty}
    if open_fraction is not None:
        with torch.no_grad():
            for group in gate_groups(gated):
                is_open = torch.rand(group.gate.parameter.shape) < open_fraction
                group.gate.parameter.copy_(torch.where(is_open, 10.0, -10.0))
    problem = SparsityProblem(gated, F.cross_entropy, **levels)
    gda = GDA(
        problem,
        _primal(config, gated),
        dual_lr=config.optim.dual_lr,
        dual_restarts=config.optim.dual_restarts,
        dual_optimizer=config.optim.dual_optimizer,
        # A ramp and a feasibility phase would change the gates while they are timed.
        schedule=TargetSchedule("fixed"),
        total_steps=(steps + 1) * (repetitions + 1),
        feasibility=False,
    )
    dense_opt = _primal(config, dense)
    x, y = data.train[0][: config.train.batch_size], data.train[1][: config.train.batch_size]

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        dense_opt.step()

    return alternate(lambda: gda.step(x, y), dense_step, steps, repetitions)


def purge_speed(run_dir: str | Path, batch_size: int = 256, steps: int = 50, repetitions: int = 7) -> Timing:
    """Eval-mode forward time of the purged model of a run against the dense model (same batch).

    Also checks that the purged model's outputs equal the gated model's on that batch.

    Examples:
        >>> print(purge_speed("runs/lenet5").report("purged / dense"))  # doctest: +SKIP
    """
    run = rebuild_run(run_dir)
    gated, x = run.model, run.data.test[0][:batch_size]
    dense = build_model_of(run.config, run.data)[0].eval()
    small = purge(gated, x[:1]).eval()
    with torch.no_grad():
        difference = float((small(x) - gated(x)).abs().max())
    if difference > 1e-4:
        raise RuntimeError(f"purged model differs from the gated model by {difference:.2e} on {run_dir}")

    def forward(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    return alternate(forward(small), forward(dense), steps, repetitions)
