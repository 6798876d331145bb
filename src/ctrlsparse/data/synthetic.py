"""A synthetic classification task of any input shape, made from a seed: for tests and quick runs.

The labels follow a fixed random linear rule of a few hidden factors, so the task is
learnable from a few hundred examples at any input size: a linear model or a small MLP
beats chance within a hundred steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ctrlsparse.data.dataset import Dataset

LATENT_DIM = 16  # hidden factors behind each synthetic image


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a size is a typo, not a request for one example.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def synthetic(
    shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    train_size: int = 512,
    test_size: int = 256,
    seed: int = 0,
    vocab_size: int | None = None,
) -> Dataset:
    """A learnable synthetic data set named ``"synthetic"``, the same for the same arguments.

    Images (``vocab_size=None``): float32 inputs in (0, 1) of shape ``(N, *shape)``, made
    from :data:`LATENT_DIM` Gaussian factors ``z`` per image as ``x = sigmoid(z @ M)``; the
    label is ``argmax(z @ R)``. ``M`` and ``R`` are fixed Gaussian matrices (``R`` with unit
    columns), so pixels are correlated as in real images and the rule is nearly linear in ``x``.

    Tokens (``vocab_size`` set, ``shape=(seq_len,)``): inputs are token ids in
    ``[0, vocab_size)`` of shape ``(N, seq_len)``, int64; the label is ``argmax`` over
    classes of the sum of a fixed Gaussian score ``S[token, class]`` (standardized over the
    vocabulary) over the sequence: a linear rule of the bag of words, which an embedding
    followed by pooling can learn.

    Labels are int64. Train and test are drawn from the same distribution.

    Raises:
        ValueError: naming the argument that is out of range.

    Examples:
        >>> data = synthetic(shape=(3, 8, 8), num_classes=4, train_size=64, test_size=32)
        >>> data.input_shape, data.train[0].dtype, len(data.test[1])
        ((3, 8, 8), torch.float32, 32)
        >>> synthetic(shape=(16,), vocab_size=100).train[0].shape
        torch.Size([512, 16])
    """
    if (
        isinstance(shape, (str, bytes))
        or not isinstance(shape, Sequence)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    _check_int("num_classes", num_classes, 2)
    _check_int("train_size", train_size, 1)
    _check_int("test_size", test_size, 1)
    _check_int("seed", seed, 0)
    if vocab_size is not None:
        _check_int("vocab_size", vocab_size, 2)
        if len(shape) != 1:
            raise ValueError(f"with vocab_size, shape must be (seq_len,), got {tuple(shape)!r}")
    generator = torch.Generator().manual_seed(seed)
    n = train_size + test_size
    # Every class's logit has mean 0 and the same spread, so the classes are about equally frequent.
    if vocab_size is None:
        # Pixels driven by a few latent factors, as in real images: a rule of all the pixels
        # independently would need about as many examples as pixels to be learnt.
        size = int(torch.Size(shape).numel())
        latent = min(LATENT_DIM, size)
        mixing = torch.randn(latent, size, generator=generator) / latent**0.5
        readout = torch.randn(latent, num_classes, generator=generator)
        readout = readout / readout.norm(dim=0)
        factors = torch.randn(n, latent, generator=generator)
        inputs = torch.sigmoid(factors @ mixing).view(n, *shape)
        logits = factors @ readout
    else:
        scores = torch.randn(vocab_size, num_classes, generator=generator)
        scores = (scores - scores.mean(dim=0)) / scores.std(dim=0)
        inputs = torch.randint(0, vocab_size, (n, *shape), generator=generator)
        logits = scores[inputs].sum(dim=1)
    labels = logits.argmax(dim=1)
    train = (inputs[:train_size], labels[:train_size])
    test = (inputs[train_size:], labels[train_size:])
    return Dataset("synthetic", train, test, num_classes)


__all__ = ["synthetic"]
