"""Units of decoder language models, read from their architecture instead of a traced graph.

A causal LM from ``transformers`` repeats one block many times, and its couplings are
known by construction: a key-value head and the query heads that read it, the rows of
an MLP's up/gate projections and the columns of its down projection, and the residual
(hidden) dimension shared by every layer. Tracing these with Torch-Pruning's dependency
graph is slow (its group search follows every residual add of every layer: a 2-layer
Llama does not finish in 90 s) and fragile (cache tuples, ``Conv1D``). So each family
registers a *layout finder* (:func:`register_decoder`, keyed by ``config.model_type``)
that names its projections; :func:`decoder_units` turns a layout into gate groups, and
:mod:`ctrlsparse.gating.decoder_purge` removes closed units from it.

The units, per block:

- ``head``: one unit per key-value head with the ``heads // kv_heads`` query heads that
  read it (grouped-query attention; one query head per unit without it). The gate scales
  the output projection's columns of those query heads: ``o(z · a) = z · o(a)``, so the
  head's contribution is exactly gated whatever the softmax does.
- ``output`` of an MLP: one unit per intermediate neuron (the gate and up rows and the
  down column, for SwiGLU); the gate scales the down projection's columns.
- ``hidden`` (with ``hidden=True``): one unit per residual-stream dimension, shared by
  the embeddings, every residual writer (attention and MLP output rows), every reader
  (Q/K/V, gate/up columns), every norm and the LM head. The gate scales the embeddings'
  columns and the writers' rows, so a closed dimension of the residual stream is exactly
  0 everywhere. Only RMSNorm families: RMSNorm of a vector with zeros in the closed
  dimensions equals RMSNorm of the open ones with a known factor, which purging folds
  into the norm's weight and eps (:mod:`~ctrlsparse.gating.decoder_purge`); LayerNorm
  subtracts the mean of all dimensions, so no such folding exists.
- ``layer`` (with ``layers=True``): one unit per decoder layer, owning every parameter of
  it; the gate scales the attention and MLP output projections whole, so a closed layer
  adds 0 to the residual stream and purging deletes it.
- ``attention`` and ``mlp`` (with ``blocks=True``): Sheared-LLaMA's separate masks on
  whole attention blocks and whole MLP blocks, one unit per block. An attention unit
  owns the attention module's parameters and the norm before it, and its gate scales the
  output projection whole; an MLP unit owns the MLP's projections and its norm, and its
  gate scales the down projection whole. A closed block adds exactly 0 to the residual
  stream; purging keeps one zeroed head or neuron of it, so that the layer's shapes stay
  valid (its blocks then differ from the others, which a per-layer config cannot state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.gating.groups import Slice
from ctrlsparse.gating.units import Unit

LAYOUT_ATTRIBUTE = "_ctrlsparse_decoder_layout"
"""Attribute of a sparsified decoder LM holding its :class:`DecoderLayout` (copied by deepcopy)."""


class DecoderError(CtrlsparseError, ValueError):
    """A decoder LM's units cannot be found, or a request does not fit its architecture."""


