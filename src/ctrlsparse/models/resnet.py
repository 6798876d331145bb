"""A small ResNet for 28×28 images: BatchNorm, residual adds, bias-free convolutions.

The real-data proof of gate groups on the architectures users bring: every block's
output channels are tied to its stage's residual stream, so a stage's channels are one
unit shared by the stem or shortcut conv and every block's second conv, while each
block's first conv has units of its own.

Layer names: ``conv1`` (stem), ``layer{s}.{b}.conv1`` / ``conv2`` and
``layer{s}.{b}.shortcut.0`` (where the shape changes), ``fc``; so per-stage targets read
``{"layer2.*" = 0.3}`` in a problem file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the identity (or a 1×1 conv-BN where the shape changes), ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv-BN-ReLU, stages of :class:`BasicBlock` (stride 2 from the second), average pool, fc."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths and blocks need one entry per stage, got {widths!r} and {blocks!r}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for s, (width, count) in enumerate(zip(widths, blocks), start=1):
            stride = 1 if s == 1 else 2
            stage = [
                BasicBlock(channels if b == 0 else width, width, stride if b == 0 else 1)
                for b in range(count)
            ]
            self.add_module(f"layer{s}", nn.Sequential(*stage))
            channels = width
        self.num_stages = len(widths)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(x.mean((2, 3)))


def fashion_resnet(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> ResNet:
    """ResNet-8 for 28×28 inputs: widths 16-32-64, one block per stage (78k parameters).

    Examples:
        >>> fashion_resnet()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return ResNet(input_shape[0], num_classes)
