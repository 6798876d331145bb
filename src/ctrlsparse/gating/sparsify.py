"""Attach gates to an existing model, in place: one gate per prunable unit."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ctrlsparse.choices import Choice
from ctrlsparse.gating.decoders import LAYOUT_ATTRIBUTE, decoder_layout, decoder_units
from ctrlsparse.gating.gates import GateFactory, GateKind, make_gate
from ctrlsparse.gating.groups import ALIGNED_KINDS, EXAMPLE_ATTRIBUTE, GateGroup, attach, gate_groups
from ctrlsparse.gating.registry import is_layer
from ctrlsparse.gating.units import Unit, find_units, paper_units, weight_units
from ctrlsparse.modelio import head


class Structure(Choice):
    """Which parameters share a gate.

    - ``"neuron"``: one gate per unit of the model's dependency graph (hidden neurons,
      channels with their BatchNorm entries, residual channels shared by every producer,
      attention heads, the model's input features); a unit owns every slice it touches.
    - ``"paper"``: Louizos et al.'s groups: one gate per Linear input feature and per
      conv output channel, each owning its own layer's slice only (the counting behind
      the papers' MLP and LeNet-5 numbers).
    - ``"weight"``: one gate per weight.

    Examples:
        >>> Structure.parse("paper") is Structure.PAPER
        True
        >>> Structure.parse("neurons")
        Traceback (most recent call last):
        ...
        ValueError: unknown structure 'neurons'; valid structures: 'neuron', 'paper', 'weight'
    """

    NEURON = "neuron"
    PAPER = "paper"
    WEIGHT = "weight"


Structure._noun = "structure"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _check_patterns(patterns, names: list[str], argument: str) -> list[str] | None:
    if patterns is None:
        return None
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"{argument}={pattern!r} matches no unit root; valid names: {', '.join(dict.fromkeys(names))}"
            )
    return patterns


def sparsify(
    model: nn.Module,
    structure: str | Structure = "neuron",
    example_input=None,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    drop_rate: float = 0.5,
    gates: str | GateKind | GateFactory = "hard_concrete",
    heads: bool = True,
    hidden: bool = False,
    inputs: bool | None = None,
    layers: bool = False,
    round_to: int = 1,
    blocks: bool = False,
    block_gates: bool = False,
) -> nn.Module:
    """Give ``model`` one stochastic gate per prunable unit, in place.

    The gates scale parameters through :mod:`torch.nn.utils.parametrize`, so the model
    keeps its modules and its weights (in the state dict they move to
    ``<layer>.parametrizations.weight.original``); each group of gates lives on its root
    module as ``output_gate``, ``input_gate``, ``head_gate`` or ``weight_gate``.

    Args:
        model: any ``nn.Module``.
        structure: ``"neuron"`` (units from the dependency graph; needs
            ``example_input``), ``"paper"`` (Louizos et al.'s per-layer groups) or
            ``"weight"``; see :class:`Structure`.
        example_input: one batch the model accepts (a tensor, a tuple or a dict of
            tensors), traced once to find the units.
        include: names or glob patterns of *root* modules, the layer whose
            outputs (or inputs, for the model's inputs; or heads, for an attention
            module) the units are: ``include=["*.conv1"]``.
        exclude: the same patterns, for root modules to leave ungated.
        drop_rate: initial drop probability of every gate (Louizos et al. use 0.5).
        gates: ``"hard_concrete"`` (Louizos et al., 2018), ``"arm"`` (Li & Ji, 2019), or a
            factory ``f(shape, drop_rate=...)``.
        heads: gate attention heads of registered attention modules (``structure="neuron"``).
        hidden: gate a transformer's residual-stream (hidden) dimension: decoder LMs of
            RMSNorm families only (:mod:`ctrlsparse.gating.decoders`). LayerNorm's
            statistics run over that dimension, so removing a closed dimension changes
            every other one and purge could not reproduce the gated model.
        inputs: gate the model's input features; None gates them where a Linear reads them.
        layers: gate whole decoder layers of a decoder LM (one gate per layer; purging
            deletes a closed layer).
        round_to: keep the open channels, neurons and hidden dimensions of each gate group
            in multiples of this (8 or 16: the channel blocks of CPU and GPU kernels), or
            all of them; heads and layers are whole units already. The feasibility phase
            (:mod:`ctrlsparse.problem.feasibility`) decides the gates so, and
            :func:`~ctrlsparse.purge` keeps closed units of an undecided model (zeroed) up
            to the next allowed count. A group of fewer than ``round_to`` units keeps all
            or none (:meth:`~ctrlsparse.gating.GateGroup.aligned`). Needs a ``structure``
            with units (not ``"weight"``).
        blocks: gate whole attention blocks and whole MLP blocks of a decoder LM separately
            (one gate each per layer, as Sheared-LLaMA does).
        block_gates: with ``round_to`` N > 1, give each block of N consecutive units of an
            aligned group one hard concrete gate (``HardConcrete(block=N)``) instead of one
            gate per unit rounded at the decision: units open and close in whole blocks
            during training too. Hard concrete gates only.

    Returns:
        ``model`` itself.

    Examples:
        >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> net = sparsify(net, example_input=torch.zeros(1, 64))
        >>> [(g.name, g.kind, g.num_units) for g in gate_groups(net)]
        [('0', 'input', 64), ('0', 'output', 32)]
    """
    structure = Structure.parse(structure)
    # Decoder LMs: units from the family's registered layout, not from a traced graph.
    layout = decoder_layout(model) if structure is Structure.NEURON else None
    _check_decoder_flags(model, layout, layers=layers, blocks=blocks, hidden=hidden)
    if not callable(gates) or isinstance(gates, str):
        gates = GateKind.parse(gates)
    if gate_groups(model):
        raise ValueError(f"{type(model).__name__} already has gates; sparsify a model only once")
    if not 0.0 < drop_rate < 1.0:
        raise ValueError(f"drop_rate must lie in (0, 1), got {drop_rate!r}")
    _check_round_to(round_to, structure, block_gates, gates)
    modules = {name: m for name, m in model.named_modules() if is_layer(m) and name}
    if not modules:
        raise ValueError(f"{type(model).__name__} has no Linear or convolution layer to sparsify")
    dense: dict[str, str] = {}
    skipped: list[str] = []
    if layout is not None:
        units = decoder_units(model, layout, heads=heads, hidden=hidden, layers=layers, blocks=blocks)
    elif structure is Structure.NEURON:
        if example_input is None:
            raise ValueError(
                "structure='neuron' finds units by tracing the model: pass example_input=<one batch>, "
                "or use structure='paper' (per-layer groups) or 'weight'"
            )
        patterns = [exclude] if isinstance(exclude, str) else list(exclude or ())
        found = find_units(model, example_input, heads, inputs, skip=lambda name: _matches(name, patterns))
        units, dense, skipped = found.units, found.dense, found.skipped
    elif structure is Structure.PAPER:
        units = paper_units(modules)
    else:
        units = weight_units(modules)
    names = [u.name for u in units]
    if not units:
        raise ValueError(f"{type(model).__name__} has no prunable unit (left dense: {dense or 'none'})")
    include = _check_patterns(include, names, "include")
    exclude = _check_patterns(exclude, names + skipped, "exclude")
    chosen = [
        u
        for u in units
        if (include is None or _matches(u.name, include)) and not _matches(u.name, exclude or ())
    ]
    if not chosen:
        raise ValueError(f"include={include!r} and exclude={exclude!r} leave no unit to gate among {names}")
    if dense:
        listed = "; ".join(f"{name} ({why})" for name, why in dense.items())
        warnings.warn(f"ctrlsparse left these modules dense: {listed}", stacklevel=2)
    parameter = next(model.parameters())
    groups = [
        _group(unit, gates, drop_rate, modules, structure, round_to, block_gates).to(
            device=parameter.device, dtype=parameter.dtype
        )
        for unit in chosen
    ]
    sites = [(group, site) for group, unit in zip(groups, chosen) for site in unit.sites]
    attach(model, groups, sites)
    if layout is not None:  # what purge cuts the closed units from
        model.__dict__[LAYOUT_ATTRIBUTE] = layout
    if example_input is not None:  # what a MACs budget counts with (SparsityProblem(target_macs=...))
        model.__dict__[EXAMPLE_ATTRIBUTE] = head(example_input, 1)
    return model


def _check_decoder_flags(model: nn.Module, layout, layers: bool, blocks: bool, hidden: bool) -> None:
    """``layers``, ``blocks`` and ``hidden`` gate parts of registered decoder LMs only."""
    for flag, value in (("layers", layers), ("blocks", blocks)):
        if value and layout is None:
            raise ValueError(
                f"{flag}=True gates the {flag} of decoder LMs (registered families); {type(model).__name__} "
                "is not one"
            )
    if hidden and layout is None:
        raise NotImplementedError(
            "hidden=True (gating the residual-stream dimension) is supported for decoder LMs of RMSNorm "
            "families only: LayerNorm normalizes over that dimension, so closed dimensions cannot be "
            "removed exactly; heads and FFN neurons are gated with the default hidden=False"
        )


def _check_round_to(round_to, structure: Structure, block_gates: bool, gates) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(
            f"round_to must be an integer >= 1 (e.g. 8: open channels in multiples of 8; 1: no rounding), "
            f"got {round_to!r}"
        )
    if round_to > 1 and structure is Structure.WEIGHT:
        raise ValueError(
            f"round_to={round_to} aligns the open channels and neurons of a layer; structure='weight' has "
            "one gate per weight: use structure='neuron' or 'paper', or round_to=1"
        )
    if block_gates and (round_to == 1 or gates is not GateKind.HARD_CONCRETE):
        raise ValueError(
            f"block_gates=True gives each block of round_to units one hard concrete gate: it needs "
            f"round_to > 1 (got {round_to}) and gates='hard_concrete' "
            f"(got {getattr(gates, 'value', gates)!r})"
        )


def _group(
    unit: Unit,
    gates,
    drop_rate: float,
    layers: dict[str, nn.Module],
    structure,
    round_to: int = 1,
    block_gates: bool = False,
) -> GateGroup:
    weight_gates = structure is Structure.WEIGHT
    shape = tuple(layers[unit.name].weight.shape) if weight_gates else (unit.num_units,)
    group = GateGroup(unit.name, unit.kind, make_gate(gates, shape, drop_rate), unit.slices, unit.prune)
    group.silent = unit.silent
    if group.kind in ALIGNED_KINDS:
        group.round_to = round_to
        if block_gates:
            group.gate.block = round_to
    return group


def sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` with sparsifiable parameters, as ``{module name: layer}``.

    Examples:
        >>> net = sparsify(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)), "paper")
        >>> list(sparse_layers(net))
        ['0', '2']
    """
    touched = {s.module for group in gate_groups(model) for s in group.slices}
    return {name: m for name, m in model.named_modules() if name in touched and is_layer(m)}


def gates_of(model: nn.Module) -> list[torch.nn.Parameter]:
    """The gate parameters (``log_alpha`` / ``phi``) of a sparsified model."""
    return [group.gate.parameter for group in gate_groups(model)]
