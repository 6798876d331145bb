"""From a problem file to a finished run directory: data, model, problem, GDA, ``fit``."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.data import Batches, load_dataset
from ctrlsparse.experiments.config import ProblemConfig
from ctrlsparse.gating import ARMGate, GateKind, sparsify
from ctrlsparse.models import build_model
from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.gda import GDA
from ctrlsparse.problem.schedules import TargetSchedule
from ctrlsparse.training.methods import L1RDA, MagnitudePruning
from ctrlsparse.training.trainer import Trainer, fit

EVAL_BATCH_SIZE = 1024


def build(config: ProblemConfig) -> tuple[Trainer, Batches, Batches]:
    """Data, model, problem and optimizer of a problem file (nothing is trained).

    ``[sparsity] method`` picks the trainer: ``"l0"`` a :class:`GDA` on a gated model,
    ``"l1_rda"`` :class:`~ctrlsparse.training.methods.L1RDA`, ``"magnitude"``
    :class:`~ctrlsparse.training.methods.MagnitudePruning`. Every argument error (target,
    penalty, layer name) is raised here, before training.
    """
    torch.manual_seed(config.train.seed)
    data = load_dataset(config.data.name, config.data.root, config.data.download)
    model = build_model(config.model.name, data.input_shape, data.num_classes, config.model.hidden)
    method = config.sparsity.method
    if method == "l0":
        sparsify(
            model,
            structure=config.model.structure,
            example_input=data.train[0][:2],
            drop_rate=config.model.drop_rate,
            gates=_gates(config),
        )
    model.to(config.train.device)
    if method == "l0":
        trainer = _gda(config, model)
    elif method == "l1_rda":
        trainer = L1RDA(model, F.cross_entropy, config.sparsity.penalty, gamma=config.optim.rda_gamma)
    else:
        trainer = MagnitudePruning(
            model,
            F.cross_entropy,
            config.sparsity.target_density,
            _primal_optimizer(config, model.parameters()),
            prune_epoch=config.train.epochs - config.sparsity.finetune_epochs,
            structure=config.model.structure,
        )
    generator = torch.Generator().manual_seed(config.train.seed)
    train = Batches(*data.train, config.train.batch_size, shuffle=True, generator=generator)
    test = Batches(*data.test, EVAL_BATCH_SIZE)
    return trainer, train, test


def _gates(config: ProblemConfig):
    """The gate kind of ``[model] gates``, with the ARM settings of ``[model] arm_*``."""
    model = config.model
    if GateKind.parse(model.gates) is GateKind.HARD_CONCRETE:
        return GateKind.HARD_CONCRETE
    return functools.partial(ARMGate, k=model.arm_k, squash=model.arm_squash, estimator=model.arm_estimator)


def _primal_optimizer(config: ProblemConfig, params) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.primal == "adam":
        return torch.optim.Adam(params, lr=optim.primal_lr)
    return torch.optim.SGD(params, lr=optim.primal_lr, momentum=0.9)


def _gda(config: ProblemConfig, model: nn.Module) -> GDA:
    optim = config.optim
    problem = SparsityProblem(
        model,
        F.cross_entropy,
        target_density=config.sparsity.target_density,
        penalty=config.sparsity.penalty,
        weight_decay=config.sparsity.weight_decay,
        augmented_lagrangian=optim.augmented_lagrangian,
    )
    gates = [group.gate.parameter for group in problem.groups]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    # The gates may learn at their own rate: with Adam each gate parameter moves at most about
    # lr per step, so short runs need a larger gate_lr to let gates close at all.
    groups = [{"params": weights}, {"params": gates, "lr": optim.gate_lr or optim.primal_lr}]
    schedule = config.schedule
    return GDA(
        problem,
        _primal_optimizer(config, groups),
        dual_lr=optim.dual_lr,
        dual_restarts=optim.dual_restarts,
        dual_optimizer=optim.dual_optimizer,
        dual_kp=optim.dual_kp,
        dual_ema_nu=optim.dual_ema_nu,
        alternating=optim.alternating,
        schedule=None
        if schedule.kind == "fixed"
        else TargetSchedule(schedule.kind, schedule.ramp_epochs(config.train.epochs), schedule.factor),
    )


def run_problem(config: ProblemConfig, out: str | Path, progress: bool = True) -> dict:
    """Train the problem described by ``config`` and write its run directory ``out``.

    Example:
        >>> config = load_problem("problems/digits_mlp.toml")  # doctest: +SKIP
        >>> summary = run_problem(config, "runs/digits")  # doctest: +SKIP
    """
    trainer, train, test = build(config)
    return fit(
        trainer,
        train,
        config.train.epochs,
        test_batches=test,
        run_dir=out,
        log_every=config.train.log_every,
        config=config.to_dict(),
        progress=progress,
    )
