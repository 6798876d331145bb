"""Benchmarks a user can run on their own problem: gated vs dense training step time and
peak memory, and purged vs dense inference time against the FLOP ideal.

The models are timed in one process, alternating repetitions (gated, dense, dense,
gated, ...), so drifts of the machine hit both alike; the result is the median of the
per-repetition ratios, with min and max. Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ctrlsparse.experiments.build import build_model_of, gated_model, load_data, output_fn_of, rebuild_run
from ctrlsparse.experiments.config import ProblemConfig
from ctrlsparse.gating import gate_groups, purge
from ctrlsparse.modelio import call_model, head
from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.gda import GDA
from ctrlsparse.problem.kernels import adam
from ctrlsparse.problem.schedules import TargetSchedule


def spread(values: list[float]) -> str:
    """``median (min–max)`` of ``values`` with three decimals."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


@dataclass
class Timing:
    """Per-step seconds of each repetition, and the ratio gated / dense.

    ``peak_bytes`` (gated, dense): the most memory a step allocated on top of what was
    already resident (:func:`peak_memory`); ``ideal``: dense FLOPs / kept FLOPs, the
    speed-up a purged model could reach; ``work_ideal``: the speed-up it could reach if
    every operator shrank with its own work (:func:`work_ideal`).
    """

    gated: list[float]
    dense: list[float]
    peak_bytes: tuple[int, int] | None = None
    ideal: float | None = None
    work_ideal: float | None = None

    @property
    def ratios(self) -> list[float]:
        return [g / d for g, d in zip(self.gated, self.dense)]

    def report(self, label: str = "gated / dense") -> str:
        ratios = self.ratios
        gated_ms, dense_ms = 1e3 * statistics.median(self.gated), 1e3 * statistics.median(self.dense)
        text = (
            f"{label}: median ratio {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} repetitions); "
            f"median step {gated_ms:.2f} ms vs {dense_ms:.2f} ms"
        )
        if self.peak_bytes is not None:
            gated_mb, dense_mb = (b / 2**20 for b in self.peak_bytes)
            text += f"; peak memory {gated_mb:.1f} MiB vs {dense_mb:.1f} MiB"
            text += f" ({gated_mb / dense_mb:.2f}x)" if dense_mb > 0 else ""
        if self.ideal is not None:
            text += (
                f"; speed-up {self.speedup:.2f}x of an ideal {self.ideal:.2f}x (dense FLOPs / kept FLOPs), "
                f"{self.speedup / self.ideal:.2f} of the ideal"
            )
        if self.work_ideal is not None:
            text += f"; work ideal {self.work_ideal:.2f}x, {self.speedup / self.work_ideal:.2f} of it"
        return text

    @property
    def speedups(self) -> list[float]:
        """dense / gated time per repetition: the speed-up of a purged model."""
        return [d / g for g, d in zip(self.gated, self.dense)]

    @property
    def speedup(self) -> float:
        """The median speed-up over the repetitions."""
        return statistics.median(self.speedups)

    def speedup_cells(self) -> list[str]:
        """Speed-up (median [min, max]), FLOP ideal, their ratio, work ideal and the speed-up's
        share of it ("–" where it was not measured): a row of :data:`SPEEDUP_HEADER`.

        Examples:
            >>> Timing([1.0, 2.0, 1.0], [2.0, 2.0, 3.0], ideal=2.5, work_ideal=2.2).speedup_cells()
            ['2.00× [1.00, 3.00]', '2.50×', '0.80', '2.20×', '0.91']
        """
        low, high = min(self.speedups), max(self.speedups)
        work = (
            ["–", "–"]
            if self.work_ideal is None
            else [f"{self.work_ideal:.2f}×", f"{self.speedup / self.work_ideal:.2f}"]
        )
        return [
            f"{self.speedup:.2f}× [{low:.2f}, {high:.2f}]",
            f"{self.ideal:.2f}×",
            f"{self.speedup / self.ideal:.2f}",
            *work,
        ]


