"""The CIFAR architectures of the constrained-sparsity paper: WRN-28-10 and ResNet-18.

Both are plain ``nn.Module``s with bias-free convolutions and BatchNorm; sparsify them
afterwards. The paper (Gallego-Posada et al., 2022, after Louizos et al., 2018) gates the
output channels of the first conv of every residual block, which in both models is
``layer{s}.{b}.conv1``::

    sparsify(model, example_input=torch.zeros(2, 3, 32, 32), include=["*.conv1"])

(the stem is the top-level ``conv1``, which ``"*.conv1"`` does not match). Per-stage
targets read ``{"layer2.*" = 0.3}`` in a problem file, as for
:func:`~ctrlsparse.models.resnet.fashion_resnet`.

Layer names: ``conv1`` (stem), ``layer{s}.{b}.bn1`` / ``conv1`` / ``bn2`` / ``conv2``
and ``layer{s}.{b}.shortcut`` (where the shape changes), then ``bn`` (WRN only) and ``fc``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctrlsparse.models.resnet import ResNet


class PreActBlock(nn.Module):
    """Pre-activation basic block of a wide ResNet: BN-ReLU-conv3×3-BN-ReLU-dropout-conv3×3, plus shortcut.

    As in the reference implementations (Louizos et al.'s ``L0WideResNet``, kept by
    Gallego-Posada et al.), the first conv keeps the resolution and the *second* conv
    carries the stride, so the gated first conv runs at the block's input resolution.
    Where the shape changes, the shortcut is a bias-free 1×1 conv (no BN) applied to the
    pre-activated input; elsewhere it is the identity on the raw input.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(out)))))
        return out + shortcut


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis, 2016): stem conv, three stages of :class:`PreActBlock`, BN, fc.

    Stage ``s`` has ``(depth - 4) / 6`` blocks of width ``16·2^(s-1)·widen_factor``; the
    second and third stages halve the resolution. The head averages over the remaining
    positions, so any input of at least 8×8 pixels works (8×8 feature maps for 32×32).
    """

    def __init__(
        self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        blocks = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        channels = 16
        for s, width in enumerate(widths, start=1):
            stride = 1 if s == 1 else 2
            stage = [
                PreActBlock(channels if b == 0 else width, width, stride if b == 0 else 1, dropout)
                for b in range(blocks)
            ]
            self.add_module(f"layer{s}", nn.Sequential(*stage))
            channels = width
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.relu(self.bn(x)).mean((2, 3)))


def _init_convs(model: nn.Module) -> None:
    # He et al.'s normal init over the outputs, as the reference creates its dense convs.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def wide_resnet(
    depth: int = 28, widen_factor: int = 10, num_classes: int = 10, dropout: float = 0.0
) -> WideResNet:
    """WRN-``depth``-``widen_factor`` for 3-channel images; WRN-28-10 (36.5M parameters) by default.

    ``dropout`` acts between the two convs of each block (Zagoruyko & Komodakis use 0.3;
    the constrained-sparsity reference uses none).

    Examples:
        >>> net = wide_resnet(depth=10, widen_factor=1)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> [name for name, m in net.named_modules() if name.endswith(".conv1")]
        ['layer1.0.conv1', 'layer2.0.conv1', 'layer3.0.conv1']
    """
    return WideResNet(depth, widen_factor, num_classes, dropout)


def resnet18(num_classes: int = 10) -> ResNet:
    """The CIFAR ResNet-18 (11.2M parameters): a 3×3 stem conv of 64 channels and no max pooling,
    then four stages of two basic blocks, 64-128-256-512 wide, with 1×1 conv-BN shortcuts.

    A :class:`~ctrlsparse.models.resnet.ResNet`; its blocks are post-activation
    (conv-BN-ReLU-conv-BN, add, ReLU) with the stride on the first conv.

    Examples:
        >>> net = resnet18()
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> net.layer2[0].conv1
        Conv2d(64, 128, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)
    """
    model = ResNet(3, num_classes, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2))
    _init_convs(model)
    return model


def _check_image_shape(input_shape: Sequence[int], model: str) -> None:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] != 3 or min(shape[1:]) < 8:
        raise ValueError(
            f"{model} takes 3-channel images of at least 8x8 pixels, input_shape=(3, H, W); "
            f"got input_shape={shape}"
        )


def build_wrn28_10(input_shape: Sequence[int], num_classes: int, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 for inputs of ``input_shape`` (3, H, W), H and W >= 8: a model-registry builder.

    Examples:
        >>> build_wrn28_10((3, 32, 32), 100).fc.out_features
        100
    """
    _check_image_shape(input_shape, "WRN-28-10")
    return wide_resnet(28, 10, num_classes, dropout)


def build_resnet18(input_shape: Sequence[int], num_classes: int) -> ResNet:
    """The CIFAR ResNet-18 for inputs of ``input_shape`` (3, H, W), H and W >= 8: a model-registry builder.

    Examples:
        >>> build_resnet18((3, 32, 32), 100).fc.out_features
        100
    """
    _check_image_shape(input_shape, "ResNet-18")
    return resnet18(num_classes)
