"""Reader for IDX files, the format of MNIST and Fashion-MNIST (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ctrlsparse.errors import CtrlsparseError

# Type codes of the IDX format's third magic byte.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


class IDXError(CtrlsparseError, ValueError):
    """An IDX file is missing, truncated or not in the IDX format."""


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise IDXError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IDXError(f"{path}: corrupt or truncated gzip data ({err})") from None


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (``.gz`` or raw) into a tensor of its stored shape.

    Raises:
        IDXError: naming the file and what is wrong (magic number, type code,
            dimensions, or a data section shorter or longer than the header says).

    Examples:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        torch.Size([10000, 28, 28])
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}, expected 0000TTNN)"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        valid = ", ".join(f"0x{c:02x}" for c in _DTYPES)
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02x}; valid codes: {valid}")
    if ndim < 1:
        raise IDXError(f"{path}: IDX header declares {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes, expected {header})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise IDXError(
            f"{path}: {problem}: header shape {tuple(shape)} needs {expected} data bytes, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
