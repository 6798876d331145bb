r"""Gated layer operations with hand-written backward passes and conditional computation.

Input-gated linear layer, :math:`y = (x \odot z) W^\top + b`. Autograd through
``x * z`` would compute :math:`\partial L/\partial (x\odot z) = \delta W` — a full
batch × out × in product — only to reduce it to :math:`\partial L/\partial z`. The
same number comes from the weight-gradient product :math:`G = \delta^\top x` that
training needs anyway: :math:`\partial L/\partial W = G \odot z` (column-scaled) and
:math:`\partial L/\partial z_j = \sum_o W_{oj} G_{oj}`. So a gated step costs what a
dense step costs, plus element-wise work of the weight's size.

Conditional computation: when few gates are open, only the open input columns are
multiplied (``x[:, open]`` and ``W[:, open]``). Closed columns get zero weight
gradient, as in the dense path. Their gate gradient is also set to zero. The dense
path would give a non-zero value there, but a hard concrete sample that is exactly 0
is clamped (eq. 11), and the clamp passes no gradient to ``log_alpha``. So the
parameter gradients of both paths are equal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _rows(t: torch.Tensor) -> torch.Tensor:
    """All leading dimensions folded into one (also when the last dimension is empty)."""
    return t.flatten(0, -2) if t.dim() > 1 else t.unsqueeze(0)


class _GatedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, z, index):
        if index is not None:
            x_used, w_used, z_used = (
                x.index_select(-1, index),
                weight.index_select(1, index),
                z.index_select(0, index),
            )
        else:
            x_used, w_used, z_used = x, weight, z
        out = torch.nn.functional.linear(x_used * z_used, w_used, bias)
        ctx.save_for_backward(x_used, w_used, z_used, index)
        ctx.shape = (weight.shape, z.shape, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w, z, index = ctx.saved_tensors
        weight_shape, z_shape, has_bias = ctx.shape
        need_x, need_w, need_b, need_z, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = grad_z = None
        g2 = _rows(grad_out)
        if need_w or need_z:
            g = g2.t() @ _rows(x)  # out x used_in: the weight-gradient product
            if need_w:
                grad_w = g * z
            if need_z:
                grad_z = (g * w).sum(0)
            if index is not None:
                grad_w = None if grad_w is None else g.new_zeros(weight_shape).index_copy_(1, index, grad_w)
                grad_z = None if grad_z is None else g.new_zeros(z_shape).index_copy_(0, index, grad_z)
        if need_b and has_bias:
            grad_b = g2.sum(0)
        if need_x:
            grad_used = (grad_out @ w) * z
            if index is None:
                grad_x = grad_used
            else:
                grad_x = grad_out.new_zeros(*grad_out.shape[:-1], z_shape[0]).index_copy_(
                    -1, index, grad_used
                )
        return grad_x, grad_w, grad_b, grad_z, None


def gated_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor,
    skip_below: float = 0.5,
) -> torch.Tensor:
    r""":math:`(x \odot z) W^\top + b` for input gates ``z``, skipping closed columns when few are open.

    Args:
        skip_below: compute on the open columns only when the fraction of non-zero
            gates is at most this (0 disables skipping, 1 always skips).

    Example:
        >>> x, w, z = torch.randn(4, 3), torch.randn(2, 3), torch.tensor([1.0, 0.0, 0.5])
        >>> torch.allclose(gated_linear(x, w, None, z), (x * z) @ w.T)
        True
    """
    index = None
    if skip_below > 0:
        open_ = (z != 0).nonzero().squeeze(1)
        if open_.numel() <= skip_below * z.numel():
            index = open_
    return _GatedLinear.apply(x, weight, bias, z, index)


def gated_conv2d_channels(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor,
    conv: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    skip_below: float = 0.5,
) -> torch.Tensor:
    r"""``conv(x, weight, bias) * z`` per output channel, convolving only open channels when few are open.

    ``conv(x, weight, bias)`` is the layer's convolution with its stride, padding and
    groups (``groups`` must be 1 to skip). Closed channels are exact zeros in the output.
    """
    if skip_below > 0:
        open_ = (z != 0).nonzero().squeeze(1)
        if 0 < open_.numel() <= skip_below * z.numel():
            b = None if bias is None else bias.index_select(0, open_)
            partial = conv(x, weight.index_select(0, open_), b) * z.index_select(0, open_).view(1, -1, 1, 1)
            out = partial.new_zeros(partial.shape[0], z.numel(), *partial.shape[2:])
            return out.index_copy(1, open_, partial)
    return conv(x, weight, bias) * z.view(1, -1, 1, 1)
