"""Parameter and multiply-accumulate (MAC) counts, dense and under the test-time gates."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.groups import gate_groups
from ctrlsparse.gating.registry import is_layer
from ctrlsparse.modelio import call_model, head


@dataclass
class Count:
    """Dense and remaining (test-time gates, eq. 13) counts for one layer or a model."""

    params_dense: int = 0
    params_remaining: int = 0
    macs_dense: int = 0
    macs_remaining: int = 0

    def __iadd__(self, other: Count) -> Count:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self


def _plain_active(module: nn.Module) -> tuple[int, int]:
    """(non-zero weights, weights) of a layer: what ℓ1-RDA and magnitude pruning leave."""
    weight = module.weight
    return int(torch.count_nonzero(weight)), weight.numel()


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Dense MACs of a Linear or convolution for one example."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        positions = output[0].numel() // module.out_features  # >1 for sequence inputs
        return positions * module.in_features * module.out_features
    return output[0].numel() * weight[0].numel()  # out x spatial x (in/groups x kernel)


@torch.no_grad()
def dense_macs(model: nn.Module, example_input) -> dict[str, int]:
    """MACs of each Linear and convolution layer for one example, as ``{layer name: MACs}``.

    Layers the forward pass does not reach count 0. Gates are ignored: these are the
    dense layer's MACs (the denominator of a MACs budget).

    Examples:
        >>> dense_macs(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.zeros(1, 4))
        {'0': 12, '2': 6}
    """
    macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if is_layer(module):

            def hook(module, inputs, output, name=name):
                macs[name] += _layer_macs(module, output)

            macs[name] = 0
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        call_model(model, head(example_input, 1))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


@torch.no_grad()
def count(model: nn.Module, example_input) -> tuple[Count, dict[str, Count]]:
    """Count parameters and MACs of ``model`` (one example), dense and under the test-time gates.

    Parameters count every model parameter except the gates'. Remaining parameters
    subtract the sparsifiable entries whose gates are closed (eq. 13; a weight dies when
    its output *or* input unit closes) and the exact-zero weights of plain layers
    (ℓ1-RDA, magnitude pruning). MACs count the Linear and convolution layers for one
    example; a layer's remaining MACs scale with its remaining weight entries.

    Returns:
        the model total and ``{layer name: Count}`` for the Linear/convolution layers.

    Examples:
        >>> total, layers = count(model, torch.zeros(1, 1, 8, 8))  # doctest: +SKIP
        >>> total.macs_remaining / total.macs_dense  # doctest: +SKIP
    """
    groups = gate_groups(model)
    accounting = Accounting(model) if groups else None
    active = accounting.per_param(realized=True) if accounting else {}
    sizes = {(q.layer, q.name): q.sparsifiable for q in accounting.params} if accounting else {}
    counts = {name: Count(macs_dense=macs) for name, macs in dense_macs(model, example_input).items()}

    gate_ids = {id(g.gate.parameter) for g in groups}
    total = Count()
    total.params_dense = sum(p.numel() for p in model.parameters() if id(p) not in gate_ids)
    removed_total = sum(sizes[key] - float(active[key]) for key in sizes)
    total.params_remaining = total.params_dense - round(removed_total)
    modules = dict(model.named_modules())
    for name, layer in counts.items():
        module = modules[name]
        params = {p: getattr(module, p) for p in ("weight", "bias") if getattr(module, p, None) is not None}
        layer.params_dense = sum(t.numel() for t in params.values())
        removed = sum(sizes[(name, p)] - float(active[(name, p)]) for p in params if (name, p) in sizes)
        if (name, "weight") in sizes:
            numel = params["weight"].numel()
            weight_fraction = (numel - sizes[(name, "weight")] + float(active[(name, "weight")])) / numel
        elif not groups:
            nonzero, numel = _plain_active(module)
            removed, weight_fraction = numel - nonzero, nonzero / numel
            total.params_remaining -= removed
        else:
            weight_fraction = 1.0
        layer.params_remaining = layer.params_dense - round(removed)
        layer.macs_remaining = round(layer.macs_dense * weight_fraction)
        total.macs_dense += layer.macs_dense
        total.macs_remaining += layer.macs_remaining
    return total, counts


_MAC_OPS = ("mm", "addmm", "convolution", "_convolution", "conv1d", "conv2d", "conv3d")
"""Operators of Linear and convolution layers in ``FlopCounterMode``'s counts (attention's
``bmm``/SDPA are left out, as in :func:`dense_macs`)."""


@torch.no_grad()
def macs_of(model: nn.Module, example_input) -> int:
    """MACs of the Linear and convolution operators of one forward on one example, from
    ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2).

    Examples:
        >>> macs_of(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.zeros(1, 4))
        18
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            call_model(model, head(example_input, 1))
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts().get("Global", {})
    return sum(int(v) for op, v in counts.items() if op.__name__.split(".")[0] in _MAC_OPS) // 2


@torch.no_grad()
def macs_summary(model: nn.Module, example_input, total: Count | None = None) -> dict:
    """``{dense, expected, realized}`` MACs of a model for one example, as ``summary.json`` records them.

    ``expected`` scales each gated layer by the expected fraction of its active weight
    entries (P(z ≠ 0) of its input and output units, independent gates); ``realized`` counts
    the purged model with :func:`macs_of` where the gates prune whole units, else the
    entries the test-time gates keep (weight gates, ℓ1-RDA and magnitude pruning leave
    tensors dense: their realized MACs are what sparse kernels would spend). ``realized_by``
    says which: ``"purge"`` or ``"count"`` (also when the model cannot be purged, e.g. its
    output holds no logits the purge can check).
    """
    from ctrlsparse.errors import CtrlsparseError
    from ctrlsparse.gating.purging import purge

    total = total or count(model, example_input)[0]
    groups = gate_groups(model)
    summary = {
        "dense": total.macs_dense,
        "expected": total.macs_dense,
        "realized": total.macs_remaining,
        "realized_by": "count",
    }
    if not groups:
        return summary
    layers = dense_macs(model, example_input)
    accounting = Accounting(model)
    expected = accounting.per_param()
    fraction = {}
    for q in accounting.params:
        if q.name == "weight" and layers.get(q.layer):
            fraction[q.layer] = (float(expected[(q.layer, "weight")]) + q.ungated) / q.module.weight.numel()
    summary["expected"] = round(sum(m * fraction.get(name, 1.0) for name, m in layers.items()))
    if all(g.prune is not None for g in groups):
        try:
            summary["realized"] = macs_of(purge(model, example_input), example_input)
            summary["realized_by"] = "purge"
        except (CtrlsparseError, TypeError):
            pass  # keep the count of what the test-time gates keep
    return summary
