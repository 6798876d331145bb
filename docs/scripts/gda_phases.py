"""Where ``GDA.step`` spends its time beyond a hand-written step on the same gated model
(docs/performance.md, "Against the reference implementation").

    .venv-dev/bin/python docs/scripts/gda_phases.py problems/fashion_lenet5.toml --threads 2

Times the phases of two steps on one minibatch, alternating them step by step in one
process: ``GDA.step`` of the problem file (as ``ctrlsparse bench overhead`` builds it) and
``reference_overhead.py``'s hand-written step on a copy of the same gated model (loss +
λ (density − ε), backward, Adam, one projected SGD dual step, the clamp). Each phase is
wall time from ``time.perf_counter``, without a profiler; the table gives the median
milliseconds per step of each phase and their difference. ``GDA.step``'s phases are taken
by wrapping the methods it calls (cooper's ``zero_grad``, ``primal_step`` and
``dual_step``, the problem's ``compute_cmp_state``, the CMP state's two Lagrangians, the
logging transfer); its backward pass is the rest of the roll.

``--user-adam`` gives both steps ``torch.optim.Adam`` as a user builds it (the README's
path). ``--shared-model`` has the hand-written step train GDA's own model instead of a
copy: the two steps then alternate on the same weights, where two copies trained apart
drift, and with them the time of kernels that depend on the data (max pooling).
"""

import argparse
import inspect
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import cooper
import torch

import ctrlsparse.problem.gda as gda_module
from ctrlsparse.experiments.bench import overhead_steps
from ctrlsparse.experiments.config import load_problem

sys.path.insert(0, str(Path(__file__).parent))
from reference_overhead import TARGET, hand_written_step  # noqa: E402

PHASES = ("zero_grad", "forward and densities", "Lagrangians", "backward", "logging transfer",
          "primal step", "dual step", "outside the roll")  # fmt: skip


class Clock:
    """Per-step wall milliseconds of named phases."""

    def __init__(self) -> None:
        self.step: dict[str, float] = defaultdict(float)
        self.steps: dict[str, list[float]] = defaultdict(list)
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.step[phase] += (now - self.last) * 1e3
        self.last = now

    def wrap(self, owner, name: str, phase: str) -> None:
        """Time every call of ``owner.name`` as ``phase`` (the time since the last mark is the caller's)."""
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            self.mark("_caller")
            result = inner(*args, **kwargs)
            self.mark(phase)
            return result

        setattr(owner, name, timed)

    def start(self) -> None:
        self.step.clear()
        self.last = time.perf_counter()

    def stop(self, total: float) -> None:
        for phase, value in self.step.items():
            self.steps[phase].append(value)
        self.steps["total"].append(total)


def gda_clock(gated_step) -> Clock:
    """Wrap the calls of the GDA behind ``gated_step`` so that a clock sees its phases."""
    clock = Clock()
    gda = inspect.getclosurevars(gated_step).nonlocals["gda"]
    clock.wrap(gda._cooper, "zero_grad", "zero_grad")
    clock.wrap(gda.problem, "compute_cmp_state", "forward and densities")
    clock.wrap(cooper.CMPState, "compute_primal_lagrangian", "Lagrangians")
    clock.wrap(cooper.CMPState, "compute_dual_lagrangian", "Lagrangians")
    clock.wrap(gda, "_read", "logging transfer")
    clock.wrap(gda._cooper, "primal_step", "primal step")
    clock.wrap(gda._cooper, "dual_step", "dual step")
    roll = gda_module.roll

    def timed_roll(*args, **kwargs):
        clock.mark("outside the roll")
        result = roll(*args, **kwargs)
        clock.step["backward"] += clock.step.pop("_caller", 0.0)  # the roll's own code: the backward pass
        clock.mark("outside the roll")
        return result

    gda_module.roll = timed_roll
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", help="problems/fashion_lenet5.toml or problems/fashion_mlp.toml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--user-adam", action="store_true", help="both steps with torch.optim.Adam as a user builds it"
    )
    parser.add_argument(
        "--shared-model", action="store_true", help="the hand-written step trains GDA's own model, not a copy"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_problem(args.problem)
    primal = (lambda model: torch.optim.Adam(model.parameters(), lr=7e-4)) if args.user_adam else None
    gated_step, _ = overhead_steps(config, 2 * args.steps + 100, primal=primal)
    gda = inspect.getclosurevars(gated_step).nonlocals["gda"]
    nonlocals = inspect.getclosurevars(gated_step).nonlocals
    target = TARGET.get(config.model.name, float(config.sparsity.target_density))
    clocks = {"GDA.step": gda_clock(gated_step), "hand-written": Clock()}
    hand = hand_written_step(
        gated_step, nonlocals["x"], nonlocals["y"], target, clocks["hand-written"].mark,
        user_adam=args.user_adam, shared=args.shared_model,
    )  # fmt: skip
    steps = {"GDA.step": gated_step, "hand-written": hand}
    for _ in range(10):  # warm-up
        for step in steps.values():
            step()
    for clock in clocks.values():
        clock.steps.clear()
    for i in range(args.steps):
        for name in list(steps) if i % 2 == 0 else list(steps)[::-1]:
            clocks[name].start()
            start = time.perf_counter()
            steps[name]()
            clocks[name].mark("outside the roll")  # GDA.step's clamp and restarts after the roll
            clocks[name].stop((time.perf_counter() - start) * 1e3)
    assert gda.steps > 0
    print(f"{config.name}, {args.steps} steps each, {torch.get_num_threads()} threads: median ms per step")
    print(f"{'phase':<24} {'GDA.step':>9} {'hand-written':>13} {'difference':>11}")
    for phase in (*PHASES, "total"):
        a = statistics.median(clocks["GDA.step"].steps.get(phase, [0.0]))
        b = statistics.median(clocks["hand-written"].steps.get(phase, [0.0]))
        print(f"{phase:<24} {a:9.3f} {b:13.3f} {a - b:+11.3f}")


if __name__ == "__main__":
    main()
