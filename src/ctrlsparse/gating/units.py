"""Finding a model's prunable units from its dependency graph.

Torch-Pruning's ``DependencyGraph`` (VainF/Torch-Pruning) traces one forward pass with
autograd and answers "which slices of which layers must go together": a conv's output
channels with their BatchNorm entries and the consumers' input slices, every producer
of a residual add, index ranges through concatenation and flattening. This module turns
each of its groups into a :class:`~ctrlsparse.gating.groups.GateGroup`, decides where
the gate sits, and leaves out what must stay dense:

- units that reach the model's outputs (the classifier's logits);
- units coupled to a module no handler knows (an LSTM, an Embedding, the ``embed_dim``
  channels of ``nn.MultiheadAttention``): listed once, left dense;
- a transformer's residual-stream dimension (groups with LayerNorm or Embedding
  entries): LayerNorm normalizes over it, so it cannot be removed exactly;
- Q/K/V channels, which are pruned only as whole heads (``heads=True``): through the
  graph for Q/K/V ``nn.Linear`` attention, from the class's registered slices for packed
  attention (``nn.MultiheadAttention``, :mod:`ctrlsparse.gating.attention`).

The graph's group search can take very long: on a Llama-style decoder it did not finish
a 2-layer model in 90 s (it revisits the residual stream of every layer). Each root
module's search is given :data:`SEARCH_SECONDS`; a root that takes longer is a
:class:`TraceError` naming it, and ``exclude=[name]`` skips its search.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.gating.groups import Slice
from ctrlsparse.gating.registry import (
    NORMALIZATION,
    PackedAttentionSpec,
    attention_spec,
    is_layer,
    layer_spec,
    packed_attention_spec,
)
from ctrlsparse.modelio import call_model


class TraceError(CtrlsparseError, ValueError):
    """The model could not be traced with its example input, or its units could not be found."""


SEARCH_SECONDS = 30.0
"""How long the dependency graph's search for the units of one root module may take."""


class _Expired(Exception):
    pass


