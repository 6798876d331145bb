"""An English text corpus that installs from Debian: the Python documentation's prose.

Debian's ``python3-doc`` package (``apt-get install python3-doc``; PSF license) ships the
reStructuredText sources of the Python documentation as ``*.rst.txt`` files under
``/usr/share/doc/python3.X/html/_sources``. The corpus is the prose part of them, the
folders in :data:`PROSE_FOLDERS` (tutorial, HOWTOs, FAQ, language reference, setup and
what's-new notes: about 3.5 MB of English, with some code and markup), not the library
and C-API reference, which are mostly signatures.

Every file is checked before it is used: against the MD5 that dpkg recorded when it
installed the package (``/var/lib/dpkg/info/python3.X-doc.md5sums``), or against a
``MD5SUMS`` file in a directory given as ``root``, and as UTF-8. A file changed on disk,
truncated or not text is a :class:`CorpusError` that names it.

The split into training and validation documents is fixed: every tenth file in sorted
order (``index % 10 == 0``) is a validation document, so no text appears in both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ctrlsparse.errors import CtrlsparseError

PACKAGE = "python3-doc"
SYSTEM_GLOB = "/usr/share/doc/python3.*/html/_sources"
PROSE_FOLDERS = ("tutorial", "howto", "faq", "reference", "using", "whatsnew")
SUFFIX = ".rst.txt"
MANIFEST = "MD5SUMS"
VALIDATION_EVERY = 10


class CorpusError(CtrlsparseError, ValueError):
    """A corpus file is missing, altered, truncated, or not UTF-8 text."""


@dataclass(frozen=True)
class Corpus:
    """A text corpus split into documents.

    Attributes:
        name: the data set's registered name.
        source: the directory the documents were read from.
        train: training documents, in sorted file order.
        validation: validation documents, in sorted file order.
    """

    name: str
    source: Path
    train: tuple[str, ...]
    validation: tuple[str, ...]


def _system_sources() -> list[Path]:
    """Installed ``_sources`` folders, newest Python first (``python3.13`` before ``python3.11``)."""
    # Other packages link their doc folders to python3.X's (python3.X-venv): match the name exactly.
    found = [p for p in Path("/").glob(SYSTEM_GLOB.lstrip("/")) if re.fullmatch(r"python3\.\d+", p.parts[4])]
    return sorted(found, key=lambda p: int(p.parts[4].split(".")[1]), reverse=True)


def _dpkg_manifest(sources: Path) -> dict[str, str]:
    """MD5 by path relative to ``sources``, as dpkg recorded it for the package that installed them."""
    version = sources.parts[4]  # /usr/share/doc/python3.X/...
    md5sums = Path(f"/var/lib/dpkg/info/{version}-doc.md5sums")
    if not md5sums.is_file():
        return {}
    prefix = str(sources.relative_to("/")) + "/"
    manifest = {}
    for line in md5sums.read_text().splitlines():
        md5, _, path = line.partition("  ")
        if path.startswith(prefix):
            manifest[path[len(prefix) :]] = md5
    return manifest


def _read_manifest(path: Path) -> dict[str, str]:
    """A ``md5sum``-format file (``<md5>  <relative path>`` per line)."""
    manifest = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        md5, sep, name = line.partition("  ")
        if not sep or len(md5) != 32:
            raise CorpusError(f"{path}:{number}: expected '<md5>  <path>', got {line!r}")
        manifest[name] = md5
    return manifest


def _documents(sources: Path, manifest: dict[str, str], repair: str) -> list[str]:
    """The non-empty documents under ``sources``, in sorted order, each checked against ``manifest``."""
    files = {
        str(p.relative_to(sources)): p
        for folder in PROSE_FOLDERS
        if (sources / folder).is_dir()
        for p in (sources / folder).rglob(f"*{SUFFIX}")
    }
    missing = sorted(n for n in manifest if n.split("/")[0] in PROSE_FOLDERS and n not in files)
    if missing:
        raise CorpusError(f"{sources}: {len(missing)} corpus files are missing, e.g. {missing[0]}; {repair}")
    texts = []
    for name in sorted(files):
        data = files[name].read_bytes()
        digest, expected = hashlib.md5(data).hexdigest(), manifest.get(name)
        if expected is not None and digest != expected:
            raise CorpusError(
                f"{files[name]}: checksum mismatch (MD5 {digest}, expected {expected}): "
                f"the file was altered or truncated; {repair}"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorpusError(f"{files[name]}: not UTF-8 text ({err})") from None
        if text.strip():
            texts.append(text)
    if len(texts) < 2:
        raise CorpusError(
            f"{sources}: found {len(texts)} non-empty {SUFFIX} documents under {', '.join(PROSE_FOLDERS)}; "
            "the corpus needs at least 2 (one for validation)"
        )
    return texts


def load_python_docs(root: str | Path | None = None) -> Corpus:
    """The Python documentation's prose (Debian ``python3-doc``), split into train and validation.

    ``root``: a directory laid out like ``_sources`` (the :data:`PROSE_FOLDERS` with
    ``*.rst.txt`` files), checked against its ``MD5SUMS`` file when it has one; by default
    the newest installed ``/usr/share/doc/python3.X/html/_sources``, checked against dpkg's
    record of the package.

    Raises:
        FileNotFoundError: the corpus is not installed (the message says which package to install).
        CorpusError: a file is missing from the package, altered, truncated or not UTF-8.

    Examples:
        >>> corpus = load_python_docs()  # doctest: +SKIP
        >>> len(corpus.train), len(corpus.validation)  # doctest: +SKIP
        (105, 12)
    """
    if root is not None:
        sources = Path(root)
        if not sources.is_dir():
            raise FileNotFoundError(f"python_docs: no such directory {sources}")
        manifest = _read_manifest(sources / MANIFEST) if (sources / MANIFEST).is_file() else {}
        repair = f"restore them in {sources}"
    else:
        installed = _system_sources()
        if not installed:
            raise FileNotFoundError(
                "python_docs: the Python documentation sources are not installed "
                f"(looked for {SYSTEM_GLOB}); install them with `apt-get install {PACKAGE}`, "
                "or set [data] root to a copy"
            )
        sources = installed[0]
        manifest = _dpkg_manifest(sources)
        repair = f"reinstall them with `apt-get install --reinstall {PACKAGE}`"
    texts = _documents(sources, manifest, repair)
    validation = tuple(t for i, t in enumerate(texts) if i % VALIDATION_EVERY == 0)
    train = tuple(t for i, t in enumerate(texts) if i % VALIDATION_EVERY != 0)
    return Corpus("python_docs", sources, train, validation)


__all__ = ["PACKAGE", "PROSE_FOLDERS", "Corpus", "CorpusError", "load_python_docs"]
