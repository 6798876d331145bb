import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.data import synthetic


def _test_accuracy(model, data, steps=50, lr=1e-2):
    """Full-batch Adam on the training split; accuracy on the test split."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(data.train[0]), data.train[1]).backward()
        optimizer.step()
    with torch.no_grad():
        return (model(data.test[0]).argmax(1) == data.test[1]).float().mean().item()


def test_images_shapes_dtypes_and_range():
    data = synthetic(shape=(3, 8, 8), num_classes=4, train_size=40, test_size=20)
    (x, y), (x_test, y_test) = data.train, data.test
    assert data.name == "synthetic" and data.num_classes == 4 and data.input_shape == (3, 8, 8)
    assert x.shape == (40, 3, 8, 8) and x_test.shape == (20, 3, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y_test.shape == (20,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_tokens_shapes_and_dtypes():
    data = synthetic(shape=(12,), num_classes=3, train_size=30, test_size=10, vocab_size=50)
    x, y = data.train
    assert x.shape == (30, 12) and x.dtype == torch.int64 and y.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < 50 and data.input_shape == (12,)


@pytest.mark.parametrize("vocab_size", [None, 20])
def test_same_seed_same_data_other_seed_other_data(vocab_size):
    shape = (1, 8, 8) if vocab_size is None else (8,)
    a, b = (synthetic(shape=shape, seed=3, vocab_size=vocab_size) for _ in range(2))
    c = synthetic(shape=shape, seed=4, vocab_size=vocab_size)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train[0], c.train[0])


@pytest.mark.parametrize("vocab_size", [None, 30])
def test_every_class_occurs(vocab_size):
    shape = (1, 28, 28) if vocab_size is None else (16,)
    counts = torch.bincount(synthetic(shape=shape, vocab_size=vocab_size).train[1], minlength=10)
    assert int(counts.min()) > 512 / 10 / 4  # none rarer than a quarter of its even share


def test_images_are_learnable_by_a_linear_model():
    data = synthetic()  # the default: 784 pixels, 512 training images
    assert _test_accuracy(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), data) > 0.5  # chance: 0.1


def test_tokens_are_learnable_by_a_bag_of_embeddings():
    data = synthetic(shape=(16,), vocab_size=50)
    assert _test_accuracy(nn.EmbeddingBag(50, 10, mode="sum"), data, lr=5e-2) > 0.4  # chance: 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (1, 0, 4)}, r"shape must be .* got \(1, 0, 4\)"),
        ({"shape": ()}, "shape must be"),
        ({"shape": "28"}, "shape must be"),
        ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
        ({"train_size": 0}, "train_size must be an int >= 1, got 0"),
        ({"test_size": 2.5}, "test_size must be an int >= 1, got 2.5"),
        ({"vocab_size": 1, "shape": (4,)}, "vocab_size must be an int >= 2, got 1"),
        ({"vocab_size": 10}, r"with vocab_size, shape must be \(seq_len,\), got \(1, 28, 28\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(**kwargs)
