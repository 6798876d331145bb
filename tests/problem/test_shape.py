"""Targets LLM users state: a target shape for a decoder LM and a parameter budget."""

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.gating import Accounting
from ctrlsparse.gating.decoders import DecoderError
from ctrlsparse.gating.purging import to_pretrained
from tests.helpers import VOCAB, tiny_decoder

pytest.importorskip("transformers")

IDS = {"input_ids": torch.zeros(1, 8, dtype=torch.long)}


def _lm_loss(output, targets):
    return F.cross_entropy(output.logits.flatten(0, 1), targets.flatten())


def _llama(hidden: bool = True, layers: bool = False, depth: int = 2):
    model = tiny_decoder("llama", num_hidden_layers=depth)
    return cs.sparsify(model, example_input=IDS, hidden=hidden, layers=layers)


def test_training_lands_every_block_on_the_target_shape_and_purges_to_it():
    torch.manual_seed(0)
    model = _llama(layers=True, depth=3).train()
    shape = {"layers": 2, "heads": 2, "intermediate": 64, "hidden": 48}
    problem = cs.SparsityProblem(model, _lm_loss, target_shape=shape)
    opt = cs.GDA(problem, total_steps=10)  # the last step is the feasibility phase's
    for _ in range(10):
        ids = torch.randint(0, VOCAB, (2, 6))
        opt.step({"input_ids": ids[:, :-1]}, ids[:, 1:])
    assert opt.decision is not None
    realized = problem.constraint_values(realized=True)
    assert all(abs(float(realized[n]) - eps) < 1e-6 for n, eps in problem.targets_all.items())
    config = to_pretrained(model).config
    assert config.num_hidden_layers == 2
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert (config.intermediate_size, config.hidden_size) == (64, 48)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"intermediate": 200}, r"'intermediate'\] = 200 is more than the model has \(172\)"),
        ({"hidden": 65}, r"'hidden'\] = 65 is more than the model has \(64\)"),
        ({"heads": 5}, r"'heads'\] = 5 is more than the model has \(4\)"),
        ({"heads": 3, "kv_heads": 2}, "kv_heads = 2 does not divide heads = 3"),
        ({"heads": 2, "kv_heads": 2}, r"pruned with its 2 query heads.*valid heads: 2, 4"),
        ({"layers": 3}, r"'layers'\] = 3 is more than the model has \(2\)"),
        ({"depth": 1}, "unknown key 'depth'; valid keys: layers, heads, kv_heads, intermediate, hidden"),
        ({"hidden": 0}, r"'hidden'\] must be a whole number >= 1, got 0"),
    ],
)
def test_bad_target_shapes_are_refused_before_training(shape, message):
    with pytest.raises(DecoderError, match=message):
        cs.SparsityProblem(_llama(), _lm_loss, target_shape=shape)


def test_a_shape_on_ungated_units_says_how_to_gate_them():
    with pytest.raises(DecoderError, match=r"model \(hidden\).*hidden=True"):
        cs.SparsityProblem(_llama(hidden=False), _lm_loss, target_shape={"hidden": 32})
    with pytest.raises(DecoderError, match=r"model \(layer\).*layers=True"):
        cs.SparsityProblem(_llama(), _lm_loss, target_shape={"layers": 1})


def test_gpt2_heads_need_hidden_divisible_by_them():
    model = cs.sparsify(tiny_decoder("gpt2"), example_input=IDS)
    with pytest.raises(DecoderError, match="hidden = 64 is not divisible by heads = 3"):
        cs.SparsityProblem(model, _lm_loss, target_shape={"heads": 3})
    with pytest.raises(DecoderError, match="would change the head width"):
        cs.SparsityProblem(model, _lm_loss, target_shape={"heads": 2})


def test_target_params_counts_every_parameter_embeddings_included():
    model = _llama(hidden=False)  # embeddings, LM head and norms stay ungated: always active
    total = sum(p.numel() for p in tiny_decoder("llama").parameters())
    sparsifiable = Accounting(model).num_sparsifiable
    fraction = cs.SparsityProblem(model, _lm_loss, target_params=0.5)
    count = cs.SparsityProblem(model, _lm_loss, target_params=str(total // 2))
    expected = (total / 2 - (total - sparsifiable)) / sparsifiable
    assert fraction.targets_all["model"] == pytest.approx(expected)
    assert count.targets_all["model"] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="not more than the 12736 parameters no gate can remove"):
        cs.SparsityProblem(model, _lm_loss, target_params=0.1)
    with pytest.raises(ValueError, match="more than the model's 103360 parameters"):
        cs.SparsityProblem(model, _lm_loss, target_params="2e5")
    with pytest.raises(ValueError, match="target_params or target_density, not both"):
        cs.SparsityProblem(model, _lm_loss, target_params=0.5, target_density=0.5)


def test_a_macs_budget_counts_attention_scores_and_values_at_the_example_length():
    # hidden 64, 2 blocks of 4 query heads over 2 key-value heads (head_dim 16), SwiGLU 172,
    # vocabulary 97, an example of T = 8 tokens. Per token and block, the projections spend
    # q 64·64 + k, v 2·(64·32) + o 64·64 + SwiGLU 3·64·172 = 45,312 MACs, the LM head 64·97;
    # per example and block, QK^T and AV spend 2 · 4 heads · 16 · T(T + 1)/2 = 4,608 (causal pairs).
    model = cs.sparsify(
        tiny_decoder("llama"), example_input={"input_ids": torch.zeros(1, 8, dtype=torch.long)}
    )
    problem = cs.SparsityProblem(model, _lm_loss, target_macs=0.8)
    attention = 2 * 4 * 16 * 8 * 9 // 2
    dense = 8 * (2 * 45312 + 64 * 97) + 2 * attention
    macs = problem.dense_macs
    assert [macs[f"model.layers.{i}.self_attn"] for i in (0, 1)] == [attention, attention]
    assert sum(macs.values()) == dense == 783872
    groups = cs.gate_groups(model)
    groups[0].decide_(torch.tensor([1.0, 0.0]))  # block 0 keeps 1 of its 2 key-value heads
    for group in groups[1:]:
        group.decide_(torch.ones(group.num_units))
    # Its 2 query heads go: their Q rows, one K and one V head, their O columns (16·64·6 per
    # token), and half of its attention MACs.
    realized, _ = problem.expected_macs(realized=True)
    assert float(realized) * dense == pytest.approx(dense - 8 * 16 * 64 * 6 - attention / 2)


def test_a_closed_attention_block_spends_no_attention_macs():
    example = {"input_ids": torch.zeros(1, 8, dtype=torch.long)}
    model = cs.sparsify(tiny_decoder("llama"), example_input=example, blocks=True)
    problem = cs.SparsityProblem(model, _lm_loss, target_macs=0.8)
    for group in cs.gate_groups(model):
        values = torch.ones(group.num_units)
        if group.kind == "attention":
            values[0] = 0.0
        group.decide_(values)
    # Block 0's Q, K, V and O projections (64·(64 + 32 + 32 + 64) per token) and its scores and values.
    realized, _ = problem.expected_macs(realized=True)
    assert float(realized) * 783872 == pytest.approx(783872 - 8 * 64 * 192 - 4608)
