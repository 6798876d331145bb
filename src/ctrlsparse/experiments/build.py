"""From a problem file to a finished run directory: data, model, problem, GDA, ``fit``."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.data import Batches, Dataset, load_dataset, random_crop_flip, synthetic
from ctrlsparse.data.text import CORPORA, load_text
from ctrlsparse.experiments.config import SYNTHETIC, ProblemConfig, parse_problem
from ctrlsparse.experiments.schema import DEFAULT_VOCAB
from ctrlsparse.gating import ARMGate, GateKind, Structure, sparsify
from ctrlsparse.modelio import logits
from ctrlsparse.models import build_model, import_factory
from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.gda import GDA
from ctrlsparse.problem.kernels import adam
from ctrlsparse.problem.schedules import TargetSchedule
from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.runs import store as runs
from ctrlsparse.runs.records import RunSummary
from ctrlsparse.runs.store import load_run
from ctrlsparse.training import distributed
from ctrlsparse.training.group_magnitude import GroupMagnitudePruning
from ctrlsparse.training.lm import Distillation, perplexity
from ctrlsparse.training.methods import L1RDA, MagnitudePruning
from ctrlsparse.training.path import DensityPath
from ctrlsparse.training.trainer import Trainer, fit

EVAL_BATCH_SIZE = 1024


class Experiment(NamedTuple):
    """What :func:`build` makes of a problem file: everything :func:`fit` needs."""

    trainer: Trainer
    train: Batches
    test: Batches
    output_fn: Callable[[Any], torch.Tensor]
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None


def load_data(config: ProblemConfig) -> Dataset:
    """The problem's data set: a registered one, or generated (``[data] name = "synthetic"``)."""
    data = config.data
    if data.name == SYNTHETIC:
        return synthetic(
            tuple(data.shape),
            data.num_classes,
            data.train_size,
            data.test_size,
            seed=config.train.seed,
            vocab_size=data.vocab_size,
        )
    if data.name in CORPORA:
        return load_text(data.name, data.root, data.seq_len, data.tokenizer, data.vocab_size or DEFAULT_VOCAB)
    return load_dataset(data.name, data.root, data.download)


def build_model_of(config: ProblemConfig, data: Dataset) -> tuple[nn.Module, torch.Tensor]:
    """The problem's plain model (registered name or import-path factory) and an example input.

    The example input is two training inputs, or zeros of ``[model] input_shape`` when set.
    """
    model_config = config.model
    if model_config.factory is not None:
        model = import_factory(model_config.factory, model_config.factory_dir)(**model_config.kwargs)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"[model] factory {model_config.factory!r} returned {type(model).__name__}, not an nn.Module"
            )
    else:
        kwargs = dict(model_config.kwargs)
        if model_config.name == "mlp":
            kwargs.setdefault("hidden", model_config.hidden)
        model = build_model(model_config.name, data.input_shape, data.num_classes, **kwargs)
    if model_config.input_shape is not None:
        example = torch.zeros(2, *model_config.input_shape, dtype=data.train[0].dtype)
    else:
        example = data.train[0][:2]
    return model, example


def output_fn_of(config: ProblemConfig) -> Callable[[Any], torch.Tensor]:
    """The logits of the model's output: ``[model] output`` (an attribute or key), else :func:`logits`."""
    name = config.model.output
    if name is None:
        return logits
    return lambda out: out[name] if isinstance(out, dict) else getattr(out, name)


def gated_model(
    config: ProblemConfig, model: nn.Module, example_input: torch.Tensor, gates=None
) -> nn.Module:
    """``model`` sparsified as the problem file says (structure, units, gates, drop rate)."""
    model_config = config.model
    return sparsify(
        model,
        structure=model_config.structure,
        example_input=example_input,
        include=model_config.include,
        exclude=model_config.exclude,
        drop_rate=model_config.drop_rate,
        gates=gates or _gates(config),
        heads=model_config.heads,
        hidden=model_config.gate_hidden,
        layers=model_config.gate_layers,
        round_to=model_config.round_to,
        blocks=model_config.gate_blocks,
        block_gates=model_config.block_gates,
    )


