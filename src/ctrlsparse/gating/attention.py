"""Heads of ``nn.MultiheadAttention`` as gate units, and what replaces it once heads are purged.

``nn.MultiheadAttention`` packs the Q, K and V projections of all heads into one
``in_proj_weight`` (3E x E) and reads ``out_proj.weight`` directly, so no ``nn.Linear``'s
rows are a head. Head ``h`` (``d = E / num_heads`` channels) owns

- rows ``[h d, (h+1) d)`` of each of the Q, K and V blocks of ``in_proj_weight`` (offsets
  0, E and 2E) and the matching ``in_proj_bias`` entries (or the rows of
  ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when ``kdim``/``vdim`` differ);
- columns ``[h d, (h+1) d)`` of ``out_proj.weight``.

Its gate scales the head's V rows and V bias entries: the head's output is
``softmax(q_h k_h^T / sqrt(d)) (z_h v_h)`` = ``z_h`` times the ungated output, and
``out_proj`` is linear, so the head's whole contribution is scaled (O(parameters), not
O(activations)). Q or K rows would not do: ``softmax`` of a zero score is uniform, not 0.

``nn.MultiheadAttention`` ties ``head_dim = embed_dim / num_heads``, so a module with heads
removed cannot be one. :class:`PrunedMultiheadAttention` takes its place after purging:
plain Q/K/V/out ``nn.Linear`` layers and ``F.scaled_dot_product_attention``, with
``nn.MultiheadAttention``'s forward contract.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.gating.groups import Slice


class Heads(NamedTuple):
    """The heads of one attention module: their count, width, parameter slices and gate sites."""

    num_heads: int
    head_dim: int
    slices: list[Slice]
    """Every parameter slice a head owns (what accounting counts and purging removes)."""
    sites: list[Slice]
    """The slices the head's gate multiplies."""


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with ``num_heads`` heads of ``head_dim`` channels, ``num_heads *
    head_dim`` free of ``embed_dim``: what is left of a MultiheadAttention after purging heads.

    The forward takes and returns what ``nn.MultiheadAttention.forward`` does (batched or
    unbatched inputs, ``batch_first``, boolean or additive ``attn_mask`` and
    ``key_padding_mask``, ``is_causal``, ``need_weights``), so ``nn.TransformerEncoderLayer``
    and user code call it unchanged. With ``need_weights`` the weights are averaged over the
    kept heads. A per-head (3-D) ``attn_mask`` keeps the original module's layout, ``batch *
    source_heads`` rows, and the kept heads' rows are used.

    Args:
        embed_dim: features of the query and of the output.
        num_heads: heads kept.
        head_dim: channels per head (the original ``embed_dim / num_heads``; it sets the
            1/sqrt(d) scale).
        bias: Q/K/V and output projections have biases.
        batch_first: inputs and outputs are ``(batch, seq, feature)``.
        kdim: features of the key (default ``embed_dim``).
        vdim: features of the value (default ``embed_dim``).
        dropout: dropout on the attention weights, in training mode.
        heads: the kept heads' indices in the original module (default ``0..num_heads-1``).
        source_heads: the original module's number of heads (default ``num_heads``).

    Examples:
        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
        >>> small = PrunedMultiheadAttention.from_multihead(mha, [1])
        >>> x = torch.ones(2, 3, 8)
        >>> small(x, x, x, need_weights=False)[0].shape
        torch.Size([2, 3, 8])
    """

    # Read by nn.TransformerEncoderLayer's fast-path check (in this order): both send it to
    # its unfused path, which calls this forward; the fused kernel needs a packed in_proj.
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        batch_first: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        dropout: float = 0.0,
        heads: list[int] | None = None,
        source_heads: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        heads = list(range(num_heads)) if heads is None else list(heads)
        source_heads = num_heads if source_heads is None else source_heads
        if len(heads) != num_heads or not all(0 <= h < source_heads for h in heads):
            raise ValueError(
                f"heads={heads} must list num_heads={num_heads} indices in [0, source_heads={source_heads})"
            )
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.batch_first, self.dropout = batch_first, dropout
        self.heads, self.source_heads = tuple(heads), source_heads
        inner = num_heads * head_dim
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, inner, **kw)
        self.k_proj = nn.Linear(self.kdim, inner, **kw)
        self.v_proj = nn.Linear(self.vdim, inner, **kw)
        self.out_proj = nn.Linear(inner, embed_dim, **kw)

    @classmethod
    @torch.no_grad()
    def from_multihead(cls, module: nn.MultiheadAttention, heads: list[int]) -> PrunedMultiheadAttention:
        """The heads ``heads`` (indices, ascending) of ``module``, with its weights.

        Examples:
            >>> mha = nn.MultiheadAttention(8, 4)
            >>> PrunedMultiheadAttention.from_multihead(mha, [0, 3]).q_proj
            Linear(in_features=8, out_features=4, bias=True)
        """
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("nn.MultiheadAttention with add_bias_kv or add_zero_attn cannot lose heads yet")
        heads = sorted(heads)
        d, e, device = module.head_dim, module.embed_dim, module.out_proj.weight.device
        if module._qkv_same_embed_dim:
            weights = module.in_proj_weight.chunk(3)
        else:
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
        new = cls(
            e, len(heads), d, bias=module.in_proj_bias is not None, batch_first=module.batch_first,
            kdim=module.kdim, vdim=module.vdim, dropout=module.dropout, heads=heads,
            source_heads=module.num_heads, device=device, dtype=module.out_proj.weight.dtype,
        )  # fmt: skip
        rows = torch.tensor([h * d + j for h in heads for j in range(d)], device=device)
        for linear, weight, bias in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases):
            linear.weight.copy_(weight[rows])
            if bias is not None:
                linear.bias.copy_(bias[rows])
        new.out_proj.weight.copy_(module.out_proj.weight[:, rows])
        if module.out_proj.bias is not None:
            new.out_proj.bias.copy_(module.out_proj.bias)
        new.train(module.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, target, source = query.shape[0], query.shape[1], key.shape[1]
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        mask = self._mask(attn_mask, key_padding_mask, is_causal, batch, target, source, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            weights = F.softmax(scores if mask is None else scores + mask, dim=-1)
            weights = F.dropout(weights, dropout) if dropout > 0 else weights
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, target, self.num_heads * self.head_dim))
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, heads * d) -> (batch, heads, seq, d)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, attn_mask, key_padding_mask, is_causal, batch, target, source, like):
        """One additive mask broadcastable to (batch, heads, target, source), or None.

        As in ``F.multi_head_attention_forward``: a boolean mask is True where attention is
        not allowed (-inf), a float mask is added to the scores, and ``is_causal`` without a
        mask means the causal mask.
        """
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(target, source, dtype=torch.bool, device=like.device).triu(1)
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, like.dtype)
            if mask.dim() == 3:  # per head, in the original module's (batch * source_heads) layout
                mask = mask.view(batch, self.source_heads, target, source)[:, list(self.heads)]
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, like.dtype).view(batch, 1, 1, source)
            mask = padding if mask is None else mask + padding
        return mask

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"heads={list(self.heads)} of {self.source_heads}, batch_first={self.batch_first}"
        )


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def multihead_heads(module: nn.MultiheadAttention, name: str) -> Heads | str:
    """The heads of ``module`` (called ``name`` in its model), or why they stay dense.

    Examples:
        >>> heads = multihead_heads(nn.MultiheadAttention(8, 2), "attn")
        >>> heads.num_heads, heads.head_dim, [(s.module, s.param, s.dim) for s in heads.sites]
        (2, 4, [('attn', 'in_proj_weight', 0), ('attn', 'in_proj_bias', 0)])
    """
    if module.bias_k is not None or module.add_zero_attn:
        return "add_bias_kv / add_zero_attn: not supported yet"
    e, d = module.embed_dim, module.head_dim
    channels = torch.arange(e)
    packed = torch.arange(3 * e)  # the Q, K and V blocks: head (position mod E) // d
    value = 2 * e + channels
    if module._qkv_same_embed_dim:
        slices = [Slice(name, "in_proj_weight", 0, packed, packed % e // d)]
        sites = [Slice(name, "in_proj_weight", 0, value, channels // d)]
    else:
        slices = [Slice(name, f"{p}_proj_weight", 0, channels, channels // d) for p in "qkv"]
        sites = [slices[2]]
    if module.in_proj_bias is not None:
        slices.append(Slice(name, "in_proj_bias", 0, packed, packed % e // d))
        sites.append(Slice(name, "in_proj_bias", 0, value, channels // d))
    out_proj = f"{name}.out_proj" if name else "out_proj"
    slices.append(Slice(out_proj, "weight", 1, channels, channels // d))
    return Heads(module.num_heads, d, slices, sites)


def purge_multihead(model: nn.Module, name: str, kept: list[int]) -> nn.Module:
    """Replace ``model``'s ``nn.MultiheadAttention`` ``name`` by a :class:`PrunedMultiheadAttention`
    with the ``kept`` heads; returns ``model`` (the replacement itself when ``name`` is "").

    Examples:
        >>> net = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2)})
        >>> type(purge_multihead(net, "attn", [0]).attn).__name__
        'PrunedMultiheadAttention'
    """
    new = PrunedMultiheadAttention.from_multihead(model.get_submodule(name), kept)
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    for module in model.modules():
        # nn.TransformerEncoder's nested-tensor path (eval, no grad, src_key_padding_mask
        # given) reads self_attn.in_proj_weight and hands nested tensors to the layers, which
        # only nn.MultiheadAttention's fused kernel takes. The padded path gives the same
        # outputs at every unpadded position; at padded ones (zeros on the nested path) torch
        # itself gives either, by whether grad is enabled.
        if isinstance(module, nn.TransformerEncoder) and any(new is m for m in module.modules()):
            module.use_nested_tensor = False
    return model
