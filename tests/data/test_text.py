"""The python_docs corpus, its offline tokenizers and the next-token windows."""

import pytest
import torch

from ctrlsparse.data import corpus as corpus_module
from ctrlsparse.data.corpus import CorpusError, load_python_docs
from ctrlsparse.data.text import load_text, token_stream, token_windows
from ctrlsparse.data.tokenizer import ByteTokenizer, corpus_tokenizer, train_bpe
from tests.helpers import SENTENCES, write_corpus


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTRLSPARSE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_split_is_fixed_by_file_order_and_disjoint(tmp_path):
    corpus = load_python_docs(write_corpus(tmp_path))
    # Sorted: faq/doc00, faq/doc02, ..., tutorial/doc01, ...: every tenth file validates.
    assert len(corpus.train) == 10 and len(corpus.validation) == 2
    assert not set(corpus.train) & set(corpus.validation)
    assert load_python_docs(tmp_path) == corpus


def test_a_missing_package_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(corpus_module, "SYSTEM_GLOB", "/nonexistent/python3.*/html/_sources")
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        load_python_docs()


def test_an_altered_file_is_named_with_its_checksum(tmp_path):
    write_corpus(tmp_path)
    victim = tmp_path / "tutorial" / "doc03.rst.txt"
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    with pytest.raises(CorpusError, match=r"doc03\.rst\.txt: checksum mismatch .*restore them in"):
        load_python_docs(tmp_path)


def test_a_file_missing_from_the_package_is_reported(tmp_path):
    write_corpus(tmp_path)
    (tmp_path / "faq" / "doc04.rst.txt").unlink()
    with pytest.raises(CorpusError, match=r"1 corpus files are missing, e.g. faq/doc04\.rst\.txt"):
        load_python_docs(tmp_path)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    write_corpus(tmp_path, manifest=False)
    (tmp_path / "faq" / "doc00.rst.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(CorpusError, match=r"doc00\.rst\.txt: not UTF-8"):
        load_python_docs(tmp_path)


def test_the_bpe_is_deterministic_and_round_trips():
    texts = [" ".join(SENTENCES)] * 5
    a, b = train_bpe(texts, vocab_size=300), train_bpe(texts, vocab_size=300)
    assert a.tokenizer.to_str() == b.tokenizer.to_str()
    text = "Exceptions — and names: über 42!\n"  # words, punctuation, non-ASCII, a newline
    ids = a.encode(text)
    assert a.decode(ids) == text
    assert len(ids) < len(text.encode())  # it merged something
    assert max(ids) < a.vocab_size == 300


def test_the_bpe_is_cached_and_a_damaged_cache_is_trained_again(cache):
    texts = [" ".join(SENTENCES)] * 3
    first = corpus_tokenizer("toy", texts, "bpe", 280)
    (cached,) = (cache / "toy").glob("bpe-280-*.json")
    assert corpus_tokenizer("toy", texts, "bpe", 280).tokenizer.to_str() == first.tokenizer.to_str()
    cached.write_text("{ truncated")
    assert corpus_tokenizer("toy", texts, "bpe", 280).tokenizer.to_str() == first.tokenizer.to_str()


def test_bad_tokenizer_settings_name_the_choices():
    with pytest.raises(ValueError, match="valid tokenizers: bpe, bytes"):
        corpus_tokenizer("toy", ["x"], "words")
    with pytest.raises(ValueError, match="must be an int >= 257"):
        train_bpe(["x"], vocab_size=100)


def test_bytes_round_trip_with_an_end_of_text_id():
    tokenizer = ByteTokenizer()
    assert tokenizer.decode(tokenizer.encode("naïve")) == "naïve"
    assert token_stream(tokenizer, ["ab", "c"]).tolist() == [97, 98, 256, 99, 256]


def test_windows_predict_the_next_token_and_cover_the_stream_once():
    ids = torch.arange(23)
    inputs, labels = token_windows(ids, seq_len=5)
    assert inputs.shape == labels.shape == (4, 5)  # 22 predictions fit 4 windows of 5
    assert torch.equal(labels[:, :-1], inputs[:, 1:])
    assert torch.equal(inputs.flatten(), ids[:20]) and torch.equal(labels.flatten(), ids[1:21])
    with pytest.raises(ValueError, match="shorter than one window"):
        token_windows(torch.arange(5), seq_len=5)


def test_load_text_gives_windows_of_the_vocabulary(tmp_path, cache):
    data = load_text("python_docs", str(write_corpus(tmp_path)), seq_len=16, tokenizer="bpe", vocab_size=300)
    assert data.input_shape == (16,) and data.num_classes == 300
    assert data.train[0].dtype == torch.long and int(data.train[0].max()) < 300
    assert len(data.test[0]) > 0
    with pytest.raises(ValueError, match="valid corpora: python_docs"):
        load_text("wikitext", str(tmp_path))


def test_the_installed_package_passes_dpkg_checksums():
    if not corpus_module._system_sources():
        pytest.skip("python3-doc is not installed")
    corpus = load_python_docs()
    assert len(corpus.validation) >= 5 and sum(map(len, corpus.train)) > 1_000_000  # MB of prose
    assert any("for loop" in doc or "for statement" in doc for doc in corpus.train)
