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
def count(model: nn.Module, example_input) -> tuple[Count, dict[str, Count]]:
    """Count parameters and MACs of ``model`` (one example), dense and under the test-time gates.

    Parameters count every model parameter except the gates'. Remaining parameters
    subtract the sparsifiable entries whose gates are closed (eq. 13; a weight dies when
    its output *or* input unit closes) and the exact-zero weights of plain layers
    (ℓ1-RDA, magnitude pruning). MACs count the Linear and convolution layers for one
    example; a layer's remaining MACs scale with its remaining weight entries.

    Returns:
        the model total and ``{layer name: Count}`` for the Linear/convolution layers.

    Example:
        >>> total, layers = count(model, torch.zeros(1, 1, 8, 8))  # doctest: +SKIP
        >>> total.macs_remaining / total.macs_dense  # doctest: +SKIP
    """
    groups = gate_groups(model)
    accounting = Accounting(model) if groups else None
    active = accounting.per_param(realized=True) if accounting else {}
    sizes = {(q.layer, q.name): q.sparsifiable for q in accounting.params} if accounting else {}
    counts: dict[str, Count] = {}
    handles = []
    for name, module in model.named_modules():
        if is_layer(module):

            def hook(module, inputs, output, name=name):
                counts[name].macs_dense += _layer_macs(module, output)

            counts[name] = Count()
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        call_model(model, head(example_input, 1))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

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
