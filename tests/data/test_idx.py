import numpy as np
import pytest
import torch

from ctrlsparse.data import IDXError, read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, compress, write_idx):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    tensor = read_idx(write_idx(tmp_path / "x.idx", images, compress=compress))
    assert tensor.dtype == torch.uint8 and torch.equal(tensor, torch.from_numpy(images))


def test_big_endian_floats(tmp_path, write_idx):
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    assert read_idx(write_idx(tmp_path / "f.idx", values, code=0x0D)).tolist() == [1.5, -2.0, 3.25]


def test_truncated_data_names_file_and_sizes(tmp_path, write_idx):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 2, 2), np.uint8), cut=3)
    with pytest.raises(
        IDXError, match=r"t10k-images-idx3-ubyte: truncated: header shape \(4, 2, 2\) needs 16"
    ):
        read_idx(path)


def test_trailing_bytes(tmp_path, write_idx):
    path = write_idx(tmp_path / "x", np.zeros(3, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IDXError, match="trailing bytes"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(IDXError, match="x: not an IDX file"):
        read_idx(path)


def test_unknown_type_code(tmp_path, write_idx):
    path = write_idx(tmp_path / "x", np.zeros(2, np.uint8), code=0x07)
    with pytest.raises(IDXError, match="unknown IDX type code 0x07"):
        read_idx(path)


def test_truncated_gzip(tmp_path, write_idx):
    path = write_idx(tmp_path / "x.gz", np.zeros((10, 10), np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(IDXError, match="x.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(IDXError, match="no such file"):
        read_idx(tmp_path / "nope")