def build(config: ProblemConfig) -> Experiment:
    """Data, model, problem and optimizer of a problem file (nothing is trained).

    ``[sparsity] method`` picks the trainer: ``"l0"`` a :class:`GDA` on a gated model,
    ``"l1_rda"`` :class:`~ctrlsparse.training.methods.L1RDA`, ``"magnitude"``
    :class:`~ctrlsparse.training.GroupMagnitudePruning` on the units of ``structure =
    "neuron"``, else :class:`~ctrlsparse.training.methods.MagnitudePruning`. Every argument
    error (target, penalty, layer name, import path) is raised here, before training.
    """
    torch.manual_seed(config.train.seed)
    data = load_data(config)
    model, example = build_model_of(config, data)
    if config.model.init is not None:
        _load_init(model, config.model.init)
    output_fn = output_fn_of(config)
    loss_fn = _loss(output_fn)
    if config.train.distill_weight > 0:  # the teacher is the dense model, copied before any gating
        teacher = copy.deepcopy(model).to(config.train.device)
        loss_fn = Distillation(
            teacher, config.train.distill_weight, config.train.distill_temperature, output_fn
        )
        loss_fn.attach(model)
    method, structure = config.sparsity.method, Structure.parse(config.model.structure)
    group_magnitude = method == "magnitude" and structure is Structure.NEURON
    if method == "l0" or group_magnitude:
        gated_model(config, model, example, gates=GateKind.MASK if group_magnitude else None)
    rank, world = distributed.context()
    if world > 1:  # the same model everywhere (built above), gate noise per rank from here on
        torch.manual_seed(config.train.seed + rank)
    generator = torch.Generator().manual_seed(config.train.seed)  # the same data order on every rank
    transform = None
    if config.data.augment == "crop_flip":
        augment_generator = torch.Generator().manual_seed(config.train.seed + 1)
        transform = functools.partial(random_crop_flip, padding=4, generator=augment_generator)
    train = Batches(
        *data.train, config.train.batch_size, shuffle=True, generator=generator, transform=transform
    )
    # A text window's logits take seq_len x vocab floats: evaluate in training-size batches.
    test = Batches(*data.test, config.train.batch_size if config.data.name in CORPORA else EVAL_BATCH_SIZE)
    model.to(config.train.device)
    optimizer = None
    if method == "l0":
        trainer = _gda(config, model, loss_fn, example, total_steps=config.train.epochs * len(train))
        optimizer = trainer.primal_optimizer
    elif method == "l1_rda":
        trainer = L1RDA(model, loss_fn, config.sparsity.penalty, gamma=config.optim.rda_gamma)
    else:
        optimizer = _primal_optimizer(config, _weight_groups(config, model.parameters()))
        prune_epoch = config.train.epochs - config.sparsity.finetune_epochs
        target = config.sparsity.target_density
        if group_magnitude:
            trainer = GroupMagnitudePruning(model, loss_fn, target, optimizer, prune_epoch)
        else:
            trainer = MagnitudePruning(model, loss_fn, target, optimizer, prune_epoch, structure)
    scheduler = None
    if config.optim.lr_milestones and optimizer is not None:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, config.optim.lr_milestones, gamma=config.optim.lr_gamma
        )
    return Experiment(trainer, train, test, output_fn, scheduler)


def _loss(output_fn: Callable[[Any], torch.Tensor]) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    # Flattened, one loss fits a class per example (B, C) and a next token per position (B, T, V).
    return lambda output, targets: F.cross_entropy(output_fn(output).flatten(0, -2), targets.flatten())


def _load_init(model: nn.Module, path: str) -> None:
    """``[model] init``: a run directory's ``model.pt``, or a state dict file, into the plain model."""
    path = Path(path)
    runs.load_model_state(model, path / runs.MODEL if path.is_dir() else path)


def _weight_groups(config: ProblemConfig, params) -> list[dict]:
    """The primal parameters with ``[optim] primal_weight_decay``."""
    return [{"params": list(params), "weight_decay": config.optim.primal_weight_decay}]


def _gates(config: ProblemConfig):
    """The gate kind of ``[model] gates``, with the ARM settings of ``[model] arm_*``."""
    model = config.model
    if GateKind.parse(model.gates) is GateKind.HARD_CONCRETE:
        return GateKind.HARD_CONCRETE
    return functools.partial(ARMGate, k=model.arm_k, squash=model.arm_squash, estimator=model.arm_estimator)


def _primal_optimizer(config: ProblemConfig, groups: list[dict]) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.primal == "adam":
        return adam(groups, lr=optim.primal_lr)
    return torch.optim.SGD(groups, lr=optim.primal_lr, momentum=optim.primal_momentum)


def _gda(config: ProblemConfig, model: nn.Module, loss_fn, example: torch.Tensor, total_steps: int) -> GDA:
    optim = config.optim
    problem = SparsityProblem(
        model,
        loss_fn,
        target_density=config.sparsity.target_density,
        penalty=config.sparsity.penalty,
        weight_decay=config.sparsity.weight_decay,
        augmented_lagrangian=optim.augmented_lagrangian,
        target_macs=config.sparsity.target_macs,
        macs_penalty=config.sparsity.macs_penalty,
        target_params=config.sparsity.target_params,
        target_shape=config.sparsity.target_shape,
        example_input=example.to(config.train.device),
    )
    gates = [group.gate.parameter for group in problem.groups]
    gate_ids = {id(p) for p in gates}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    # The gates may learn at their own rate (gate_lr; unset: GDA raises the primal lr to a floor
    # that scales with the run's length). Weight decay is for the weights only: decaying
    # log alpha would push every gate to P = 1/2.
    groups = [
        {"params": weights, "weight_decay": optim.primal_weight_decay},
        {"params": gates, "lr": optim.primal_lr, "weight_decay": 0.0},
    ]
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
        schedule=TargetSchedule(schedule.kind, schedule.epochs, schedule.factor, schedule.fraction),
        steps_per_epoch=total_steps // config.train.epochs,
        total_steps=total_steps,
        feasibility=config.sparsity.feasibility,
        gate_lr=optim.gate_lr,
        compile=config.train.compile,
        skip_below=config.train.skip_below,
    )