@dataclass(frozen=True)
class Projection:
    """A linear map of a decoder block, and where one unit's channels sit in its output.

    Channel ``j`` of unit ``u`` is output ``base + u * stride + j``: Q, K and V may share
    one packed weight (GPT-2's ``c_attn``: blocks of ``hidden`` channels; GPT-NeoX's
    ``query_key_value``: ``3 * head_dim`` channels per head).

    Attributes:
        name: the module's name in the model.
        transposed: the weight is stored ``(in, out)`` (transformers' ``Conv1D``).
        base: the first output channel of this projection's block.
        stride: output channels between two consecutive units.
    """

    name: str
    transposed: bool = False
    base: int = 0
    stride: int = 1

    @property
    def out_dim(self) -> int:
        return 1 if self.transposed else 0

    @property
    def in_dim(self) -> int:
        return 0 if self.transposed else 1

    def channels(self, units: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(output positions, their unit) of ``units`` units of ``width`` channels each."""
        unit = torch.arange(units).repeat_interleave(width)
        return self.base + unit * self.stride + torch.arange(width).repeat(units), unit

    def rows(self, module: nn.Module, positions: torch.Tensor, units: torch.Tensor) -> list[Slice]:
        """The slices of output ``positions``: weight rows (columns if transposed) and bias entries."""
        slices = [Slice(self.name, "weight", self.out_dim, positions, units)]
        if getattr(module, "bias", None) is not None:
            slices.append(Slice(self.name, "bias", 0, positions, units))
        return slices

    def columns(self, positions: torch.Tensor, units: torch.Tensor) -> list[Slice]:
        """The slice of input ``positions``."""
        return [Slice(self.name, "weight", self.in_dim, positions, units)]


@dataclass(frozen=True)
class Attention:
    """One attention module: its projections and head counts."""

    name: str
    query: Projection
    key: Projection
    value: Projection
    output: Projection
    heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class MLP:
    """One MLP: the projections reading the residual stream and the one writing back."""

    name: str
    readers: tuple[Projection, ...]
    writer: Projection
    size: int


class Norm:
    """How a family normalizes the residual stream (the vocabulary of :class:`DecoderLayout`)."""

    RMS = "rms"
    RMS_OFFSET = "rms_offset"
    """Gemma: ``x / rms(x) * (1 + weight)``."""
    LAYER = "layer"


@dataclass(frozen=True)
class DecoderLayout:
    """Where a decoder LM's units live: what a family's layout finder returns.

    Attributes:
        base: the name of the module holding the blocks (``"model"``, ``"transformer"``).
        layers: the name of the ``nn.ModuleList`` of decoder layers.
        attentions, mlps: one per block, in order.
        embeddings: modules whose ``weight[:, d]`` writes residual dimension ``d``
            (token and learned position embeddings).
        norms: every norm over the residual dimension, the final one included.
        lm_head: the LM head, None when it shares the token embedding's weight.
        hidden: the residual-stream width.
        norm: the kind of those norms (:class:`Norm`).
        embed_scale: the token embedding multiplies its output by ``sqrt(hidden)`` (Gemma).
        config_update: the family's config fields of a purged shape, or None when the
            family's config cannot describe a pruned model (heads tied to ``hidden``).
    """

    base: str
    layers: str
    attentions: tuple[Attention, ...]
    mlps: tuple[MLP, ...]
    embeddings: tuple[str, ...]
    norms: tuple[str, ...]
    lm_head: Projection | None
    hidden: int
    norm: str
    embed_scale: bool = False
    config_update: Callable[[object, dict[str, int]], None] | None = None


LayoutFinder = Callable[[nn.Module], DecoderLayout]
_FINDERS: dict[str, LayoutFinder] = {}


def register_decoder(model_type: str, finder: LayoutFinder) -> None:
    """Teach ctrlsparse where the units of a decoder family (``config.model_type``) live.

    Examples:
        >>> register_decoder("my_llama", _llama_like)
    """
    _FINDERS[model_type] = finder


def decoder_layout(model: nn.Module) -> DecoderLayout | None:
    """The layout of a registered decoder LM (``*ForCausalLM``), or None for other models.

    Raises:
        DecoderError: the model is of a registered family but has no LM head, or a module
            its family's layout names is missing or is not a linear layer (named).

    Examples:
        >>> decoder_layout(nn.Linear(2, 2)) is None
        True
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    finder = _FINDERS.get(model_type)
    if finder is None:
        return None
    if not hasattr(model, "lm_head"):
        raise DecoderError(
            f"{type(model).__name__} is a {model_type!r} model without an LM head: sparsify its "
            f"*ForCausalLM class (registered families: {', '.join(sorted(_FINDERS))})"
        )
    try:
        layout = finder(model)
    except (AttributeError, KeyError) as error:  # a module the family's layout names is not there
        raise DecoderError(
            f"the {model_type!r} layout does not fit {type(model).__name__}: {error}. {_REMEDY}"
        ) from error
    _check_layout(model, layout)
    return layout


_REMEDY = (
    "Register a layout that names this model's projections with ctrlsparse.register_decoder(model_type, "
    "finder) (see ctrlsparse.gating.decoders), or sparsify it with structure='weight' or 'paper', "
    "which read no layout"
)


def _check_layout(model: nn.Module, layout: DecoderLayout) -> None:
    """Every projection a layout names is a linear layer of the model; the first one that is not is named."""
    modules = dict(model.named_modules())
    projections = [p for a in layout.attentions for p in (a.query, a.key, a.value, a.output)]
    projections += [p for m in layout.mlps for p in (*m.readers, m.writer)]
    for p in projections:
        module = modules.get(p.name)
        if module is None or getattr(module, "weight", None) is None or module.weight.dim() != 2:
            found = "no such module" if module is None else f"a {type(module).__name__} with no 2-D weight"
            raise DecoderError(
                f"the {model.config.model_type!r} layout names {p.name!r} as a projection of "
                f"{type(model).__name__}, but it is {found}. {_REMEDY}"
            )


def part(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model``, for layout finders: a missing one is a
    :class:`DecoderError` that names it.

    Examples:
        >>> part(nn.Sequential(nn.Linear(2, 2)), "0").out_features
        2
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise DecoderError(
            f"{type(model).__name__} has no module {name!r}, which the {model.config.model_type!r} "
            f"layout reads. {_REMEDY}"
        ) from None


def _lm_head(model: nn.Module, embedding: str) -> Projection | None:
    tied = model.lm_head.weight is model.get_submodule(embedding).weight
    return None if tied else Projection("lm_head")


def _llama_like(model: nn.Module) -> DecoderLayout:
    """Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3: ``model.layers[i].self_attn`` / ``.mlp``."""
    config = model.config
    attentions, mlps, norms = [], [], []
    for i in range(len(model.model.layers)):
        prefix = f"model.layers.{i}"
        a, m = part(model, f"{prefix}.self_attn"), part(model, f"{prefix}.mlp")
        d = a.head_dim
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        if hasattr(a, "qkv_proj"):  # Phi-3: [Q | K | V] rows of one Linear
            qkv = f"{prefix}.self_attn.qkv_proj"
            q, k = Projection(qkv, stride=d), Projection(qkv, base=heads * d, stride=d)
            v = Projection(qkv, base=(heads + kv) * d, stride=d)
        else:
            q, k, v = (Projection(f"{prefix}.self_attn.{p}_proj", stride=d) for p in "qkv")
        attentions.append(
            Attention(f"{prefix}.self_attn", q, k, v, Projection(f"{prefix}.self_attn.o_proj"), heads, kv, d)
        )
        if hasattr(m, "gate_up_proj"):  # Phi-3: [gate | up] rows of one Linear
            size = part(model, f"{prefix}.mlp.down_proj").in_features
            packed = f"{prefix}.mlp.gate_up_proj"
            readers = (Projection(packed), Projection(packed, base=size))
        else:
            size = part(model, f"{prefix}.mlp.up_proj").out_features
            readers = (Projection(f"{prefix}.mlp.gate_proj"), Projection(f"{prefix}.mlp.up_proj"))
        mlps.append(MLP(f"{prefix}.mlp", readers, Projection(f"{prefix}.mlp.down_proj"), size))
        norms += [f"{prefix}.input_layernorm", f"{prefix}.post_attention_layernorm"]
    gemma = config.model_type == "gemma"
    return DecoderLayout(
        "model",
        "model.layers",
        tuple(attentions),
        tuple(mlps),
        ("model.embed_tokens",),
        (*norms, "model.norm"),
        _lm_head(model, "model.embed_tokens"),
        config.hidden_size,
        Norm.RMS_OFFSET if gemma else Norm.RMS,
        embed_scale=gemma,
        config_update=_llama_config,
    )


def _llama_config(config, shape: dict[str, int]) -> None:
    config.head_dim = shape["head_dim"]  # explicit: the default hidden // heads would change
    config.num_attention_heads = shape["heads"]
    config.num_key_value_heads = shape["kv_heads"]
    config.intermediate_size = shape["intermediate"]
    config.hidden_size = shape["hidden"]


def _gpt2(model: nn.Module) -> DecoderLayout:
    """GPT-2: ``transformer.h[i].attn.c_attn`` packs [Q | K | V] in a ``Conv1D``."""
    config, attentions, mlps, norms = model.config, [], [], []
    e, heads = config.n_embd, config.n_head
    d = e // heads
    for i, block in enumerate(model.transformer.h):
        prefix = f"transformer.h.{i}"
        c_attn = f"{prefix}.attn.c_attn"
        q, k, v = (Projection(c_attn, True, base, d) for base in (0, e, 2 * e))
        attentions.append(
            Attention(f"{prefix}.attn", q, k, v, Projection(f"{prefix}.attn.c_proj", True), heads, heads, d)
        )
        size = block.mlp.c_fc.nf
        mlps.append(
            MLP(
                f"{prefix}.mlp",
                (Projection(f"{prefix}.mlp.c_fc", True),),
                Projection(f"{prefix}.mlp.c_proj", True),
                size,
            )
        )
        norms += [f"{prefix}.ln_1", f"{prefix}.ln_2"]
    return DecoderLayout(
        "transformer",
        "transformer.h",
        tuple(attentions),
        tuple(mlps),
        ("transformer.wte", "transformer.wpe"),
        (*norms, "transformer.ln_f"),
        _lm_head(model, "transformer.wte"),
        e,
        Norm.LAYER,
    )


def _gpt_neox(model: nn.Module) -> DecoderLayout:
    """GPT-NeoX / Pythia: ``query_key_value`` holds [q | k | v] per head, ``3 * head_dim`` rows each."""
    config, attentions, mlps, norms = model.config, [], [], []
    heads = config.num_attention_heads
    d = config.hidden_size // heads
    for i, layer in enumerate(model.gpt_neox.layers):
        prefix = f"gpt_neox.layers.{i}"
        qkv = f"{prefix}.attention.query_key_value"
        q, k, v = (Projection(qkv, base=base, stride=3 * d) for base in (0, d, 2 * d))
        attentions.append(
            Attention(
                f"{prefix}.attention", q, k, v, Projection(f"{prefix}.attention.dense"), heads, heads, d
            )
        )
        size = layer.mlp.dense_h_to_4h.out_features
        mlps.append(
            MLP(
                f"{prefix}.mlp",
                (Projection(f"{prefix}.mlp.dense_h_to_4h"),),
                Projection(f"{prefix}.mlp.dense_4h_to_h"),
                size,
            )
        )
        norms += [f"{prefix}.input_layernorm", f"{prefix}.post_attention_layernorm"]
    return DecoderLayout(
        "gpt_neox",
        "gpt_neox.layers",
        tuple(attentions),
        tuple(mlps),
        ("gpt_neox.embed_in",),
        (*norms, "gpt_neox.final_layer_norm"),
        _lm_head(model, "gpt_neox.embed_in"),
        config.hidden_size,
        Norm.LAYER,
    )


def _opt(model: nn.Module) -> DecoderLayout:
    """OPT: ``model.decoder.layers[i].self_attn`` with q/k/v/out_proj, ``fc1``/``fc2``."""
    config, attentions, mlps, norms = model.config, [], [], []
    heads = config.num_attention_heads
    d = config.hidden_size // heads
    for i, layer in enumerate(model.model.decoder.layers):
        prefix = f"model.decoder.layers.{i}"
        q, k, v = (Projection(f"{prefix}.self_attn.{p}_proj", stride=d) for p in "qkv")
        attentions.append(
            Attention(
                f"{prefix}.self_attn", q, k, v, Projection(f"{prefix}.self_attn.out_proj"), heads, heads, d
            )
        )
        size = layer.fc1.out_features
        mlps.append(MLP(prefix, (Projection(f"{prefix}.fc1"),), Projection(f"{prefix}.fc2"), size))
        norms += [f"{prefix}.self_attn_layer_norm", f"{prefix}.final_layer_norm"]
    return DecoderLayout(
        "model.decoder",
        "model.decoder.layers",
        tuple(attentions),
        tuple(mlps),
        ("model.decoder.embed_tokens",),
        tuple(norms),
        _lm_head(model, "model.decoder.embed_tokens"),
        config.hidden_size,
        Norm.LAYER,
    )


for _family in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"):
    register_decoder(_family, _llama_like)
register_decoder("gpt2", _gpt2)
register_decoder("gpt_neox", _gpt_neox)
register_decoder("opt", _opt)


def decoder_units(
    model: nn.Module,
    layout: DecoderLayout,
    heads: bool = True,
    hidden: bool = False,
    layers: bool = False,
    blocks: bool = False,
) -> list[Unit]:
    """The gate groups' units of a decoder LM: heads and MLP neurons per block, the hidden
    dimension (``hidden``), whole decoder layers (``layers``), and whole attention and MLP
    blocks (``blocks``).

    Examples:
        >>> units = decoder_units(llama, decoder_layout(llama), hidden=True)  # doctest: +SKIP
        >>> [(u.name, u.kind, u.num_units) for u in units][-1]  # doctest: +SKIP
        ('model', 'hidden', 64)
    """
    modules = dict(model.named_modules())
    units = []
    for a in layout.attentions if heads else ():
        group = a.heads // a.kv_heads
        q_rows = a.query.channels(a.heads, a.head_dim)
        kv_unit = (q_rows[0], q_rows[1] // group)  # query head h reads key-value head h // group
        slices = a.query.rows(modules[a.query.name], *kv_unit)
        for p in (a.key, a.value):
            slices += p.rows(modules[p.name], *p.channels(a.kv_heads, a.head_dim))
        columns = a.output.columns(torch.arange(a.heads * a.head_dim), kv_unit[1])
        prune = (a.name, "kv_heads", a.head_dim)
        units.append(Unit(a.name, "head", a.kv_heads, slices + columns, columns, prune))
    for m in layout.mlps:
        index = torch.arange(m.size)
        slices = [s for p in m.readers for s in p.rows(modules[p.name], p.base + index, index)]
        columns = m.writer.columns(index, index)
        units.append(Unit(m.name, "output", m.size, slices + columns, columns, (m.name, "intermediate", 1)))
    if hidden:
        units.append(_hidden_unit(model, layout, modules))
    if layers:
        units.append(_layer_unit(model, layout, modules))
    if blocks:
        units += _block_units(layout, modules)
    return units


def _whole(modules: dict[str, nn.Module], names: list[str], unit: int) -> list[Slice]:
    """Every parameter of the modules ``names`` (each once), as slices of one unit."""
    slices = []
    for name in dict.fromkeys(names):
        for param, _ in modules[name].named_parameters():
            module, _, leaf = f"{name}.{param}".rpartition(".")
            slices.append(Slice.of_whole(module, leaf, unit))
    return slices


def _scale_whole(modules: dict[str, nn.Module], writer: Projection, unit: int) -> list[Slice]:
    """Where a gate silences a whole block: its residual writer's weight and bias."""
    sites = [Slice.of_whole(writer.name, "weight", unit)]
    if getattr(modules[writer.name], "bias", None) is not None:
        sites.append(Slice.of_whole(writer.name, "bias", unit))
    return sites


def _block_units(layout: DecoderLayout, modules: dict[str, nn.Module]) -> list[Unit]:
    """One ``attention`` and one ``mlp`` gate per block (Sheared-LLaMA's ``head_layer_z`` and
    ``mlp_z``): a unit owns its block's parameters and the norm that feeds only it, and its
    gate scales the block's output projection whole."""
    units = []
    blocks = (("attention", layout.attentions), ("mlp", layout.mlps))
    for kind, parts in blocks:
        slices, sites = [], []
        for i, part in enumerate(parts):
            # The finders list each block's two norms in order: attention's, then the MLP's.
            norm = layout.norms[2 * i + (kind == "mlp")]
            owned = [part.name] if kind == "attention" else [p.name for p in (*part.readers, part.writer)]
            slices += _whole(modules, [*owned, norm], i)
            sites += _scale_whole(modules, part.output if kind == "attention" else part.writer, i)
        units.append(Unit(layout.base, kind, len(parts), slices, sites, (layout.layers, kind, 1)))
    return units


def _layer_unit(model: nn.Module, layout: DecoderLayout, modules: dict[str, nn.Module]) -> Unit:
    """One gate per decoder layer (Sheared-LLaMA's layer mask): it owns every parameter of
    the layer and scales both residual writers whole, so a closed layer adds exactly 0 to
    the residual stream and purging deletes it."""
    stack = modules[layout.layers]
    slices, sites = [], []
    for i in range(len(stack)):
        slices += _whole(modules, [f"{layout.layers}.{i}"], i)
        for writer in (layout.attentions[i].output, layout.mlps[i].writer):
            sites += _scale_whole(modules, writer, i)
    # On the base model, not the ModuleList: a model iterating its layers would run the gate as one.
    return Unit(layout.base, "layer", len(stack), slices, sites, (layout.layers, "layers", 1))


def _hidden_unit(model: nn.Module, layout: DecoderLayout, modules: dict[str, nn.Module]) -> Unit:
    if layout.norm == Norm.LAYER:
        raise DecoderError(
            f"hidden=True on {type(model).__name__}: its LayerNorms subtract the mean of every residual "
            "dimension, closed ones included, so removing a closed dimension changes the others and purge "
            "could not reproduce the gated model; prune heads and MLP neurons (hidden=False), or use an "
            "RMSNorm family (Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3)"
        )
    index = torch.arange(layout.hidden)
    sites = [Slice(name, "weight", 1, index, index) for name in layout.embeddings]
    slices = list(sites) + [Slice(name, "weight", 0, index, index) for name in layout.norms]
    readers = [a.query for a in layout.attentions] + [m.readers[0] for m in layout.mlps]
    if layout.lm_head is not None:
        readers.append(layout.lm_head)
    for p in dict.fromkeys(Projection(p.name, p.transposed) for p in readers):  # packed Q/K/V: once
        slices += p.columns(index, index)
    for a in layout.attentions:
        if a.key.name != a.query.name:
            slices += a.key.columns(index, index) + a.value.columns(index, index)
    for m in layout.mlps:
        if len(m.readers) > 1 and m.readers[1].name != m.readers[0].name:
            slices += m.readers[1].columns(index, index)
    for writer in [a.output for a in layout.attentions] + [m.writer for m in layout.mlps]:
        rows = writer.rows(modules[writer.name], index, index)
        sites += rows
        slices += rows
    return Unit(layout.base, "hidden", layout.hidden, slices, sites, (layout.base, "hidden", 1))
