"""Purging: from a gated model to a smaller plain torch model with the same eval outputs.

1. The test-time gates (eq. 13) are folded into the parameters they scale and every
   gate is removed (:func:`~ctrlsparse.gating.groups.bake`): a closed unit's site (its
   BatchNorm's affine entries, or its producer's rows and bias) is now exactly 0, so
   the unit contributes nothing downstream.
2. Each closed unit is removed physically from every layer it couples, through the
   model's dependency graph (Torch-Pruning's pruning groups: residual adds, concat,
   flatten, BatchNorm/LayerNorm slices, heads of Q/K/V ``nn.Linear`` attention).
3. A packed attention module with closed heads (``nn.MultiheadAttention``, whose
   ``head_dim`` is tied to ``embed_dim``) is replaced by its registered purge module
   (:class:`~ctrlsparse.gating.attention.PrunedMultiheadAttention`) holding the open heads.
4. Closed model inputs are dropped by a :class:`SelectInputs` in front of the layer
   that reads them: the model keeps its input contract.

A group with ``round_to`` (:func:`~ctrlsparse.sparsify`) keeps its open count at one that
``round_to`` allows: the feasibility phase decides the gates so, and where they were not
decided (a penalized run, say), purge keeps as many closed units, zeroed, as reach the next
allowed count. Those compute zeros, so the outputs stay exact and the widths stay aligned
(graph models; a decoder LM's purge removes exactly its closed units).

The result's outputs are checked against the gated model's on the example input.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.gating.decoder_purge import CONFIG_ATTRIBUTE, purge_decoder
from ctrlsparse.gating.decoders import LAYOUT_ATTRIBUTE, DecoderError
from ctrlsparse.gating.groups import EXAMPLE_ATTRIBUTE, bake, gate_groups
from ctrlsparse.gating.registry import attention_spec, packed_attention_spec
from ctrlsparse.gating.units import build_graph
from ctrlsparse.modelio import call_model, head, logits

TOLERANCE = 1e-4


class PurgeError(CtrlsparseError, RuntimeError):
    """The purged model's outputs differ from the gated model's."""


class SelectInputs(nn.Module):
    """``layer(x.index_select(dim, index))``: a layer that reads only the kept input features.

    Examples:
        >>> m = SelectInputs(torch.tensor([0, 2]), -1, nn.Linear(2, 1))
        >>> m(torch.ones(3, 4)).shape
        torch.Size([3, 1])
    """

    def __init__(self, index: torch.Tensor, dim: int, layer: nn.Module) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.dim = dim
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.index_select(self.dim, self.index))


def _channels(units: list[int], width: int) -> list[int]:
    return [u * width + j for u in units for j in range(width)]


@torch.no_grad()
def purge(model: nn.Module, example_input) -> nn.Module:
    """A copy of ``model`` made of plain torch modules, with every closed unit removed.

    In eval mode its outputs equal the gated model's (test-time gates, eq. 13); the copy
    has no parametrization and no gate, and ``torch.export`` accepts it.

    Args:
        model: a model after :func:`~ctrlsparse.sparsify`.
        example_input: one batch the model accepts (tensor, tuple or dict); a single
            example is enough.

    Raises:
        PurgeError: the purged outputs differ from the gated model's (an operation
            between a closed unit and its consumer maps 0 to a non-zero value).

    Examples:
        >>> small = purge(model, x[:1])  # doctest: +SKIP
        >>> torch.allclose(small(x), model.eval()(x), atol=1e-5)  # doctest: +SKIP
        True
    """
    was_training = model.training
    model.eval()
    example = head(example_input, 1)
    reference = logits(call_model(model, example))
    model.train(was_training)
    # A decoder LM becomes the same transformers class, smaller; other models go through the graph.
    decoder = LAYOUT_ATTRIBUTE in model.__dict__
    purged = purge_decoder(model) if decoder else _purge_graph(model, example)
    result = logits(call_model(purged, example))
    error = (result - reference).abs().max() / reference.abs().max().clamp_min(1e-12)
    if not bool(error <= TOLERANCE):
        why = (
            f"the {model.config.model_type!r} layout misses a coupling of {type(model).__name__}: register "
            "a corrected one with ctrlsparse.register_decoder, or leave the mismatched block dense with "
            "exclude=[...]"
            if decoder
            else "an operation after a closed unit does not map 0 to 0 (e.g. a sigmoid): exclude that unit's "
            "root"
        )
        raise PurgeError(
            f"the purged model's outputs differ from the gated model's (relative error {float(error):.3g}, "
            f"tolerance {TOLERANCE:g}); {why}"
        )
    return purged


def to_pretrained(model: nn.Module, example_input=None) -> nn.Module:
    """The purged decoder LM (:func:`purge`), of the same ``transformers`` class with a config
    of the smaller shape, ready for ``save_pretrained``.

    Its eval logits are checked against the gated model's on ``example_input``: by default the
    example given to :func:`~ctrlsparse.sparsify`, else the token ids ``0 … 15``.

    Raises:
        DecoderError: ``model`` is not a sparsified decoder LM, its purged blocks differ in size
            (a per-layer budget), or its family's config cannot state the shape;
            :func:`purge` still gives a plain torch model.
        PurgeError: the purged model's logits differ from the gated model's (relative error
            above ``TOLERANCE``).

    Examples:
        >>> small = to_pretrained(gated_llama)  # doctest: +SKIP
        >>> small.save_pretrained("small")  # doctest: +SKIP
    """
    if LAYOUT_ATTRIBUTE not in model.__dict__:
        raise DecoderError(
            f"{type(model).__name__} was not sparsified as a decoder LM: to_pretrained needs a "
            "transformers causal LM of a registered family passed to ctrlsparse.sparsify"
        )
    if example_input is None:
        example_input = model.__dict__.get(EXAMPLE_ATTRIBUTE)
    if example_input is None:
        device = next(model.parameters()).device
        example_input = {
            "input_ids": torch.arange(16, device=device).remainder(model.config.vocab_size)[None]
        }
    purged = purge(model, example_input)
    reason = purged.__dict__[CONFIG_ATTRIBUTE]
    if reason is not None:
        raise DecoderError(
            f"the purged {type(model).__name__} has no transformers config: {reason}. Use ctrlsparse.purge "
            "for a plain torch model (torch.export accepts it), or a uniform target shape"
        )
    return purged


def _purge_graph(model: nn.Module, example) -> nn.Module:
    """A purged copy of ``model``, with units removed through its dependency graph (steps 1-4)."""
    purged = copy.deepcopy(model).eval()
    plans = []
    for group in gate_groups(purged):
        closed = _aligned_closed(group, (group.deterministic() == 0).flatten())
        if group.prune is not None and bool(closed.any()):
            plans.append((group.prune, group.kind, closed.nonzero().flatten().tolist(), group))
    bake(purged)
    if plans:
        graph = build_graph(purged, example)
        removals: dict[str, set[int]] = {}  # producer -> its output channels to remove, original numbering
        heads: dict[str, int] = {}
        packed: dict[str, list[int]] = {}  # packed attention -> its heads to keep
        selections = []
        for (module_name, side, width), kind, units, group in plans:
            if side == "heads":
                closed = set(units)
                # Every head closed: keep the first (its V rows are zeroed), as a layer keeps one unit.
                packed[module_name] = [h for h in range(group.num_units) if h not in closed] or units[:1]
            elif side == "out":
                if kind == "head" and len(units) >= group.num_units:
                    units = units[1:]  # every head closed: keep one whole head (V rows zeroed), not a channel
                removals.setdefault(module_name, set()).update(_channels(units, width))
                if kind == "head":
                    heads[group.name] = group.num_units - len(units)
            else:
                producer = _producer_channels(purged, graph, module_name, set(units))
                if producer is None:
                    selections.append((units, group))
                elif producer[1]:
                    removals.setdefault(producer[0], set()).update(producer[1])
        for module_name, channels in removals.items():
            module = purged.get_submodule(module_name)
            pruner = graph.get_pruner_of_module(module)
            channels = sorted(channels)
            if len(channels) >= pruner.get_out_channels(module):
                channels = channels[1:]  # a layer keeps one (zeroed) unit, so every shape stays valid
            if channels:
                graph.get_pruning_group(module, pruner.prune_out_channels, channels).prune()
        for name, kept in heads.items():
            attention = purged.get_submodule(name)
            spec = attention_spec(attention)
            if spec is not None and spec.update is not None:
                spec.update(attention, max(kept, 1))
        for units, group in selections:
            _select_inputs(purged, graph, set(units), group)
        for module_name, kept in packed.items():
            spec = packed_attention_spec(purged.get_submodule(module_name))
            purged = spec.purge(purged, module_name, kept)
    return purged


def _aligned_closed(group, closed: torch.Tensor) -> torch.Tensor:
    """``closed`` less the first closed units that bring the open count up to one the group's
    ``round_to`` allows (at least one unit, as a layer keeps one): those stay, zeroed."""
    if group.round_to == 1:
        return closed
    open_count = int((~closed).sum())
    extra = group.aligned(max(open_count, 1), up=True) - open_count
    if extra <= 0:
        return closed
    closed = closed.clone()
    closed[closed.nonzero().flatten()[:extra]] = False
    return closed


def _producer_channels(model, graph, module_name: str, closed: set[int]) -> tuple[str, list[int]] | None:
    """For closed input features produced by a layer: that layer and its channels none of
    whose columns is open; None when the features are the model's inputs."""
    module = model.get_submodule(module_name)
    pruner = graph.get_pruner_of_module(module)
    width = pruner.get_in_channels(module)
    producer = _producer_item(model, graph, module, pruner, list(range(width)))
    if producer is None:
        return None
    name, item = producer
    channels = sorted(set(item.idxs))
    open_columns = [c for c in range(width) if c not in closed]
    if open_columns:
        # A channel feeds several columns through a flatten or reshape, and the dependency
        # graph lists each channel once, with one of its columns: so ask which channels
        # the open columns use, rather than which columns each channel has.
        used = set(_producer_item(model, graph, module, pruner, open_columns)[1].idxs)
        channels = [c for c in channels if c not in used]
    return name, channels