class RebuiltRun(NamedTuple):
    """A finished run's problem, its data and its trained gated model (eval mode)."""

    config: ProblemConfig
    data: Dataset
    model: nn.Module
    example_input: torch.Tensor


def rebuild_run(run_dir: str | Path) -> RebuiltRun:
    """Rebuild a run's gated model from ``config.json`` and load ``model.pt`` into it.

    Examples:
        >>> run = rebuild_run("runs/demo/constrained-model")  # doctest: +SKIP
        >>> small = cs.purge(run.model, run.example_input)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    config = parse_problem(run.config, str(run_dir / runs.CONFIG))
    data = load_data(config)
    model, example = build_model_of(config, data)
    if config.sparsity.method == "l0" or (
        config.sparsity.method == "magnitude" and Structure.parse(config.model.structure) is Structure.NEURON
    ):
        gates = GateKind.MASK if config.sparsity.method == "magnitude" else None
        gated_model(config, model, example, gates=gates)
    runs.load_model_state(model, run_dir / runs.MODEL)
    return RebuiltRun(config, data, model.eval(), example)


def run_problem(
    config: ProblemConfig,
    out: str | Path,
    progress: bool = True,
    checkpoint_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
    path: DensityPath | None = None,
) -> RunSummary:
    """Train the problem described by ``config`` and write its run directory ``out``.

    ``out`` must be new or empty, unless ``resume`` (continue from its last checkpoint; the
    configuration must be the one it started with) or ``overwrite`` (start afresh); the
    check comes before any data is loaded. Checkpoints are written at every epoch's end and
    every ``checkpoint_every`` steps; ``tensorboard``: a directory for TensorBoard scalars.
    ``path``: a density path (:class:`~ctrlsparse.training.path.DensityPath`, whose points
    take the form of the problem's targets): one sub-run per point, each with a
    ``config.json`` that states the point's target, so ``ctrlsparse purge`` rebuilds it.

    Examples:
        >>> config = load_problem("problems/digits_mlp.toml")  # doctest: +SKIP
        >>> summary = run_problem(config, "runs/digits")  # doctest: +SKIP
        >>> summary = run_problem(config, "runs/digits", resume=True)  # after a kill  # doctest: +SKIP
    """
    _, world = distributed.context()
    if config.train.world_size != world:
        raise ValueError(
            f"[train] world_size is {config.train.world_size} but this run has {world} processes; "
            "ctrlsparse run sets it (torchrun --nproc_per_node=N)"
        )
    distributed.on_rank0(lambda: checkpoints.check_run_dir(out, resume, overwrite))
    point_config = functools.partial(_point_config, config)
    if path is not None:  # each point has its own feasibility phase, the run none
        config = dataclasses.replace(config, sparsity=dataclasses.replace(config.sparsity, feasibility=False))
    experiment = build(config)
    recorded = config.to_dict()
    if path is not None:
        recorded["path"] = {"points": path.given, "quantity": path.quantity, "finetune": path.finetune}
        path.configure = point_config
    summary = fit(
        experiment.trainer,
        experiment.train,
        config.train.epochs,
        test_batches=experiment.test,
        run_dir=out,
        log_every=config.train.log_every,
        config=recorded,
        progress=progress,
        output_fn=experiment.output_fn,
        lr_scheduler=experiment.lr_scheduler,
        checkpoint_every=checkpoint_every,
        resume=resume,
        overwrite=overwrite,
        tensorboard=tensorboard,
        path=path,
    )
    if config.data.name in CORPORA:  # a language model's measure: validation perplexity
        summary.perplexity = perplexity(experiment.trainer.model, experiment.test, experiment.output_fn)
        distributed.on_rank0(lambda: runs.write_summary(out, summary))
    return summary


PATH_KEYS = {"density": "target_density", "macs": "target_macs", "params": "target_params"}
"""The problem-file key each quantity of a density path replaces."""


def path_quantity(config: ProblemConfig) -> str:
    """What a path's numbers bound for a problem file: its parameter budget, its MACs budget
    (without density targets) or its density targets."""
    sparsity = config.sparsity
    if sparsity.target_params is not None:
        return "params"
    return "macs" if sparsity.target_macs is not None and sparsity.target_density is None else "density"


def _point_config(config: ProblemConfig, _recorded: dict, index: int, point) -> dict:
    """A path point's ``config.json``: the problem file with the point's target."""
    data = config.to_dict()
    quantity = path_quantity(config)
    data["sparsity"][PATH_KEYS[quantity]] = point
    data["description"] = f"{data['description']} (density path, point {index + 1})".strip()
    return data


def resume_or_run(config: ProblemConfig, out: str | Path, progress: bool = True) -> RunSummary:
    """A run that may have been started before: the summary of a finished one, the rest of an
    interrupted one (from its checkpoint), or a fresh run (``reproduce`` and ``tune-penalty``)."""
    out = Path(out)
    if (out / runs.SUMMARY).exists():
        return runs.read_summary(out)
    resume = checkpoints.has_checkpoint(out)
    return run_problem(config, out, progress, resume=resume, overwrite=not resume)
