"""Parameter and multiply-accumulate (MAC) counts, dense and under the test-time gates."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ctrlsparse.layers import GatedConv2d, GatedLayer, GatedLinear


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


def _active_fraction(layer: nn.Module) -> float:
    """Fraction of open test-time gates, or of non-zero weights of a plain layer."""
    with torch.no_grad():
        if isinstance(layer, GatedLayer):
            return float((layer.gate.deterministic() > 0).float().mean())
        return float(torch.count_nonzero(layer.weight)) / layer.weight.numel()


def _removed(layer: nn.Module) -> int:
    """Parameters a layer no longer needs: closed gates' groups, or a plain layer's zero weights."""
    if isinstance(layer, GatedLayer):
        return layer.num_sparsifiable - layer.realized_active()
    with torch.no_grad():
        return layer.weight.numel() - int(torch.count_nonzero(layer.weight))


def _layer_macs(module: nn.Module, output: torch.Tensor) -> tuple[int, int]:
    """MACs for one example: (dense, remaining under the test-time gates)."""
    if isinstance(module, nn.Linear | GatedLinear):
        positions = output[0].numel() // module.out_features  # >1 for sequence inputs
        dense = positions * module.in_features * module.out_features
    else:
        dense = output[0].numel() * module.weight[0].numel()  # out x H' x W' x (in/groups x kh x kw)
    # Neuron gates remove input columns / output channels, weight gates (and the zeros
    # of ℓ1 or magnitude pruning) single weights: either way the remaining MACs scale
    # with the fraction of open gates / non-zero weights.
    return dense, round(dense * _active_fraction(module))


def count(model: nn.Module, example_input: torch.Tensor) -> tuple[Count, dict[str, Count]]:
    """Count parameters and MACs of ``model`` (one example) for its Linear/Conv2d layers.

    Parameters count every model parameter except the gates' (``log_alpha`` or
    ``phi``); remaining parameters subtract the groups whose test-time gate is exactly
    0 and the exact-zero weights of plain Linear/Conv2d layers (ℓ1-RDA, magnitude
    pruning). MACs count the Linear and Conv2d layers (gated or not) for one input
    example; the remaining MACs scale with the open gates / non-zero weights.

    Returns:
        the model total and ``{layer name: Count}`` for the Linear/Conv2d layers.

    Example:
        >>> total, layers = count(model, torch.zeros(1, 1, 8, 8))  # doctest: +SKIP
        >>> total.macs_remaining / total.macs_dense  # doctest: +SKIP
    """
    counts: dict[str, Count] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d | GatedLinear | GatedConv2d):

            def hook(module, inputs, output, name=name):
                dense, remaining = _layer_macs(module, output)
                counts[name].macs_dense += dense
                counts[name].macs_remaining += remaining

            counts[name] = Count()
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    gates = {id(m.gate.parameter) for m in model.modules() if isinstance(m, GatedLayer)}
    total = Count()
    for p in model.parameters():
        if id(p) not in gates:
            total.params_dense += p.numel()
    total.params_remaining = total.params_dense
    for name, module in model.named_modules():
        if name not in counts:
            continue
        layer = counts[name]
        layer.params_dense = sum(p.numel() for p in (module.weight, module.bias) if p is not None)
        removed = _removed(module)
        layer.params_remaining = layer.params_dense - removed
        total.params_remaining -= removed
        total.macs_dense += layer.macs_dense
        total.macs_remaining += layer.macs_remaining
    return total, counts
