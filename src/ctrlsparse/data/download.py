"""Downloads checked against an MD5 and written atomically, shared by the data sets fetched from the web.

A file is written to a temporary file next to its destination and renamed into place
only once its length and checksum are right, so no half-written file is ever left.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ctrlsparse.errors import CtrlsparseError


class DownloadError(CtrlsparseError, OSError):
    """A file could not be downloaded intact from any mirror."""


def cache_dir(name: str) -> Path:
    """``$CTRLSPARSE_DATA/<name>``, by default ``~/.cache/ctrlsparse/<name>``.

    Examples:
        >>> cache_dir("mnist").name
        'mnist'
    """
    base = os.environ.get("CTRLSPARSE_DATA") or Path.home() / ".cache" / "ctrlsparse"
    return Path(base) / name


def _fetch_url(url: str, destination: Path, md5: str, timeout: float) -> None:
    """Download ``url`` to ``destination`` atomically, checking length and MD5."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    tmp = Path(tmp_name)
    try:
        digest, received = hashlib.md5(), 0
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected_length = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if expected_length is not None and received != int(expected_length):
            raise DownloadError(f"truncated transfer ({received} of {expected_length} bytes)")
        if digest.hexdigest() != md5:
            raise DownloadError(f"checksum mismatch (MD5 {digest.hexdigest()}, expected {md5})")
        os.replace(tmp, destination)
    except BaseException:  # an interrupted download must not leave its temporary file behind either
        tmp.unlink(missing_ok=True)
        raise


def fetch(
    file_name: str,
    md5: str,
    mirrors: Sequence[str],
    directory: str | Path,
    dataset: str,
    timeout: float = 60.0,
) -> Path:
    """Download ``file_name`` from the first of ``mirrors`` that serves it intact; return its path.

    Each mirror is a URL prefix that ``file_name`` is appended to.

    Raises:
        DownloadError: every mirror failed; the message names the file, ``dataset``, and
            each mirror's failure.

    Examples:
        >>> fetch("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        ...       ["https://www.cs.toronto.edu/~kriz/"], cache_dir("cifar10"), "cifar10")  # doctest: +SKIP
    """
    destination = Path(directory) / file_name
    failures = []
    for mirror in mirrors:
        url = mirror + file_name
        try:
            _fetch_url(url, destination, md5, timeout)
            return destination
        # http.client.IncompleteRead is no OSError: without it a cut connection would skip the next mirror.
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            failures.append(f"{url}: {err}")
    raise DownloadError(f"could not download {file_name} for {dataset}: " + "; ".join(failures))


__all__ = ["DownloadError", "cache_dir", "fetch"]
