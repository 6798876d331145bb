"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), read from the official python-pickle archives.

Where the archive (``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``) is looked
for, as for MNIST: in ``root`` when given, else in the cache ``$CTRLSPARSE_DATA/<name>``
(default ``~/.cache/ctrlsparse/<name>``). With ``download=True`` a missing archive is
fetched there from the authors' page, checked against its MD5 and renamed into place only
when complete (see :mod:`ctrlsparse.data.download`). The archive is read in place, never
extracted, so the cache holds the one file.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctrlsparse.data.dataset import Dataset
from ctrlsparse.data.download import cache_dir, fetch
from ctrlsparse.errors import CtrlsparseError

_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_HEIGHT = _WIDTH = 32
_PIXELS = 3 * _HEIGHT * _WIDTH  # a row of b"data": the red, then green, then blue plane, row-major


@dataclass(frozen=True)
class CifarArchive:
    """Where a CIFAR archive comes from and what it holds.

    Attributes:
        name: registered name, also the cache folder.
        file: archive file name, appended to each of ``mirrors`` to download it.
        md5: checksum of the archive.
        mirrors: URL prefixes to download from, tried in order.
        folder: the folder inside the archive that holds the pickled batches.
        train, test: pickled batches of each split, in order.
        label_key: key of the labels in each batch.
        num_classes: number of labels.
    """

    name: str
    file: str
    md5: str
    mirrors: tuple[str, ...]
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int


CIFAR10 = CifarArchive(
    "cifar10",
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    (_TORONTO,),
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    b"labels",
    10,
)
CIFAR100 = CifarArchive(
    "cifar100",
    "cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
    (_TORONTO,),
    "cifar-100-python",
    ("train",),
    ("test",),
    b"fine_labels",  # the 100 classes; b"coarse_labels" holds the 20 superclasses
    100,
)


class ArchiveError(CtrlsparseError, ValueError):
    """A data set archive is corrupt, truncated, or lacks what it should hold."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and bytes, and nothing else.

    Loading a pickle can run arbitrary code; the CIFAR batches need only numpy's array
    reconstruction (``numpy.core`` as written by the Python 2 numpy of the archives,
    ``numpy._core`` from numpy 2), so everything else is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


def _redownload_hint(archive: CifarArchive) -> str:
    return f"delete it and load {archive.name} again with download=True to fetch a fresh copy"


def _read_batches(archive: CifarArchive, path: Path) -> dict[str, dict]:
    """Unpickle every batch of both splits, reading the archive once from start to end.

    One sequential pass because the archive's members are not in split order, and each
    seek backwards in a gzip stream decompresses it again from the start.
    """
    wanted = {f"{archive.folder}/{batch}": batch for batch in archive.train + archive.test}
    batches = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    # encoding="bytes": the archives were pickled by Python 2, whose str keys become bytes.
                    unpickler = _BatchUnpickler(tar.extractfile(member), encoding="bytes")
                    batches[wanted[member.name]] = unpickler.load()
    # A damaged archive makes gzip, tarfile and pickle raise nearly any exception type.
    except Exception as err:
        raise ArchiveError(
            f"{path}: corrupt, truncated or not a CIFAR archive ({type(err).__name__}: {err}); "
            + _redownload_hint(archive)
        ) from err
    missing = [name for name, batch in wanted.items() if batch not in batches]
    if missing:
        raise ArchiveError(f"{path}: missing {', '.join(missing)}; {_redownload_hint(archive)}")
    return batches


def _split(
    archive: CifarArchive, path: Path, batches: dict[str, dict], names: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Join the named batches into images ``(N, 3, 32, 32)`` in [0, 1] and int64 labels."""
    images, labels = [], []
    for name in names:
        batch = batches[name]
        where = f"{path}: {archive.folder}/{name}"
        if not isinstance(batch, dict) or b"data" not in batch or archive.label_key not in batch:
            raise ArchiveError(
                f"{where} is not a CIFAR batch (no b'data' or {archive.label_key!r}); "
                f"{_redownload_hint(archive)}"
            )
        data, target = np.asarray(batch[b"data"]), np.asarray(batch[archive.label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise ArchiveError(
                f"{where}: expected uint8 images of shape (N, {_PIXELS}), got {data.dtype} {data.shape}"
            )
        if target.shape != (len(data),) or not np.issubdtype(target.dtype, np.integer):
            raise ArchiveError(
                f"{where}: expected {len(data)} integer labels, got {target.dtype} {target.shape}"
            )
        if len(target) and (target.min() < 0 or target.max() >= archive.num_classes):
            bad = target.min() if target.min() < 0 else target.max()
            raise ArchiveError(f"{where}: label {bad} outside the valid range 0-{archive.num_classes - 1}")
        images.append(data)
        labels.append(target.astype(np.int64))
    # Convert once, after joining, so that only one float copy of the split is ever made.
    pixels = torch.from_numpy(np.concatenate(images)).view(-1, 3, _HEIGHT, _WIDTH)
    return pixels.float().div_(255.0), torch.from_numpy(np.concatenate(labels))


def load_cifar(archive: CifarArchive, root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a CIFAR archive as a :class:`Dataset` of (N, 3, 32, 32) float32 images in [0, 1].

    Raises:
        FileNotFoundError: the archive is not there and ``download`` is off; the message says
            where it looked.
        DownloadError: the archive could not be downloaded intact; no file is left behind.
        ArchiveError: the archive is corrupt, truncated, or lacks a batch; the message names
            the file and says to delete it and download it again.

    Examples:
        >>> load_cifar(CIFAR10, download=True).input_shape  # doctest: +SKIP
        (3, 32, 32)
    """
    directory = Path(root) if root is not None else cache_dir(archive.name)
    path = directory / archive.file
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"{archive.name}: {archive.file} not found in {directory}; pass download=True "
                "(download = true in the problem file's [data] section) to fetch it there"
            )
        fetch(archive.file, archive.md5, archive.mirrors, directory, archive.name)
    batches = _read_batches(archive, path)
    train = _split(archive, path, batches, archive.train)
    test = _split(archive, path, batches, archive.test)
    return Dataset(archive.name, train, test, archive.num_classes)


def load_cifar10(root: str | Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test 32x32 colour images of 10 classes.

    Examples:
        >>> data = load_cifar10(download=True)  # doctest: +SKIP
        >>> data.input_shape, data.num_classes  # doctest: +SKIP
        ((3, 32, 32), 10)
    """
    return load_cifar(CIFAR10, root, download)


def load_cifar100(root: str | Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-100: 50000 train / 10000 test 32x32 colour images of 100 classes (the fine labels).

    Examples:
        >>> data = load_cifar100(download=True)  # doctest: +SKIP
        >>> data.input_shape, data.num_classes  # doctest: +SKIP
        ((3, 32, 32), 100)
    """
    return load_cifar(CIFAR100, root, download)


__all__ = [
    "CIFAR10",
    "CIFAR100",
    "ArchiveError",
    "CifarArchive",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
]
