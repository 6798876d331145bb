import pytest
import torch

from ctrlsparse.data import Batches, load_dataset


def test_digits_split_is_fixed_and_scaled():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train[1]) == 1437 and len(a.test[1]) == 360
    assert torch.equal(a.test[1], b.test[1])
    assert float(a.train[0].min()) >= 0.0 and float(a.train[0].max()) <= 1.0


def test_unknown_data_set_lists_choices():
    with pytest.raises(ValueError, match="valid data sets: digits"):
        load_dataset("cifar")


def test_batches_cover_every_example_once_per_epoch():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    batches = Batches(x, y, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 4
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))  # shuffled


def test_batches_reject_bad_size():
    with pytest.raises(ValueError, match="batch_size"):
        Batches(torch.zeros(2), torch.zeros(2), 0)
