"""A data set held in memory, and a minibatch iterator over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass
class Dataset:
    """A classification data set held in memory, or a text corpus's next-token windows
    (:func:`~ctrlsparse.data.load_text`: inputs and labels are token ids ``(N, seq_len)``,
    ``num_classes`` the vocabulary size).

    Attributes:
        name: registered name (see :data:`DATASETS`).
        train: ``(images, labels)`` with images of shape ``(N, C, H, W)`` in [0, 1].
        test: the same for the test split.
        num_classes: number of labels.
    """

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


class Batches:
    """Minibatches ``(x, y)`` of in-memory tensors, reshuffled every epoch when ``shuffle``.

    Much cheaper than a ``DataLoader`` over a ``TensorDataset`` (no per-item collation).
    ``transform``, when given, maps each batch's inputs before they are yielded: data
    augmentation for training batches, such as :func:`~ctrlsparse.data.augment.random_crop_flip`
    (leave it off for evaluation batches).

    The position in the epoch round-trips through :meth:`state_dict`, so a run resumed from a
    mid-epoch checkpoint sees the same batches, in the same order and with the same
    augmentation, as one that was never stopped: the state holds the shuffling generator's
    state at the epoch's start, the number of batches already yielded, and the state of the
    transform's generator (its ``generator`` keyword or attribute).

    Examples:
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
        self._epoch_start: torch.Tensor | None = None  # shuffling generator's state at the epoch's start
        self._position = 0  # batches yielded in the current epoch
        self._resume: dict | None = None
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> Batches:
        """Yield only rank ``rank``'s share of every batch (``tensor_split`` into ``world_size``
        parts): the batch size stays the global one. :func:`~ctrlsparse.fit` calls it in a
        process group. Every rank must use the same shuffling seed."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank!r}")
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def _transform_generator(self) -> torch.Generator | None:
        transform = self.transform
        generator = getattr(transform, "generator", None)
        if generator is None and isinstance(getattr(transform, "keywords", None), dict):
            generator = transform.keywords.get("generator")  # functools.partial(..., generator=g)
        return generator if isinstance(generator, torch.Generator) else None

    def state_dict(self) -> dict:
        """Where the iteration stands: enough for the next ``iter()`` to continue from there."""
        shuffled = self.shuffle and self.generator is not None
        finished = self._position in (0, len(self))
        state = {
            "position": 0 if finished else self._position,
            "generator": None
            if not shuffled
            else (self.generator.get_state() if finished else self._epoch_start.clone()),
        }
        transform_rng = self._transform_generator()
        state["transform_generator"] = None if transform_rng is None else transform_rng.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Make the next ``iter()`` continue where :meth:`state_dict` was taken."""
        if state["position"] and (self.shuffle and self.generator is None):
            raise ValueError("a shuffled Batches without a generator cannot resume mid-epoch: give it one")
        if not 0 <= state["position"] <= len(self):
            raise ValueError(f"position {state['position']} is outside an epoch of {len(self)} batches")
        self._resume = dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.targets)
        skip, resume, self._resume = 0, self._resume, None
        if resume is not None:
            if resume["generator"] is not None and self.generator is not None:
                self.generator.set_state(resume["generator"])
            skip = resume["position"]
        if self.shuffle and self.generator is not None:
            self._epoch_start = self.generator.get_state()
        self._position = skip
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if resume is not None and resume.get("transform_generator") is not None:
            self._transform_generator().set_state(resume["transform_generator"])
        for start in range(skip * self.batch_size, n, self.batch_size):
            if order is None and self.world_size == 1:  # a view, no copy
                inputs = self.inputs[start : start + self.batch_size]
                targets = self.targets[start : start + self.batch_size]
            else:
                end = min(start + self.batch_size, n)
                index = torch.arange(start, end) if order is None else order[start:end]
                if self.world_size > 1:  # this rank's share of the global batch
                    index = index.tensor_split(self.world_size)[self.rank]
                inputs, targets = self.inputs[index], self.targets[index]
            self._position += 1
            yield (inputs if self.transform is None else self.transform(inputs)), targets
