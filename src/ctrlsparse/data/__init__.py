"""Data sets as in-memory tensors: the registry behind ``[data] name`` in problem files.

Image data sets are in :data:`DATASETS`; text corpora for language models, cut into
next-token windows, in :data:`~ctrlsparse.data.text.CORPORA` (:func:`load_text`).
"""

from __future__ import annotations

from collections.abc import Callable

from ctrlsparse.data.augment import random_crop_flip
from ctrlsparse.data.cifar import ArchiveError, load_cifar10, load_cifar100
from ctrlsparse.data.corpus import CorpusError
from ctrlsparse.data.dataset import Batches, Dataset
from ctrlsparse.data.digits import load_digits
from ctrlsparse.data.download import DownloadError
from ctrlsparse.data.idx import IDXError, read_idx
from ctrlsparse.data.mnist import load_fashion_mnist, load_mnist
from ctrlsparse.data.synthetic import synthetic
from ctrlsparse.data.text import load_text

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}


def load_dataset(name: str, root: str | None = None, download: bool = False) -> Dataset:
    """Load a registered data set by name.

    Examples:
        >>> load_dataset("digits").input_shape
        (1, 8, 8)
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(DATASETS)}")
    return DATASETS[name](root, download)


__all__ = [
    "DATASETS",
    "ArchiveError",
    "Batches",
    "CorpusError",
    "Dataset",
    "DownloadError",
    "IDXError",
    "load_dataset",
    "load_text",
    "random_crop_flip",
    "read_idx",
    "synthetic",
]
