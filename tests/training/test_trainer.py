import json

import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GDA, Batches, SparsityProblem, evaluate, fit, mlp, read_metrics, sparsify
from ctrlsparse.runs import RunSummary


def _data(n=96):
    x = torch.randn(n, 1, 2, 3)
    return x, x.flatten(1)[:, :3].argmax(1)


def _gda(loss_fn=F.cross_entropy, **levels):
    model = sparsify(mlp(input_size=6, hidden=(8,), num_classes=3), "paper")
    return GDA(SparsityProblem(model, loss_fn, **levels), dual_lr=0.1)


def test_fit_writes_a_complete_run_directory(tmp_path):
    x, y = _data()
    gda = _gda(target_density={"fc1": 0.5})
    summary = fit(
        gda,
        Batches(x, y, 32, shuffle=True),
        epochs=2,
        test_batches=Batches(x, y, 64),
        run_dir=tmp_path,
        config={"name": "toy"},
        progress=False,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.prev.pt",
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "model.pt",
        "summary.json",
    ]
    assert json.loads((tmp_path / "config.json").read_text()) == {"name": "toy"}
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert [r["epoch"] for r in records] == [1, 1, 1, 2, 2, 2]
    assert "test_error" in records[2] and "test_error" in records[5] and "test_error" not in records[0]
    assert set(records[0]["multipliers"]) == {"fc1"} and set(records[0]["densities"]) == {"fc1", "fc2"}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert RunSummary.from_dict(on_disk) == summary and on_disk["mode"] == "constrained"
    assert on_disk["test_error"] == pytest.approx(records[-1]["test_error"])
    assert summary.targets == {"fc1": 0.5} and summary.penalties == {}
    assert 0 <= summary.realized_density <= 1
    assert summary.params["dense"] >= summary.params["remaining"]
    state = torch.load(tmp_path / "model.pt")
    assert "fc1.input_gate.gate.log_alpha" in state


def test_log_every_keeps_epoch_ends(tmp_path):
    x, y = _data()
    fit(
        _gda(penalty=0.1),
        Batches(x, y, 16),
        epochs=1,
        test_batches=Batches(x, y, 64),
        run_dir=tmp_path,
        log_every=4,
        progress=False,
    )
    assert [r["step"] for r in read_metrics(tmp_path)] == [4, 6]


def test_evaluate_uses_test_time_gates_and_restores_mode():
    x, y = _data()
    model = sparsify(mlp(input_size=6, hidden=(8,), num_classes=3), "paper").train()
    first = evaluate(model, Batches(x, y, 50))
    assert first == evaluate(model, Batches(x, y, 50))  # deterministic gates
    assert model.training and 0.0 <= first <= 1.0
