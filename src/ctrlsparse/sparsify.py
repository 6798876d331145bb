"""Turn the Linear and Conv2d layers of an existing model into gated layers, in place."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from ctrlsparse.gates import GateFactory, GateKind
from ctrlsparse.layers import GatedConv2d, GatedLayer, GatedLinear, Structure

# Exact types: subclasses such as MultiheadAttention's out_projection are used through
# their weight tensors, not their forward, so gating them would silently do nothing.
_GATEABLE = (nn.Linear, nn.Conv2d)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _check_patterns(patterns: Iterable[str] | None, names: list[str], argument: str) -> list[str] | None:
    if patterns is None:
        return None
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"{argument}={pattern!r} matches no Linear or Conv2d layer; "
                f"valid layer names: {', '.join(names)}"
            )
    return patterns


def sparsify(
    model: nn.Module,
    structure: str | Structure = "neuron",
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    drop_rate: float = 0.5,
    gates: str | GateKind | GateFactory = "hard_concrete",
) -> nn.Module:
    """Replace the ``nn.Linear`` and ``nn.Conv2d`` layers of ``model`` by gated layers, in place.

    The gated layers reuse the original weight and bias parameters, so a trained
    model keeps its weights (an optimizer built on them keeps working; add the gate
    parameters to it, or build a new one on ``model.parameters()``). Each gated layer
    is named by its module name, e.g. ``"features.0"`` or ``"classifier"``.

    Args:
        model: any ``nn.Module``.
        structure: ``"neuron"`` (one gate per Linear input feature / Conv2d output
            channel) or ``"weight"`` (one gate per weight).
        include: module names or glob patterns (``"features.*"``) to gate; default all.
        exclude: module names or glob patterns to leave dense.
        drop_rate: initial drop probability of every gate (Louizos et al. use 0.5).
        gates: ``"hard_concrete"`` (Louizos et al., 2018), ``"arm"`` (Bernoulli gates
            trained with the ARM estimator, Li & Ji, 2019, with their defaults) or a
            factory ``f(shape, drop_rate=...)``, e.g.
            ``functools.partial(ARMGate, squash="hard_sigmoid", estimator="ar")``.

    Returns:
        ``model`` itself, now with gated layers.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> net = sparsify(net, structure="neuron", exclude=["2"])
        >>> list(sparse_layers(net))
        ['0']
    """
    structure = Structure.parse(structure)
    if not callable(gates) or isinstance(gates, str):
        gates = GateKind.parse(gates)
    candidates = {name: m for name, m in model.named_modules() if type(m) in _GATEABLE}
    if "" in candidates:
        raise ValueError(f"the model itself is a {type(model).__name__}; wrap it in a module to sparsify it")
    names = list(candidates)
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to sparsify "
            f"(already gated layers: {list(sparse_layers(model)) or 'none'})"
        )
    include = _check_patterns(include, names, "include")
    exclude = _check_patterns(exclude, names, "exclude")
    chosen = [
        n for n in names if (include is None or _matches(n, include)) and not _matches(n, exclude or ())
    ]
    if not chosen:
        raise ValueError(
            f"include={include!r} and exclude={exclude!r} leave no layer to sparsify among {names}"
        )
    for name in chosen:
        module = candidates[name]
        if isinstance(module, nn.Linear):
            gated = GatedLinear.from_linear(module, structure, drop_rate, gates)
        else:
            gated = GatedConv2d.from_conv(module, structure, drop_rate, gates)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, gated)
    return model


def sparse_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, GatedLayer]:
    """The gated layers of ``model`` as ``{module name: layer}``, in forward order.

    Without ``example_input`` the order is the modules' registration order, which is
    the forward order of ``nn.Sequential`` models and of models that define layers in
    the order they use them. With ``example_input`` one forward pass (eval mode, no
    gradients) records the order in which the layers actually run; layers the pass
    does not reach come last, in registration order.

    Example:
        >>> net = sparsify(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))
        >>> list(sparse_layers(net))
        ['0', '2']
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, GatedLayer)}
    if example_input is None:
        return layers
    called: list[str] = []
    handles = [
        m.register_forward_pre_hook(
            lambda module, args, name=name: called.append(name) if name not in called else None
        )
        for name, m in layers.items()
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    order = called + [name for name in layers if name not in called]
    return {name: layers[name] for name in order}
