"""Purging a decoder LM: the same ``transformers`` class, with closed units removed.

The gates are folded into the weights first (:func:`~ctrlsparse.gating.groups.bake`),
so a closed unit contributes exactly 0; then every slice of it is cut out of the
layers its :class:`~ctrlsparse.gating.decoders.DecoderLayout` names. Two things are
not plain slicing:

- **RMSNorm over a pruned hidden dimension.** In the gated model the closed
  dimensions are 0, and the norm divides by :math:`\\sqrt{\\tfrac1D \\sum_{d} x_d^2 +
  \\epsilon}` over all :math:`D` of them. Over the :math:`D'` kept ones, with
  :math:`c = D / D'`,

  .. math::
      \\frac{x}{\\sqrt{\\tfrac1D \\sum x^2 + \\epsilon}}
      = \\sqrt{c}\\, \\frac{x}{\\sqrt{\\tfrac1{D'} \\sum x^2 + c\\,\\epsilon}},

  so the purged norm gets weight :math:`\\sqrt{c}\\,w` (Gemma's :math:`1 + w` becomes
  :math:`\\sqrt{c}(1 + w)`) and eps :math:`c\\,\\epsilon`: exact, not an approximation.
  Gemma also scales its embeddings by :math:`\\sqrt{D}`, which its config recomputes as
  :math:`\\sqrt{D'}`: the embedding weight takes the factor :math:`\\sqrt{c}`.
- **Tied LM heads.** The baked embedding holds the gate values (a test-time hard
  concrete gate may lie strictly between 0 and 1, eq. 13 of Louizos et al., 2018), the
  LM head must not: the purged model gets its own LM head weight and
  ``tie_word_embeddings=False``.

When every block keeps the same numbers of heads, key-value heads and MLP neurons, the
config is updated to that shape, so ``save_pretrained`` and ``from_pretrained`` give the
same model back (:func:`~ctrlsparse.gating.purging.to_pretrained`).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from ctrlsparse.gating.decoders import LAYOUT_ATTRIBUTE, DecoderLayout, Norm, Projection
from ctrlsparse.gating.groups import bake, gate_groups

CONFIG_ATTRIBUTE = "_ctrlsparse_config_shape"
"""Attribute of a purged decoder LM: None when its config describes it, else why not."""


def _kept(values: torch.Tensor) -> list[int]:
    """Indices of the open units; a layer whose units all closed keeps one (its gate baked
    to 0, so it contributes nothing), as :func:`~ctrlsparse.purge` does, so shapes stay valid."""
    kept = (values > 0).nonzero().flatten().tolist()
    return kept or [0]


@torch.no_grad()
def _select(module: nn.Module, param: str, dim: int, index: list[int]) -> None:
    tensor = getattr(module, param)
    index_tensor = torch.tensor(index, device=tensor.device)
    setattr(module, param, nn.Parameter(tensor.index_select(dim, index_tensor).clone()))


def _resize(module: nn.Module) -> None:
    """Make a sliced module's size attributes match its weight."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, nn.Embedding):
        module.embedding_dim = weight.shape[1]
    elif hasattr(module, "nf"):  # transformers' Conv1D: weight (in, out)
        module.nf = weight.shape[1]


def _rows(model: nn.Module, projections: list[Projection], positions: list[list[int]]) -> None:
    """Keep ``positions`` of each projection's outputs; projections sharing a packed
    weight keep the union, in ascending order (which preserves every packing in use)."""
    per_module: dict[Projection, set[int]] = {}
    for p, kept in zip(projections, positions):
        per_module.setdefault(Projection(p.name, p.transposed), set()).update(kept)
    for p, kept in per_module.items():
        module, index = model.get_submodule(p.name), sorted(kept)
        _select(module, "weight", p.out_dim, index)
        if getattr(module, "bias", None) is not None:
            _select(module, "bias", 0, index)
        _resize(module)


def _columns(model: nn.Module, projection: Projection, index: list[int]) -> None:
    module = model.get_submodule(projection.name)
    _select(module, "weight", projection.in_dim, index)
    _resize(module)


