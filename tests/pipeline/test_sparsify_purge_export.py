"""Sparsify → a few GDA steps → hand-set gates → purge → torch.export, on the models users bring.

Every unit kind has its even-numbered units closed (at least half). The purged model's
parameter count, ``sum(p.numel())``, is compared with a count done by hand from the
architecture, not with the library's counter.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.modelio import call_model, logits
from ctrlsparse.problem.feasibility import decide
from tests.helpers import DenseBlock, Encoder, FunctionalLeNet, ResNet


def _hf_bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)  # fmt: skip
    x = {"input_ids": torch.randint(0, 100, (4, 16)), "attention_mask": torch.ones(4, 16, dtype=torch.long)}
    return BertForSequenceClassification(config), x


def _hf_vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=3)  # fmt: skip
    return ViTForImageClassification(config), torch.randn(4, 3, 16, 16)


def _hf_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_labels=5)  # fmt: skip
    return ResNetForImageClassification(config), torch.randn(4, 3, 32, 32)


# Hand counts with half of every unit kind closed (units 0, 2, 4, ... closed).
LENET = (10 * 25 + 10) + (25 * 10 * 25 + 25) + (250 * 25 * 16 + 250) + (10 * 250 + 10)
RESNET = 4 * 9 + 8 + 2 * (4 * 4 * 9 + 8) + (8 * 4 * 9 + 16) + (8 * 8 * 9 + 16) + (8 * 4 + 16) + (10 * 8 + 10)
DENSE = (2 * 27 + 2) * 2 + 2 * 4 + (3 * 4 * 9 + 3) + (2 * 3 + 2)
# Encoder: each layer's attention keeps 2 of 4 heads of 8 (Q/K/V 16x32 and biases, out_proj 32x16 + 32).
ENCODER = (32 * 4 + 32) + 2 * ((3 * 16 * 32 + 48) + (32 * 16 + 32) + 2 * (32 * 32 + 32) + 128) + (3 * 32 + 3)
# BERT: embeddings, 2 layers of (Q/K/V at 2 of 4 heads, output, LN, FFN at 32 of 64, LN), pooler 16 of 32.
BERT = (100 + 64 + 2) * 32 + 64 + 2 * (3 * (16 * 32 + 16) + (32 * 16 + 32) + 64 + 2 * (32 * 32 + 32) + 64)
BERT += (16 * 32 + 16) + (2 * 16 + 2)
# ViT: patch conv, CLS token, positions, 2 layers as BERT's (pre-LN), final LN, classifier.
VIT = (
    (32 * 3 * 16 + 32)
    + 32
    + 17 * 32
    + 2 * (64 + 3 * (16 * 32 + 16) + (32 * 16 + 32) + 64 + 2 * (32 * 32 + 32))
)
VIT += 64 + (3 * 32 + 3)

CASES = {
    "functional_lenet": (lambda: (FunctionalLeNet(), torch.randn(4, 1, 28, 28)), LENET),
    "resnet_bias_free": (lambda: (ResNet(), torch.randn(4, 1, 16, 16)), RESNET),
    "densenet_concat": (lambda: (DenseBlock(), torch.randn(4, 3, 8, 8)), DENSE),
    "transformer_encoder": (lambda: (Encoder(), torch.randn(4, 5, 8)), ENCODER),
    "hf_bert": (_hf_bert, BERT),
    "hf_vit": (_hf_vit, VIT),
    "hf_resnet": (_hf_resnet, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sparsify_train_purge_export(case):
    build, expected_params = CASES[case]
    torch.manual_seed(0)
    model, x = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # units reaching unsupported modules are listed as left dense
        cs.sparsify(model, example_input=x)
    problem = cs.SparsityProblem(model, lambda out, y: F.cross_entropy(logits(out), y), target_density=0.5)
    opt = cs.GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-3), dual_lr=0.1)
    y = torch.zeros(4, dtype=torch.long)
    for _ in range(2):
        assert torch.isfinite(torch.tensor(opt.step(x, y).loss))
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.fill_(10.0)
            group.gate.parameter[::2] = -10.0
    model.eval()
    small = cs.purge(model, x)
    gated_out, purged_out = logits(call_model(model, x)), logits(call_model(small, x))
    assert ((purged_out - gated_out).abs().max() / gated_out.abs().max()) <= 1e-5
    if expected_params is not None:
        assert sum(p.numel() for p in small.parameters()) == expected_params
    assert cs.count(model, x)[0].params_remaining == sum(p.numel() for p in small.parameters())
    args, kwargs = ((), x) if isinstance(x, dict) else ((x,), None)
    exported = torch.export.export(small, args, kwargs)
    assert torch.allclose(logits(exported.module()(*args, **(kwargs or {}))), purged_out, atol=1e-5)


def test_a_sigmoid_after_a_closed_unit_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 2))
    cs.sparsify(net, example_input=torch.zeros(1, 4), inputs=False)
    with torch.no_grad():
        net[0].output_gate.gate.log_alpha[::2] = -10.0
    with pytest.raises(cs.gating.PurgeError, match="does not map 0 to 0"):
        cs.purge(net, torch.randn(3, 4))


def test_an_attention_with_every_head_closed_keeps_one_whole_head():
    torch.manual_seed(0)
    model, x = _hf_bert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs.sparsify(model, example_input=x)
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.fill_(-10.0 if group.kind == "head" else 10.0)
    model.eval()
    small = cs.purge(model, x)
    for layer in small.bert.encoder.layer:
        assert layer.attention.self.query.out_features == 8  # one head of 32 / 4
    gated_out, purged_out = logits(call_model(model, x)), logits(call_model(small, x))
    assert ((purged_out - gated_out).abs().max() / gated_out.abs().max()) <= 1e-5


def test_a_channel_with_one_open_column_after_a_flatten_is_kept():
    """LeNet-5 with the paper's gates: a conv channel feeds 16 columns of fc1 through the
    flatten. A channel whose only open fc1 column is not its first must stay, and one whose
    16 columns are all closed must go."""
    torch.manual_seed(0)
    net = cs.sparsify(cs.lenet5(), "paper")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        gate = net.fc1.input_gate.gate.log_alpha
        gate.fill_(-10.0)
        gate[16 * torch.arange(25) + 7] = 10.0  # channels 0-24: column 7 of 16 open; 25-49: none
    small = cs.purge(net.eval(), x)
    assert small.conv2.out_channels == 25 and small.fc1.in_features == 25 * 16
    assert torch.allclose(small(x), net(x), atol=1e-5)


def _widths(model) -> list[tuple[str, int, int]]:
    """(name, output width, input width) of every conv and Linear layer."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    return [(n, m.weight.shape[0], m.weight.shape[1]) for n, m in layers]


