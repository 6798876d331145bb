"""Text corpora as next-token windows: the language-modelling data sets behind ``[data] name``.

A corpus's documents are tokenized, joined with the end-of-text token after each one,
and cut into non-overlapping windows of ``seq_len + 1`` tokens (the last partial window
is dropped). A window ``w`` gives the input ``w[:-1]`` and the labels ``w[1:]``: the labels
are already shifted, so position ``t`` of the model's logits predicts ``labels[t]``
(:func:`~ctrlsparse.training.lm.next_token_loss`). Inputs and labels are int64 tensors
of shape ``(N, seq_len)``; Hugging Face causal LMs take the inputs as their first
positional argument, ``input_ids``, so the training loop calls ``model(inputs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ctrlsparse.data.corpus import Corpus, load_python_docs
from ctrlsparse.data.dataset import Dataset
from ctrlsparse.data.tokenizer import Tokenizer, corpus_tokenizer

CORPORA: dict[str, Callable[..., Corpus]] = {"python_docs": load_python_docs}
"""Text corpora by ``[data] name``: ``loader(root)`` → :class:`~ctrlsparse.data.corpus.Corpus`."""


def token_windows(ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` of shape ``(N, seq_len)`` from a 1-D token stream: labels shifted by one.

    Raises:
        ValueError: ``seq_len`` below 1, or a stream shorter than one window.

    Examples:
        >>> inputs, labels = token_windows(torch.arange(7), seq_len=3)
        >>> inputs.tolist(), labels.tolist()
        ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}")
    count = (len(ids) - 1) // seq_len
    if count < 1:
        raise ValueError(f"a stream of {len(ids)} tokens is shorter than one window of {seq_len} + 1")
    # Window k covers tokens [k*seq_len, (k+1)*seq_len]: its last label is the next window's first input.
    starts = torch.arange(count) * seq_len
    windows = ids[starts.unsqueeze(1) + torch.arange(seq_len + 1)]
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def token_stream(tokenizer: Tokenizer, documents: Sequence[str]) -> torch.Tensor:
    """The documents' token ids, each followed by the end-of-text token, as one int64 tensor.

    Examples:
        >>> from ctrlsparse.data.tokenizer import ByteTokenizer
        >>> token_stream(ByteTokenizer(), ["hi", "yo"]).tolist()
        [104, 105, 256, 121, 111, 256]
    """
    encode_batch = getattr(tokenizer, "encode_batch", None)
    encoded = encode_batch(documents) if encode_batch else [tokenizer.encode(d) for d in documents]
    ids = [i for doc in encoded for i in (*doc, tokenizer.end_of_text)]
    return torch.tensor(ids, dtype=torch.long)


def load_text(
    name: str,
    root: str | None = None,
    seq_len: int = 128,
    tokenizer: str = "bpe",
    vocab_size: int = 4096,
) -> Dataset:
    """A text corpus as next-token windows: ``train`` and ``test`` (validation) ``(inputs, labels)``.

    The tokenizer is trained on the training documents only (cached, see
    :func:`~ctrlsparse.data.tokenizer.corpus_tokenizer`); ``num_classes`` is its
    vocabulary size, which the model's embedding and head take.

    Raises:
        ValueError: an unknown corpus or tokenizer (naming the choices), or a bad ``seq_len``.
        FileNotFoundError: the corpus is not installed (naming the package to install).

    Examples:
        >>> data = load_text("python_docs", seq_len=64, tokenizer="bytes")  # doctest: +SKIP
        >>> data.input_shape, data.num_classes  # doctest: +SKIP
        ((64,), 257)
    """
    if name not in CORPORA:
        raise ValueError(f"unknown text corpus {name!r}; valid corpora: {', '.join(CORPORA)}")
    corpus = CORPORA[name](root)
    tok = corpus_tokenizer(name, corpus.train, tokenizer, vocab_size)
    train = token_windows(token_stream(tok, corpus.train), seq_len)
    validation = token_windows(token_stream(tok, corpus.validation), seq_len)
    return Dataset(name, train, validation, tok.vocab_size)


__all__ = ["CORPORA", "load_text", "token_stream", "token_windows"]
