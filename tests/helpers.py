"""Small models shared by the tests: the architectures users bring, at toy sizes."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class FunctionalLeNet(nn.Module):
    """LeNet-5-Caffe written with F.max_pool2d and x.view, as many users write it."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


class Block(nn.Module):
    """A basic residual block with bias-free convs, BatchNorm and an optional 1x1 downsample."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        shortcut = x if self.down is None else self.down(x)
        return F.relu(shortcut + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Stem 8 channels, one block at 8, one downsampling block at 16, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b1, self.b2 = Block(8, 8), Block(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.b2(self.b1(F.relu(self.bn(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseBlock(nn.Module):
    """Two convs concatenated, BatchNorm over the concatenation, a padded conv after it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(9)
        self.c = nn.Conv2d(9, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(F.relu(self.c(x)).mean((2, 3)))


class Encoder(nn.Module):
    """nn.TransformerEncoder (its MultiheadAttention stays dense) between two Linear layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        return self.out(self.enc(self.inp(x)).mean(1))


# CIFAR archives as the real ones are written (tests of the loader and of the CIFAR problem files).
CIFAR_PER_BATCH = 4


class _Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the real archives: every string as a Python 2 ``str``
    (so it loads as bytes), and numpy's array rebuilder under its old path ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_python2_str
    dispatch[bytes] = _save_python2_str


def python2_pickle(obj):
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(archive, rng, n=CIFAR_PER_BATCH, max_label=None):
    """A batch as the archives hold it: rows of 3072 uint8 (R, G, B planes), labels as a list."""
    max_label = archive.num_classes - 1 if max_label is None else max_label
    batch = {
        "batch_label": "training batch",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        archive.label_key.decode(): [int(v) for v in rng.integers(0, max_label + 1, n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    if archive.name == "cifar100":
        batch["coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
    return batch


def write_cifar_archive(path, archive, skip=(), payloads=None, **batch_options):
    """Write a tiny archive of ``archive``'s layout to ``path``; return {batch name: batch}."""
    rng = np.random.default_rng(0)
    batches = {name: cifar_batch(archive, rng, **batch_options) for name in archive.train + archive.test}
    payloads = {name: python2_pickle(b) for name, b in batches.items()} | (payloads or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        # Test first, as in the real archive, whose members are out of split order.
        for name in reversed(list(payloads)):
            if name in skip:
                continue
            info = tarfile.TarInfo(f"{archive.folder}/{name}")
            info.size = len(payloads[name])
            tar.addfile(info, io.BytesIO(payloads[name]))
    return batches


SENTENCES = [
    "The tutorial introduces the reader informally to the basic concepts of the language.",
    "A function definition associates the function name with the function object.",
    "Exceptions are a means of breaking out of the normal flow of control.",
    "Names refer to objects and are introduced by name binding operations.",
]


def write_corpus(root, documents=12, manifest=True):
    """A directory laid out like python3-doc's _sources: tutorial/ and faq/ documents, an MD5SUMS."""
    lines = []
    for i in range(documents):
        folder = "tutorial" if i % 2 else "faq"
        path = root / folder / f"doc{i:02d}.rst.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(40))
        data = f"Document {i}. {body}".encode()
        path.write_bytes(data)
        lines.append(f"{hashlib.md5(data).hexdigest()}  {folder}/{path.name}")
    if manifest:
        (root / "MD5SUMS").write_text("\n".join(lines) + "\n")
    return root


VOCAB = 97
"""Vocabulary of the tiny decoder LMs (random weights, no tokenizer)."""


def tiny_decoder(family: str, **overrides):
    """A randomly initialised causal LM of ``family`` from ``transformers`` (no download):
    hidden 64, 2 blocks, 4 heads (2 key-value heads where the family has grouped-query
    attention), an MLP of 172 (SwiGLU) or 128 neurons, vocabulary 97, no cache."""
    import transformers as tf

    llama = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=172, use_cache=False, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    lm = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, use_cache=False)
    configs = {
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig, llama),
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig, llama),
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config, llama),
        "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config, {**llama, "head_dim": 16}),
        "gemma": (tf.GemmaForCausalLM, tf.GemmaConfig, {**llama, "head_dim": 16}),
        "phi3": (tf.Phi3ForCausalLM, tf.Phi3Config, {**llama, "pad_token_id": 0}),
        "gpt2": (
            tf.GPT2LMHeadModel,
            tf.GPT2Config,
            dict(
                vocab_size=VOCAB,
                n_embd=64,
                n_layer=2,
                n_head=4,
                n_positions=64,
                use_cache=False,
                bos_token_id=1,
                eos_token_id=2,
            ),
        ),  # fmt: skip
        "gpt_neox": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig, {**lm, "intermediate_size": 128}),
        "opt": (
            tf.OPTForCausalLM,
            tf.OPTConfig,
            {
                **lm,
                "ffn_dim": 128,
                "max_position_embeddings": 64,
                "word_embed_proj_dim": 64,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
            },
        ),  # fmt: skip
    }
    model_class, config_class, options = configs[family]
    torch.manual_seed(0)
    return model_class(config_class(**{**options, **overrides})).eval()


class Stop(Exception):
    """A kill, raised from inside a run (by :func:`stopping_loss`)."""


def stopping_loss(at: int):
    """Cross-entropy that raises :class:`Stop` on its ``at``-th call: a run killed mid-training."""
    calls = {"n": 0}

    def loss(out, target):
        calls["n"] += 1
        if calls["n"] == at:
            raise Stop
        return F.cross_entropy(out, target)

    return loss
