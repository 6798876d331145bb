"""Several processes: 2 gloo ranks spawned from pytest on a free port (tests/training/ddp_run.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_run.py")


def _launch(out: Path, world: int, mode: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(world), mode], capture_output=True,
                          text=True, timeout=120)  # fmt: skip  # a hang fails here instead of blocking
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def test_two_ranks_with_half_batches_equal_one_process_with_full_batches(tmp_path):
    assert _launch(tmp_path / "one", 1, "steps") == [{"ok": True}]
    assert _launch(tmp_path / "two", 2, "steps") == [{"ok": True}, {"ok": True}]
    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    two = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(torch.equal(two[0][k], two[1][k]) for k in one)  # identical replicas and multipliers
    assert float(one["lambda/fc1"]) > 0.5  # the multipliers did move
    for key in one:
        assert torch.allclose(one[key], two[0][key], atol=1e-3, rtol=1e-3), key


def test_a_two_rank_run_resumes_bit_identical_and_reuse_is_refused_on_every_rank(tmp_path):
    assert _launch(tmp_path / "full", 2, "fit") == [{"ok": True}, {"ok": True}]
    stopped = _launch(tmp_path / "cut", 2, "fit-stop-9")
    assert all("KeyboardInterrupt" in r["error"] for r in stopped)
    assert _launch(tmp_path / "cut", 2, "resume") == [{"ok": True}, {"ok": True}]
    a, b = tmp_path / "full" / "run", tmp_path / "cut" / "run"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa.pop("train_seconds") and sb.pop("train_seconds") and sa == sb and sa["world_size"] == 2
    ma, mb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    refused = _launch(tmp_path / "full", 2, "fit")  # the run directory is in use
    assert "RunDirectoryError" in refused[0]["error"] and "--resume" in refused[0]["error"]
    assert "rank 0 stopped the run (RunDirectoryError)" in refused[1]["error"]


@pytest.mark.parametrize("what", ["gate", "multiplier"])
def test_ranks_that_drift_apart_stop_every_rank(tmp_path, what):
    errors = [r["error"] for r in _launch(tmp_path, 2, f"perturb-{what}")]
    assert all("DistributedMismatchError" in e and "after epoch 1" in e and "ranks [1]" in e for e in errors)
    assert all((f"{what} parameters" if what == "gate" else "multipliers") in e for e in errors)
