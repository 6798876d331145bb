"""FSDP2 on CPU with 2 gloo ranks (tests/training/fsdp_run.py): sharded weights, whole gates."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("fsdp_run.py")


def _launch(out: Path, world: int, mode: str) -> list:
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(world), mode], capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = []
    for rank in range(world):
        error = out / f"rank{rank}.err"
        results.append(error.read_text() if error.exists() else torch.load(out / f"rank{rank}.pt"))
    return results


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("two"), 2, "train")


def test_both_ranks_hold_the_same_gates_multipliers_and_decision(two_ranks):
    first, second = two_ranks
    assert not isinstance(first, str), first
    assert torch.equal(first["gates"], second["gates"])
    assert first["multipliers"] == second["multipliers"] and first["decision"] == second["decision"]


def test_the_sharded_run_lands_like_one_process(two_ranks, tmp_path):
    (one,) = _launch(tmp_path, 1, "train")
    two = two_ranks[0]
    assert one["realized"] <= 0.4 and two["realized"] <= 0.4
    assert abs(one["realized"] - two["realized"]) <= one["unit_share"]


def test_a_run_resumed_from_a_dcp_checkpoint_ends_as_the_uninterrupted_one(two_ranks, tmp_path):
    resumed = _launch(tmp_path, 2, "resume")
    assert not isinstance(resumed[0], str), resumed[0]
    for rank in range(2):
        assert resumed[rank]["steps"] == two_ranks[rank]["steps"]
        assert torch.equal(resumed[rank]["gates"], two_ranks[rank]["gates"])
        assert resumed[rank]["multipliers"] == two_ranks[rank]["multipliers"]


def test_sharding_the_gates_is_refused_naming_the_gate_and_the_fix(tmp_path):
    errors = _launch(tmp_path, 2, "shard-gates")
    assert all(isinstance(e, str) for e in errors)
    assert "fully_shard sharded the gates of 'inp'" in errors[0] and "ignored_params=" in errors[0]


def test_a_tiny_llama_sharded_per_decoder_layer_trains_with_identical_ranks(tmp_path):
    first, second = _launch(tmp_path, 2, "llama")
    assert not isinstance(first, str), first
    assert torch.equal(first["gates"], second["gates"]) and first["multipliers"] == second["multipliers"]
    assert first["decision"] == second["decision"] and first["realized"] <= 0.5
