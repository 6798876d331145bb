"""MNIST and Fashion-MNIST: find local IDX files, or download them with checksums.

Where files are looked for, in order:

1. ``root`` when given (a directory with the four IDX files, ``.gz`` or raw);
2. the cache, ``$CTRLSPARSE_DATA/<name>`` (default ``~/.cache/ctrlsparse/<name>``);
3. for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist``).

With ``download=True`` missing files are fetched into ``root`` or the cache from the
usual public mirrors; each download is checked against its MD5, written to a
temporary file and renamed into place only when complete, so no half-written file is
ever left, and a file already there is never fetched again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctrlsparse.data.dataset import Dataset
from ctrlsparse.data.download import DownloadError, cache_dir, fetch
from ctrlsparse.data.idx import IDXError, read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Source:
    """Where a data set's ``.gz`` files can be downloaded, with their MD5 checksums."""

    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # keyed by file name without .gz
    system_dirs: tuple[str, ...] = ()


MNIST = Source(
    "mnist",
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    {
        FILES["train_images"]: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        FILES["train_labels"]: "d53e105ee54ea40749a09fcbcd1e9432",
        FILES["test_images"]: "9fb629c4189551a2d022fa330f9573f3",
        FILES["test_labels"]: "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
FASHION_MNIST = Source(
    "fashion_mnist",
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    {
        FILES["train_images"]: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        FILES["train_labels"]: "25c81989df183df01b3e8a0aad5dffbe",
        FILES["test_images"]: "bef4ecab320f06d8554ea6380940ec79",
        FILES["test_labels"]: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def download(source: Source, directory: str | Path, timeout: float = 60.0) -> list[Path]:
    """Download the files of ``source`` missing from ``directory``; return every file's path.

    Raises:
        DownloadError: a file failed on every mirror; the message lists each mirror's failure.

    Examples:
        >>> download(MNIST, cache_dir("mnist"))  # doctest: +SKIP
    """
    directory = Path(directory)
    paths = []
    for stem, md5 in source.md5.items():
        existing = _find(directory, stem)
        if existing is not None:
            paths.append(existing)  # never fetched twice
            continue
        paths.append(fetch(f"{stem}.gz", md5, source.mirrors, directory, source.name, timeout))
    return paths


def _locate(source: Source, root: str | Path | None) -> Path | None:
    directories = (
        [Path(root)] if root is not None else [cache_dir(source.name), *map(Path, source.system_dirs)]
    )
    for directory in directories:
        if all(_find(directory, stem) for stem in FILES.values()):
            return directory
    return None


def load_mnist_like(
    source: Source, root: str | Path | None = None, download_missing: bool = False
) -> Dataset:
    """Load MNIST or Fashion-MNIST as a :class:`Dataset` of (N, 1, 28, 28) images in [0, 1].

    Raises:
        FileNotFoundError: the files are nowhere to be found and ``download_missing`` is off.
        IDXError: a file is corrupt, truncated, or inconsistent with its partner file.
    """
    directory = _locate(source, root)
    if directory is None:
        if not download_missing:
            searched = [str(root)] if root is not None else [str(cache_dir(source.name)), *source.system_dirs]
            hint = " or `apt-get install dataset-fashion-mnist`" if source.system_dirs else ""
            raise FileNotFoundError(
                f"{source.name}: IDX files not found in {', '.join(searched)}; "
                f"set download = true in the problem file's [data] section{hint}"
            )
        directory = Path(root) if root is not None else cache_dir(source.name)
        download(source, directory)
    tensors = {key: read_idx(_find(directory, stem)) for key, stem in FILES.items()}
    splits = {}
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        image_file, label_file = (
            _find(directory, FILES[f"{split}_images"]),
            _find(directory, FILES[f"{split}_labels"]),
        )
        if images.dim() != 3:
            raise IDXError(f"{image_file}: expected images of shape (N, H, W), got {tuple(images.shape)}")
        if labels.dim() != 1:
            raise IDXError(f"{label_file}: expected labels of shape (N,), got {tuple(labels.shape)}")
        if len(images) != len(labels):
            raise IDXError(
                f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
            )
        if len(labels) and int(labels.max()) > 9:
            raise IDXError(f"{label_file}: label {int(labels.max())} outside the valid range 0-9")
        splits[split] = (images.float().unsqueeze(1) / 255.0, labels.long())
    return Dataset(source.name, splits["train"], splits["test"], 10)


def load_mnist(root: str | None = None, download: bool = False) -> Dataset:
    """MNIST (LeCun et al., 1998): 60000 train / 10000 test 28x28 digits."""
    return load_mnist_like(MNIST, root, download)


def load_fashion_mnist(root: str | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST (Xiao et al., 2017): 60000 train / 10000 test 28x28 clothing images."""
    return load_mnist_like(FASHION_MNIST, root, download)


__all__ = ["FASHION_MNIST", "MNIST", "DownloadError", "IDXError", "Source", "download", "load_mnist_like"]
