"""Problem files: a TOML description of data, model, sparsity targets, optimizers and training.

Example ``problems/digits_mlp.toml``::

    name = "digits_mlp"
    [data]
    name = "digits"
    [model]
    name = "mlp"
    hidden = [300, 100]
    [sparsity]
    target_density = 0.3
    [train]
    epochs = 60

Every key is optional except ``name``; unknown keys and wrong types are errors that
name the file, the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib joined the standard library in 3.11; tomli is the same parser under another name
    import tomli as tomllib

from ctrlsparse.choices import FEASIBILITY, PENALTY, TARGET, Range
from ctrlsparse.data import DATASETS
from ctrlsparse.data.text import CORPORA
from ctrlsparse.data.tokenizer import MIN_BPE_VOCAB
from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.experiments.schema import (
    SECTIONS,
    SYNTHETIC,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ProblemConfig,
    ScheduleConfig,
    SparsityConfig,
    TrainConfig,
)
from ctrlsparse.gating.sparsify import Structure
from ctrlsparse.models import MODELS
from ctrlsparse.problem.compiled import STEP


class ProblemFileError(CtrlsparseError, ValueError):
    """A problem file is unreadable or holds an unknown key, a wrong type or an invalid value."""


def _section(source: str, section: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ProblemFileError(f"{source}: [{section}] must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ProblemFileError(
                f"{source}: unknown key {key!r} in [{section}]; valid keys: {', '.join(fields)}"
            )
        types, choices = fields[key].metadata["types"], fields[key].metadata["choices"]
        if value is None and fields[key].default is None:
            continue  # optional key left unset (as ProblemConfig.to_dict writes it)
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ProblemFileError(f"{source}: [{section}] {key} must be {expected}, got {value!r}")
        if choices is not None and value not in choices:
            raise ProblemFileError(
                f"{source}: [{section}] {key} = {value!r} is not valid; valid choices: {', '.join(choices)}"
            )
    return cls(**values)


def _check_levels(source: str, levels: Any, key: str, valid: Range) -> None:
    """Range-check the numbers of a target or penalty (layer names are checked against the model later)."""
    if levels is None:
        return
    values = levels.values() if isinstance(levels, dict) else levels if isinstance(levels, list) else [levels]
    for value in values:
        try:
            valid.check(value, f"[sparsity] {key} values")
        except ValueError as error:
            raise ProblemFileError(f"{source}: {error}") from None


def parse_problem(data: dict, source: str = "<problem>") -> ProblemConfig:
    """Validate a problem description (the TOML document as a dict)."""
    top = {"name", "description", *SECTIONS}
    unknown = [k for k in data if k not in top]
    if unknown:
        raise ProblemFileError(
            f"{source}: unknown key {unknown[0]!r}; valid top-level keys: {', '.join(sorted(top))}"
        )
    if not isinstance(data.get("name"), str):
        raise ProblemFileError(f'{source}: needs a top-level name = "..." string')
    if not isinstance(data.get("description", ""), str):
        raise ProblemFileError(f"{source}: description must be a string")
    sections = {name: _section(source, name, cls, data.get(name, {})) for name, cls in SECTIONS.items()}
    config = ProblemConfig(name=data["name"], description=data.get("description", ""), **sections)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in config.model.hidden):
        raise ProblemFileError(
            f"{source}: [model] hidden must be a list of positive integers, got {config.model.hidden!r}"
        )
    _check_alignment(source, config.model)
    if not 0.0 < config.model.drop_rate < 1.0:
        raise ProblemFileError(
            f"{source}: [model] drop_rate must lie in (0, 1), got {config.model.drop_rate!r}"
        )
    for key, valid in (("target_density", TARGET), ("penalty", PENALTY), ("target_macs", TARGET),
                       ("macs_penalty", PENALTY)):  # fmt: skip
        _check_levels(source, getattr(config.sparsity, key), key, valid)
    feasibility = config.sparsity.feasibility
    if not isinstance(feasibility, bool) and not FEASIBILITY.contains(feasibility):
        raise ProblemFileError(
            f"{source}: [sparsity] feasibility must be a fraction of the run in {FEASIBILITY.text} or false, "
            f"got {feasibility!r}"
        )
    if config.optim.augmented_lagrangian is not None and not config.optim.augmented_lagrangian > 0:
        raise ProblemFileError(
            f"{source}: [optim] augmented_lagrangian must be > 0, got {config.optim.augmented_lagrangian!r}"
        )
    _check_schedule(source, config)
    _check_train(source, config)
    _check_method(source, config)
    _check_data(source, config)
    _check_model(source, config)
    optim = config.optim
    if not 0 <= optim.primal_momentum < 1 or optim.primal_weight_decay < 0 or not 0 < optim.lr_gamma <= 1:
        raise ProblemFileError(
            f"{source}: [optim] needs 0 <= primal_momentum < 1, primal_weight_decay >= 0 and "
            f"0 < lr_gamma <= 1, got {optim.primal_momentum!r}, {optim.primal_weight_decay!r}, "
            f"{optim.lr_gamma!r}"
        )
    milestones = optim.lr_milestones
    if not all(_positive_int(m) for m in milestones) or milestones != sorted(set(milestones)):
        raise ProblemFileError(
            f"{source}: [optim] lr_milestones must be increasing positive epochs, got {milestones!r}"
        )
    for key in ("primal_lr", "gate_lr", "dual_lr", "rda_gamma", "arm_k"):
        section = config.model if key == "arm_k" else config.optim
        if getattr(section, key) is not None and not getattr(section, key) > 0:
            where = "[model]" if key == "arm_k" else "[optim]"
            raise ProblemFileError(f"{source}: {where} {key} must be > 0, got {getattr(section, key)!r}")
    return config


def _check_alignment(source: str, model) -> None:
    """``[model] round_to`` and ``block_gates``: a positive integer, units to align, hard concrete blocks."""
    if not _positive_int(model.round_to):
        raise ProblemFileError(
            f"{source}: [model] round_to must be an integer >= 1 (e.g. 8), got {model.round_to!r}"
        )
    if model.round_to > 1 and Structure.parse(model.structure) is Structure.WEIGHT:
        raise ProblemFileError(
            f"{source}: [model] round_to = {model.round_to} aligns channels and neurons; "
            'structure = "weight" has one gate per weight: use "neuron" or "paper", or round_to = 1'
        )
    if model.block_gates and (model.round_to == 1 or model.gates != "hard_concrete"):
        raise ProblemFileError(
            f"{source}: [model] block_gates = true gives each block of round_to units one hard concrete "
            f'gate: it needs round_to > 1 (got {model.round_to}) and gates = "hard_concrete" '
            f"(got {model.gates!r})"
        )


def _check_schedule(source: str, config: ProblemConfig) -> None:
    schedule = config.schedule
    if (
        (schedule.epochs is not None and schedule.epochs < 1)
        or not 0 < schedule.factor < 1
        or not 0 < schedule.fraction <= 1
    ):
        raise ProblemFileError(
            f"{source}: [schedule] needs epochs >= 1, 0 < factor < 1 and 0 < fraction <= 1, "
            f"got {config.schedule!r}"
        )
    if schedule.epochs is not None and schedule.epochs > config.train.epochs:
        raise ProblemFileError(
            f"{source}: [schedule] epochs = {schedule.epochs} ramps longer than the run "
            f"([train] epochs = {config.train.epochs})"
        )


def _check_train(source: str, config: ProblemConfig) -> None:
    for key in ("epochs", "batch_size", "log_every"):
        if getattr(config.train, key) < 1:
            raise ProblemFileError(
                f"{source}: [train] {key} must be >= 1, got {getattr(config.train, key)!r}"
            )
    train = config.train
    if not 0.0 <= train.distill_weight <= 1.0 or not train.distill_temperature > 0:
        raise ProblemFileError(
            f"{source}: [train] needs 0 <= distill_weight <= 1 and distill_temperature > 0, "
            f"got {train.distill_weight!r} and {train.distill_temperature!r}"
        )
    if train.compile not in (False, True, STEP):
        raise ProblemFileError(
            f"{source}: [train] compile = {train.compile!r} is not valid; valid choices: false, true "
            f"(the model's forward), {STEP!r} (forward, backward, Lagrangian and dual update)"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_data(source: str, config: ProblemConfig) -> None:
    data = config.data
    valid = (*DATASETS, *CORPORA, SYNTHETIC)
    if data.name not in valid:
        raise ProblemFileError(
            f"{source}: [data] name = {data.name!r} is not valid; valid choices: {', '.join(valid)}"
        )
    if data.name in CORPORA:
        if not _positive_int(data.seq_len):
            raise ProblemFileError(
                f"{source}: [data] seq_len must be a positive integer, got {data.seq_len!r}"
            )
        if data.tokenizer == "bpe" and data.vocab_size is not None and data.vocab_size < MIN_BPE_VOCAB:
            raise ProblemFileError(
                f"{source}: [data] vocab_size of a byte-level BPE must be >= {MIN_BPE_VOCAB} "
                f"(256 bytes and the end-of-text token), got {data.vocab_size!r}"
            )
        return
    if data.name != SYNTHETIC:
        return
    if not data.shape or not all(_positive_int(v) for v in data.shape):
        raise ProblemFileError(
            f"{source}: [data] shape must be a list of positive integers, got {data.shape!r}"
        )
    for key in ("num_classes", "train_size", "test_size", "vocab_size"):
        value = getattr(data, key)
        if value is not None and not (_positive_int(value) and (key != "num_classes" or value >= 2)):
            raise ProblemFileError(
                f"{source}: [data] {key} must be a positive integer (>= 2 classes), got {value!r}"
            )


def _check_model(source: str, config: ProblemConfig) -> None:
    model = config.model
    if model.factory is None and model.name not in MODELS:
        raise ProblemFileError(
            f"{source}: [model] name = {model.name!r} is not valid; valid choices: {', '.join(MODELS)}, "
            "or give factory = 'package.module:function'"
        )
    if model.factory is not None and ":" not in model.factory:
        raise ProblemFileError(
            f"{source}: [model] factory = {model.factory!r} must read 'package.module:function'"
        )
    if model.input_shape is not None and not all(_positive_int(v) for v in model.input_shape):
        raise ProblemFileError(
            f"{source}: [model] input_shape must be a list of positive integers, got {model.input_shape!r}"
        )
    for key in ("include", "exclude"):
        patterns = getattr(model, key)
        if patterns is not None and not all(isinstance(v, str) for v in patterns):
            raise ProblemFileError(
                f"{source}: [model] {key} must be a list of module-name patterns, got {patterns!r}"
            )


def _check_method(source: str, config: ProblemConfig) -> None:
    """The targets/penalties a method needs: ℓ1-RDA takes a penalty, magnitude pruning a target."""
    sparsity = config.sparsity
    gated_only = ("target_params", "target_shape")
    for key in gated_only:
        if sparsity.method != "l0" and getattr(sparsity, key) is not None:
            raise ProblemFileError(f"{source}: [sparsity] {key} needs method = 'l0' (gates)")
    if sparsity.method != "l0" and (sparsity.target_macs is not None or sparsity.macs_penalty is not None):
        raise ProblemFileError(
            f"{source}: [sparsity] target_macs and macs_penalty need method = 'l0' (gates), "
            f"not {sparsity.method!r}"
        )
    if sparsity.method == "l1_rda" and (sparsity.target_density is not None or sparsity.penalty is None):
        raise ProblemFileError(
            f"{source}: [sparsity] method = 'l1_rda' takes a penalty (λ of λ·||w||_1), not a "
            "target_density; find the λ for a target with `ctrlsparse tune-penalty`"
        )
    if sparsity.method == "magnitude" and (sparsity.target_density is None or sparsity.penalty is not None):
        raise ProblemFileError(
            f"{source}: [sparsity] method = 'magnitude' takes a target_density and no penalty"
        )
    if not 0 <= sparsity.finetune_epochs <= config.train.epochs:
        raise ProblemFileError(
            f"{source}: [sparsity] finetune_epochs must lie in [0, epochs={config.train.epochs}], "
            f"got {sparsity.finetune_epochs!r}"
        )


def load_problem(path: str | Path) -> ProblemConfig:
    """Read and validate a problem file.

    A ``[model] factory`` module is imported from the problem file's folder first (or from
    ``factory_dir``, relative to it): ``factory_dir`` is recorded as an absolute path, so a
    run's ``config.json`` rebuilds the model from anywhere.

    Examples:
        >>> config = load_problem("problems/digits_mlp.toml")  # doctest: +SKIP
        >>> config.train.epochs  # doctest: +SKIP
    """
    config = parse_problem(read_toml(path, "problem file"), str(path))
    if config.model.factory is None:
        return config
    folder = (Path(path).parent / (config.model.factory_dir or ".")).resolve()
    return dataclasses.replace(config, model=dataclasses.replace(config.model, factory_dir=str(folder)))


def read_toml(path: str | Path, kind: str) -> dict:
    """Parse a TOML file; a missing or malformed file is a :class:`ProblemFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(f"{path}: no such {kind}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ProblemFileError(f"{path}: not valid TOML ({err})") from None


__all__ = [
    "SYNTHETIC",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ProblemConfig",
    "ProblemFileError",
    "ScheduleConfig",
    "SparsityConfig",
    "TrainConfig",
    "load_problem",
    "parse_problem",
    "read_toml",
]