def _heads(model: nn.Module, layout: DecoderLayout, kept: dict) -> list[tuple[int, int]]:
    """Cut closed key-value heads and their query heads; (heads, kv_heads) kept per block."""
    shapes = []
    for a in layout.attentions:
        kv = kept.get((a.name, "head"))
        if kv is None:
            shapes.append((a.heads, a.kv_heads))
            continue
        per = a.heads // a.kv_heads
        query = [u * per + i for u in kv for i in range(per)]
        d = a.head_dim
        _rows(
            model,
            [a.query, a.key, a.value],
            [[a.query.base + h * a.query.stride + j for h in query for j in range(d)]]
            + [[p.base + u * p.stride + j for u in kv for j in range(d)] for p in (a.key, a.value)],
        )
        _columns(model, a.output, [h * d + j for h in query for j in range(d)])
        module = model.get_submodule(a.name)
        for attribute, value in (
            ("num_heads", len(query)),
            ("num_key_value_heads", len(kv)),
            ("split_size", len(query) * d),
        ):
            if hasattr(module, attribute):
                setattr(module, attribute, value)
        if getattr(module, "config", None) is not None:
            # Phi-3 splits its packed Q/K/V at config.num_attention_heads: a block whose head
            # count differs from the others (a per-layer budget) reads its own copy.
            module.config = copy.copy(module.config)
            module.config.num_attention_heads, module.config.num_key_value_heads = len(query), len(kv)
        shapes.append((len(query), len(kv)))
    return shapes


def _mlps(model: nn.Module, layout: DecoderLayout, units: dict) -> list[int]:
    sizes = []
    for m in layout.mlps:
        kept = units.get((m.name, "output"))
        if kept is None:
            sizes.append(m.size)
            continue
        _rows(model, list(m.readers), [[p.base + i for i in kept] for p in m.readers])
        _columns(model, m.writer, kept)
        sizes.append(len(kept))
    return sizes


@torch.no_grad()
def _hidden(model: nn.Module, layout: DecoderLayout, kept: list[int]) -> None:
    """Cut closed residual dimensions everywhere and fold the RMSNorm factor (module docstring)."""
    c = layout.hidden / len(kept)
    for name in layout.embeddings:
        embedding = model.get_submodule(name)
        _select(embedding, "weight", 1, kept)
        _resize(embedding)
        if layout.embed_scale:  # Gemma: the config's sqrt(hidden) becomes sqrt(D')
            embedding.weight.mul_(math.sqrt(c))
            embedding.scalar_embed_scale = len(kept) ** 0.5
            embedding.embed_scale.fill_(len(kept) ** 0.5)
    for name in layout.norms:
        norm = model.get_submodule(name)
        _select(norm, "weight", 0, kept)
        if layout.norm == Norm.RMS_OFFSET:
            norm.weight.copy_((1 + norm.weight) * math.sqrt(c) - 1)
        else:
            norm.weight.mul_(math.sqrt(c))
        attribute = "variance_epsilon" if hasattr(norm, "variance_epsilon") else "eps"
        setattr(norm, attribute, getattr(norm, attribute) * c)
    readers = [p for a in layout.attentions for p in (a.query, a.key, a.value)]
    readers += [p for m in layout.mlps for p in m.readers] + ([layout.lm_head] if layout.lm_head else [])
    for p in dict.fromkeys(Projection(p.name, p.transposed) for p in readers):
        _columns(model, p, kept)
    writers = [a.output for a in layout.attentions] + [m.writer for m in layout.mlps]
    _rows(model, writers, [kept] * len(writers))


@torch.no_grad()
def purge_decoder(model: nn.Module) -> nn.Module:
    """A copy of a gated decoder LM, of the same class, with every closed unit removed.

    Called by :func:`~ctrlsparse.purge` for the models :func:`~ctrlsparse.sparsify` gated
    as decoder LMs; its eval logits equal the gated model's (test-time gates, eq. 13).

    Examples:
        >>> small = purge_decoder(gated_llama)  # doctest: +SKIP
        >>> small.config.num_key_value_heads  # doctest: +SKIP
        1
    """
    layout: DecoderLayout = model.__dict__[LAYOUT_ATTRIBUTE]
    purged = copy.deepcopy(model).eval()
    kept = {(g.name, g.kind): _kept(g.deterministic()) for g in gate_groups(purged)}
    _close_blocks(purged, layout, kept)
    kept_hidden = kept.get((layout.base, "hidden"))
    if layout.lm_head is None and kept_hidden is not None:
        # The baked embedding will hold the gates; the LM head reads the original weight.
        head = purged.get_submodule(layout.embeddings[0]).parametrizations.weight.original
        purged.lm_head.weight = nn.Parameter(head.detach().clone())
        purged.config.tie_word_embeddings = False
        layout = dataclasses.replace(layout, lm_head=Projection("lm_head"))
    bake(purged)
    kept_layers = kept.get((layout.base, "layer"))
    full = layout
    if kept_layers is not None:
        layout = _layout_of(layout, kept_layers)
    heads = _heads(purged, layout, kept)
    sizes = _mlps(purged, layout, kept)
    if kept_hidden is not None:
        _hidden(purged, layout, kept_hidden)
    if kept_layers is not None:
        _delete_layers(purged, full, kept_layers)
    purged.__dict__.pop(LAYOUT_ATTRIBUTE, None)
    purged.__dict__[CONFIG_ATTRIBUTE] = _update_config(purged.config, layout, heads, sizes, kept_hidden)
    return purged


