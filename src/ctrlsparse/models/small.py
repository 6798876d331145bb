"""The papers' architectures as plain ``nn.Module``s (sparsify them afterwards).

Layer names are the ones used in problem files and per-layer targets: ``fc1``, ``fc2``,
``fc3`` for the MLP and ``conv1``, ``conv2``, ``fc1``, ``fc2`` for LeNet-5-Caffe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn


def mlp(input_size: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10) -> nn.Sequential:
    """The MLP of Louizos et al. (2018), 784-300-100-10 by default; flattens its input.

    Examples:
        >>> net = mlp(input_size=64)
        >>> [name for name, m in net.named_children() if isinstance(m, nn.Linear)]
        ['fc1', 'fc2', 'fc3']
    """
    sizes = [input_size, *hidden, num_classes]
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers.append((f"fc{i}", nn.Linear(n_in, n_out)))
        if i < len(sizes) - 1:
            layers.append((f"relu{i}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


def lenet5(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    """LeNet-5-Caffe, 20-50-800-500: two 5x5 convolutions with 2x2 max pooling, two dense layers.

    ``800`` is 50 channels x 4 x 4 for 28x28 inputs; other input sizes change it.

    Examples:
        >>> net = lenet5((1, 28, 28))
        >>> net.fc1.in_features
        800
    """
    channels, height, width = input_shape
    for _ in range(2):  # conv 5x5 (valid) then 2x2 pooling, twice
        height, width = (height - 4) // 2, (width - 4) // 2
    if height < 1 or width < 1:
        raise ValueError(
            f"LeNet-5 needs inputs of at least 16x16 pixels, got input_shape={tuple(input_shape)}"
        )
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(channels, 20, 5)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(20, 50, 5)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(50 * height * width, 500)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(500, num_classes)),
            ]
        )
    )
