"""GDA(..., compile="step") against the dense step and a plain-torch gated step, all three compiled.

    .venv-dev/bin/python docs/scripts/compile_step.py --threads 1 --steps 50 --repetitions 61

On one minibatch of problems/fashion_mlp.toml (the MLP 784-300-100, batch 128), in one process,
alternating (``alternate_many``, rotated order, ``--repetitions`` of ``--steps`` steps each):

- ``dense compiled``: the dense MLP's step with its forward (and so its backward) through
  ``torch.compile``, and the problem file's Adam (``ctrlsparse.experiments.bench.overhead_steps``);
- ``compile step``: ``GDA(problem, adam, compile="step")`` on the gated MLP, ε = 0.33 (the same
  function);
- ``plain gated compiled``: the same gated model (a copy) trained by a step a user would write in
  plain torch, without ctrlsparse's loop: one ``torch.compile``-d function returns the loss +
  λ (E[L0 density] − ε) (the Lagrangian of Gallego-Posada et al., 2022; the expected density sums
  P(z ≠ 0), eq. 12 of Louizos et al., 2018) and the violation, then ``backward``, the fused
  Adam, λ ← max(0, λ + η g) and the clamp of the gate parameters, eager. No logging and no
  checks: the floor that GDA's machinery is measured against.

``--phases`` then times the phases of GDA's compiled step, each through a wrapper (median µs);
``--profile`` counts, per step, the zero gradients its compiled backward builds and the self
time of dynamo's and AOTAutograd's wrappers (``torch.profiler``).

It prints each step's ratio to ``dense compiled`` per repetition (median, min–max) and
``compile step / plain gated compiled``. The first compiled calls (the warm-up) take a minute
or two on the CPU. A benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ctrlsparse.experiments.bench import alternate_many, overhead_steps, spread
from ctrlsparse.experiments.build import load_data
from ctrlsparse.experiments.config import load_problem
from ctrlsparse.gating import Accounting
from ctrlsparse.modelio import head
from ctrlsparse.problem.kernels import adam

PROBLEM = Path(__file__).parents[2] / "problems" / "fashion_mlp.toml"
TARGET, DUAL_LR = 0.33, 1e-4


def plain_gated_compiled(
    gated_step: Callable[[], None], x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    """A copy of ``gated_step``'s gated model, trained by a plain-torch compiled step (module docstring)."""
    model = copy.deepcopy(inspect.getclosurevars(gated_step).nonlocals["gda"].problem.model)
    accounting = Accounting(model)
    gates = [(group.gate.parameter, group.gate.parameter_range) for group in accounting.groups]
    optimizer = adam(model.parameters(), lr=7e-4)
    multiplier = torch.zeros(())

    @torch.compile
    def lagrangian(x: torch.Tensor, y: torch.Tensor, multiplier: torch.Tensor):
        violation = accounting.densities()[0] - TARGET
        return F.cross_entropy(model(x), y) + multiplier * violation, violation

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        total, violation = lagrangian(x, y, multiplier)
        total.backward()
        optimizer.step()
        multiplier.add_(DUAL_LR * violation.detach()).clamp_(min=0)
        with torch.no_grad():
            for gate, (low, high) in gates:
                gate.clamp_(low, high)

    return step


