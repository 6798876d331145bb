"""Decoder LMs from transformers: units per family, counts, the hidden dimension, exact purge."""

import pytest
import torch

import ctrlsparse as cs
from ctrlsparse.gating import Accounting
from ctrlsparse.gating.decoders import DecoderError
from ctrlsparse.gating.purging import PurgeError, to_pretrained
from ctrlsparse.gating.units import TraceError
from tests.helpers import VOCAB, tiny_decoder

pytest.importorskip("transformers")

RMS_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"]
LAYER_NORM_FAMILIES = ["gpt2", "gpt_neox", "opt"]


def _ids(batch: int = 2, length: int = 9) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))}


def _scramble(model, seed: int = 0) -> None:
    """Gates drawn far from their initial value, so some units close and others stay open."""
    generator = torch.Generator().manual_seed(seed)
    for group in cs.gate_groups(model):
        with torch.no_grad():
            group.gate.parameter.copy_(3 * torch.randn(group.gate.parameter.shape, generator=generator))


def _units(model) -> list[tuple[str, str, int]]:
    return [(g.name, g.kind, g.num_units) for g in cs.gate_groups(model)]


@pytest.mark.parametrize("family", RMS_FAMILIES + LAYER_NORM_FAMILIES)
def test_every_family_gets_heads_and_mlp_units_and_purges_exactly(family):
    model = cs.sparsify(tiny_decoder(family), example_input=_ids(), hidden=family in RMS_FAMILIES)
    kinds = [kind for _, kind, _ in _units(model)]
    assert kinds.count("head") == 2 and kinds.count("output") == 2
    assert kinds.count("hidden") == (family in RMS_FAMILIES)
    _scramble(model)
    with torch.no_grad():
        gated = model.eval()(**_ids()).logits
    purged = cs.purge(model, _ids())
    assert sum(p.numel() for p in purged.parameters()) < sum(
        p.numel() for p in tiny_decoder(family).parameters()
    )
    assert type(purged) is type(tiny_decoder(family))
    torch.testing.assert_close(purged(**_ids()).logits, gated, rtol=0, atol=1e-4 * float(gated.abs().max()))


def test_llama_units_and_counts_by_hand():
    # hidden 64, 2 blocks of 4 query heads over 2 key-value heads (head_dim 16), SwiGLU 172, vocabulary 97.
    model = cs.sparsify(tiny_decoder("llama"), example_input=_ids(), hidden=True)
    assert _units(model) == [
        ("model.layers.0.self_attn", "head", 2),
        ("model.layers.1.self_attn", "head", 2),
        ("model.layers.0.mlp", "output", 172),
        ("model.layers.1.mlp", "output", 172),
        ("model", "hidden", 64),
    ]
    q, kv, o, mlp, norms = 64 * 64, 2 * (32 * 64), 64 * 64, 3 * 172 * 64, 2 * 64
    block = q + kv + o + mlp + norms
    embeddings, final_norm = 2 * 97 * 64, 64  # token embedding and untied LM head
    accounting = Accounting(model)
    assert accounting.num_sparsifiable == 2 * block + embeddings + final_norm == 103360
    assert accounting.num_sparsifiable == sum(p.numel() for p in tiny_decoder("llama").parameters())
    # Closing key-value head 1 of block 0 removes its K and V rows, the rows of query heads
    # 2 and 3 that read it, and their output columns: 16·64 · (2 + 1 + 1 + 2).
    heads = cs.gate_groups(model)[0]
    heads.decide_(torch.tensor([1.0, 0.0]))
    for group in cs.gate_groups(model)[1:]:
        group.decide_(torch.ones(group.num_units))
    realized, _ = accounting.active(realized=True)
    assert int(realized) == 103360 - 16 * 64 * 6


