import dataclasses
import functools
import hashlib
import http.server
import pickle
import re
import threading

import numpy as np
import pytest
import torch

from ctrlsparse.data import DATASETS, ArchiveError, DownloadError, cifar, load_dataset
from ctrlsparse.data.cifar import CIFAR10, CIFAR100, load_cifar, load_cifar10, load_cifar100
from tests.helpers import CIFAR_PER_BATCH as PER_BATCH
from tests.helpers import python2_pickle as _python2_pickle
from tests.helpers import write_cifar_archive as _write_archive


@pytest.fixture
def mirror(tmp_path):
    """A static HTTP server on 127.0.0.1 over ``tmp_path/served``; yields (URL prefix, requested paths)."""
    served, requests = tmp_path / "served", []
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()
    httpd.server_close()


def _serve(monkeypatch, url, path, archive_name="CIFAR10"):
    """Point the registered archive at the test server, with the MD5 of the file it serves."""
    archive = getattr(cifar, archive_name)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar, archive_name, dataclasses.replace(archive, mirrors=(url,), md5=md5))


def test_cifar10_layout_values_and_labels(tmp_path):
    batches = _write_archive(tmp_path / CIFAR10.file, CIFAR10)
    data = load_cifar10(tmp_path)
    (x, y), (x_test, y_test) = data.train, data.test
    assert data.name == "cifar10" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert x.shape == (5 * PER_BATCH, 3, 32, 32) and x_test.shape == (PER_BATCH, 3, 32, 32)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    # Training batches in order 1..5; each row holds the red, green and blue planes row-major.
    first = batches["data_batch_1"]["data"][0]
    assert torch.equal(x[0, 1], torch.from_numpy(first[1024:2048].reshape(32, 32)).float() / 255)
    last = batches["data_batch_5"]["data"][-1]
    assert torch.equal(x[-1].flatten(), torch.from_numpy(last).float() / 255)
    expected = [label for name in CIFAR10.train for label in batches[name]["labels"]]
    assert y.tolist() == expected and y_test.tolist() == batches["test_batch"]["labels"]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_cifar100_uses_the_fine_labels(tmp_path):
    batches = _write_archive(tmp_path / CIFAR100.file, CIFAR100)
    data = load_cifar100(tmp_path)
    assert data.name == "cifar100" and data.num_classes == 100
    assert data.train[0].shape == (PER_BATCH, 3, 32, 32)
    assert data.train[1].tolist() == batches["train"]["fine_labels"]
    assert data.test[1].tolist() == batches["test"]["fine_labels"]


def test_registered_by_name(tmp_path):
    assert DATASETS["cifar10"] is load_cifar10 and DATASETS["cifar100"] is load_cifar100
    _write_archive(tmp_path / CIFAR10.file, CIFAR10)
    assert load_dataset("cifar10", str(tmp_path)).input_shape == (3, 32, 32)


def test_download_into_cache_checks_and_never_refetches(tmp_path, mirror, monkeypatch):
    url, requests = mirror
    _write_archive(tmp_path / "served" / CIFAR10.file, CIFAR10)
    _serve(monkeypatch, url, tmp_path / "served" / CIFAR10.file)
    monkeypatch.setenv("CTRLSPARSE_DATA", str(tmp_path / "cache"))
    data = load_cifar10(download=True)
    assert len(data.train[1]) == 5 * PER_BATCH
    assert [p.name for p in (tmp_path / "cache" / "cifar10").iterdir()] == [CIFAR10.file]
    assert requests == ["/" + CIFAR10.file]
    load_cifar10(download=True)
    assert len(requests) == 1  # read from the cache


def test_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    _write_archive(tmp_path / "served" / CIFAR10.file, CIFAR10)
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(CIFAR10, mirrors=(url,), md5="0" * 32))
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz for cifar10.*checksum mismatch"):
        load_cifar10(tmp_path / "data", download=True)
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_archive_without_download_says_where_and_how(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=f"cifar-100-python.tar.gz not found in {re.escape(str(tmp_path))}.*download=True",
    ):
        load_cifar100(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_archive_names_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / CIFAR10.file
    _write_archive(path, CIFAR10)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not an archive" * 100)
    with pytest.raises(
        ArchiveError,
        match=f"{re.escape(str(path))}: corrupt, truncated or not a CIFAR archive.*delete it.*download=True",
    ):
        load_cifar10(tmp_path)


def test_missing_member_is_named(tmp_path):
    path = tmp_path / CIFAR10.file
    _write_archive(path, CIFAR10, skip={"data_batch_3"})
    with pytest.raises(ArchiveError, match="missing cifar-10-batches-py/data_batch_3; delete it"):
        load_cifar10(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / CIFAR100.file
    _write_archive(path, CIFAR100, payloads={"test": pickle.dumps(Payload(), protocol=2)})
    with pytest.raises(ArchiveError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load_cifar100(tmp_path)


def test_label_out_of_range_is_named(tmp_path):
    _write_archive(tmp_path / CIFAR10.file, CIFAR10, max_label=12)
    with pytest.raises(ArchiveError, match="data_batch_1: label 1[0-2] outside the valid range 0-9"):
        load_cifar(CIFAR10, tmp_path)


def test_wrong_image_size_is_named(tmp_path):
    payload = _python2_pickle({"data": np.zeros((2, 784), np.uint8), "labels": [0, 1]})
    _write_archive(tmp_path / CIFAR10.file, CIFAR10, payloads={"test_batch": payload})
    with pytest.raises(ArchiveError, match=r"test_batch: expected uint8 images of shape \(N, 3072\)"):
        load_cifar10(tmp_path)
