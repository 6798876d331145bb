"""Data augmentation on whole batches of image tensors (pass one to ``Batches(transform=...)``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None, flip: bool = True
) -> torch.Tensor:
    """Zero-pad each image by ``padding``, crop it back to its size at a random offset, and mirror
    it left-right with probability 1/2: the standard CIFAR augmentation (He et al., 2016).

    Every image of the batch draws its own offset and flip. The random numbers come from
    ``generator`` (on its device; the global generator when ``None``), so a seeded generator
    gives the same batch twice.

    Args:
        x: images of shape ``(N, C, H, W)``.
        padding: zero pixels added on each side; the crop moves by up to ``2 * padding``.
        generator: source of the offsets and flips.
        flip: mirror images at random; ``False`` only crops.

    Examples:
        >>> x = torch.rand(8, 3, 32, 32)
        >>> random_crop_flip(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects images of shape (N, C, H, W), got {tuple(x.shape)}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    n, channels, height, width = x.shape
    device = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device).to(x.device)
    mirrored = (torch.rand(n, generator=generator, device=device) < 0.5).to(x.device) & flip
    padded = F.pad(x, (padding, padding, padding, padding))
    # One gather for the whole batch: image i reads rows dy[i] + r and columns dx[i] + c of its
    # padded copy, with c running backwards when it is mirrored.
    rows = dy[:, None] + torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device).expand(n, width)
    cols = dx[:, None] + torch.where(mirrored[:, None], width - 1 - cols, cols)
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


__all__ = ["random_crop_flip"]
