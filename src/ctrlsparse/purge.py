"""Purging: from a gated model to a smaller plain torch model with the same eval outputs.

1. Every gated layer becomes a plain ``nn.Linear`` / ``nn.Conv2d`` whose weights (and,
   for channel gates, bias) are multiplied by the test-time gates (eq. 13).
2. A traced graph (``torch.fx``) finds chains producer → per-unit ops → consumer, e.g.
   ``Linear → ReLU → Linear`` or ``Conv2d → BatchNorm2d → ReLU → MaxPool2d → Flatten →
   Linear``. A unit of the chain (a neuron or channel) is removed from all of them when
   the consumer ignores it (its input columns are zero), or when the producer outputs
   exactly 0 for it; in the second case the constant the per-unit ops turn that 0 into
   (BatchNorm's shift, say) is folded into the consumer's bias, so outputs do not change.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn

from ctrlsparse.layers import GatedLayer, GatedLinear, Structure
from ctrlsparse.sparsify import sparse_layers

_PRODUCERS = (nn.Linear, nn.Conv2d)
# Per-unit modules: they act on each channel/feature separately, so a unit can be cut through them.
_PER_UNIT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout,
             nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)  # fmt: skip
_PER_UNIT_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.tanh, torch.sigmoid)


def _plain(layer: GatedLayer) -> nn.Module:
    """A plain layer computing what ``layer`` computes in eval mode."""
    with torch.no_grad():
        z = layer.gate.deterministic()
        if isinstance(layer, GatedLinear):
            plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
            scale = z if layer.structure is Structure.WEIGHT else z.unsqueeze(0)
            plain.weight.copy_(layer.weight * scale)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias)
        else:
            plain = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.dilation, layer.groups, layer.bias is not None,
            )  # fmt: skip
            scale = z if layer.structure is Structure.WEIGHT else z.view(-1, 1, 1, 1)
            plain.weight.copy_(layer.weight * scale)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias if layer.structure is Structure.WEIGHT else layer.bias * z)
    return plain.to(device=layer.weight.device, dtype=layer.weight.dtype)


def _is_flatten(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.op == "call_function" and node.target is torch.flatten:
        return node.args[1:2] == (1,) and len(node.args) <= 2 and not node.kwargs
    return node.op == "call_method" and node.target == "flatten" and node.args[1:] == (1,) and not node.kwargs


def _is_per_unit(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.AvgPool2d) and m.padding not in (0, (0, 0)):
            return False  # averaging over zero padding turns a constant map into a non-constant one
        return isinstance(m, _PER_UNIT)
    return node.op == "call_function" and node.target in _PER_UNIT_FUNCTIONS and len(node.args) == 1


def _chain(producer: torch.fx.Node, modules: dict) -> tuple[list[torch.fx.Node], torch.fx.Node] | None:
    """The single-user path producer → per-unit ops (at most one flatten) → consumer, if there is one."""
    ops, node = [], producer
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if node.op == "call_module" and isinstance(modules[node.target], _PRODUCERS):
            return ops, node
        if not (_is_per_unit(node, modules) or _is_flatten(node, modules)):
            return None
        if node.args[0] is not (ops[-1] if ops else producer):
            return None
        ops.append(node)


def _apply(ops: list[torch.fx.Node], modules: dict, x: torch.Tensor) -> torch.Tensor:
    for node in ops:
        if node.op == "call_module":
            x = modules[node.target](x)
        elif node.op == "call_function":
            x = node.target(x, *node.args[1:], **node.kwargs)
        else:
            x = getattr(x, node.target)(*node.args[1:], **node.kwargs)
    return x


@torch.no_grad()
def _cut(producer: nn.Module, ops: list, consumer: nn.Module, modules: dict, unit_shape: torch.Size) -> None:
    """Remove the removable units of one producer → ops → consumer chain, folding constants."""
    units = producer.weight.shape[0]
    flattened = any(_is_flatten(n, modules) for n in ops)
    if isinstance(consumer, nn.Conv2d) and (flattened or consumer.groups != 1):
        return
    per_unit = consumer.weight.shape[1] // units if flattened else 1
    if consumer.weight.shape[1] != units * per_unit:
        return
    # Consumer columns grouped by unit: (out, units, per_unit[, kh, kw]).
    cols = consumer.weight.reshape(consumer.weight.shape[0], units, per_unit, *consumer.weight.shape[2:])
    unused = (cols.flatten(2) == 0).all(0).all(1)
    bias_zero = producer.bias == 0 if producer.bias is not None else torch.ones(units, dtype=torch.bool)
    silent = (producer.weight.flatten(1) == 0).all(1) & bias_zero.to(producer.weight.device)
    # A silent unit's value at the consumer is a constant: run the ops on zeros to find it.
    constant = _apply(ops, modules, producer.weight.new_zeros(1, *unit_shape))[0]
    if isinstance(consumer, nn.Conv2d):
        if consumer.padding not in (0, (0, 0)) and bool((silent & ~unused).any()):
            silent = torch.zeros_like(silent)  # zero padding makes a constant input non-constant at borders
        value = constant.flatten(1).mean(1)  # a constant map per channel
        fold = (cols.flatten(2).sum(2) * value).T  # (units, out)
    else:
        fold = (cols * constant.reshape(units, per_unit)).sum(2).T
    remove = unused | silent
    if not bool(remove.any()):
        return
    keep = ~remove
    folded = fold[remove & ~unused].sum(0)
    if bool((folded != 0).any()):
        if consumer.bias is None:
            consumer.bias = nn.Parameter(folded.clone())
        else:
            consumer.bias += folded
    index = keep.nonzero().squeeze(1)
    producer.weight = nn.Parameter(producer.weight.index_select(0, index))
    if producer.bias is not None:
        producer.bias = nn.Parameter(producer.bias.index_select(0, index))
    for node in ops:
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            for name in ("weight", "bias"):
                if getattr(m, name) is not None:
                    setattr(m, name, nn.Parameter(getattr(m, name).index_select(0, index)))
            for name in ("running_mean", "running_var"):
                if getattr(m, name) is not None:
                    setattr(m, name, getattr(m, name).index_select(0, index))
            m.num_features = len(index)
    columns = cols.index_select(1, index).reshape(cols.shape[0], -1, *consumer.weight.shape[2:])
    consumer.weight = nn.Parameter(columns.contiguous())
    if isinstance(producer, nn.Linear):
        producer.out_features = len(index)
    else:
        producer.out_channels = len(index)
    if isinstance(consumer, nn.Linear):
        consumer.in_features = consumer.weight.shape[1]
    else:
        consumer.in_channels = consumer.weight.shape[1]


def purge(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` made of plain torch modules, with closed neurons and channels removed.

    In eval mode its outputs equal the gated model's (test-time gates, eq. 13). Units are
    removed across chains of Linear/Conv2d layers joined by per-unit modules (ReLU,
    BatchNorm, pooling, dropout, flatten); a model ``torch.fx`` cannot trace keeps
    every unit but still has its gates folded into plain layers.

    Args:
        model: a model with gated layers (``ctrlsparse.sparsify``).
        example_input: one batch (a single example is enough) to learn the layers' shapes.

    Example:
        >>> small = purge(model, x[:1])  # doctest: +SKIP
        >>> torch.allclose(small.eval()(x), model.eval()(x), atol=1e-5)  # doctest: +SKIP
        True
    """
    purged = copy.deepcopy(model).eval()
    for name, layer in sparse_layers(purged).items():
        parent, _, child = name.rpartition(".")
        setattr(purged.get_submodule(parent), child, _plain(layer))
    try:
        graph = torch.fx.symbolic_trace(purged).graph
    except Exception:  # noqa: BLE001 - any tracing failure: keep the folded model whole
        return purged
    modules = dict(purged.named_modules())
    shapes: dict[str, torch.Size] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output is left alone
            shapes[name] = output.shape[1:]

        return hook

    hooks = [
        m.register_forward_hook(record(name)) for name, m in modules.items() if isinstance(m, _PRODUCERS)
    ]
    with torch.no_grad():
        purged(example_input[:1])
    for hook in hooks:
        hook.remove()
    for node in graph.nodes:
        if (
            node.op == "call_module"
            and isinstance(modules[node.target], _PRODUCERS)
            and node.target in shapes
        ):
            found = _chain(node, modules)
            if found is not None:
                ops, consumer = found
                _cut(modules[node.target], ops, modules[consumer.target], modules, shapes[node.target])
    return purged
