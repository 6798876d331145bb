import pytest
import torch
import torch.nn.functional as F

from ctrlsparse.data import Batches, random_crop_flip


def _images(n=32, channels=3, height=6, width=5):
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(1))


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shape_and_dtype_are_kept():
    x = _images().double()
    out = random_crop_flip(x, padding=2, generator=_seeded())
    assert out.shape == x.shape and out.dtype == x.dtype


def test_no_padding_and_no_flip_is_identity():
    x = _images()
    assert torch.equal(random_crop_flip(x, padding=0, generator=_seeded(), flip=False), x)


def test_each_crop_is_a_window_of_the_padded_image_at_its_own_offset():
    x, padding = _images(), 2
    out = random_crop_flip(x, padding=padding, generator=_seeded(), flip=False)
    padded = F.pad(x, (padding,) * 4)
    height, width = x.shape[2:]
    offsets = []
    for image, crop in zip(padded, out):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(image[:, dy : dy + height, dx : dx + width], crop)
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 5  # drawn per image, not once per batch


def test_flip_mirrors_about_half_of_the_images():
    x = _images(n=64)
    out = random_crop_flip(x, padding=0, generator=_seeded())
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48


def test_crop_and_flip_together_mirror_the_window():
    x, padding = _images(n=64), 1
    out = random_crop_flip(x, padding=padding, generator=_seeded())
    padded = F.pad(x, (padding,) * 4)
    height, width = x.shape[2:]
    for image, crop in zip(padded, out):
        windows = [
            image[:, dy : dy + height, dx : dx + width]
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
        ]
        assert any(torch.equal(w, crop) or torch.equal(w.flip(-1), crop) for w in windows)


def test_same_generator_seed_same_batch():
    x = _images()
    a = random_crop_flip(x, generator=_seeded(3))
    assert torch.equal(a, random_crop_flip(x, generator=_seeded(3)))
    assert not torch.equal(a, random_crop_flip(x, generator=_seeded(4)))


@pytest.mark.parametrize(
    ("shape", "padding", "match"), [((3, 4, 4), 1, "N, C, H, W"), ((2, 3, 4, 4), -1, "padding")]
)
def test_bad_input_is_named(shape, padding, match):
    with pytest.raises(ValueError, match=match):
        random_crop_flip(torch.zeros(shape), padding=padding)


def test_batches_apply_the_transform_to_inputs_only():
    x, y = _images(n=10), torch.arange(10)
    batches = Batches(x, y, batch_size=4, transform=lambda inputs: inputs.flip(-1))
    assert torch.equal(torch.cat([b[0] for b in batches]), x.flip(-1))
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    plain = Batches(x, y, batch_size=4)
    assert torch.equal(torch.cat([b[0] for b in plain]), x)
