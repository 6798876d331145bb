"""Language-model problem files: a text corpus, a Llama, next-token loss, distillation, perplexity."""

import json
import math

import pytest
import torch

import ctrlsparse as cs
from ctrlsparse.cli import main
from ctrlsparse.experiments.build import build
from ctrlsparse.experiments.config import ProblemFileError, load_problem, parse_problem
from ctrlsparse.runs.store import read_summary
from tests.helpers import write_corpus

TINY_LLAMA = {"hidden": 16, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate": 32}


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CTRLSPARSE_DATA", str(tmp_path / "cache"))
    return str(write_corpus(tmp_path / "corpus", documents=6))


def _dense(root, **train):
    """A dense tiny Llama: magnitude pruning to density 1 removes no weight."""
    return {
        "name": "tiny_llama",
        "data": {"name": "python_docs", "root": root, "seq_len": 16, "vocab_size": 300},
        "model": {"name": "llama", "kwargs": TINY_LLAMA, "structure": "weight"},
        "sparsity": {"method": "magnitude", "target_density": 1.0},
        "optim": {"primal_lr": 1e-2},
        "train": {"epochs": 2, "batch_size": 8, **train},
    }


def test_the_shipped_llama_problems_parse():
    dense = load_problem("problems/python_docs_llama.toml")
    pruned = load_problem("problems/python_docs_llama_pruned.toml")
    assert dense.data.name == pruned.data.name == "python_docs"
    assert pruned.model.init == "runs/python_docs_llama" and pruned.sparsity.target_density == 0.5
    assert pruned.train.distill_weight == 0.5 and pruned.model.kwargs == dense.model.kwargs


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("data", {"tokenizer": "words"}, "tokenizer = 'words' is not valid; valid choices: bpe, bytes"),
        ("data", {"vocab_size": 100}, "vocab_size of a byte-level BPE must be >= 257"),
        ("data", {"seq_len": 0}, "seq_len must be a positive integer, got 0"),
        ("train", {"distill_weight": 2.0}, "0 <= distill_weight <= 1"),
        ("train", {"distill_temperature": 0}, "distill_temperature > 0"),
    ],
)
def test_bad_language_model_settings_are_refused_before_training(section, values, message):
    problem = _dense("corpus")
    problem[section] = {**problem[section], **values}
    with pytest.raises(ProblemFileError, match=message):
        parse_problem(problem)


def test_a_dense_tiny_llama_learns_and_reports_validation_perplexity(corpus, tmp_path, capsys):
    problem = tmp_path / "tiny_llama.toml"
    problem.write_text(
        f"""name = "tiny_llama"
[data]
name = "python_docs"
root = "{corpus}"
seq_len = 16
vocab_size = 300
[model]
name = "llama"
kwargs = {{ hidden = 16, layers = 1, heads = 2, kv_heads = 1, intermediate = 32 }}
structure = "weight"
[sparsity]
method = "magnitude"
target_density = 1.0
[optim]
primal_lr = 1e-2
[train]
epochs = 1
batch_size = 8
"""
    )
    assert main(["run", str(problem), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    summary = read_summary(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # From ln(300) ≈ 5.7 at random weights to well below on a corpus of four repeated sentences.
    assert records[0]["loss"] > 5.0 and records[-1]["loss"] < 3.0
    assert 0.0 <= summary.test_error < 1.0  # next-token error, a fraction of the validation tokens
    assert 1.0 < summary.perplexity < math.exp(3.0)
    assert f"validation perplexity {summary.perplexity:.2f}" in capsys.readouterr().out
    assert summary.params["dense"] == summary.params["remaining"]


def test_distillation_from_the_dense_model_starts_at_zero_loss(corpus, tmp_path):
    dense = build(parse_problem(_dense(corpus, seed=1))).trainer.model  # other weights than seed 0's
    torch.save(dense.state_dict(), tmp_path / "dense.pt")
    student = _dense(corpus, epochs=1, distill_weight=1.0, distill_temperature=2.0)
    student["model"]["init"] = str(tmp_path / "dense.pt")
    experiment = build(parse_problem(student))
    assert torch.equal(experiment.trainer.model.lm_head.weight, dense.lm_head.weight)  # [model] init
    experiment.trainer.steps_per_epoch = len(experiment.train)  # as fit() sets it
    inputs, labels = next(iter(experiment.train))
    # The student starts as the dense model it distills from: no divergence on the first batch.
    assert experiment.trainer.step(inputs, labels).loss == pytest.approx(0.0, abs=1e-5)
    assert experiment.trainer.step(inputs, labels).loss > 0.0  # one Adam step later it differs


def test_gate_blocks_in_a_problem_file_gates_each_attention_and_mlp_block(corpus):
    problem = _dense(corpus, epochs=1)
    problem["model"] = {
        "name": "llama",
        "kwargs": {**TINY_LLAMA, "layers": 2},
        "structure": "neuron",
        "gate_blocks": True,
    }
    problem["sparsity"] = {"target_density": 0.6}
    with_blocks = build(parse_problem(problem)).trainer.model
    kinds = {(g.kind, g.num_units) for g in cs.gate_groups(with_blocks)}
    assert {("attention", 2), ("mlp", 2)} <= kinds  # one gate per decoder layer's attention and MLP
    problem["model"]["gate_blocks"] = False
    plain = {g.kind for g in cs.gate_groups(build(parse_problem(problem)).trainer.model)}
    assert "attention" not in plain and "mlp" not in plain