def _producer_item(model, graph, module, pruner, columns: list[int]):
    """(name, dependency item) of the layer whose output channels ``columns`` of ``module`` read."""
    names = {m: n for n, m in model.named_modules()}
    for item in graph.get_pruning_group(module, pruner.prune_in_channels, columns):
        target = item.dep.target.module
        if (
            isinstance(target, nn.Module)
            and target in names
            and graph.is_out_channel_pruning_fn(item.dep.handler)
        ):
            return names[target], item
    return None


def _select_inputs(model, graph, closed: set[int], group) -> None:
    """Drop closed model inputs: the layers reading them get fewer columns and a SelectInputs."""
    for s in group.slices:
        if s.param != "weight":
            continue
        layer = model.get_submodule(s.module)
        closed_positions = sorted(int(p) for p, u in zip(s.positions, s.units) if int(u) in closed)
        width = layer.weight.shape[s.dim]
        if not closed_positions or len(closed_positions) == width:
            continue
        gone = set(closed_positions)
        keep = torch.tensor([i for i in range(width) if i not in gone], device=layer.weight.device)
        graph.get_pruner_of_module(layer).prune_in_channels(layer, closed_positions)
        parent, _, child = s.module.rpartition(".")
        dim = -1 if isinstance(layer, nn.Linear) else 1
        setattr(model.get_submodule(parent), child, SelectInputs(keep, dim, layer))