SPEEDUP_HEADER = ["speed-up (median [min, max])", "FLOP ideal", "fraction of ideal", "work ideal",
                  "fraction of work ideal"]  # fmt: skip
"""The columns of :meth:`Timing.speedup_cells`."""


def _time(step: Callable[[], None], steps: int, clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def alternate_many(
    functions: dict[str, Callable[[], None]],
    steps: int,
    repetitions: int,
    clock: Callable[[], float] = time.perf_counter,
    before_repetition: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``steps`` calls per repetition; the order of the
    functions rotates from one repetition to the next (after three or more warm-up rounds).

    ``clock`` is wall time by default; ``time.process_time`` (CPU seconds of this process)
    with one torch thread measures the work rather than the scheduling on a machine that
    other jobs load. ``before_repetition`` runs, untimed, before each repetition: training
    steps whose kernels' time depends on the data (max pooling) can rewind their models
    there, so that every step is timed on the same weights.

    Examples:
        >>> seconds = alternate_many({"a": lambda: None, "b": lambda: None}, steps=3, repetitions=4)
        >>> [len(v) for v in seconds.values()]
        [4, 4]
    """
    for _ in range(max(3, steps // 10)):  # warm-up: allocator, Adam state, caches
        for function in functions.values():
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for r in range(repetitions):
        if before_repetition is not None:
            before_repetition()
        turn = names[r % len(names) :] + names[: r % len(names)]
        for name in turn:
            seconds[name].append(_time(functions[name], steps, clock))
    return seconds


def alternate(gated: Callable[[], None], dense: Callable[[], None], steps: int, repetitions: int) -> Timing:
    """Time ``steps`` calls of each function per repetition, alternating which goes first."""
    seconds = alternate_many({"gated": gated, "dense": dense}, steps, repetitions)
    return Timing(seconds["gated"], seconds["dense"])


def peak_memory(step: Callable[[], None]) -> int:
    """Bytes one call of ``step`` allocates at its peak, beyond what was already allocated.

    On CUDA from the allocator's peak statistic; on CPU from ``torch.profiler`` with
    ``profile_memory=True``: each operator's own allocations and frees (its memory
    usage less its children's), in the order the operators started, summed as they run.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        step()
    changes = []
    for event in profiler.events():
        own = event.cpu_memory_usage - sum(child.cpu_memory_usage for child in event.cpu_children)
        if own:
            changes.append((event.time_range.start, own))
    changes.sort(key=lambda change: change[0])
    return max(itertools.accumulate((own for _, own in changes), initial=0))


def flops(model: torch.nn.Module, *inputs) -> int:
    """FLOPs of one eval forward of ``model`` (``torch.utils.flop_counter``)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.get_total_flops()


# Operators whose work is their FLOPs (torch.utils.flop_counter counts them): the profiler's total
# time of each includes its implementation's (aten::convolution runs aten::mkldnn_convolution).
_FLOP_OPERATORS = {"aten::convolution", "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"}
# Operators that move no data: views and metadata, left out of the element count.
_VIEWS = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "as_strided", "detach",
          "slice", "select", "unsqueeze", "squeeze", "flatten", "alias", "split", "chunk", "unbind",
          "split_with_sizes", "lift_fresh", "unflatten", "view_as"}  # fmt: skip


def _elements(model: torch.nn.Module, *inputs) -> int:
    """Elements written by the operators of one eval forward that :func:`flops` does not count
    (pooling, normalisation, activations, adds; views left out)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__.rstrip("_")
            if f"aten::{name}" not in _FLOP_OPERATORS and name not in _VIEWS and name != "convolution":
                for tensor in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(tensor, torch.Tensor):
                        Count.total += tensor.numel()
            return out

    with torch.no_grad(), Count():
        model(*inputs)
    return Count.total


def _flop_share(model: torch.nn.Module, *inputs, calls: int = 5) -> float:
    """The share of one eval forward's CPU time spent in FLOP operators (``torch.profiler``)."""
    with torch.no_grad():
        model(*inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(calls):
                model(*inputs)
    events = profiler.key_averages()
    in_flop_ops = sum(e.cpu_time_total for e in events if e.key in _FLOP_OPERATORS)
    # Top-level operators only: each event's self time summed is the whole forward's CPU time.
    whole = sum(e.self_cpu_time_total for e in events)
    return min(1.0, in_flop_ops / whole) if whole else 0.0


def work_ideal(dense: torch.nn.Module, small: torch.nn.Module, *inputs) -> tuple[float, float]:
    """The speed-up ``small`` could reach over ``dense`` if every operator's time shrank with its
    own work, and the share of ``dense``'s time in FLOP operators.

    The FLOP ideal (``flops(dense) / flops(small)``) assumes that all of a forward's time is in
    convolutions and matrix products. Pooling, normalisation, activations and residual adds
    shrink with the kept channels, not with their square, so they hold a purged model back.
    Here the dense forward's CPU time is split (``torch.profiler``) into its FLOP operators,
    share f, and the rest, 1 − f; the FLOP part shrinks by the FLOP ideal and the rest by the
    ratio of elements the other operators write:

        work ideal = 1 / (f / FLOP ideal + (1 − f) / element ratio).

    Examples:
        >>> import ctrlsparse as cs
        >>> dense = cs.lenet5().eval()
        >>> ideal, share = work_ideal(dense, dense, torch.zeros(8, 1, 28, 28))
        >>> round(ideal, 6), 0.0 < share <= 1.0
        (1.0, True)
    """
    share = _flop_share(dense, *inputs)
    flop_ratio = flops(dense, *inputs) / max(flops(small, *inputs), 1)
    element_ratio = _elements(dense, *inputs) / max(_elements(small, *inputs), 1)
    return 1.0 / (share / flop_ratio + (1.0 - share) / element_ratio), share


def _primal(config: ProblemConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optim.primal == "adam":
        return adam(model.parameters(), lr=config.optim.primal_lr)
    return torch.optim.SGD(model.parameters(), lr=config.optim.primal_lr, momentum=0.9)


def overhead_steps(
    config: ProblemConfig,
    total_steps: int,
    target_density: float | None = None,
    open_fraction: float | None = None,
    compile: bool | str = False,
    skip_below: float | None = None,
    primal: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The gated training step and the dense one that :func:`overhead` times, on one
    minibatch of the problem's training data: ``(gated_step, dense_step)``.

    ``total_steps`` is the length of training the gated step's :class:`GDA` is told.
    ``compile``: both models' forward passes go through ``torch.compile`` (the gated
    one by ``GDA(..., compile=True)``, gate sampling included; with ``"step"``, the gated
    step is ``GDA(..., compile="step")`` and the dense forward is compiled, its backward
    with it); where compilation fails, a warning says why and that step runs eagerly.
    ``skip_below``: the gated step skips units with P(z != 0) below it
    (``GDA(..., skip_below=...)``). ``primal(model)`` builds both steps' optimizer (default:
    the problem file's, as ``ctrlsparse run`` builds it).
    """
    torch.manual_seed(config.train.seed)
    data = load_data(config)
    dense, example = build_model_of(config, data)
    gated = gated_model(config, copy.deepcopy(dense), example)
    output_fn = output_fn_of(config)
    if target_density is not None:
        levels = {"target_density": target_density}
    else:
        levels = {"target_density": config.sparsity.target_density, "penalty": config.sparsity.penalty}
    if open_fraction is not None:
        with torch.no_grad():
            for group in gate_groups(gated):
                is_open = torch.rand(group.gate.parameter.shape) < open_fraction
                group.gate.parameter.copy_(torch.where(is_open, 10.0, -10.0))

    def loss_fn(output, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output_fn(output), targets)

    problem = SparsityProblem(gated, loss_fn, **levels)
    primal = primal or (lambda model: _primal(config, model))
    gda = GDA(
        problem,
        primal(gated),
        dual_lr=config.optim.dual_lr,
        dual_restarts=config.optim.dual_restarts,
        dual_optimizer=config.optim.dual_optimizer,
        # A ramp and a feasibility phase would change the gates while they are timed.
        schedule=TargetSchedule("fixed"),
        total_steps=total_steps,
        feasibility=False,
        compile=compile,
        skip_below=skip_below,
    )
    dense_opt = primal(dense)
    x, y = head(data.train[0], config.train.batch_size), data.train[1][: config.train.batch_size]

    dense_forward = dense

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        loss_fn(call_model(dense_forward, x), y).backward()
        dense_opt.step()

    def gated_step() -> None:
        gda.step(x, y)

    if compile:
        dense_forward = torch.compile(dense)
        try:
            dense_step()
        except Exception as error:  # noqa: BLE001 - any compiler failure: fall back, say why
            reason = f"{type(error).__name__}: {error}"
            warnings.warn(f"torch.compile failed ({reason}); timing eager dense steps", stacklevel=3)
            dense_forward = dense
    return gated_step, dense_step


def overhead(
    config: ProblemConfig,
    steps: int = 100,
    repetitions: int = 5,
    target_density: float | None = None,
    open_fraction: float | None = None,
    compile: bool = False,
    skip_below: float | None = None,
) -> Timing:
    """Gated training step (forward, expected densities, backward, primal and dual update)
    against the same dense model's step with the same primal optimizer, on the problem's
    data, and the peak memory of each step.

    Any problem file works: registered models and data, models named by import path
    (``[model] factory``), synthetic data. ``target_density`` (model-wise) replaces the
    problem file's sparsity setting. The gates start at the problem's drop rate (the
    early-training cost) unless ``open_fraction`` is given: then that fraction of each
    layer's gates, chosen at random, is opened (log α = 10) and the rest closed
    (log α = −10), as in a model trained to that density. ``compile`` times both steps
    with ``torch.compile``'d forward passes, ``skip_below`` lets the gated step skip
    units whose P(z != 0) is below it (:func:`overhead_steps`).

    Examples:
        >>> print(overhead(load_problem("problems/fashion_mlp.toml")).report())  # doctest: +SKIP
    """
    total = (steps + 3) * (repetitions + 2)  # warm-up, repetitions, the memory profile
    gated_step, dense_step = overhead_steps(config, total, target_density, open_fraction, compile, skip_below)
    timing = alternate(gated_step, dense_step, steps, repetitions)
    timing.peak_bytes = (peak_memory(gated_step), peak_memory(dense_step))
    return timing


def purge_speed(
    run_dir: str | Path,
    batch_size: int = 256,
    steps: int = 50,
    repetitions: int = 7,
    channels_last: bool = False,
) -> Timing:
    """Eval-mode forward time of the purged model of a run against the dense model (same
    batch), the ideal speed-up: dense FLOPs / the purged model's FLOPs, and the work ideal
    (:func:`work_ideal`).

    Also checks that the purged model's outputs equal the gated model's on that batch.
    ``channels_last``: time both models and the batch in ``torch.channels_last`` memory
    format (4-D inputs), which oneDNN's CPU convolutions run without reordering.

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
    if channels_last:
        if x.dim() != 4:
            raise ValueError(
                f"channels_last needs 4-D image batches; {run_dir}'s inputs have shape {tuple(x.shape)}"
            )
        x = x.contiguous(memory_format=torch.channels_last)
        dense, small = (m.to(memory_format=torch.channels_last) for m in (dense, small))

    def forward(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    timing = alternate(forward(small), forward(dense), steps, repetitions)
    timing.ideal = flops(dense, x) / max(flops(small, x), 1)
    timing.work_ideal = work_ideal(dense, small, x)[0]
    return timing