def _close_blocks(model: nn.Module, layout: DecoderLayout, kept: dict) -> None:
    """A closed attention (MLP) block keeps one head (neuron): its writer is baked to 0, so
    the rest of it goes, and the layer's shapes stay valid."""
    for group in gate_groups(model):
        if (group.name, group.kind) not in ((layout.base, "attention"), (layout.base, "mlp")):
            continue
        parts = layout.attentions if group.kind == "attention" else layout.mlps
        unit = "head" if group.kind == "attention" else "output"
        for i in (group.deterministic().flatten() == 0).nonzero().flatten().tolist():
            kept[(parts[i].name, unit)] = kept.get((parts[i].name, unit), [0])[:1]


_FFN_FIELDS = {"gpt2": "n_inner", "gpt_neox": "intermediate_size", "opt": "ffn_dim"}
"""The config field of the MLP size, in the families whose config_update is None."""


def _layout_of(layout: DecoderLayout, kept: list[int]) -> DecoderLayout:
    """The layout of the ``kept`` decoder layers only (closed layers are deleted, not sliced)."""
    prefixes = tuple(f"{layout.layers}.{i}." for i in kept)
    norms = tuple(n for n in layout.norms if not n.startswith(layout.layers + ".") or n.startswith(prefixes))
    return dataclasses.replace(
        layout,
        attentions=tuple(layout.attentions[i] for i in kept),
        mlps=tuple(layout.mlps[i] for i in kept),
        norms=norms,
    )


def _delete_layers(model: nn.Module, layout: DecoderLayout, kept: list[int]) -> None:
    """Delete closed decoder layers (their gate baked to 0: they add nothing to the residual
    stream) and renumber the rest, whose index the KV cache and ``config.layer_types`` follow."""
    stack = model.get_submodule(layout.layers)
    parent, _, child = layout.layers.rpartition(".")
    setattr(model.get_submodule(parent), child, nn.ModuleList(stack[i] for i in kept))
    for index, layer in enumerate(model.get_submodule(layout.layers)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    config = model.config
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]


def _update_config(config, layout: DecoderLayout, heads, sizes, kept_hidden) -> str | None:
    """Write the purged shape into ``config`` when it is uniform; else say why it cannot."""
    if len(set(heads)) > 1 or len(set(sizes)) > 1:
        return (
            f"blocks kept different sizes (heads, key-value heads per block: {heads}; MLP sizes: {sizes}); "
            "a transformers config has one size for all blocks"
        )
    (num_heads, kv_heads), intermediate = heads[0], sizes[0]
    a = layout.attentions[0]
    hidden = layout.hidden if kept_hidden is None else len(kept_hidden)
    if layout.config_update is None:
        if (num_heads, kv_heads) != (a.heads, a.kv_heads) or hidden != layout.hidden:
            return (
                f"{config.model_type}'s config derives the head width from hidden_size // "
                "num_attention_heads, so it cannot describe fewer heads of the same width"
            )
        setattr(config, _FFN_FIELDS[config.model_type], intermediate)
        return None
    shape = {
        "heads": num_heads,
        "kv_heads": kv_heads,
        "intermediate": intermediate,
        "hidden": hidden,
        "head_dim": a.head_dim,
    }
    layout.config_update(config, shape)
    if kept_hidden is not None:
        config.rms_norm_eps *= layout.hidden / hidden
    return None