def test_a_closed_key_value_head_takes_its_query_heads_along():
    model = cs.sparsify(tiny_decoder("qwen2"), example_input=_ids(), hidden=True)
    for group in cs.gate_groups(model):
        values = torch.ones(group.num_units)
        if group.kind == "head":
            values[0] = 0.0
        group.decide_(values)
    small = cs.purge(model, _ids())
    attention = small.model.layers[0].self_attn
    assert attention.q_proj.out_features == 2 * 16 and attention.k_proj.out_features == 16
    assert attention.o_proj.in_features == 2 * 16
    assert (small.config.num_attention_heads, small.config.num_key_value_heads) == (2, 1)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_rmsnorm_folding_is_exact_when_hidden_dimensions_close(family):
    model = cs.sparsify(tiny_decoder(family), example_input=_ids(), hidden=True, heads=False)
    for group in cs.gate_groups(model):
        values = torch.full((group.num_units,), 0.7)  # a test-time gate may lie strictly inside (0, 1)
        if group.kind == "hidden":
            values[::3] = 0.0
        group.decide_(values)
    with torch.no_grad():
        gated = model.eval()(**_ids()).logits
    small = cs.purge(model, _ids())
    assert small.config.hidden_size == 64 - 22
    assert small.model.norm.weight.shape == (42,)
    torch.testing.assert_close(small(**_ids()).logits, gated, rtol=0, atol=1e-5 * float(gated.abs().max()))


@pytest.mark.parametrize("family", LAYER_NORM_FAMILIES)
def test_hidden_pruning_under_layer_norm_is_refused_with_the_reason(family):
    with pytest.raises(DecoderError, match="LayerNorm.*subtract the mean"):
        cs.sparsify(tiny_decoder(family), example_input=_ids(), hidden=True)


def test_tied_embeddings_are_untied_when_the_hidden_dimension_is_pruned():
    model = cs.sparsify(tiny_decoder("llama", tie_word_embeddings=True), example_input=_ids(), hidden=True)
    _scramble(model, seed=3)
    with torch.no_grad():
        gated = model.eval()(**_ids()).logits
    small = cs.purge(model, _ids())
    assert small.config.tie_word_embeddings is False
    assert small.lm_head.weight is not small.model.embed_tokens.weight
    torch.testing.assert_close(small(**_ids()).logits, gated, rtol=0, atol=1e-4 * float(gated.abs().max()))


def test_to_pretrained_refuses_per_block_sizes_and_names_them():
    model = cs.sparsify(tiny_decoder("llama"), example_input=_ids())
    for i, group in enumerate(cs.gate_groups(model)):
        values = torch.ones(group.num_units)
        values[: i + 1] = 0.0  # block 0 and block 1 keep different numbers of units
        group.decide_(values)
    with pytest.raises(DecoderError, match=r"blocks kept different sizes.*torch.export"):
        to_pretrained(model)


def test_to_pretrained_checks_the_purged_logits_against_the_gated_model(monkeypatch):
    from ctrlsparse.gating import purging

    model = cs.sparsify(tiny_decoder("llama"), hidden=True)  # no example input: to_pretrained makes one
    faithful = purging.purge_decoder

    def off_by_a_little(gated):
        purged = faithful(gated)
        with torch.no_grad():
            purged.lm_head.weight.mul_(1.001)
        return purged

    monkeypatch.setattr(purging, "purge_decoder", off_by_a_little)
    with pytest.raises(PurgeError, match=r"relative error 0\.001.*tolerance 0\.0001.*'llama' layout"):
        to_pretrained(model)


def test_family_without_lm_head_is_refused():
    import transformers as tf

    base = tf.LlamaModel(tiny_decoder("llama").config)
    with pytest.raises(DecoderError, match="without an LM head.*ForCausalLM"):
        cs.sparsify(base, example_input=_ids())


def test_an_unregistered_decoder_names_the_module_whose_search_does_not_end_and_exclude_skips_it(monkeypatch):
    from ctrlsparse.gating import units

    monkeypatch.setattr(units, "SEARCH_SECONDS", 1.0)
    root = "model.layers.0.self_attn.q_proj"
    model = tiny_decoder("llama")
    model.config.model_type = "my_llama"  # no registered layout: the dependency graph's search
    with pytest.raises(
        TraceError, match=rf"'{root}'.*not finish in 1 s.*exclude=\['{root}'\].*register_decoder"
    ):
        cs.sparsify(model, example_input=_ids())
    # The rotary Q/K projections are what the search cannot get through; the MLPs are found.
    model = tiny_decoder("llama")
    model.config.model_type = "my_llama"
    model = cs.sparsify(model, example_input=_ids(), exclude=["*.self_attn.*"])
    assert [kind for _, kind, _ in _units(model)] == ["output", "output"]


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ("model.layers.1.mlp", r"no module 'model.layers.1.mlp.up_proj'.*register_decoder"),
        (
            "model.layers.0.self_attn.o_proj",
            r"'model.layers.0.self_attn.o_proj'.*Identity with no 2-D weight",
        ),
    ],
)
def test_a_layout_that_does_not_fit_the_model_names_the_module(replace, message):
    model = tiny_decoder("llama")
    parent, _, child = replace.rpartition(".")
    setattr(model.get_submodule(parent), child, torch.nn.Identity())
    with pytest.raises(DecoderError, match=message):
        cs.sparsify(model, example_input=_ids())


