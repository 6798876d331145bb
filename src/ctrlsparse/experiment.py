"""From a problem file to a finished run directory: data, model, problem, GDA, ``fit``."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ctrlsparse.config import ProblemConfig
from ctrlsparse.data import Batches, load_dataset
from ctrlsparse.gda import GDA
from ctrlsparse.models import build_model
from ctrlsparse.problem import SparsityProblem
from ctrlsparse.schedules import TargetSchedule
from ctrlsparse.sparsify import sparsify
from ctrlsparse.train import fit

EVAL_BATCH_SIZE = 1024


def build(config: ProblemConfig) -> tuple[GDA, Batches, Batches]:
    """Data, gated model, problem and optimizer of a problem file (nothing is trained).

    Every argument error (target, penalty, layer name) is raised here, before training.
    """
    torch.manual_seed(config.train.seed)
    data = load_dataset(config.data.name, config.data.root, config.data.download)
    model = build_model(config.model.name, data.input_shape, data.num_classes, config.model.hidden)
    sparsify(model, structure=config.model.structure, drop_rate=config.model.drop_rate)
    model.to(config.train.device)
    optim = config.optim
    problem = SparsityProblem(
        model,
        F.cross_entropy,
        target_density=config.sparsity.target_density,
        penalty=config.sparsity.penalty,
        weight_decay=config.sparsity.weight_decay,
        augmented_lagrangian=optim.augmented_lagrangian,
    )
    gates = [layer.gate.log_alpha for layer in problem.layers.values()]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    # The gates may learn at their own rate: with Adam each log_alpha moves at most about
    # lr per step, so short runs need a larger gate_lr to let gates close at all.
    groups = [{"params": weights}, {"params": gates, "lr": optim.gate_lr or optim.primal_lr}]
    if optim.primal == "adam":
        primal = torch.optim.Adam(groups, lr=optim.primal_lr)
    else:
        primal = torch.optim.SGD(groups, lr=optim.primal_lr, momentum=0.9)
    schedule = config.schedule
    gda = GDA(
        problem,
        primal,
        dual_lr=optim.dual_lr,
        dual_restarts=optim.dual_restarts,
        dual_optimizer=optim.dual_optimizer,
        dual_kp=optim.dual_kp,
        dual_ema_nu=optim.dual_ema_nu,
        alternating=optim.alternating,
        schedule=None
        if schedule.kind == "fixed"
        else TargetSchedule(schedule.kind, schedule.epochs, schedule.factor),
    )
    generator = torch.Generator().manual_seed(config.train.seed)
    train = Batches(*data.train, config.train.batch_size, shuffle=True, generator=generator)
    test = Batches(*data.test, EVAL_BATCH_SIZE)
    return gda, train, test


def run_problem(config: ProblemConfig, out: str | Path, progress: bool = True) -> dict:
    """Train the problem described by ``config`` and write its run directory ``out``.

    Example:
        >>> config = load_problem("problems/digits_mlp.toml")  # doctest: +SKIP
        >>> summary = run_problem(config, "runs/digits")  # doctest: +SKIP
    """
    gda, train, test = build(config)
    return fit(
        gda,
        train,
        config.train.epochs,
        test_batches=test,
        run_dir=out,
        log_every=config.train.log_every,
        config=config.to_dict(),
        progress=progress,
    )
