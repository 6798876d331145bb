"""A density path: the accuracy–density front from one run.

One run lowers its targets through a list of points, ε_1 > ε_2 > … > ε_K. The run of T
steps is cut into K equal segments; in segment k each level ramps linearly from where it
stands to ε_k over the first ``fraction`` of the segment (the target schedule's, a third by
default) and holds there (:meth:`GDA.retarget <ctrlsparse.GDA.retarget>`). The dual step
and the gates' learning-rate floor are those of a run one segment long
(:meth:`GDA.pace <ctrlsparse.GDA.pace>`): each target is reached within its segment. At the end of
segment k the run pauses and point k gets a model of its own:

1. the feasibility phase's decision (:mod:`ctrlsparse.problem.feasibility`): every
   realized value at most ε_k and within one unit's share of it;
2. F steps of training of the open weights alone (``finetune``, a tenth of T by default);
3. its test error, ``summary.json`` and ``model.pt`` in a sub-run directory.

Then the model, the trainer and every random generator are put back exactly as they were,
and the run goes on towards the next point's ε: the points never change the trajectory, and a resumed
path is bit-identical to an uninterrupted one. The whole path costs T + K·F steps, with F
capped so that this is at most 1.5 T (F ≤ T / (2K)).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ctrlsparse.choices import TARGET
from ctrlsparse.modelio import to_device
from ctrlsparse.problem.levels import MODEL, parse_levels
from ctrlsparse.problem.params import params_density
from ctrlsparse.runs import store as runs
from ctrlsparse.runs.checkpoint import CheckpointError, rng_state, set_rng_state

PATH_FILE = runs.PATH
"""The file of a path's run directory that lists every point."""
QUANTITIES = ("density", "macs", "params")
"""What a path's numbers bound: the density targets, the MACs budgets, or the parameter budget."""
DEFAULT_FINETUNE = 0.1
"""Each point's training of the open weights, as a fraction of the run (the feasibility phase's default)."""
MAX_EXTRA = 0.5
"""The points' training together costs at most this fraction of the run."""


@dataclass
class PathPoint:
    """One point of a path, as ``path.json`` records it.

    Attributes:
        index: 0 for the first (loosest) point.
        targets: each constraint's ε at this point, ``{constraint name: ε}``.
        step: the run's step the point was taken at (its share of the trajectory).
        finetune_steps: steps of training of the open weights after its decision.
        run: its sub-run directory, relative to the path's.
        realized: each target constraint's realized (deployed) value.
        realized_density: the model-wise realized density.
        test_error_before / test_error_decided / test_error: before the decision, right
            after it, and after training the open weights (None without test batches).
        params: dense and remaining parameter counts; macs: dense, expected and realized MACs.
        seconds: wall-clock time of the point's decision, training and evaluation.
    """

    index: int
    targets: dict[str, float]
    step: int
    finetune_steps: int
    run: str
    realized: dict[str, float] = field(default_factory=dict)
    realized_density: float | None = None
    test_error_before: float | None = None
    test_error_decided: float | None = None
    test_error: float | None = None
    params: dict | None = None
    macs: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _transpose(points: Mapping) -> list[dict]:
    """One list per layer to one form per point: ``{"fc1": [0.5, 0.3], "fc2": [0.4, 0.2]}`` →
    ``[{"fc1": 0.5, "fc2": 0.4}, {"fc1": 0.3, "fc2": 0.2}]``."""
    lengths = {name: len(values) if isinstance(values, Sequence) else None for name, values in points.items()}
    if any(n is None for n in lengths.values()) or len(set(lengths.values())) != 1:
        raise ValueError(
            "a per-layer path gives every pattern a list of the same length, "
            f"e.g. {{'fc1': [0.5, 0.3], 'fc2': [0.4, 0.2]}}; got lengths {lengths}"
        )
    return [{name: values[i] for name, values in points.items()} for i in range(next(iter(lengths.values())))]