def phases(gda_step: Callable[[], None], steps: int) -> None:
    """Print where ``GDA.step``'s compiled step spends its time: each phase of
    ``CompiledStep.roll`` timed by a wrapper around it, median over ``steps`` steps."""
    gda = inspect.getclosurevars(gda_step).nonlocals["gda"]
    compiled, cooper = gda._compiled_step, gda._compiled_step.optimizer
    seconds: dict[str, list[float]] = {}

    def timed(name: str, function: Callable) -> Callable:
        def call(*args):
            start = time.perf_counter()
            result = function(*args)
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            return result

        return call

    compiled._lagrangian = timed("compiled region (forward, Lagrangian, backward)", compiled._lagrangian)
    gda._read = timed("logging transfer and checks (StepReader)", gda._read)
    cooper.primal_step = timed("primal step (the fused Adam, two groups)", cooper.primal_step)
    cooper.dual_step = timed("dual step (cooper: SGD and the projection)", cooper.dual_step)
    compiled._after_update = timed("clamp of the gates and dual restarts", compiled._after_update)
    for _ in range(steps):
        timed("whole GDA.step", gda_step)()
    whole = statistics.median(seconds.pop("whole GDA.step"))
    for name, values in seconds.items():
        print(f"  {name}: {1e6 * statistics.median(values):.0f} µs")
    rest = whole - sum(statistics.median(values) for values in seconds.values())
    print(f"  the rest (zero_grad, levels, CMP state, GDA.step's own code): {1e6 * rest:.0f} µs")
    print(f"  whole GDA.step: {1e6 * whole:.0f} µs")


def profile(gda_step: Callable[[], None], steps: int = 50) -> None:
    """Print per-step counts and self times of a few operators of the whole step
    (``torch.profiler``, which slows every operator down: read them against each other):
    ``aten::zeros`` (every one in the step; the compiled backward's zero gradients among
    them), dynamo's guard check and AOTAutograd's forward and backward wrappers."""
    with torch.profiler.profile() as trace:
        for _ in range(steps):
            gda_step()
    events = {event.key: event for event in trace.key_averages()}
    for name in ("aten::zeros", "CompiledFunction", "CompiledFunctionBackward", "TorchDynamo Cache Lookup"):
        if name in events:
            event = events[name]
            per_step = event.self_cpu_time_total / steps
            print(f"  {name}: {event.count / steps:g} calls, {per_step:.0f} µs self per step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repetitions", type=int, default=61)
    parser.add_argument("--phases", action="store_true", help="then time the phases of GDA's compiled step")
    parser.add_argument("--profile", action="store_true", help="then profile GDA's compiled step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("$ python " + shlex.join(sys.argv))
    print(f"torch {torch.__version__}, {args.threads} threads", flush=True)
    config = load_problem(PROBLEM)
    total = (args.steps + 1) * (args.repetitions + 10)
    gda_step, dense_step = overhead_steps(config, total, target_density=TARGET, compile="step")
    data = load_data(config)
    x, y = head(data.train[0], config.train.batch_size), data.train[1][: config.train.batch_size]
    steps = {
        "dense compiled": dense_step,
        "compile step": gda_step,
        "plain gated compiled": plain_gated_compiled(gda_step, x, y),
    }
    start = time.perf_counter()
    for step in steps.values():  # the compilations, before the timed warm-up
        step()
    print(f"compiled in {time.perf_counter() - start:.0f} s", flush=True)
    gda = inspect.getclosurevars(gda_step).nonlocals["gda"]
    if not gda._compiled_step._lagrangian.compiled:  # a fallback would time the eager step
        raise SystemExit("GDA's step fell back to eager (the warning above says why): nothing to compare")
    seconds = alternate_many(steps, args.steps, args.repetitions)
    for name, times in seconds.items():
        print(f"  {name}: {1e3 * statistics.median(times):.3f} ms per step")
    for name in ("compile step", "plain gated compiled"):
        ratios = [a / b for a, b in zip(seconds[name], seconds["dense compiled"])]
        print(f"  {name} / dense compiled: {spread(ratios)}")
    ratios = [a / b for a, b in zip(seconds["compile step"], seconds["plain gated compiled"])]
    print(f"  compile step / plain gated compiled: {spread(ratios)}")
    if args.phases:
        print(f"phases of GDA's compiled step, median of {args.steps * args.repetitions} steps:")
        phases(gda_step, args.steps * args.repetitions)
    if args.profile:
        print("torch.profiler, 50 steps of GDA's compiled step:")
        profile(gda_step)


if __name__ == "__main__":
    main()
