"""Heads of nn.MultiheadAttention as gate units: slices, gate placement, accounting, purge, export."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.gating import Accounting
from ctrlsparse.gating.attention import PrunedMultiheadAttention
from ctrlsparse.gating.groups import GateScale
from tests.helpers import Encoder


class Attend(nn.Module):
    """A Linear, a bare nn.MultiheadAttention (16 features, 4 heads of 4), mean pooling, a Linear head.

    With ``kdim`` it attends to a second input of ``kdim`` features (separate Q/K/V weights).
    """

    def __init__(self, batch_first: bool = True, kdim: int | None = None):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.out = nn.Linear(16, 3)

    def forward(self, x, memory=None):
        h = self.inp(x)
        m = h if memory is None else memory
        a, _ = self.attn(h, m, m, need_weights=False)
        return self.out(a.mean(1 if self.attn.batch_first else 0))


def _inputs(batch_first: bool = True, kdim: int | None = None):
    x = torch.randn(3, 5, 6) if batch_first else torch.randn(5, 3, 6)
    return x if kdim is None else (x, torch.randn(3, 7, kdim))


def _sparsify(model, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inp's outputs reach the attention's embed_dim: left dense
        return cs.sparsify(model, example_input=x, inputs=False, **kw)


def _close(model, heads=slice(0, None, 2)):
    """Close the given heads (default 0, 2, ...) of every head group; open every other gate."""
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.fill_(10.0)
            if group.kind == "head":
                group.gate.parameter[heads] = -10.0
    return model.eval()


def _relative(a, b):
    return float(((a - b).abs().max() / b.abs().max()).detach())


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_attention_with_every_head_reproduces_multihead_attention(batch_first):
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=10, vdim=12).eval()
    small = PrunedMultiheadAttention.from_multihead(mha, [0, 1, 2, 3])
    b, L, S = 3, 5, 6
    q, k, v = torch.randn(b, L, 16), torch.randn(b, S, 10), torch.randn(b, S, 12)
    if not batch_first:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    padding = torch.zeros(b, S, dtype=torch.bool)
    padding[:, -2:] = True
    masks = [
        {},
        {"attn_mask": torch.rand(L, S) > 0.7, "key_padding_mask": padding},
        {"attn_mask": torch.randn(b * 4, L, S)},  # per head: (batch * heads, L, S)
        {"attn_mask": torch.ones(L, S, dtype=torch.bool).triu(1), "is_causal": True},
    ]
    for mask in masks:
        for need_weights, average in ((False, True), (True, True), (True, False)):
            kw = {**mask, "need_weights": need_weights, "average_attn_weights": average}
            (out, weights), (ref, ref_weights) = small(q, k, v, **kw), mha(q, k, v, **kw)
            assert _relative(out, ref) <= 1e-5
            assert (weights is None) == (ref_weights is None)
            if weights is not None:
                assert weights.shape == ref_weights.shape and _relative(weights, ref_weights) <= 1e-5
    unbatched = (q[:, 0], k[:, 0], v[:, 0]) if not batch_first else (q[0], k[0], v[0])
    assert _relative(small(*unbatched)[0], mha(*unbatched)[0]) <= 1e-5


def test_dropping_heads_equals_zeroing_their_value_rows():
    """A closed head's gate zeroes its V rows (bake); purging then drops the head."""
    mha = nn.MultiheadAttention(16, 4).eval()
    small = PrunedMultiheadAttention.from_multihead(mha, [1, 3])
    with torch.no_grad():
        for h in (0, 2):
            mha.in_proj_weight[32 + 4 * h : 32 + 4 * (h + 1)] = 0
            mha.in_proj_bias[32 + 4 * h : 32 + 4 * (h + 1)] = 0
    x, mask = torch.randn(5, 3, 16), torch.randn(3 * 4, 5, 5)  # a per-head mask keeps its head layout
    for kw in ({}, {"attn_mask": mask}):
        assert _relative(small(x, x, x, need_weights=False, **kw)[0], mha(x, x, x, **kw)[0]) <= 1e-5
    assert (small.num_heads, small.head_dim, small.q_proj.weight.shape) == (2, 4, (8, 16))


@pytest.mark.parametrize("build", [lambda: (Encoder(), torch.randn(2, 5, 8)), lambda: (Attend(), _inputs())])
def test_sparsify_finds_multihead_heads_and_heads_false_leaves_them_dense(build):
    model, x = build()
    _sparsify(model, x)
    heads = [g for g in cs.gate_groups(model) if g.kind == "head"]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert [(g.name, g.num_units) for g in heads] == [(n, 4) for n in names]
    assert {(s.module, s.param, s.dim) for s in heads[0].slices} == {
        (names[0], "in_proj_weight", 0),
        (names[0], "in_proj_bias", 0),
        (f"{names[0]}.out_proj", "weight", 1),
    }
    sites = {n for n, m in model.named_modules() if isinstance(m, GateScale) and n.startswith(names[0])}
    assert sites == {f"{names[0]}.parametrizations.{p}.0" for p in ("in_proj_weight", "in_proj_bias")}
    model, x = build()
    with pytest.warns(UserWarning, match=rf"{names[0]} \(heads=False\)"):
        cs.sparsify(model, example_input=x, heads=False)
    assert not [g for g in cs.gate_groups(model) if g.kind == "head"]


