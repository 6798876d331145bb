"""A data set held in memory, and a minibatch iterator over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass
class Dataset:
    """A classification data set held in memory.

    Attributes:
        name: registered name (see :data:`DATASETS`).
        train, test: ``(images, labels)`` with images of shape ``(N, C, H, W)`` in [0, 1].
        num_classes: number of labels.
    """

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])


class Batches:
    """Minibatches ``(x, y)`` of in-memory tensors, reshuffled every epoch when ``shuffle``.

    Much cheaper than a ``DataLoader`` over a ``TensorDataset`` (no per-item collation).
    ``transform``, when given, maps each batch's inputs before they are yielded: data
    augmentation for training batches, such as :func:`~ctrlsparse.data.augment.random_crop_flip`
    (leave it off for evaluation batches).

    Example:
        >>> x, y = torch.randn(10, 3), torch.arange(10)
        >>> [len(b[1]) for b in Batches(x, y, batch_size=4)]
        [4, 4, 2]
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator
        self.transform = transform

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                inputs = self.inputs[start : start + self.batch_size]
                targets = self.targets[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                inputs, targets = self.inputs[index], self.targets[index]
            yield (inputs if self.transform is None else self.transform(inputs)), targets
