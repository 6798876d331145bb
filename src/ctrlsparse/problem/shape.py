r"""A target shape for a decoder LM: constraints on its expected numbers of units per block.

Sheared-LLaMA (Xia et al., 2024) states the model it wants as an architecture: so many
heads, MLP neurons and hidden dimensions in every block. Here each gate group of a
decoder LM (:mod:`ctrlsparse.gating.decoders`) gets one constraint

.. math::
    \frac{1}{n_g}\sum_{u \in g} P(z_u \neq 0) \le \frac{k_g}{n_g},

the expected open fraction of its :math:`n_g` units (eq. 12 of Louizos et al., 2018)
against the target count :math:`k_g`, as the density constraints of Gallego-Posada et
al. (2022). The task loss pulls every group open, so the constraints bind and the
expected shape lands on the target; the feasibility phase
(:mod:`~ctrlsparse.problem.feasibility`) then closes the least likely units of each
group until exactly :math:`k_g` stay open and opens the most likely closed ones up to
it: every block ends with the same shape, which a ``transformers`` config can state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.decoders import LAYOUT_ATTRIBUTE, DecoderError, DecoderLayout
from ctrlsparse.problem.levels import ConstraintKey, Quantity

KEYS = ("layers", "heads", "kv_heads", "intermediate", "hidden")
"""The keys of a target shape."""


def shape_name(group: str, kind: str) -> str:
    """The constraint name of the shape target on the group of ``kind`` units rooted at ``group``.

    Examples:
        >>> shape_name("model.layers.0.mlp", "output")
        'shape:output:model.layers.0.mlp'
    """
    return ConstraintKey(Quantity.SHAPE, f"{kind}:{group}").name


def _check_values(shape: Mapping[str, int]) -> dict[str, int]:
    unknown = [k for k in shape if k not in KEYS]
    if unknown:
        raise DecoderError(f"target_shape: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    for key, value in shape.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DecoderError(f"target_shape[{key!r}] must be a whole number >= 1, got {value!r}")
    return dict(shape)


def _heads(shape: dict[str, int], layout: DecoderLayout) -> tuple[int, int] | None:
    """The target (heads, kv_heads), checked against the model; None when neither is given."""
    a = layout.attentions[0]
    per = a.heads // a.kv_heads
    heads, kv = shape.get("heads"), shape.get("kv_heads")
    if heads is None and kv is None:
        return None
    for key, value, full in (("heads", heads, a.heads), ("kv_heads", kv, a.kv_heads)):
        if value is not None and value > full:
            raise DecoderError(f"target_shape[{key!r}] = {value} is more than the model has ({full})")
    if heads is not None and kv is not None and heads % kv:
        raise DecoderError(f"target_shape: kv_heads = {kv} does not divide heads = {heads}")
    kv = kv if kv is not None else heads // per if heads % per == 0 else None
    if kv is None or (heads is not None and heads != kv * per):
        raise DecoderError(
            f"target_shape: heads = {heads} over kv_heads = {shape.get('kv_heads')}; a key-value head is "
            f"pruned with its {per} query heads, so heads must be {per} × kv_heads (valid heads: "
            f"{', '.join(str(per * k) for k in range(1, a.kv_heads + 1))})"
        )
    if layout.config_update is None and kv != a.kv_heads:
        hidden = shape.get("hidden", layout.hidden)
        if hidden % (kv * per):
            raise DecoderError(
                f"target_shape: hidden = {hidden} is not divisible by heads = {kv * per}, which this "
                "family's config needs (its head width is hidden_size // num_attention_heads)"
            )
        raise DecoderError(
            f"target_shape: heads = {kv * per} would change the head width of this family "
            f"(hidden_size // num_attention_heads = {hidden // (kv * per)}, trained at {a.head_dim}); "
            "leave heads out of its target shape"
        )
    return kv * per, kv


def shape_levels(model: nn.Module, accounting: Accounting, shape: Mapping[str, int]) -> dict[str, float]:
    """The shape constraints of ``shape`` on a sparsified decoder LM: ``{name: k_g / n_g}``.

    Raises:
        DecoderError: ``model`` is not a sparsified decoder LM, a key or value is invalid,
            a count exceeds the model's, ``kv_heads`` does not divide ``heads``, the head
            width would change, or the units a key names have no gates.

    Examples:
        >>> shape_levels(llama, Accounting(llama), {"kv_heads": 1, "intermediate": 64})  # doctest: +SKIP
        {'shape:head:model.layers.0.self_attn': 0.5, 'shape:output:model.layers.0.mlp': 0.372..., ...}
    """
    layout: DecoderLayout | None = model.__dict__.get(LAYOUT_ATTRIBUTE)
    if layout is None:
        raise DecoderError(
            f"target_shape needs a decoder LM sparsified by ctrlsparse.sparsify; {type(model).__name__} "
            "is not one (use target_density or target_macs)"
        )
    shape = _check_values(shape)
    counts: dict[tuple[str, str], int] = {}
    layers = len(layout.attentions)
    if shape.get("layers", layers) > layers:
        raise DecoderError(
            f"target_shape['layers'] = {shape['layers']} is more than the model has ({layers})"
        )
    if shape.get("layers", layers) < layers:
        counts[(layout.base, "layer")] = shape["layers"]
    heads = _heads(shape, layout)
    if heads is not None:
        counts.update({(a.name, "head"): heads[1] for a in layout.attentions})
    if "intermediate" in shape:
        if shape["intermediate"] > layout.mlps[0].size:
            raise DecoderError(
                f"target_shape['intermediate'] = {shape['intermediate']} is more than the model has "
                f"({layout.mlps[0].size})"
            )
        counts.update({(m.name, "output"): shape["intermediate"] for m in layout.mlps})
    if "hidden" in shape:
        if shape["hidden"] > layout.hidden:
            raise DecoderError(
                f"target_shape['hidden'] = {shape['hidden']} is more than the model has ({layout.hidden})"
            )
        counts[(layout.base, "hidden")] = shape["hidden"]
    groups = {(g.name, g.kind): g for g in accounting.groups}
    missing = sorted({key for key in counts if key not in groups})
    if missing:
        raise DecoderError(
            f"target_shape names units with no gates: {', '.join(f'{n} ({k})' for n, k in missing)}; "
            "sparsify with heads=True (heads), hidden=True (hidden), layers=True (layers), and without "
            "excluding them"
        )
    # k_g / n_g rounded as the constraint's value is (a sum of 0/1 gates over n_g, in the
    # gates' dtype): the feasibility phase compares them, and 2/3 in float32 exceeds 2/3 in float64.
    return {
        shape_name(name, kind): _level(count, groups[(name, kind)]) for (name, kind), count in counts.items()
    }


def _level(count: int, group) -> float:
    dtype = group.gate.parameter.dtype
    return float(torch.tensor(float(count), dtype=dtype) / group.num_units)


def shape_values(accounting: Accounting, names: list[str], units: torch.Tensor) -> dict[str, torch.Tensor]:
    """The open fraction of each shape constraint's group at unit values ``units`` (as ``vector()``).

    Examples:
        >>> shape_values(acc, ["shape:output:model.layers.0.mlp"], acc.vector())  # doctest: +SKIP
    """
    ranges = group_units(accounting)
    return {name: units[ranges[name]].sum() / len(ranges[name]) for name in names}


def group_units(accounting: Accounting) -> dict[str, torch.Tensor]:
    """``{shape constraint name: indices of its group's units}`` for every gate group."""
    return {
        shape_name(g.name, g.kind): torch.arange(start, start + g.num_units)
        for g, start in zip(accounting.groups, accounting.offsets)
    }