def test_a_head_gate_scales_that_heads_output():
    """Scaling the V rows is the head-output gate: oracle computed head by head."""
    plain = Attend()
    x = _inputs()
    net = _sparsify(copy.deepcopy(plain), x)
    out = net(x)  # training mode: one sample of the head gates
    z = net.attn.head_gate.current()
    b, L = x.shape[:2]
    q, k, v = F.linear(plain.inp(x), plain.attn.in_proj_weight, plain.attn.in_proj_bias).chunk(3, -1)
    q, k, v = (t.view(b, L, 4, 4).transpose(1, 2) for t in (q, k, v))
    heads = F.softmax(q @ k.transpose(-2, -1) / 2, -1) @ v * z.view(1, 4, 1, 1)
    oracle = plain.out(plain.attn.out_proj(heads.transpose(1, 2).reshape(b, L, 16)).mean(1))
    assert torch.allclose(out, oracle, atol=1e-6)


def test_head_gates_round_trip_through_the_state_dict():
    x = _inputs()
    a, b = _sparsify(Attend(), x), _sparsify(Attend(), x)
    with torch.no_grad():
        a.attn.head_gate.gate.parameter.uniform_(-3, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.eval()(x), b.eval()(x))


# Attend's parameters: inp 6*16+16, in_proj 3*16*16+48, out_proj 16*16+16, out 16*3+3.
ATTEND = 112 + 816 + 272 + 51
# A head: its Q/K/V rows (4 each, 16 columns), their biases, its 4 out_proj columns.
HEAD = 3 * 4 * 16 + 3 * 4 + 16 * 4


def test_accounting_counts_a_heads_qkv_rows_and_out_proj_columns():
    net = _sparsify(Attend(), _inputs())
    p = net.attn.head_gate.gate.prob_active().detach()
    acc = Accounting(net)
    assert acc.num_sparsifiable == 4 * HEAD == 768 + 48 + 256  # out_proj's bias has no gate
    expected = acc.per_param()
    assert torch.isclose(expected[("attn", "in_proj_weight")], 3 * 4 * 16 * p.sum())
    assert torch.isclose(expected[("attn", "in_proj_bias")], 3 * 4 * p.sum())
    assert torch.isclose(expected[("attn.out_proj", "weight")], 16 * 4 * p.sum())
    _close(net)  # heads 0 and 2
    total, _ = acc.active(realized=True)
    assert float(total) == 2 * HEAD
    assert cs.count(net, _inputs())[0].params_remaining == ATTEND - 2 * HEAD


@pytest.mark.parametrize(
    "batch_first, kdim, expected",
    [
        (True, None, ATTEND - 2 * HEAD),
        (False, None, ATTEND - 2 * HEAD),
        # separate Q/K/V weights: q 8x16, k 8x5, v 8x5, biases 24, out_proj 16x8+16
        (True, 5, 112 + 128 + 40 + 40 + 24 + 144 + 51),
    ],
)
def test_purge_drops_closed_heads_and_exports(batch_first, kdim, expected):
    x = _inputs(batch_first, kdim)
    args = x if isinstance(x, tuple) else (x,)
    net = _close(_sparsify(Attend(batch_first, kdim), x))
    small = cs.purge(net, x)
    assert isinstance(small.attn, PrunedMultiheadAttention) and small.attn.heads == (1, 3)
    gated, purged = net(*args), small(*args)
    assert _relative(purged, gated) <= 1e-5
    assert sum(p.numel() for p in small.parameters()) == expected
    assert cs.count(net, x)[0].params_remaining == expected
    exported = torch.export.export(small, args)
    assert torch.allclose(exported.module()(*args), purged, atol=1e-6)


def test_every_head_closed_keeps_one_zeroed_head():
    x = _inputs()
    net = _close(_sparsify(Attend(), x), heads=slice(None))
    small = cs.purge(net, x)
    assert small.attn.heads == (0,)
    assert _relative(small(x), net(x)) <= 1e-5
    assert sum(p.numel() for p in small.parameters()) == ATTEND - 3 * HEAD


def test_purged_encoder_matches_on_the_fused_and_nested_tensor_paths():
    """In eval without grad, nn.TransformerEncoder(Layer) takes fused kernels, and with a padding
    mask nested tensors: the gated model runs them, the purged one the unfused path."""

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(8, 32), nn.Linear(32, 3)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2)  # enable_nested_tensor=True

        def forward(self, x, padding):
            keep = (~padding).unsqueeze(-1).float()
            return self.out((self.enc(self.inp(x), src_key_padding_mask=padding) * keep).sum(1) / keep.sum(1))

    x, padding = torch.randn(4, 5, 8), torch.zeros(4, 5, dtype=torch.bool)
    padding[1:, 3:] = True
    net = _close(_sparsify(Padded(), (x, padding)))
    small = cs.purge(net, (x, padding))
    encoder, x_encoder = _close(_sparsify(Encoder(), x)), torch.randn(4, 5, 8)
    small_encoder = cs.purge(encoder, x_encoder)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype
        assert _relative(small(x, padding), net(x, padding)) <= 1e-5
        assert _relative(small_encoder(x_encoder), encoder(x_encoder)) <= 1e-5
