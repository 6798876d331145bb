r"""Gated layer operations with conditional computation.

Input-gated linear layer, :math:`y = (x \odot z) W^\top + b`. When few gates of this
step's sample are open, only the open input columns are multiplied (``x[:, open]`` and
``W[:, open]``); autograd through the index selection gives closed columns a zero
weight gradient, exactly as the dense path does (their input is multiplied by 0).

A hand-written backward that takes :math:`\partial L/\partial z` from the weight-gradient
product instead of a second matrix product was tried (commit 8ba3c80) and gave no
measurable gain on CPU: the two weight-sized element-wise passes it needs cost about
what the product they save costs (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _open_index(z: torch.Tensor, skip_below: float) -> torch.Tensor | None:
    """Indices of the non-zero gates when at most ``skip_below`` of them are non-zero, else None."""
    if skip_below <= 0:
        return None
    open_ = (z != 0).nonzero().squeeze(1)
    return open_ if open_.numel() <= skip_below * z.numel() else None


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
    index = _open_index(z, skip_below)
    if index is None:
        return torch.nn.functional.linear(x * z, weight, bias)
    return torch.nn.functional.linear(
        x.index_select(-1, index) * z.index_select(0, index), weight.index_select(1, index), bias
    )


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
    open_ = _open_index(z, skip_below)
    if open_ is not None and open_.numel() > 0:
        b = None if bias is None else bias.index_select(0, open_)
        partial = conv(x, weight.index_select(0, open_), b) * z.index_select(0, open_).view(1, -1, 1, 1)
        out = partial.new_zeros(partial.shape[0], z.numel(), *partial.shape[2:])
        return out.index_copy(1, open_, partial)
    return conv(x, weight, bias) * z.view(1, -1, 1, 1)
