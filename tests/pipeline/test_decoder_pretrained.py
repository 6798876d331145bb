"""Sparsify a transformers decoder LM, decide a uniform shape, purge to a smaller model of the
same class, save_pretrained → from_pretrained: same logits, and generate() runs."""

import pytest
import torch

import ctrlsparse as cs
from ctrlsparse.gating.purging import to_pretrained
from tests.helpers import VOCAB, tiny_decoder

transformers = pytest.importorskip("transformers")


def _decide_shape(model, kv_heads: int, intermediate: int, hidden: int) -> None:
    """Close units so every block keeps the same numbers (the first of each kind stay open),
    at open gates strictly inside (0, 1) as a trained test-time gate may be."""
    keep = {"head": kv_heads, "output": intermediate, "hidden": hidden}
    for group in cs.gate_groups(model):
        values = torch.zeros(group.num_units)
        values[: keep[group.kind]] = torch.linspace(0.5, 1.0, keep[group.kind])
        group.decide_(values)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma", "phi3"])
def test_purged_model_round_trips_through_save_pretrained(family, tmp_path):
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    model = cs.sparsify(tiny_decoder(family), example_input={"input_ids": ids}, hidden=True)
    _decide_shape(model, kv_heads=1, intermediate=40, hidden=48)
    with torch.no_grad():
        gated = model.eval()(input_ids=ids).logits
    small = to_pretrained(model)
    config = small.config
    assert type(small) is type(tiny_decoder(family))
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert (config.intermediate_size, config.hidden_size, config.head_dim) == (40, 48, 16)
    small.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = loaded(input_ids=ids).logits
    error = (logits - gated).abs().max() / gated.abs().max()
    assert float(error) <= 1e-4
    generated = loaded.generate(ids[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 7 + 4)


def test_gpt2_purges_mlp_neurons_to_a_smaller_config(tmp_path):
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    model = cs.sparsify(tiny_decoder("gpt2"), example_input={"input_ids": ids}, heads=False)
    _decide_shape(model, kv_heads=0, intermediate=100, hidden=0)
    with torch.no_grad():
        gated = model.eval()(input_ids=ids).logits
    small = to_pretrained(model)
    assert small.config.n_inner == 100
    small.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids).logits, gated, rtol=0, atol=1e-4 * float(gated.abs().max())
        )
