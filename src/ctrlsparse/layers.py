"""Gated versions of ``nn.Linear`` and ``nn.Conv2d``.

Each layer keeps the original ``weight`` and ``bias`` parameters (same names, so the
user's ``state_dict`` keys survive) and adds a gate tensor ``gate``: a
:class:`~ctrlsparse.gates.HardConcrete` by default, or an
:class:`~ctrlsparse.gates.ARMGate` (``gates="arm"``). Two structures (Louizos et al., 2018, section 2.4):

- ``"neuron"``: one gate per *input feature* of a Linear layer (the group is the
  weight column, ``out_features`` weights) and one per *output channel* of a Conv2d
  (the group is the filter plus its bias). Group gates are what make conditional
  computation possible: an input column or an output channel whose gate is 0 can be
  skipped.
- ``"weight"``: one gate per weight (the bias is not gated and not sparsifiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.choices import Choice
from ctrlsparse.functional import gated_conv2d_channels, gated_linear
from ctrlsparse.gates import Gate, GateFactory, GateKind, make_gate

SKIP_BELOW = 0.5
"""Neuron-gated layers compute only open columns/channels when at most this fraction is open."""


class Structure(Choice):
    """Which parameters share a gate."""

    NEURON = "neuron"
    WEIGHT = "weight"


Structure._noun = "structure"


class GatedLayer(nn.Module):
    """Common interface of gated layers: densities and gated L2 in the paper's terms.

    Subclasses set ``weight``, ``bias``, ``gate``, ``structure``, ``group_size`` (the
    number of parameters one gate switches off, the same for every gate of a layer)
    and implement ``forward`` and ``_group_sq_norms``.

    ``skip_below`` (neuron structure): when the fraction of non-zero gates in this
    step's sample is at most ``skip_below``, the layer computes only the open input
    columns / output channels (conditional computation; 0 turns it off).
    """

    skip_below: float = SKIP_BELOW

    weight: nn.Parameter
    bias: nn.Parameter | None
    gate: Gate
    structure: Structure
    group_size: int

    @property
    def num_gates(self) -> int:
        return self.gate.parameter.numel()

    @property
    def num_sparsifiable(self) -> int:
        """Number of parameters the gates can switch off (the denominator of the density)."""
        return self.num_gates * self.group_size

    def expected_active(self) -> torch.Tensor:
        r"""Expected number of active parameters, :math:`\sum_g |g|\,P(z_g \neq 0)` (eq. 16)."""
        return self.group_size * self.gate.prob_active().sum()

    def expected_density(self) -> torch.Tensor:
        """Expected fraction of this layer's sparsifiable parameters that are active."""
        return self.expected_active() / self.num_sparsifiable

    @torch.no_grad()
    def realized_active(self) -> int:
        """Number of sparsifiable parameters whose test-time gate (eq. 13) is non-zero."""
        return int((self.gate.deterministic() > 0).sum()) * self.group_size

    def expected_l2(self) -> torch.Tensor:
        r"""Expected squared L2 norm under the gates (eq. 15, 17).

        :math:`\sum_g P(z_g \neq 0) \sum_{j \in g} \theta_j^2`.
        """
        return (self.gate.prob_active() * self._group_sq_norms()).sum()

    def _group_sq_norms(self) -> torch.Tensor:
        raise NotImplementedError


class GatedLinear(GatedLayer):
    """``nn.Linear`` with hard concrete gates on its input features or weights.

    Example:
        >>> layer = GatedLinear.from_linear(nn.Linear(784, 300), structure="neuron")
        >>> layer.num_gates, layer.group_size
        (784, 300)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        structure: str | Structure = Structure.NEURON,
        drop_rate: float = 0.5,
        gates: str | GateKind | GateFactory = GateKind.HARD_CONCRETE,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.structure = Structure.parse(structure)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        if self.structure is Structure.NEURON:
            self.gate = make_gate(gates, (in_features,), drop_rate)
            self.group_size = out_features
        else:
            self.gate = make_gate(gates, (out_features, in_features), drop_rate)
            self.group_size = 1
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]
        self.gate.reset_parameters()

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        structure: str | Structure = "neuron",
        drop_rate: float = 0.5,
        gates: str | GateKind | GateFactory = GateKind.HARD_CONCRETE,
    ):
        """A gated layer that shares ``linear``'s weight and bias parameters."""
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None, structure, drop_rate, gates
        )
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gate()
        if self.structure is Structure.NEURON:
            # Gating the inputs equals gating the weight columns; see functional.py for
            # the backward pass that makes this cost what a dense layer costs.
            return gated_linear(x, self.weight, self.bias, z, self.skip_below)
        return F.linear(x, self.weight * z, self.bias)

    def _group_sq_norms(self) -> torch.Tensor:
        sq = self.weight.pow(2)
        return sq.sum(0) if self.structure is Structure.NEURON else sq

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, structure={self.structure.value}"
        )


class GatedConv2d(GatedLayer):
    """``nn.Conv2d`` with hard concrete gates on its output channels or weights.

    A channel gate multiplies the convolution's output, bias included, so its group
    is the whole filter plus the bias entry.

    Example:
        >>> layer = GatedConv2d.from_conv(nn.Conv2d(1, 20, 5), structure="neuron")
        >>> layer.num_gates, layer.group_size
        (20, 26)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        structure: str | Structure = Structure.NEURON,
        drop_rate: float = 0.5,
        gates: str | GateKind | GateFactory = GateKind.HARD_CONCRETE,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, groups
        self.structure = Structure.parse(structure)
        self.weight, self.bias = conv.weight, conv.bias
        if self.structure is Structure.NEURON:
            self.gate = make_gate(gates, (out_channels,), drop_rate)
            self.group_size = self.weight[0].numel() + (1 if bias else 0)
        else:
            self.gate = make_gate(gates, tuple(self.weight.shape), drop_rate)
            self.group_size = 1

    def reset_parameters(self) -> None:
        nn.Conv2d.reset_parameters(self)  # type: ignore[arg-type]
        self.gate.reset_parameters()

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        structure: str | Structure = "neuron",
        drop_rate: float = 0.5,
        gates: str | GateKind | GateFactory = GateKind.HARD_CONCRETE,
    ):
        """A gated layer that shares ``conv``'s weight and bias parameters."""
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"only padding_mode='zeros' can be gated, got padding_mode={conv.padding_mode!r}; "
                "exclude this layer from sparsify()"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            structure,
            drop_rate,
            gates,
        )
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gate()
        if self.structure is Structure.NEURON:
            # Skipping closed output channels slices the filters, which is only valid without groups.
            skip = self.skip_below if self.groups == 1 else 0.0
            return gated_conv2d_channels(x, self.weight, self.bias, z, self._conv, skip)
        return self._conv(x, self.weight * z, self.bias)

    def _group_sq_norms(self) -> torch.Tensor:
        sq = self.weight.pow(2)
        if self.structure is Structure.WEIGHT:
            return sq
        norms = sq.flatten(1).sum(1)
        return norms + self.bias.pow(2) if self.bias is not None else norms

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
            f"structure={self.structure.value}"
        )
