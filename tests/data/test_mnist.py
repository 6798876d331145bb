import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from ctrlsparse.data import IDXError
from ctrlsparse.data.mnist import FILES, DownloadError, Source, cache_dir, download, load_mnist_like


@pytest.fixture
def make_files(write_idx):
    """Factory of tiny MNIST-format files; it returns {file name: bytes} of what it wrote."""

    def make(directory, n_train=6, n_test=4, max_label=9, compress=True):
        rng = np.random.default_rng(0)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            FILES["train_images"]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            FILES["train_labels"]: rng.integers(0, max_label + 1, n_train, dtype=np.uint8),
            FILES["test_images"]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            FILES["test_labels"]: rng.integers(0, max_label + 1, n_test, dtype=np.uint8),
        }
        arrays[FILES["train_labels"]][0] = max_label
        written = {}
        for stem, array in arrays.items():
            path = write_idx(directory / (stem + (".gz" if compress else "")), array, compress=compress)
            written[path.name] = path.read_bytes()
        return written

    return make


def _source(files, mirrors, **md5_overrides):
    md5 = {name.removesuffix(".gz"): hashlib.md5(data).hexdigest() for name, data in files.items()}
    md5.update(md5_overrides)
    return Source("testset", tuple(mirrors), md5)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    truncate: set = set()
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        name = self.path.rsplit("/", 1)[-1]
        self.requests.append(self.path)
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving _Handler.files under /a/ and /b/."""
    _Handler.files, _Handler.truncate, _Handler.requests = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def test_loads_local_directory(tmp_path, make_files):
    make_files(tmp_path, compress=False)
    data = load_mnist_like(_source({}, []), root=tmp_path)
    assert data.input_shape == (1, 28, 28) and len(data.train[1]) == 6 and len(data.test[1]) == 4
    assert float(data.train[0].min()) >= 0.0 and float(data.train[0].max()) <= 1.0


def test_download_verifies_writes_atomically_and_never_refetches(tmp_path, server, make_files):
    url, handler = server
    handler.files = make_files(tmp_path / "served")
    source = _source(handler.files, [url + "/a/"])
    data = load_mnist_like(source, root=tmp_path / "cache", download_missing=True)
    assert len(data.train[1]) == 6
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(handler.files)
    assert len(handler.requests) == 4
    load_mnist_like(source, root=tmp_path / "cache", download_missing=True)
    assert len(handler.requests) == 4  # nothing fetched twice


def test_checksum_mismatch_tries_next_mirror_and_leaves_no_file(tmp_path, server, make_files):
    url, handler = server
    handler.files = make_files(tmp_path / "served")
    stem = FILES["train_images"]
    bad = _source(handler.files, [url + "/a/"], **{stem: "0" * 32})
    with pytest.raises(DownloadError, match=f"{stem}.gz.*checksum mismatch"):
        download(bad, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob(f"{stem}*")) and not list((tmp_path / "cache").glob(".*part"))


def test_truncated_transfer_is_an_error_and_leaves_no_file(tmp_path, server, make_files):
    url, handler = server
    handler.files = make_files(tmp_path / "served")
    stem = FILES["test_images"]
    handler.truncate = {stem + ".gz"}
    with pytest.raises(DownloadError, match=f"{stem}.gz.*(truncated|IncompleteRead|Connection)"):
        download(_source(handler.files, [url + "/a/"]), tmp_path / "cache")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert stem + ".gz" not in leftovers and not any(name.endswith(".part") for name in leftovers)


def test_second_mirror_is_used_when_first_fails(tmp_path, server, make_files):
    url, handler = server
    handler.files = make_files(tmp_path / "served")
    source = _source(handler.files, ["http://127.0.0.1:9/unreachable/", url + "/b/"])
    download(source, tmp_path / "cache")
    assert all(r.startswith("/b/") for r in handler.requests)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="testset: IDX files not found.*download = true"):
        load_mnist_like(_source({}, []), root=tmp_path)


def test_label_out_of_range(tmp_path, make_files):
    make_files(tmp_path, max_label=12)
    with pytest.raises(IDXError, match="train-labels-idx1-ubyte.gz: label 12 outside the valid range 0-9"):
        load_mnist_like(_source({}, []), root=tmp_path)


def test_count_mismatch_names_both_files(tmp_path, write_idx, make_files):
    make_files(tmp_path)
    write_idx(tmp_path / (FILES["test_labels"] + ".gz"), np.zeros(3, np.uint8), compress=True)
    with pytest.raises(IDXError, match="holds 4 images but .*t10k-labels-idx1-ubyte.gz holds 3 labels"):
        load_mnist_like(_source({}, []), root=tmp_path)


def test_corrupt_file_is_named(tmp_path, make_files):
    make_files(tmp_path)
    path = tmp_path / (FILES["train_images"] + ".gz")
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    with pytest.raises(IDXError, match="train-images-idx3-ubyte.gz: truncated header"):
        load_mnist_like(_source({}, []), root=tmp_path)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CTRLSPARSE_DATA", str(tmp_path))
    assert cache_dir("mnist") == tmp_path / "mnist"