def test_gates_of_a_decoder_round_trip_through_state_dict():
    model = cs.sparsify(tiny_decoder("qwen3"), example_input=_ids(), hidden=True)
    _scramble(model, seed=5)
    cs.gate_groups(model)[0].decide_(torch.tensor([1.0, 0.0]))
    fresh = cs.sparsify(tiny_decoder("qwen3"), example_input=_ids(), hidden=True)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**_ids()).logits, model.eval()(**_ids()).logits)
    assert cs.purge(fresh, _ids()).model.layers[0].self_attn.k_proj.out_features == 16  # one key-value head


def test_sparsify_needs_no_example_input_for_a_decoder_and_excludes_by_name():
    model = cs.sparsify(tiny_decoder("llama"), exclude=["*.self_attn"])
    assert [kind for _, kind, _ in _units(model)] == ["output", "output"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt"])
def test_a_closed_layer_is_deleted_and_its_parameters_counted(family):
    depth = {"n_layer": 3} if family == "gpt2" else {"num_hidden_layers": 3}
    model = cs.sparsify(tiny_decoder(family, **depth), example_input=_ids(), layers=True)
    layer = cs.gate_groups(model)[-1]
    assert (layer.kind, layer.num_units) == ("layer", 3)
    accounting = Accounting(model)
    per_layer = sum(
        p.numel() for p in tiny_decoder(family, **depth).get_submodule(_stack(family))[1].parameters()
    )
    for group in cs.gate_groups(model):
        values = torch.full((group.num_units,), 0.9)
        if group is layer:
            values[1] = 0.0
        group.decide_(values)
    realized, _ = accounting.active(realized=True)
    assert int(realized) == accounting.num_sparsifiable - per_layer
    with torch.no_grad():
        gated = model.eval()(**_ids()).logits
    small = cs.purge(model, _ids())
    assert len(small.get_submodule(_stack(family))) == 2 and small.config.num_hidden_layers == 2
    torch.testing.assert_close(small(**_ids()).logits, gated, rtol=0, atol=1e-4 * float(gated.abs().max()))


def test_attention_and_mlp_blocks_close_separately_and_purge_exactly():
    model = cs.sparsify(tiny_decoder("llama"), example_input=_ids(), blocks=True)
    assert _units(model)[-2:] == [("model", "attention", 2), ("model", "mlp", 2)]
    reference = tiny_decoder("llama")
    attention0 = sum(p.numel() for p in reference.model.layers[0].self_attn.parameters()) + 64  # + its norm
    mlp1 = sum(p.numel() for p in reference.model.layers[1].mlp.parameters()) + 64
    accounting = Accounting(model)
    for group in cs.gate_groups(model):
        values = torch.full((group.num_units,), 0.9)
        if group.kind in ("attention", "mlp"):
            values[0 if group.kind == "attention" else 1] = 0.0  # block 0's attention, block 1's MLP
        group.decide_(values)
    realized, _ = accounting.active(realized=True)
    assert int(realized) == accounting.num_sparsifiable - attention0 - mlp1
    with torch.no_grad():
        gated = model.eval()(**_ids()).logits
    small = cs.purge(model, _ids())
    assert small.model.layers[0].self_attn.k_proj.out_features == 16  # one zeroed key-value head stays
    assert small.model.layers[1].mlp.up_proj.out_features == 1  # one zeroed neuron stays
    assert small.model.layers[1].self_attn.k_proj.out_features == 32
    torch.testing.assert_close(small(**_ids()).logits, gated, rtol=0, atol=1e-4 * float(gated.abs().max()))


def _stack(family: str) -> str:
    return {"llama": "model.layers", "gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers",
            "opt": "model.decoder.layers"}[family]  # fmt: skip
