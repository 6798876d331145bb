"""Offline tokenizers: a byte-level BPE trained on the corpus itself, or plain UTF-8 bytes.

Nothing is downloaded. :func:`train_bpe` trains a byte-level BPE with Hugging Face
``tokenizers`` (``pip install 'ctrlsparse[lm]'``) on the training documents;
:func:`corpus_tokenizer` caches it as ``bpe-<vocab>-<digest>.json`` in the corpus's cache
folder (``$CTRLSPARSE_DATA/<name>``), keyed by the vocabulary size and the MD5 of the
training text, so a second run reads the same merges back instead of training again.
The model's vocabulary is always the requested ``vocab_size``: a corpus too small to fill
it leaves some embedding rows unused, never a model of another size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ctrlsparse.data.download import cache_dir

END_OF_TEXT = "<|endoftext|>"
"""Separates documents in the token stream; id 0 of the BPE, id 256 of :class:`ByteTokenizer`."""
TOKENIZERS = ("bpe", "bytes")
"""``[data] tokenizer`` choices."""
MIN_BPE_VOCAB = 257  # the 256 byte symbols and END_OF_TEXT


class Tokenizer(Protocol):
    """What the windowing needs: ``encode``, ``decode``, the end-of-text id and the vocabulary size."""

    vocab_size: int
    end_of_text: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0-255), with ``END_OF_TEXT`` as id 256: no training, no package.

    Examples:
        >>> tokenizer = ByteTokenizer()
        >>> tokenizer.encode("hé"), tokenizer.decode(tokenizer.encode("hé"))
        ([104, 195, 169], 'hé')
    """

    vocab_size = 257
    end_of_text = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE from ``tokenizers``, seen through the :class:`Tokenizer` interface.

    ``vocab_size`` is the size asked for at training, which the model's embedding takes.

    Examples:
        >>> tokenizer = train_bpe(["the cat sat on the mat"] * 20, vocab_size=300)
        >>> tokenizer.decode(tokenizer.encode("the cat")), tokenizer.vocab_size
        ('the cat', 300)
    """

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.end_of_text = tokenizer.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every text (in parallel threads)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> BPETokenizer:
        """A tokenizer written by :meth:`save`."""
        return cls(_tokenizers().Tokenizer.from_file(str(path)), vocab_size)


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "the BPE tokenizer needs Hugging Face tokenizers: pip install 'ctrlsparse[lm]' "
            '(or set [data] tokenizer = "bytes")'
        ) from None
    return tokenizers


def train_bpe(texts: Sequence[str], vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` tokens on ``texts``; deterministic.

    Raises:
        ValueError: ``vocab_size`` below 257 (the byte alphabet and ``END_OF_TEXT``).

    Examples:
        >>> tokenizer = train_bpe(["a first document", "a second one"], vocab_size=280)
        >>> tokenizer.end_of_text
        0
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_BPE_VOCAB:
        raise ValueError(
            f"vocab_size of a byte-level BPE must be an int >= {MIN_BPE_VOCAB}, got {vocab_size!r}"
        )
    tk = _tokenizers()
    # Merges are ranked by count, ties by the pair itself, so one process gives one result;
    # the variable keeps the Rust thread pool from reordering anything it might.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer, vocab_size)


def corpus_tokenizer(name: str, texts: Sequence[str], kind: str = "bpe", vocab_size: int = 4096) -> Tokenizer:
    """The tokenizer of corpus ``name``: :class:`ByteTokenizer`, or a BPE trained on ``texts``
    and cached in ``cache_dir(name)``.

    Raises:
        ValueError: an unknown ``kind`` (naming the choices) or a ``vocab_size`` below 257.

    Examples:
        >>> corpus_tokenizer("python_docs", [], kind="bytes").vocab_size
        257
    """
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {kind!r}; valid tokenizers: {', '.join(TOKENIZERS)}")
    if kind == "bytes":
        return ByteTokenizer()
    digest = hashlib.md5("\0".join(texts).encode("utf-8")).hexdigest()[:12]
    path = cache_dir(name) / f"bpe-{vocab_size}-{digest}.json"
    if path.is_file():
        try:
            return BPETokenizer.load(path, vocab_size)
        except Exception:  # a damaged cache file (tokenizers raises plain Exception): train it again
            path.unlink()
    tokenizer = train_bpe(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")  # renamed into place: never half a file
    tokenizer.save(partial)
    os.replace(partial, path)
    return tokenizer


__all__ = [
    "END_OF_TEXT",
    "MIN_BPE_VOCAB",
    "TOKENIZERS",
    "BPETokenizer",
    "ByteTokenizer",
    "Tokenizer",
    "corpus_tokenizer",
    "train_bpe",
]
