"""Which layer and attention types ctrlsparse knows, and how their parameters map to units.

A gate group removes *slices* of parameters: the rows of a producer, the columns of a
consumer, BatchNorm entries. Which parameter dimension a unit of a layer's outputs or
inputs lives on is a property of the layer *type*, so it is registered once per type
(``register_layer``), not spelled out in if-chains. Attention classes register how to
find their heads (``register_attention``); attention classes that pack their heads into
their own tensors (``nn.MultiheadAttention``) register how to slice and purge them
(``register_packed_attention``).

Examples:
    >>> from torch import nn
    >>> layer_spec(nn.Linear(3, 2)).inputs
    (('weight', 1),)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ctrlsparse.gating.attention import Heads, multihead_heads, purge_multihead

ParamDims = tuple[tuple[str, int], ...]
"""``((parameter name, dimension), ...)``: where one unit's slice lives in a layer."""


@dataclass(frozen=True)
class LayerSpec:
    """How a layer type's parameters split into output and input units.

    Attributes:
        outputs: the (parameter, dimension) pairs holding one output unit (a Linear's
            weight rows and bias entries).
        inputs: the pairs holding one input unit (a Linear's weight columns).
        is_layer: True for layers with a weight matrix (Linear, convolutions): these are
            what per-layer targets name and what ``structure="paper"`` and
            ``structure="weight"`` gate. Normalisation layers only follow their units.
    """

    outputs: ParamDims
    inputs: ParamDims = ()
    is_layer: bool = True


_LAYERS: dict[type[nn.Module], LayerSpec] = {}


def register_layer(layer_type: type[nn.Module], spec: LayerSpec) -> None:
    """Teach ctrlsparse which slices of ``layer_type``'s parameters form one unit.

    Examples:
        >>> class MyLinear(nn.Linear):
        ...     pass
        >>> register_layer(MyLinear, LayerSpec(outputs=(("weight", 0), ("bias", 0)), inputs=(("weight", 1),)))
    """
    _LAYERS[layer_type] = spec


def layer_spec(module: nn.Module) -> LayerSpec | None:
    """The registered spec of ``module``'s exact type (subclasses with their own forward differ), or None."""
    spec = _LAYERS.get(plain_type(module))
    if spec is not None and isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups != 1:
        # A grouped convolution's weight has in_channels / groups columns: its input units
        # are not weight slices. Its output channels still are.
        return LayerSpec(outputs=spec.outputs, inputs=(), is_layer=True)
    return spec


def plain_type(module: nn.Module) -> type[nn.Module]:
    """``type(module)``, seen through the class :mod:`torch.nn.utils.parametrize` injects."""
    cls = type(module)
    if "parametrizations" in module._modules:
        cls = cls.__bases__[0]
    return cls


def is_layer(module: nn.Module) -> bool:
    """True for registered layers with a weight matrix (Linear, convolutions)."""
    spec = layer_spec(module)
    return spec is not None and spec.is_layer


_ROWS = (("weight", 0), ("bias", 0))
for _linear in (nn.Linear,):
    register_layer(_linear, LayerSpec(outputs=_ROWS, inputs=(("weight", 1),)))
for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_layer(_conv, LayerSpec(outputs=_ROWS, inputs=(("weight", 1),)))
for _norm in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm):
    register_layer(_norm, LayerSpec(outputs=_ROWS, is_layer=False))
NORMALIZATION = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
"""Per-channel normalisation: a gate after it scales its affine ``weight`` and ``bias``."""


@dataclass(frozen=True)
class AttentionSpec:
    """How to find the heads of an attention class.

    Attributes:
        query, key, value: attribute names of the Q, K and V ``nn.Linear`` projections.
        num_heads: attribute holding the number of heads.
        update: called as ``update(module, kept_heads)`` after purging heads, to fix the
            module's bookkeeping attributes (``num_heads``, ``all_head_size``...).
    """

    query: str
    key: str
    value: str
    num_heads: str
    update: Callable[[nn.Module, int], None] | None = None


_ATTENTION: dict[str, AttentionSpec] = {}


def register_attention(class_name: str, spec: AttentionSpec) -> None:
    """Register an attention class by its name (so the library need not import it).

    Examples:
        >>> register_attention("MySelfAttention", AttentionSpec("q", "k", "v", "n_heads"))
    """
    _ATTENTION[class_name] = spec


_PROJECTIONS = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("q_lin", "k_lin", "v_lin"),
    ("q", "k", "v"),
)
_HEAD_COUNTS = ("num_attention_heads", "num_heads", "n_heads", "n_head")


def _update_heads(attribute: str) -> Callable[[nn.Module, int], None]:
    def update(module: nn.Module, heads: int) -> None:
        setattr(module, attribute, heads)
        if hasattr(module, "all_head_size") and hasattr(module, "attention_head_size"):
            module.all_head_size = heads * module.attention_head_size

    return update


def attention_spec(module: nn.Module) -> AttentionSpec | None:
    """How to find ``module``'s heads: its class's registration, else the common convention
    (Linear ``query``/``key``/``value`` or ``q_proj``/``k_proj``/``v_proj``... and a head count
    such as ``num_attention_heads``), or None when it is not an attention module."""
    for cls in type(module).__mro__:
        spec = _ATTENTION.get(cls.__name__)
        if spec is not None:
            return spec
    for names in _PROJECTIONS:
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
            for count in _HEAD_COUNTS:
                if isinstance(getattr(module, count, None), int):
                    return AttentionSpec(*names, count, _update_heads(count))
    return None


@dataclass(frozen=True)
class PackedAttentionSpec:
    """How to gate and purge the heads of an attention class whose heads are slices of its
    own packed tensors, not rows of Q/K/V ``nn.Linear`` layers (``nn.MultiheadAttention``).

    Attributes:
        heads: ``heads(module, name)``: the module's :class:`~ctrlsparse.gating.attention.Heads`
            (count, width, every parameter slice of each head, the slices its gate scales),
            or a sentence saying why its heads stay dense.
        purge: ``purge(model, name, kept)``: replace ``model``'s submodule ``name`` by a
            module with only the ``kept`` heads (original indices, ascending) and the same
            forward contract; returns ``model`` (the new module when ``name`` is "").
    """

    heads: Callable[[nn.Module, str], Heads | str]
    purge: Callable[[nn.Module, str, list[int]], nn.Module]


_PACKED_ATTENTION: dict[type[nn.Module], PackedAttentionSpec] = {}


def register_packed_attention(attention_type: type[nn.Module], spec: PackedAttentionSpec) -> None:
    """Teach ctrlsparse the heads of ``attention_type`` and what replaces it when heads are purged.

    Examples:
        >>> class MyAttention(nn.MultiheadAttention):  # same forward, so the same heads
        ...     pass
        >>> register_packed_attention(MyAttention, packed_attention_spec(nn.MultiheadAttention(4, 2)))
    """
    _PACKED_ATTENTION[attention_type] = spec


def packed_attention_spec(module: nn.Module) -> PackedAttentionSpec | None:
    """The packed-attention spec of ``module``'s exact type (a subclass may change the forward), or None."""
    return _PACKED_ATTENTION.get(plain_type(module))


register_packed_attention(nn.MultiheadAttention, PackedAttentionSpec(multihead_heads, purge_multihead))