@pytest.mark.parametrize("decided", [True, False], ids=["decided", "undecided"])
@pytest.mark.parametrize("case", ["functional_lenet", "resnet_bias_free", "hf_resnet", "hf_bert"])
def test_round_to_keeps_purge_and_export_exact(case, decided):
    """round_to=8: decided gates (the feasibility phase) keep multiples of 8 (or fewer than a
    block, where a block does not fit under ε: 8-channel layers at ε = 0.5); purge pads what is
    not aligned with zeroed units. Every purged width is the dense one or a multiple of 8, and
    purge and torch.export give the gated model's outputs."""
    build, _ = CASES[case]
    torch.manual_seed(0)
    model, x = build()
    dense_widths = _widths(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs.sparsify(model, example_input=x, round_to=8)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.copy_(3 * torch.randn(group.num_units, generator=generator))
            if group.kind == "head":
                group.gate.parameter[0] = 10.0  # one head open per attention
    if decided:
        problem = cs.SparsityProblem(
            model, lambda out, y: F.cross_entropy(logits(out), y), target_density=0.5
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a landing short of ε on a tiny model is expected here
            decide(problem)
    model.eval()
    aligned = [g for g in cs.gate_groups(model) if g.round_to == 8]
    kept = [int((g.deterministic() > 0).sum()) for g in aligned]
    if not decided:  # random gates leave some group unaligned: purge pads it with zeroed units
        assert not all(k % 8 == 0 or k == g.num_units for k, g in zip(kept, aligned))
    small = cs.purge(model, x)
    for (name, out_dense, in_dense), (_, out_purged, in_purged) in zip(dense_widths, _widths(small)):
        assert out_purged in (out_dense, *range(8, out_dense, 8)), (name, out_purged, out_dense)
        assert in_purged in (in_dense, *range(8, in_dense, 8)), (name, in_purged, in_dense)
    gated_out, purged_out = logits(call_model(model, x)), logits(call_model(small, x))
    assert ((purged_out - gated_out).abs().max() / gated_out.abs().max()) <= 1e-5
    args, kwargs = ((), x) if isinstance(x, dict) else ((x,), None)
    exported = torch.export.export(small, args, kwargs)
    assert torch.allclose(logits(exported.module()(*args, **(kwargs or {}))), purged_out, atol=1e-5)