@contextmanager
def _time_limit(model: nn.Module, root: str) -> Iterator[None]:
    """Stop a search from ``root`` after :data:`SEARCH_SECONDS` with a :class:`TraceError`.

    A SIGALRM timer, so only in the main thread and when no one else uses that signal or
    timer (pytest-timeout, say); elsewhere the search runs unbounded.
    """
    free = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not free:
        yield
        return

    def expire(signum, frame) -> None:
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, SEARCH_SECONDS)
    try:
        yield
    except _Expired:
        raise TraceError(
            f"the search for the units coupled to {root!r} in {type(model).__name__}'s dependency graph did "
            f"not finish in {SEARCH_SECONDS:g} s; leave it dense with exclude=[{root!r}] (its search is then "
            "skipped), or use structure='weight' or 'paper'. For a transformers decoder LM, register its "
            "family's layout with ctrlsparse.register_decoder instead"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _search(model: nn.Module, dg: tp.DependencyGraph, root: str, module: nn.Module, fn, idxs) -> tp.Group:
    """The graph's pruning group of ``fn`` on ``module`` (named ``root``), within the time limit."""
    with _time_limit(model, root):
        return dg.get_pruning_group(module, fn, idxs)


@dataclass
class Unit:
    """A group of units found in the graph, before its gate exists."""

    name: str
    kind: str
    num_units: int
    slices: list[Slice]
    sites: list[Slice]
    prune: tuple[str, str, int] | None
    silent: tuple[str, ...] = ()
    """Producers whose every output goes straight into a normalisation (a site): no one
    sees a closed unit's channels there, so they may skip computing them."""


@dataclass
class Found:
    units: list[Unit] = field(default_factory=list)
    dense: dict[str, str] = field(default_factory=dict)
    """Modules left dense, with the reason."""
    skipped: list[str] = field(default_factory=list)
    """Root modules whose search was skipped (excluded)."""


def build_graph(model: nn.Module, example_input) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example_input``."""
    _check_forward(model, example_input)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, forward_fn=_traced_call, verbose=False
            )
    except Exception as error:  # noqa: BLE001 - any tracing failure becomes one clear message
        raise TraceError(
            f"could not trace {type(model).__name__} to find its units ({type(error).__name__}: {error}); "
            "leave the failing part dense with exclude=[...], or use structure='paper' or 'weight'"
        ) from error
    finally:
        model.train(was_training)


def _traced_call(model: nn.Module, example_input):
    """The model's output without its ``None`` entries, which the graph cannot walk: a model
    returning ``(logits, loss)`` gives ``loss=None`` when it is not given labels."""
    return _drop_none(call_model(model, example_input))


def _drop_none(output):
    if isinstance(output, dict):  # a Hugging Face ModelOutput is a dict too
        return {k: _drop_none(v) for k, v in output.items() if v is not None}
    if isinstance(output, list | tuple):  # named tuples too: the graph only walks the tensors
        return [_drop_none(v) for v in output if v is not None]
    return output


def _check_forward(model: nn.Module, example_input) -> None:
    """Run the model once so a rejected input reports the model's own error and the module it came from."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(module, args) -> None:
        stack.append(names[module])

    def leave(module, args, output) -> None:
        stack.pop()

    children = [m for m in model.modules() if m is not model]
    handles = [m.register_forward_pre_hook(enter) for m in children]
    handles += [m.register_forward_hook(leave) for m in children]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, example_input)
    except Exception as error:  # noqa: BLE001
        where = f" in module {stack[-1]!r}" if stack else ""
        raise TraceError(
            f"{type(model).__name__} rejected example_input ({_describe(example_input)}){where}: "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _describe(inputs) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"a tensor of shape {tuple(inputs.shape)}"
    if isinstance(inputs, dict):
        return "a dict with keys " + ", ".join(repr(k) for k in inputs)
    return f"a {type(inputs).__name__} of {len(inputs)} items"


def _is_out(dg: tp.DependencyGraph, handler) -> bool:
    return dg.is_out_channel_pruning_fn(handler)


def _slices(dg: tp.DependencyGraph, names: dict, group, width: int = 1) -> tuple[list[Slice], set[str]]:
    """The parameter slices of a Torch-Pruning group, and the modules it touches that no spec covers."""
    slices: list[Slice] = []
    unknown: set[str] = set()
    for item in group:
        module = item.dep.target.module
        if module not in names:
            continue
        spec = layer_spec(module)
        if spec is None:
            if any(True for _ in module.parameters(recurse=False)):
                unknown.add(names[module])
            continue
        pairs = spec.outputs if _is_out(dg, item.dep.handler) else spec.inputs
        positions = torch.as_tensor(item.idxs, dtype=torch.long)
        units = torch.as_tensor(item.root_idxs, dtype=torch.long) // width
        for param, dim in pairs:
            if getattr(module, param, None) is not None:
                slices.append(Slice(names[module], param, dim, positions, units))
    return slices, unknown


def _reaches_output(dg: tp.DependencyGraph, group) -> bool:
    """True when a unit of the group flows into the model's outputs."""
    return any(_is_out(dg, item.dep.handler) and not item.dep.target.outputs for item in group)


def _touches(group, types: tuple[type, ...]) -> bool:
    return any(isinstance(item.dep.target.module, types) for item in group)


def _sites(dg: tp.DependencyGraph, names: dict, group, slices: list[Slice]) -> list[Slice]:
    """Where the gate multiplies: every per-channel normalisation of the group (BN(z·a) = BN(a)
    in training mode would cancel a gate placed before it), and every producer that no
    normalisation follows directly."""
    scaled, normalized = set(), set()
    for item in group:
        module = item.dep.target.module
        if not (isinstance(module, nn.Module) and _is_out(dg, item.dep.handler)):
            continue
        if isinstance(module, NORMALIZATION):
            scaled.add(names[module])
        elif is_layer(module):
            scaled.add(names[module])
            if any(isinstance(node.module, NORMALIZATION) for node in item.dep.target.outputs):
                normalized.add(names[module])
    return [s for s in slices if s.module in scaled - normalized and s.dim == 0]


def _silent(dg: tp.DependencyGraph, names: dict, group, sites: list[Slice]) -> tuple[str, ...]:
    """The group's producers whose every output node is a normalisation the group gates."""
    gated = {s.module for s in sites}
    silent = []
    for item in group:
        module, outputs = item.dep.target.module, item.dep.target.outputs
        produces = isinstance(module, nn.Module) and is_layer(module) and _is_out(dg, item.dep.handler)
        if produces and outputs and all(names.get(node.module) in gated for node in outputs):
            silent.append(names[module])
    return tuple(dict.fromkeys(silent))


def find_units(
    model: nn.Module,
    example_input,
    heads: bool = True,
    inputs=None,
    skip: Callable[[str], bool] | None = None,
) -> Found:
    """Every prunable unit of ``model``: hidden neurons/channels, residual channels, heads, inputs.

    Args:
        inputs: gate the model's input features: True, False, or None (default) for
            inputs read by a Linear layer only (pixels of an MLP, not an image's channels).
        skip: root module names whose units are not searched for (excluded).
    """
    dg = build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    found = Found()
    visited: set[nn.Module] = set()
    for module in model.modules():
        packed = packed_attention_spec(module)
        if packed is not None and module in names:
            visited.update(module.modules())
            unit = _packed_unit(dg, names[module], module, packed, heads)
            if isinstance(unit, str):
                found.dense[names[module]] = unit
            else:
                found.units.append(unit)
            continue
        spec = attention_spec(module)
        if spec is None or module not in names:
            continue
        q, k, v = (getattr(module, a) for a in (spec.query, spec.key, spec.value))
        visited.update((q, k, v))
        if not heads or q not in dg.module2node:
            found.dense[names[module]] = "heads=False" if not heads else "not reached by the trace"
            continue
        if not q.out_features == k.out_features == v.out_features:
            found.dense[names[module]] = "grouped-query attention (K/V heads shared): not supported yet"
            continue
        if skip is not None and skip(names[module]):
            found.skipped.append(names[module])
            continue
        num_heads = int(getattr(module, spec.num_heads))
        width = q.out_features // num_heads
        group = _search(
            model,
            dg,
            names[module],
            q,
            dg.get_pruner_of_module(q).prune_out_channels,
            list(range(q.out_features)),
        )
        slices, unknown = _slices(dg, names, group, width)
        if unknown:
            found.dense[names[module]] = f"its heads reach {', '.join(sorted(unknown))}"
            continue
        sites = [s for s in slices if s.module == names[v] and s.dim == 0]
        found.units.append(Unit(names[module], "head", num_heads, slices, sites, (names[q], "out", width)))
    qkv = _qkv(model)
    for module in model.modules():
        if module in visited or module not in dg.module2node or not is_layer(module):
            continue
        pruner = dg.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        if skip is not None and skip(names[module]):
            found.skipped.append(names[module])
            continue
        outputs = list(range(pruner.get_out_channels(module)))
        group = _search(model, dg, names[module], module, pruner.prune_out_channels, outputs)
        visited.update(item.dep.target.module for item in group if _is_out(dg, item.dep.handler))
        if _reaches_output(dg, group):
            continue
        if any(item.dep.target.module in qkv for item in group):
            continue  # Q/K/V channels go only as whole heads
        if _touches(group, (nn.Embedding, nn.LayerNorm)):
            continue  # the residual stream of transformers: see sparsify(hidden=...)
        slices, unknown = _slices(dg, names, group)
        if unknown:
            found.dense[names[module]] = f"its units reach {', '.join(sorted(unknown))}"
            continue
        sites = _sites(dg, names, group, slices)
        prune = (names[module], "out", 1)
        silent = _silent(dg, names, group, sites)
        found.units.append(Unit(names[module], "output", len(group[0].idxs), slices, sites, prune, silent))
    found.units[:0] = _input_units(model, dg, names, inputs, skip)
    return found


def _packed_unit(
    dg: tp.DependencyGraph, name: str, module: nn.Module, spec: PackedAttentionSpec, heads: bool
) -> Unit | str:
    """The heads of a packed attention module as one unit group, or why they stay dense.

    The heads' slices are internal to the module (nothing outside it sees a head), so the
    graph only has to confirm the module is reached; its ``embed_dim`` channels are a
    different unit, coupled to the residual stream, and stay with the graph's groups.
    """
    if not heads:
        return "heads=False"
    if module not in dg.module2node:
        return "not reached by the trace"
    found = spec.heads(module, name)
    if isinstance(found, str):
        return found
    return Unit(name, "head", found.num_heads, found.slices, found.sites, (name, "heads", found.head_dim))


def _qkv(model: nn.Module) -> set[nn.Module]:
    out = set()
    for module in model.modules():
        spec = attention_spec(module)
        if spec is not None:
            out.update(getattr(module, a) for a in (spec.query, spec.key, spec.value))
    return out


def _input_units(model: nn.Module, dg: tp.DependencyGraph, names: dict, inputs, skip=None) -> list[Unit]:
    """Units of the model's input features: the inputs of layers that read them directly."""
    if inputs is False:
        return []
    units, seen = [], set()
    for module in model.modules():
        if module in seen or module not in dg.module2node or not is_layer(module):
            continue
        spec = layer_spec(module)
        pruner = dg.get_pruner_of_module(module)
        if not spec.inputs or pruner is None or pruner.get_in_channels(module) is None:
            continue
        if inputs is None and not isinstance(module, nn.Linear):
            continue
        if skip is not None and skip(names[module]):
            continue
        n = pruner.get_in_channels(module)
        group = _search(model, dg, names[module], module, pruner.prune_in_channels, list(range(n)))
        fed = any(item.dep.target.module in names and _is_out(dg, item.dep.handler) for item in group)
        if fed or _touches(group, (nn.Embedding,)):
            continue
        seen.update(item.dep.target.module for item in group)
        slices, unknown = _slices(dg, names, group)
        if unknown:
            continue
        units.append(Unit(names[module], "input", n, slices, list(slices), (names[module], "in", 1)))
    return units


def paper_units(layers: dict[str, nn.Module]) -> list[Unit]:
    """Louizos et al.'s groups (section 4.1): a Linear's input features, a conv's output channels.

    Each group owns its own layer's slice only (the weight column; the filter and bias).
    """
    units = []
    for name, module in layers.items():
        if isinstance(module, nn.Linear):
            n = module.in_features
            idx = torch.arange(n)
            slices = [Slice(name, "weight", 1, idx, idx)]
            units.append(Unit(name, "input", n, slices, slices, (name, "in", 1)))
        else:
            n = module.weight.shape[0]
            idx = torch.arange(n)
            params = ["weight"] + (["bias"] if module.bias is not None else [])
            slices = [Slice(name, p, 0, idx, idx) for p in params]
            units.append(Unit(name, "output", n, slices, slices, (name, "out", 1)))
    return units


def weight_units(layers: dict[str, nn.Module]) -> list[Unit]:
    """One gate per weight of each layer (the bias stays dense)."""
    units = []
    for name, module in layers.items():
        shape = module.weight.shape
        idx = torch.arange(module.weight.numel()).view(shape)
        slices = [Slice(name, "weight", None, idx, idx)]
        units.append(Unit(name, "weight", module.weight.numel(), slices, slices, None))
    return units
