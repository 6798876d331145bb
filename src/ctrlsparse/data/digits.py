"""scikit-learn's bundled 8x8 digits: the offline default data set."""

from __future__ import annotations

import torch

from ctrlsparse.data.dataset import Dataset


def load_digits(root: str | None = None, download: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, offline), split 1437 train / 360 test.

    The split is fixed (it does not depend on the run's seed) so runs are comparable.

    Examples:
        >>> data = load_digits()
        >>> data.input_shape, len(data.test[1])
        ((1, 8, 8), 360)
    """
    del root, download  # the data ship with scikit-learn
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set ships with scikit-learn: pip install 'ctrlsparse[digits]'"
        ) from None
    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:360], order[360:]
    return Dataset("digits", (images[train], labels[train]), (images[test], labels[test]), 10)
