"""The gated model: units and groups, gates, parametrizations, counting, purging.

Data flow: :func:`~ctrlsparse.gating.units.find_units` (which slices live or die
together) → :class:`~ctrlsparse.gating.groups.GateGroup` (one gate per unit, attached
by parametrization) → :class:`~ctrlsparse.gating.accounting.Accounting` (expected and
realized active parameters) → :func:`~ctrlsparse.gating.purging.purge` (a smaller plain model).
"""

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.attention import PrunedMultiheadAttention
from ctrlsparse.gating.counting import Count, count
from ctrlsparse.gating.decoders import DecoderError, register_decoder
from ctrlsparse.gating.gates import ARMGate, Gate, GateKind, HardConcrete, MaskGate, antithetic, make_gate
from ctrlsparse.gating.groups import GateGroup, GateScale, Slice, gate_groups
from ctrlsparse.gating.purging import PurgeError, SelectInputs, purge, to_pretrained
from ctrlsparse.gating.registry import (
    AttentionSpec,
    LayerSpec,
    PackedAttentionSpec,
    register_attention,
    register_layer,
    register_packed_attention,
)
from ctrlsparse.gating.sparsify import Structure, gates_of, sparse_layers, sparsify
from ctrlsparse.gating.units import TraceError

__all__ = [
    "ARMGate",
    "Accounting",
    "AttentionSpec",
    "Count",
    "DecoderError",
    "Gate",
    "GateGroup",
    "GateKind",
    "GateScale",
    "HardConcrete",
    "LayerSpec",
    "MaskGate",
    "PackedAttentionSpec",
    "PrunedMultiheadAttention",
    "PurgeError",
    "SelectInputs",
    "Slice",
    "Structure",
    "TraceError",
    "antithetic",
    "count",
    "gate_groups",
    "gates_of",
    "make_gate",
    "purge",
    "register_attention",
    "register_decoder",
    "register_layer",
    "register_packed_attention",
    "sparse_layers",
    "sparsify",
    "to_pretrained",
]
