r"""Simultaneous gradient descent-ascent on the Lagrangian of a :class:`SparsityProblem`.

.. math::
    \theta_{t+1} = \text{primal\_step}\big(\nabla_\theta \mathcal L(\theta_t, \lambda_t)\big),\qquad
    \lambda_{t+1} = \big[\lambda_t + \eta_\lambda\,(\text{density}_t - \epsilon)\big]_+

built on cooper's ``SimultaneousOptimizer`` (or its alternating primal-then-dual
optimizer). Penalized constraints never take a dual step, so penalized and
constrained runs go through this same loop. The dual update is SGD ascent (the
paper's), nuPI (Sohrabi et al., 2024: a PI controller on the violation that damps the
multiplier's oscillation) or Adam ascent; target schedules move each constraint's level
from the initial density to ε (see :mod:`ctrlsparse.problem.schedules`).
"""

from __future__ import annotations

import torch

from ctrlsparse.choices import FEASIBILITY
from ctrlsparse.gating import skipping
from ctrlsparse.problem import sharding
from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.compiled import STEP, CompiledStep, check_compile
from ctrlsparse.problem.dual import (
    CheckedAlternatingOptimizer,
    OneBackwardSimultaneousOptimizer,
    make_dual_optimizer,
    roll,
)
from ctrlsparse.problem.feasibility import Decision, decide
from ctrlsparse.problem.horizon import (
    DEFAULT_FEASIBILITY,
    DUAL_TRAVEL,
    GATE_TRAVEL,
    give_gates_their_group,
    plan,
)
from ctrlsparse.problem.kernels import adam
from ctrlsparse.problem.optimizer import GDAOptimizer
from ctrlsparse.problem.readout import StepReader
from ctrlsparse.problem.schedules import TargetSchedule
from ctrlsparse.runs.records import GDAStep, RunSummary

DEFAULT_PRIMAL_LR = 7e-4
"""Adam learning rate of Gallego-Posada et al.'s MNIST runs."""
DEFAULT_DUAL_LR = 1e-4
"""Dual SGD learning rate of Gallego-Posada et al.'s MNIST runs (~94k steps): the default of
``dual_optimizer="sgd"``, kept for paper reproductions."""