class DensityPath:
    """The targets of one run, lowered point by point, each point deployed on its own.

    Args:
        points: the targets, loosest first: numbers (model-wise ε, e.g.
            ``[0.5, 0.3, 0.2, 0.1]``), per-layer forms (``[{"fc1": 0.5, "fc2": 0.4}, …]``,
            patterns allowed, as ``target_density`` takes them), or one list per layer
            (``{"fc1": [0.5, 0.3], "fc2": [0.4, 0.2]}``, all of one length).
        quantity: what the numbers bound: ``"density"`` (the problem's ``target_density``),
            ``"macs"`` (its ``target_macs``) or ``"params"`` (``target_params``: a fraction
            of the dense model's parameters or a count such as ``"1.3e9"``). None: the
            problem's kind of target (density when it has both kinds is refused).
        finetune: each point's training of the open weights, as a fraction of the run
            (capped so that all points together cost at most half the run).
        decay: during a point's training, scale the primal optimizer's learning rates
            linearly from where the run has them down to zero (step s of F trains at
            (F − s)/F of them): the point ends at rest instead of on one noisy step of a
            constant rate. The run's rates are untouched (they are restored with the rest).
        configure: ``configure(config, index, targets)`` gives a point's ``config.json``
            from the run's (the CLI writes a problem file whose targets are the point's, so
            ``ctrlsparse purge`` rebuilds it); by default the run's, with a ``"path_point"`` entry.

    Each constraint's levels must decrease along the path (strictly for at least one
    constraint at each point) and lie in (0, 1]; :func:`~ctrlsparse.fit` checks every
    point against the problem before the first step.

    Examples:
        >>> path = DensityPath([0.5, 0.3, 0.2, 0.1])  # doctest: +SKIP
        >>> summary = cs.fit(GDA(problem), batches, epochs=20, test_batches=test,
        ...                  run_dir="runs/front", path=path)  # doctest: +SKIP
        >>> [(p.targets["model"], p.realized_density, p.test_error) for p in path.points]  # doctest: +SKIP
    """

    def __init__(
        self,
        points: Sequence[float | Mapping[str, float]] | Mapping[str, Sequence[float]],
        quantity: str | None = None,
        finetune: float = DEFAULT_FINETUNE,
        configure: Callable[[dict, int, dict], dict] | None = None,
        decay: bool = True,
    ) -> None:
        if isinstance(points, Mapping):
            points = _transpose(points)
        if isinstance(points, str | bytes) or not isinstance(points, Sequence) or not points:
            raise ValueError(f"a path needs a non-empty list of targets, loosest first; got {points!r}")
        for point in points:
            values = point.values() if isinstance(point, Mapping) else [point]
            for value in values:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError(
                        f"a path's targets are numbers in (0, 1]; got {value!r} in {list(points)!r}"
                    )
        if quantity is not None and quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)} or None, got {quantity!r}")
        if not (isinstance(finetune, int | float) and 0 < finetune <= 1):
            raise ValueError(f"finetune must be a fraction of the run in (0, 1], got {finetune!r}")
        self.given = list(points)
        self.quantity = quantity
        if not isinstance(decay, bool):
            raise ValueError(f"decay must be True or False, got {decay!r}")
        self.finetune = float(finetune)
        self.configure = configure
        self.decay = decay
        self.targets: list[dict[str, float]] = []
        """Each point's ``{constraint name: ε}`` (set by :meth:`bind`)."""
        self.points: list[PathPoint] = []
        """The points taken so far."""
        self.boundaries: list[int] = []
        self.finetune_steps = 0
        self.ramps: list[int] = []
        self.progress = False
        """Show each point's training (``fit`` sets it from its ``progress``): a tqdm bar on a
        terminal, one line per point otherwise."""

    @classmethod
    def of(cls, path: DensityPath | Sequence | Mapping) -> DensityPath:
        """``path`` itself, or a :class:`DensityPath` of the given points."""
        return path if isinstance(path, DensityPath) else cls(path)

    def __len__(self) -> int:
        return len(self.given)

    # --- before training ------------------------------------------------------------------

    def bind(self, trainer) -> None:
        """Check the trainer and every point against its problem; turn the trainer's own
        feasibility phase off (each point has its own). ``fit`` calls it before any step.

        Raises:
            ValueError: the trainer cannot follow a path (penalized, not a GDA, its
                feasibility phase already planned), or a point does not fit the problem.
        """
        problem = getattr(trainer, "problem", None)
        if problem is None or not hasattr(trainer, "retarget"):
            raise ValueError(
                f"a density path needs a GDA on a SparsityProblem with targets; got {type(trainer).__name__} "
                "(magnitude pruning and l1_rda take one run per density)"
            )
        if problem.mode != "constrained":
            raise ValueError(
                "a density path lowers targets; this problem is penalized (no target_density, target_macs "
                "or target_params): drop the penalty, or use tune-penalty for one density"
            )
        if problem.shape_targets:
            raise ValueError("a density path moves density, MACs or parameter budgets, not a target shape")
        if getattr(trainer, "phase_start", None) is not None:
            raise ValueError(
                "this GDA has planned its own feasibility phase: build it without total_steps (fit tells "
                "it the run's length) or with feasibility=False; each point of the path has its own"
            )
        quantity = self.quantity or ("macs" if problem.macs_targets and not problem.targets else "density")
        if problem.targets and problem.macs_targets:
            raise ValueError(
                "this problem has density targets and MACs budgets; a path moves one kind: build it "
                "with one of them"
            )
        if (quantity == "macs") != bool(problem.macs_targets):
            have = "MACs budgets (target_macs)" if problem.macs_targets else "density targets"
            moves = "MACs budgets" if quantity == "macs" else "densities"
            raise ValueError(
                f"a path of quantity={quantity!r} moves {moves}, but the problem has {have}: build the "
                "problem with the kind of target the path moves"
            )
        self.quantity = quantity
        self.targets = [self._levels(problem, point) for point in self.given]
        self._check_decreasing()
        original = dict(problem.targets_all)
        try:
            for targets in self.targets:  # every point fits the problem, before any work
                problem.retarget(targets)
        finally:
            problem.retarget(original)
        trainer.feasibility = 0.0  # last: a refused path leaves the trainer as it was

    def _levels(self, problem, point) -> dict[str, float]:
        if self.quantity == "params":
            if isinstance(point, Mapping):
                raise ValueError(f"a parameter budget is one number for the model, got {point!r}")
            return {MODEL: params_density(problem.model, problem.accounting, point)}
        if isinstance(point, str):
            raise ValueError(f"a {self.quantity} target is a number in (0, 1], got {point!r}")
        if self.quantity == "macs":
            levels = problem.macs_levels(point, "the path's target_macs")
        else:
            levels = parse_levels(point, problem.layers, "the path's target_density")
        for name, eps in levels.items():
            TARGET.check(eps, f"the path's target for {name!r}")
        want = set(problem.macs_targets if self.quantity == "macs" else problem.targets)
        if set(levels) != want:
            raise ValueError(
                f"the path's point {point!r} sets {sorted(levels)}, but the problem's targets are "
                f"{sorted(want)}: give every point in the form of the problem's "
                f"{'target_macs' if self.quantity == 'macs' else 'target_density'}"
            )
        return levels

    def _check_decreasing(self) -> None:
        for before, after in zip(self.targets, self.targets[1:]):
            rises = [n for n in after if after[n] > before[n]]
            if rises or all(after[n] == before[n] for n in after):
                shown = [{n: round(v, 6) for n, v in t.items()} for t in self.targets]
                raise ValueError(
                    f"a path's targets must decrease, loosest first (each point lower than the one "
                    f"before for some constraint, higher for none); got {shown}"
                )

    def plan(self, total_steps: int, fraction: float) -> None:
        """Cut a run of ``total_steps`` into one segment per point; the points' training and
        each segment's ramp (``fraction`` of it)."""
        k = len(self.targets)
        if total_steps < 2 * k:
            raise ValueError(
                f"a path of {k} points needs a run of at least {2 * k} steps, got {total_steps}: "
                "train for more epochs or give fewer points"
            )
        self.boundaries = [round((i + 1) * total_steps / k) for i in range(k)]
        cap = math.floor(MAX_EXTRA * total_steps / k)
        self.finetune_steps = max(1, min(round(self.finetune * total_steps), cap))
        starts = [0, *self.boundaries[:-1]]
        self.ramps = [max(1, round(fraction * (end - start))) for start, end in zip(starts, self.boundaries)]

    def start(self, trainer, step: int, run_dir: Path | None) -> None:
        """Set the trainer on its point (a fresh run: the first) and read the points a resumed
        run took already from ``path.json``."""
        total = trainer.total_steps
        if total is None:
            raise ValueError("a density path needs the run's length: fit() gives it from the batches")
        self.plan(total, trainer.schedule.fraction)
        if step == 0:
            # Each segment reaches its target like a run of its own length: the dual step and
            # the gates' floor scale with the segment, not the whole path (docs/path.md).
            trainer.pace(self.boundaries[0])
            trainer.retarget(self.targets[0], ramp_steps=self.ramps[0])
            self.points = []
            return
        done = sum(b <= step for b in self.boundaries)
        recorded = []
        if run_dir is not None and (Path(run_dir) / PATH_FILE).exists():
            written = runs.read_json(Path(run_dir) / PATH_FILE)
            if written.get("decay", self.decay) != self.decay:
                raise CheckpointError(
                    f"{PATH_FILE} was written with decay={written['decay']}, this path has "
                    f"decay={self.decay}: resume with the same setting, or start afresh with overwrite"
                )
            recorded = written.get("points", [])
        self.points = [PathPoint(**p) for p in recorded if p["index"] < done]
        if len(self.points) != done:
            raise CheckpointError(
                f"the checkpoint is past {done} points of the path but {PATH_FILE} records "
                f"{len(self.points)}: start afresh with overwrite"
            )

    # --- during training ------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether a point is taken after ``step``."""
        return len(self.points) < len(self.boundaries) and step == self.boundaries[len(self.points)]

    def take(self, trainer, batches, measure, example_input, run_dir: Path | None, config: dict | None,
             summarize) -> PathPoint:  # fmt: skip
        """Take the next point after the run's current step, then set the trainer on the next
        target. Everything the point changes (model, trainer, random generators) is restored."""
        index = len(self.points)
        model = trainer.model
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_trainer = copy.deepcopy(trainer.state_dict())
        saved_rng = rng_state()
        was_training = model.training
        started = time.monotonic()
        try:
            point = self._point(trainer, index, batches, measure, example_input, run_dir, config, summarize)
        finally:
            model.load_state_dict(saved_model)
            trainer.load_state_dict(saved_trainer)
            set_rng_state(saved_rng)
            model.train(was_training)
        point.seconds = time.monotonic() - started
        self.points.append(point)
        if run_dir is not None:
            self.write(run_dir)
        if index + 1 < len(self.targets):
            trainer.retarget(self.targets[index + 1], ramp_steps=self.ramps[index + 1])
        return point

    def _point(
        self, trainer, index, batches, measure, example_input, run_dir, config, summarize
    ) -> PathPoint:
        targets = self.targets[index]
        name = self._name(index)
        before = measure() if measure is not None else None
        decision = trainer.decide()
        decided = measure() if measure is not None else None
        decision.test_error_before, decision.test_error_decided = before, decided
        device = next(trainer.model.parameters()).device
        data = _own_copy(batches)
        trainer.model.train()
        steps, batch_iter = 0, iter(data)
        asked = ", ".join(f"{n} ≤ {eps:g}" for n, eps in targets.items())
        bar = None
        if self.progress and sys.stderr.isatty():
            label = f"point {index + 1}/{len(self)} ({asked})"
            bar = tqdm(total=self.finetune_steps, desc=label, unit="step", file=sys.stderr, leave=False)
        optimizer = getattr(trainer, "primal_optimizer", None) if self.decay else None
        groups = [] if optimizer is None else optimizer.param_groups
        rates = [group["lr"] for group in groups]
        while steps < self.finetune_steps:
            try:
                x, y = next(batch_iter)
            except StopIteration:
                batch_iter = iter(data)
                continue
            left = (self.finetune_steps - steps) / self.finetune_steps
            for group, lr in zip(groups, rates):
                group["lr"] = lr * left  # restored by take() with the trainer's state
            trainer.step(to_device(x, device), y.to(device))
            steps += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        error = measure() if measure is not None else None
        if self.progress:
            shown = "n/a" if error is None else f"{100 * error:.2f}%"
            sys.stderr.write(f"point {index + 1}/{len(self)} ({asked}): test error {shown}\n")
        summary = summarize(trainer, example_input, error)
        summary.steps = self.boundaries[index] + steps
        point = PathPoint(
            index=index,
            targets=dict(targets),
            step=self.boundaries[index],
            finetune_steps=steps,
            run=name,
            realized={n: float(summary.realized[n]) for n in targets if n in summary.realized},
            realized_density=summary.realized_density,
            test_error_before=before,
            test_error_decided=decided,
            test_error=error,
            params=summary.params,
            macs=summary.macs,
        )
        if run_dir is not None:
            sub = Path(run_dir) / name
            sub.mkdir(parents=True, exist_ok=True)
            runs.write_json(sub / runs.CONFIG, self._config(config, index, targets))
            torch.save(trainer.model.state_dict(), sub / runs.MODEL)
            runs.write_summary(sub, summary)  # last: a sub-run with a summary is complete
        return point

    def _name(self, index: int) -> str:
        point = self.given[index]
        if isinstance(point, Mapping):
            return f"point-{index + 1}"
        return f"{self.quantity}-{point}"

    def _config(self, config: dict | None, index: int, targets: dict) -> dict:
        base = copy.deepcopy(config or {})
        if self.configure is not None:
            return self.configure(base, index, self.given[index])
        base["path_point"] = {"index": index, "targets": dict(targets)}
        return base

    def write(self, run_dir: str | Path) -> None:
        """``path.json``: the plan and every point taken so far."""
        runs.write_json(Path(run_dir) / PATH_FILE, self.to_dict())

    def to_dict(self) -> dict:
        return {
            "quantity": self.quantity,
            "targets": self.targets,
            "boundaries": self.boundaries,
            "finetune_steps": self.finetune_steps,
            "decay": self.decay,
            "complete": len(self.points) == len(self.targets),
            "points": [p.to_dict() for p in self.points],
        }


def _own_copy(batches) -> Any:
    """Batches the point can draw from without moving the run's: a copy of a stateful
    iterable (sharing its data tensors), the iterable itself otherwise (a new iterator over
    it; the random generators are restored after the point)."""
    if not hasattr(batches, "state_dict"):
        return batches
    shared = {id(v): v for v in vars(batches).values() if isinstance(v, torch.Tensor)}
    return copy.deepcopy(batches, memo=shared)


def read_path(run_dir: str | Path) -> dict:
    """The ``path.json`` of a path's run directory (the plan and the points taken).

    Raises:
        RunFormatError: naming the file when it is missing or not JSON.
    """
    return runs.read_json(Path(run_dir) / PATH_FILE)
