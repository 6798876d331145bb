"""Benchmarks a user can run on their own problem: gated vs dense training step time.

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

import torch
import torch.nn.functional as F

from ctrlsparse.config import ProblemConfig
from ctrlsparse.data import load_dataset
from ctrlsparse.gda import GDA
from ctrlsparse.models import build_model
from ctrlsparse.problem import SparsityProblem
from ctrlsparse.sparsify import sparsify


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
) -> Timing:
    """Gated training step (forward, expected densities, backward, primal and dual update)
    against the same dense model's step with the same primal optimizer, on the problem's data.

    ``target_density`` (model-wise) replaces the problem file's sparsity setting; the
    gates start at the problem's drop rate, so this measures the early-training cost.

    Example:
        >>> print(overhead(load_problem("problems/fashion_mlp.toml")).report())  # doctest: +SKIP
    """
    torch.manual_seed(config.train.seed)
    data = load_dataset(config.data.name, config.data.root, config.data.download)
    dense = build_model(config.model.name, data.input_shape, data.num_classes, config.model.hidden)
    gated = sparsify(copy.deepcopy(dense), structure=config.model.structure, drop_rate=config.model.drop_rate)
    if target_density is not None:
        levels = {"target_density": target_density}
    else:
        levels = {"target_density": config.sparsity.target_density, "penalty": config.sparsity.penalty}
    problem = SparsityProblem(gated, F.cross_entropy, **levels)
    gda = GDA(
        problem,
        _primal(config, gated),
        dual_lr=config.optim.dual_lr,
        dual_restarts=config.optim.dual_restarts,
    )
    dense_opt = _primal(config, dense)
    x, y = data.train[0][: config.train.batch_size], data.train[1][: config.train.batch_size]

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        dense_opt.step()

    return alternate(lambda: gda.step(x, y), dense_step, steps, repetitions)