class GDA:
    """One primal-dual step per minibatch, with defaults that land on the targets.

    With the defaults, and the length of training known (``fit`` tells it, or pass
    ``total_steps``), each constraint's level ramps linearly from the model's initial value
    to ε over the first third of the run, the multipliers follow Adam ascent with a step
    tied to the run's length (``DUAL_TRAVEL / total_steps``) and dual restarts, the gates
    learn at least at ``GATE_TRAVEL / total_steps``, and the last tenth of the run is the
    *feasibility phase*: the gates are decided so that every realized (test-time, eq. 13)
    value is at most ε and as close to it as the units allow
    (:mod:`ctrlsparse.problem.feasibility`), then the open weights train alone. Nothing
    depends on the loss's scale or on the problem; docs/control.md has the measurements.

    Args:
        problem: the sparsity problem.
        primal_optimizer: optimizer of the weights *and* the gates; defaults to
            ``Adam(model.parameters(), lr=7e-4)``, with torch's fused kernel where the
            parameters' device has one (:func:`ctrlsparse.problem.kernels.adam`).
        dual_lr: learning rate of the dual ascent. None: ``DUAL_TRAVEL / total_steps`` for
            Adam ascent, the paper's 1e-4 for SGD and nuPI.
        dual_restarts: reset a multiplier to exactly 0 whenever its constraint is
            satisfied (Gallego-Posada et al., 2022). Without restarts the multiplier built
            up during the first descent keeps pushing after the target is reached, and gates
            pushed to P(active) ~ 0 get no gradient from the loss to reopen (docs/core.md).
        dual_optimizer: ``"adam"`` (default: its step does not depend on the violation's
            scale), ``"sgd"`` (the paper's) or ``"nupi"`` (cooper's PI controller).
        dual_kp: nuPI's proportional gain.
        dual_ema_nu: nuPI's smoothing of the error.
        alternating: update the primal variables first, then the multipliers on the
            violations at the new point (cooper's alternating optimizer).
        schedule: how each constraint's level moves to its target. None: a linear ramp
            over the first third of the run (fixed at ε when the run's length is unknown);
            ``TargetSchedule("fixed")`` holds ε from the first step.
        steps_per_epoch: batches per epoch (``fit`` sets it); epoch-counted schedules need it.
        total_steps: the run's length in steps (``fit`` sets it: epochs × batches). Without
            it (a loop of unknown length) pass ``ramp_steps``; with neither, the default
            dual step has nothing to scale with and the first step raises ``ValueError``
            (with ``dual_lr`` given, or SGD or nuPI ascent, GDA warns once and holds a
            fixed target with no feasibility phase).
        ramp_steps: the linear ramp's length in steps, for a loop of unknown length (a
            streaming loader): the level reaches ε after ``ramp_steps`` steps, the dual and
            gate steps are those of a run three ramps long, and the feasibility phase
            starts when you call :meth:`decide`. With ``total_steps`` too, it replaces the
            schedule's ``fraction``.
        feasibility: length of the feasibility phase as a fraction of the run (default
            0.1); ``False`` or 0 turns it off (paper reproductions). Always off in penalized mode.
        gate_lr: learning rate of the gates. None: the optimizer's, raised to
            ``GATE_TRAVEL / total_steps`` where that is smaller. Gates that share a parameter
            group with weights get a group of their own (same settings, no weight decay:
            decaying log α would pull every gate towards P = 1/2).
        compile: ``True``: ``torch.compile`` the model's forward, gate sampling included;
            ``"step"``: the step on a minibatch as one compiled region, forward, backward and
            Lagrangian, with both updates eager, which measured faster than compiled
            (:mod:`ctrlsparse.problem.compiled`; ``step(loss=...)`` and the alternating
            update stay eager). Eager, with a warning, where the first compiled
            step fails (docs/performance.md).
        skip_below: opt-in conditional computation (:mod:`ctrlsparse.gating.skipping`):
            units with P(z != 0) below it are closed and their layers skip them.
        skip_every: steps between two skip decisions (one host transfer each).

    Examples:
        >>> opt = GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-3))  # doctest: +SKIP
        >>> summary = fit(opt, loader, epochs=10)  # fit tells opt the run's length  # doctest: +SKIP
        >>> opt = GDA(problem, primal, total_steps=len(loader) * epochs)  # your own loop  # doctest: +SKIP
        >>> for batch in loader:  # doctest: +SKIP
        ...     step = opt.step(loss=model(**batch).loss)  # your loss, any way you compute it
    """

    def __init__(
        self,
        problem: SparsityProblem,
        primal_optimizer: torch.optim.Optimizer | None = None,
        dual_lr: float | None = None,
        dual_restarts: bool = True,
        dual_optimizer: str = "adam",
        dual_kp: float = 0.0,
        dual_ema_nu: float = 0.0,
        alternating: bool = False,
        schedule: TargetSchedule | None = None,
        steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        ramp_steps: int | None = None,
        feasibility: float | bool = DEFAULT_FEASIBILITY,
        gate_lr: float | None = None,
        compile: bool | str = False,
        skip_below: float | None = None,
        skip_every: int = 50,
    ) -> None:
        check_compile(compile)
        if compile == STEP and alternating:
            raise ValueError(
                "compile='step' compiles the simultaneous update; with alternating=True use compile=True "
                "(the forward alone)"
            )
        if dual_lr is not None and not dual_lr > 0:
            raise ValueError(f"dual_lr must be positive, got {dual_lr!r}")
        if gate_lr is not None and not gate_lr > 0:
            raise ValueError(f"gate_lr must be positive, got {gate_lr!r}")
        if isinstance(feasibility, bool):
            feasibility = DEFAULT_FEASIBILITY if feasibility else 0.0
        if not FEASIBILITY.contains(feasibility):
            raise ValueError(
                f"feasibility must be a fraction of the run in {FEASIBILITY.text} or False, "
                f"got {feasibility!r}"
            )
        if primal_optimizer is None:
            primal_optimizer = adam(problem.model.parameters(), lr=DEFAULT_PRIMAL_LR)
        optimized = {id(p) for group in primal_optimizer.param_groups for p in group["params"]}
        for group in problem.groups:
            if id(group.gate.parameter) not in optimized:
                raise ValueError(
                    f"the primal optimizer does not update the {group.kind} gates of {group.name!r}; "
                    "build it on model.parameters() after calling sparsify()"
                )
        self.problem, self.primal_optimizer = problem, primal_optimizer
        # FSDP2: the weights are sharded, the gates whole on every rank; their gradients are
        # averaged here, since fully_shard reduces only what it manages (problem/sharding.py).
        self._sharded = sharding.is_sharded(problem.model)
        if self._sharded:
            sharding.check_gates_whole(problem.groups)
        self.dual_restarts, self.dual_optimizer_name = dual_restarts, dual_optimizer
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps: int | None = None
        self.feasibility = feasibility if problem.mode == "constrained" else 0.0
        self.gate_lr = gate_lr
        self.steps = 0
        self.decision: Decision | None = None
        self._given_dual_lr = dual_lr
        # Every multiplier is in the dual optimizer; penalized ones receive no gradient
        # (their ConstraintState does not contribute to the dual update), so it skips them.
        self.dual_optimizer = make_dual_optimizer(
            dual_optimizer, problem.dual_parameters(), dual_lr or DEFAULT_DUAL_LR, dual_kp, dual_ema_nu
        )
        kind = CheckedAlternatingOptimizer if alternating else OneBackwardSimultaneousOptimizer
        self._cooper = kind(problem, primal_optimizer, self.dual_optimizer)
        # Gate parameters grouped by the range they are clamped into.
        self._clamp_groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for group in problem.groups:
            self._clamp_groups.setdefault(group.gate.parameter_range, []).append(group.gate.parameter)
        self._ramp_steps = 0
        self._given_ramp_steps = ramp_steps
        self._phase_start: int | None = None
        self._ready = False
        # The losses backward() has seen since the last step (logged by it), and whether the
        # first one was checked to reach the gates.
        self._loss: torch.Tensor | None = None
        self._loss_checked = False
        self._as_optimizer: GDAOptimizer | None = None
        self._read = StepReader(problem)
        skipping.check(skip_below, skip_every)
        self._compile, self.skip_below, self.skip_every = compile is True, skip_below, skip_every
        self._compiled_step = (
            CompiledStep(problem, self._cooper, self._after_update) if compile == STEP else None
        )
        if total_steps is not None or ramp_steps is not None:
            self.begin(total_steps, steps_per_epoch)

    @property
    def model(self) -> torch.nn.Module:
        return self.problem.model

    @property
    def phase_start(self) -> int | None:
        """The step the feasibility phase starts at (None: no phase)."""
        return self._phase_start

    @property
    def decision_due(self) -> bool:
        """Whether the feasibility phase starts now: its step is reached and the gates are not
        decided yet (``step`` then calls :meth:`decide`; ``fit`` calls it first, to measure)."""
        return self._phase_start is not None and self.steps >= self._phase_start and self.decision is None

    @property
    def dual_lr(self) -> float:
        return self.dual_optimizer.param_groups[0]["lr"]

    def begin(self, total_steps: int | None, steps_per_epoch: int | None = None) -> None:
        """Fix the run's length and every setting that depends on it; checks them (``fit`` calls it).

        Raises ``ValueError`` before any step when the target ramp and the feasibility
        phase do not fit in the run.
        """
        if self._ready:
            return
        if steps_per_epoch and not self.steps_per_epoch:
            self.steps_per_epoch = steps_per_epoch
        unknown = total_steps is None and self._given_ramp_steps is None
        if unknown and self.problem.mode == "constrained" and self._length_sets_dual_step:
            raise ValueError(
                "GDA does not know the length of training, and its dual step (Adam ascent, "
                "lr = DUAL_TRAVEL / total_steps) depends on it: pass total_steps=<steps> (fit() does it "
                "for you), or ramp_steps=<steps> for a loop of unknown length (the level reaches ε after "
                "that many steps; call decide() to start the feasibility phase), or choose dual_lr="
            )
        horizon = plan(
            total_steps, self.steps_per_epoch, self.schedule, self.feasibility, self._given_ramp_steps
        )
        self.total_steps, self.schedule = horizon.total_steps, horizon.schedule
        self.schedule.hold(self.problem.targets_all)  # ε until the first step starts the ramp
        self.problem.schedule = self.schedule
        self._ramp_steps, self._phase_start = horizon.ramp_steps, horizon.phase_start
        if self._given_dual_lr is None and self.dual_optimizer_name == "adam":
            for group in self.dual_optimizer.param_groups:
                group["lr"] = DUAL_TRAVEL / horizon.steps
        gates = [g.gate.parameter for g in self.problem.groups]
        give_gates_their_group(self.primal_optimizer, gates, self.gate_lr, GATE_TRAVEL / horizon.steps)
        self._ready = True

    def pace(self, steps: int) -> None:
        """Set the steps that scale with the run's length as for a run of ``steps`` steps: the
        default Adam dual step (``DUAL_TRAVEL / steps``) and the gates' learning-rate floor
        (``GATE_TRAVEL / steps``, raised only). A density path paces each of its segments like
        a run of its own; the learning rates round-trip through :meth:`state_dict` (the
        optimizers' parameter groups). A ``dual_lr`` or ``gate_lr`` you gave is left alone.

        Examples:
            >>> opt.pace(500)  # reach the next target within 500 steps  # doctest: +SKIP
        """
        if isinstance(steps, bool) or not steps >= 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if self._length_sets_dual_step:
            for group in self.dual_optimizer.param_groups:
                group["lr"] = DUAL_TRAVEL / steps
        if self.gate_lr is None:
            gates = {id(g.gate.parameter) for g in self.problem.groups}
            for group in self.primal_optimizer.param_groups:
                if group["params"] and all(id(p) in gates for p in group["params"]):
                    group["lr"] = max(group["lr"], GATE_TRAVEL / steps)

    @property
    def _length_sets_dual_step(self) -> bool:
        return self._given_dual_lr is None and self.dual_optimizer_name == "adam"

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate a (micro-)batch's loss, computed any way you like, for the next :meth:`step`.

        For gradient accumulation call it on each of k micro-batches (pass ``loss / k`` to
        average), then ``step()`` once: one primal and one dual update per k micro-batches.
        Clip gradients between the last ``backward`` and ``step`` as usual: what you clip is
        the loss's gradient; ``step`` then adds the constraints' terms, which are not clipped
        (clipping them would weaken the multipliers' pull by an amount the dual step cannot see).

        Raises:
            ValueError: ``loss`` is not a scalar tensor, has no autograd graph, or (checked on
                the first call) reaches no gate of the problem's model.

        Examples:
            >>> for i, batch in enumerate(loader):  # doctest: +SKIP
            ...     opt.backward(model(**batch).loss / 4)
            ...     if (i + 1) % 4 == 0:
            ...         torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            ...         opt.step()
        """
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"the loss must be a scalar tensor (reduce it, e.g. .mean()), got {shape}")
        if self.problem.has_arm_gates:
            raise ValueError(
                "ARM gates estimate their gradient with a second forward pass on the minibatch, which "
                "GDA cannot make from a loss: use step(inputs, targets) with them"
            )
        if not loss.requires_grad:
            raise ValueError(
                "the loss does not depend on the gated model: it has no autograd graph (computed under "
                "torch.no_grad(), or detached); compute it from the output of the model passed to sparsify()"
            )
        check = not self._loss_checked and self.decision is None
        if check:  # copies: backward accumulates into an existing .grad in place
            grads = [group.gate.parameter.grad for group in self.problem.groups]
            before = [None if g is None else g.clone() for g in grads]
        loss.backward()
        if check:
            after = [group.gate.parameter.grad for group in self.problem.groups]
            if all(a is None or (b is not None and torch.equal(a, b)) for a, b in zip(after, before)):
                raise ValueError(
                    "the loss does not depend on the gated model: no gate received a gradient. "
                    "Compute it from the output of the model passed to sparsify() (the model the "
                    "SparsityProblem holds), in training mode"
                )
            self._loss_checked = True
        self.observe(loss)

    def _has_gradients(self) -> bool:
        """Whether a backward pass reached the gates (the weights, once the gates are decided)."""
        if self.decision is None:
            return any(g.gate.parameter.grad is not None for g in self.problem.groups)
        groups = self.primal_optimizer.param_groups
        return any(p.grad is not None for group in groups for p in group["params"])

    def _after_update(self, violation: torch.Tensor | None) -> None:
        """After both optimizers' steps: the gates' clamp, and the restarts given the targets'
        ``violation`` (None in penalized mode)."""
        with torch.no_grad():  # keep the gate parameters in range: two kernels per gate kind
            for (low, high), params in self._clamp_groups.items():
                torch._foreach_clamp_min_(params, low)
                torch._foreach_clamp_max_(params, high)
            if self.dual_restarts and not self.problem.dual_frozen and violation is not None:
                # Zero each multiplier whose violation is <= 0: one kernel, no host sync.
                self.problem.target_constraint.multiplier.weight.masked_fill_(violation <= 0, 0.0)

    def observe(self, loss: torch.Tensor) -> None:
        """Record a loss that something else backpropagated (a Lightning closure, say), for the
        next :meth:`step` to log; :meth:`backward` calls it. Losses add up until that step.

        Examples:
            >>> loss = model(**batch).loss; accelerator.backward(loss)  # doctest: +SKIP
            >>> opt.observe(loss); opt.step()  # doctest: +SKIP
        """
        loss = loss.detach().float().reshape(())
        self._loss = loss if self._loss is None else self._loss + loss

    def step(
        self, inputs=None, targets: torch.Tensor | None = None, *, loss: torch.Tensor | None = None
    ) -> GDAStep:
        """One primal descent and dual ascent step (a primal step alone in the feasibility phase,
        whose first step decides the gates).

        Three ways to give it the loss:

        - ``step(inputs, targets)``: GDA calls the model and the problem's ``loss_fn``
          (``targets`` may be None when the model computes its own loss, e.g. a Hugging Face
          model given ``labels`` in ``inputs``);
        - ``step(loss=loss)``: a loss you computed from the gated model's output;
        - ``step()`` after one or more :meth:`backward` calls (gradient accumulation), or after
          something else backpropagated the loss (a trainer's own backward pass: the gates
          must hold gradients; the loss is logged when :meth:`observe` saw it, NaN otherwise).

        With a loss of your own the constraints' terms are computed in float32 even under
        ``torch.autocast``, and the primal gradients are zeroed after the update.

        Raises:
            NonFiniteLossError: the loss or a violation is NaN/inf; nothing was updated.
            ValueError: neither a minibatch nor a loss, or both.
        """
        if loss is not None:
            if inputs is not None:
                raise ValueError("step() takes a minibatch (inputs, targets) or loss=, not both")
            self.backward(loss)
        own_loss = inputs is None
        if own_loss and self._loss is None and not self._has_gradients():
            raise ValueError(
                "step() needs a minibatch, step(inputs, targets), or a loss: step(loss=loss), or "
                "backward(loss) on each micro-batch first (no gate holds a gradient)"
            )
        if not self._ready:
            self.begin(None)  # warns: the run's length is unknown (here, for the caller's line)
        if not own_loss and self.skip_below is not None and self.steps % self.skip_every == 0:
            skipping.refresh(self.model, self.skip_below)
        if self.decision_due:
            self.decide()
        if self.decision is None:
            self.schedule.advance(self.problem, self.steps, self._ramp_steps, self.steps_per_epoch)
        levels = dict(self.problem.levels)
        read: list[GDAStep] = []

        def before_update(cmp_state) -> None:  # the step's one host transfer, before any update
            if self._sharded:
                sharding.average_gate_gradients(self.problem.groups)
            read.append(self._read(cmp_state, levels, self.steps + 1))

        if own_loss:
            device = self.problem.groups[0].gate.parameter.device.type
            kwargs = {"loss": self._loss, "backpropagated": True}
            with torch.autocast(device, enabled=False):  # densities and multipliers in float32
                rollout = self._cooper.roll(kwargs, before_update, accumulated=True)
            self._loss = None
        elif self._compiled_step is not None:
            self._compiled_step.roll(inputs, targets, before_update)
        else:
            kwargs, compile_first, self._compile = (
                {"inputs": inputs, "targets": targets},
                self._compile,
                False,
            )
            rollout = roll(self._cooper, self.problem, kwargs, before_update, read, compile_first)
        if own_loss or self._compiled_step is None:
            # The violations the dual step saw (after the primal step when alternating).
            target = self.problem.target_constraint
            states = rollout.cmp_state.observed_constraints
            self._after_update(None if target is None else states[target].violation.detach())
        self.steps += 1
        if own_loss:  # the next forward pass is the user's, before the next step() is called
            self.primal_optimizer.zero_grad()
            if self.skip_below is not None and self.steps % self.skip_every == 0:
                skipping.refresh(self.model, self.skip_below)
            if self.decision_due:
                self.decide()
        return read[0]

    def retarget(self, targets: dict[str, float], ramp_steps: int | None = None) -> None:
        """Move the targets during training: from the next step each level ramps linearly from
        where it stands to its new ε over ``ramp_steps`` steps (default: the run's ramp
        length), or jumps there under a ``"fixed"`` schedule. The multipliers, the gates and
        the optimizers carry on. A density path (:class:`~ctrlsparse.DensityPath`) calls it
        at each of its points. The new targets round-trip through :meth:`state_dict`.

        Args:
            targets: ``{constraint name: ε}`` for every target constraint of the problem
                (:meth:`SparsityProblem.retarget <ctrlsparse.SparsityProblem.retarget>`).
            ramp_steps: steps of the new ramp, >= 1.

        Raises:
            ValueError: the gates are decided already (the feasibility phase has begun), the
                schedule is geometric or dynamic (their levels follow the epoch count from the
                run's start), or the targets are refused by the problem.

        Examples:
            >>> opt.retarget({"model": 0.2}, ramp_steps=500)  # doctest: +SKIP
        """
        if self.decision is not None:
            raise ValueError("the gates are decided (the feasibility phase has begun): the targets are fixed")
        if ramp_steps is not None and (isinstance(ramp_steps, bool) or not ramp_steps >= 1):
            raise ValueError(f"ramp_steps must be an integer >= 1, got {ramp_steps!r}")
        schedule = self.schedule
        if schedule is not None and schedule.kind.value not in ("linear", "fixed"):
            raise ValueError(
                f"retarget ramps linearly to the new targets; the schedule is {schedule.kind.value!r}: "
                "use TargetSchedule('linear') or TargetSchedule('fixed')"
            )
        self.problem.retarget(targets)
        if ramp_steps is not None:
            self._ramp_steps = ramp_steps
        if schedule is None:  # before begin: it holds the targets then
            return
        if schedule.kind.value == "fixed" or schedule.initial is None:
            schedule.hold(self.problem.targets_all)  # the ramp starts from the initial values at step 1
        if schedule.kind.value == "linear":
            schedule.restart(self.steps)

    def as_optimizer(self) -> GDAOptimizer:
        """This GDA as a ``torch.optim.Optimizer`` (the same object on every call), for trainers
        that own the backward pass and call ``optimizer.step()``: Hugging Face's ``Trainer``,
        Lightning, Accelerate (:class:`~ctrlsparse.problem.optimizer.GDAOptimizer`).

        Examples:
            >>> optimizer = accelerator.prepare(opt.as_optimizer())  # doctest: +SKIP
        """
        if self._as_optimizer is None:
            self._as_optimizer = GDAOptimizer(self)
        return self._as_optimizer

    def decide(self) -> Decision:
        """Start the feasibility phase now: decide the gates, hold every level at ε, freeze the
        multipliers. ``step`` calls it when the phase is due; ``fit`` calls it itself to
        measure the test error on both sides."""
        if self.decision is not None:
            return self.decision
        problem = self.problem
        problem.dual_frozen = True
        self.schedule.hold(problem.targets_all)
        self.decision = decide(problem, self.steps)
        forward = problem.forward_model
        ddp = getattr(forward, "_orig_mod", forward)  # under torch.compile too
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            # The decided gates stopped learning: DDP must stop waiting for their gradients.
            problem.forward_model = type(ddp)(self.model, device_ids=ddp.device_ids)
            if ddp is not forward:
                problem.forward_model = torch.compile(problem.forward_model)
        return self.decision

    def finish(self) -> bool:
        """Called by :func:`~ctrlsparse.fit` after the last step: nothing to do, the model is unchanged."""
        return False

    def state_dict(self) -> dict:
        """Everything that changes during training, except the model's own parameters and buffers.

        The primal and dual optimizers, the multipliers (the problem's ``state_dict``), the
        levels in force, the schedule's starting values, the step counter, the run's length
        and the feasibility decision. Tensors, numbers and strings only: a checkpoint holding
        it loads with ``torch.load(..., weights_only=True)``.

        Examples:
            >>> state = trainer.state_dict()  # doctest: +SKIP
            >>> fresh = GDA(problem, primal); fresh.load_state_dict(state)  # doctest: +SKIP
        """
        problem = self.problem
        return {
            "steps": self.steps,
            "ready": self._ready,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "primal_optimizer": self.primal_optimizer.state_dict(),
            "dual_optimizer": self.dual_optimizer.state_dict(),
            "multipliers": problem.state_dict(),
            "levels": dict(problem.levels),
            "targets": problem.targets_all,
            "ramp_steps": self._ramp_steps,
            "dual_frozen": problem.dual_frozen,
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "decision": None if self.decision is None else self.decision.to_dict(),
            "skip_live": skipping.live_masks(self.model) if self.skip_below is not None else [],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`. The GDA must be built like the one that saved it
        (same problem, optimizers and settings); a different run length is refused."""
        if state["ready"] and not self._ready:
            self.begin(state["total_steps"], state["steps_per_epoch"])
        if state["ready"] != self._ready:
            raise ValueError(
                "the state was saved before GDA.begin fixed the run's length and this GDA is past it "
                "(or the reverse): their optimizers' parameter groups differ"
            )
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"this GDA runs for {self.total_steps} steps, the saved state for {state['total_steps']}: "
                "the target ramp and the feasibility phase depend on the run's length"
            )
        problem = self.problem
        saved_targets = {n: v for n, v in state.get("targets", {}).items() if n not in problem.shape_targets}
        if saved_targets and saved_targets != {n: problem.targets_all[n] for n in saved_targets}:
            problem.retarget({**problem.targets_all, **saved_targets})  # moved by retarget()
        self._ramp_steps = state.get("ramp_steps", self._ramp_steps)
        self.primal_optimizer.load_state_dict(state["primal_optimizer"])
        dual_state = state["dual_optimizer"]
        if problem.stacking.per_name_layout(state["multipliers"]):  # saved before the stacking
            dual_state = problem.stacking.regroup_dual_state(dual_state)
        self.dual_optimizer.load_state_dict(dual_state)
        problem.load_state_dict(state["multipliers"])
        problem.dual_frozen = state["dual_frozen"]
        self.steps = state["steps"]
        if self.schedule is not None:  # states saved before the schedule held the levels: "levels"
            saved = {"initial": None, **(state["schedule"] or {}), "levels": state["levels"]}
            self.schedule.load_state_dict(saved)
        self.decision = None if state["decision"] is None else Decision(**state["decision"])
        if state.get("skip_live") and self.skip_below is not None:
            skipping.load_live_masks(self.model, state["skip_live"])

    def summary(self) -> RunSummary:
        """Final densities and multipliers, as ``summary.json`` records them."""
        problem = self.problem
        with torch.no_grad():
            model_density, densities = problem.expected_densities()
            realized_values = problem.constraint_values(realized=True)
        realized, realized_densities = problem.realized_densities()
        kinds = dict.fromkeys(group.gate.method for group in problem.groups)
        return RunSummary(
            method="+".join(kinds),
            mode=problem.mode,
            targets=problem.targets,
            penalties=problem.penalties,
            density=float(model_density),
            densities={name: float(d) for name, d in densities.items()},
            realized_density=realized,
            realized_densities=realized_densities,
            realized={name: float(v) for name, v in realized_values.items()},
            multipliers={name: float(value) for name, value in problem.multiplier_values().items()},
            feasibility=None if self.decision is None else self.decision.to_dict(),
            settings={
                "total_steps": self.total_steps,
                "ramp_steps": self._ramp_steps,
                "feasibility_start": self._phase_start,
                "dual_optimizer": self.dual_optimizer_name,
                "dual_lr": self.dual_lr,
            },
            macs_targets=problem.macs_targets,
            macs_penalties=problem.macs_penalties,
        )
