"""Checkpoints, resume, reused run directories and non-finite losses (the Durable-runs issue)."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GDA, SparsityProblem, fit, mlp, sparsify
from ctrlsparse.data import Batches
from ctrlsparse.errors import NonFiniteLossError
from ctrlsparse.problem.schedules import TargetSchedule
from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.runs import read_metrics
from ctrlsparse.runs.checkpoint import CheckpointError, RunDirectoryError
from tests.helpers import Stop, stopping_loss

SCRIPT = Path(__file__).with_name("resume_run.py")


def _run_script(out: Path, mode: str) -> int:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), mode], capture_output=True).returncode


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical final state: metrics, summary (but its wall-clock field) and model tensors."""
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("train_seconds"), sb.pop("train_seconds")
    assert sa == sb
    ma, mb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert _run_script(out, "full") == 0
    return out


# 6 steps an epoch, checkpoints every 4 steps and at epoch ends (steps 4, 6, 8, 12, 16, 18).
@pytest.mark.parametrize(
    "mode",
    ["kill-step-9", "kill-step-13", "kill-write-3"],
    ids=["mid-epoch", "epoch-boundary", "during-checkpoint-write"],
)
def test_a_sigkilled_run_resumes_bit_identical(uninterrupted, tmp_path, mode):
    out = tmp_path / "run"
    assert _run_script(out, mode) == -9  # SIGKILL
    assert not (out / "summary.json").exists()
    assert _run_script(out, "resume") == 0
    _same_run(out, uninterrupted)


def test_a_run_killed_before_the_constraints_were_stacked_resumes_bit_identical(tmp_path):
    """``tests/data/run_per_name`` is ``resume_run.py OUT kill-step-9`` run by ctrlsparse
    61897a5, whose checkpoints hold one cooper constraint and one dual Adam state per target
    (``checkpoint.prev.pt`` left out); ``run_per_name_full`` is the same run uninterrupted
    under 61897a5. Resumed by this ctrlsparse, the run ends as the old one did, bit for bit."""
    data = Path(__file__).parents[1] / "data"
    out = tmp_path / "run"
    shutil.copytree(data / "run_per_name", out)
    assert _run_script(out, "resume") == 0
    _same_run(out, data / "run_per_name_full")


def _toy(seed=0, loss_fn=F.cross_entropy, dual_optimizer="adam", schedule=None, skip_below=None):
    torch.manual_seed(seed)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, :3].sum(1) > 0).long()
    model = sparsify(mlp(input_size=6, hidden=(10,), num_classes=2), "paper")
    problem = SparsityProblem(model, loss_fn, target_density={"fc1": 0.5, "fc2": 0.7})
    if skip_below is not None:  # a third of the units dead from the start: layers skip them
        with torch.no_grad():
            for group in problem.groups:
                group.gate.parameter[::3] = -30.0
    gda = GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-2), dual_optimizer=dual_optimizer,
              dual_kp=1.0 if dual_optimizer == "nupi" else 0.0, schedule=schedule,
              skip_below=skip_below, skip_every=4)  # fmt: skip
    batches = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(2))
    return gda, batches


@pytest.mark.parametrize(
    ("dual_optimizer", "schedule", "skip"),
    [
        ("adam", None, None),
        ("sgd", TargetSchedule("fixed"), None),
        ("nupi", TargetSchedule("geometric", factor=0.8), None),
        ("adam", TargetSchedule("dynamic", factor=0.8), None),
        ("adam", None, 1e-3),  # the checkpoint (step 9) keeps the skip decision of step 8
    ],
)
def test_resume_in_process_is_bit_identical_for_every_dual_option(tmp_path, dual_optimizer, schedule, skip):
    kwargs = {"dual_optimizer": dual_optimizer, "schedule": schedule, "skip_below": skip}
    gda, batches = _toy(**kwargs)
    common = {"progress": False, "checkpoint_every": 3}
    fit(gda, batches, 4, run_dir=tmp_path / "full", test_batches=batches, **common)
    gda, batches = _toy(loss_fn=stopping_loss(10), **kwargs)
    with pytest.raises(Stop):
        fit(gda, batches, 4, run_dir=tmp_path / "cut", test_batches=batches, **common)
    gda, batches = _toy(**kwargs)
    fit(gda, batches, 4, run_dir=tmp_path / "cut", resume=True, test_batches=batches, **common)
    _same_run(tmp_path / "cut", tmp_path / "full")


def test_gda_state_dict_round_trips_and_continues_identically():
    gda, batches = _toy(dual_optimizer="nupi")
    gda.begin(40, 4)
    data = list(batches)
    for x, y in data[:3]:
        gda.step(x, y)
    state = copy.deepcopy(gda.state_dict())
    model_state = copy.deepcopy(gda.model.state_dict())
    rng = torch.get_rng_state()
    expected = [gda.step(x, y) for x, y in data[3:]]
    fresh, _ = _toy(seed=5, dual_optimizer="nupi")  # other initial weights: all of it is loaded
    fresh.load_state_dict(state)
    fresh.model.load_state_dict(model_state)
    torch.set_rng_state(rng)
    assert [fresh.step(x, y) for x, y in data[3:]] == expected
    assert fresh.steps == gda.steps and fresh.problem.levels == gda.problem.levels


def test_gda_state_of_another_run_length_is_refused():
    gda, _ = _toy()
    gda.begin(40, 4)
    other, _ = _toy()
    other.begin(80, 4)
    with pytest.raises(ValueError, match="runs for 80 steps, the saved state for 40"):
        other.load_state_dict(gda.state_dict())


def test_batches_resume_mid_epoch_with_the_same_order():
    x, y = torch.arange(20.0)[:, None], torch.arange(20)
    batches = Batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0))
    iterator = iter(batches)
    first = [next(iterator)[1] for _ in range(2)]
    state = batches.state_dict()
    rest = [b[1] for b in iterator] + [b[1] for b in batches]  # this epoch's rest, then the next
    again = Batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(99))
    again.load_state_dict(state)
    resumed = [b[1] for b in again] + [b[1] for b in again]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(resumed, rest, strict=True))


def test_a_used_run_directory_is_refused_and_left_untouched(tmp_path):
    gda, batches = _toy()
    fit(gda, batches, 1, run_dir=tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    gda, batches = _toy()
    with pytest.raises(RunDirectoryError, match="--resume.*--overwrite"):
        fit(gda, batches, 1, run_dir=tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    fit(gda, batches, 1, run_dir=tmp_path, progress=False, overwrite=True)  # afresh: allowed


def test_resume_without_a_checkpoint_and_with_another_config_are_refused(tmp_path):
    gda, batches = _toy()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(gda, batches, 1, run_dir=tmp_path / "new", progress=False, resume=True)
    fit(gda, batches, 2, run_dir=tmp_path / "run", progress=False, config={"train": {"seed": 0, "lr": 0.1}})
    gda, batches = _toy()
    with pytest.raises(CheckpointError, match=r"train\.seed: 0 → 1.*epochs: 2 → 3"):
        fit(gda, batches, 3, run_dir=tmp_path / "run", progress=False, resume=True,
            config={"train": {"seed": 1, "lr": 0.1}})  # fmt: skip


def test_a_garbled_checkpoint_falls_back_to_the_previous_one_then_names_both(tmp_path):
    gda, batches = _toy()
    fit(gda, batches, 2, run_dir=tmp_path, progress=False)
    assert checkpoints.load_checkpoint(tmp_path)["step"] == 8
    newest = tmp_path / checkpoints.CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"checkpoint\.pt is corrupt: .*falling back to .*prev\.pt"):
        assert checkpoints.load_checkpoint(tmp_path)["step"] == 4
    (tmp_path / checkpoints.PREVIOUS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*checkpoint\.prev\.pt"):
        checkpoints.load_checkpoint(tmp_path)


def test_the_atomic_writer_leaves_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    checkpoints.atomic_save({"v": torch.ones(1)}, path)

    def failing_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", failing_save)
    with pytest.raises(CheckpointError, match=r"could not write .*state\.pt.*No space left"):
        checkpoints.atomic_save({"v": torch.zeros(1)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(1))


def test_a_full_disk_in_a_real_fit_keeps_the_last_checkpoint_and_resumes_from_it(tmp_path, monkeypatch):
    gda, batches = _toy()
    fit(gda, batches, 3, run_dir=tmp_path / "full", progress=False)
    real_save, calls = checkpoints.torch.save, {"n": 0}

    def disk_fills_up(obj, f):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint (end of epoch 1) fits, the second does not
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoints.torch, "save", disk_fills_up)
    gda, batches = _toy()
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt.*No space left"):
        fit(gda, batches, 3, run_dir=tmp_path / "run", progress=False)
    assert checkpoints.load_checkpoint(tmp_path / "run")["step"] == 4
    assert not list((tmp_path / "run").glob(".*"))  # no half-written file left behind
    monkeypatch.setattr(checkpoints.torch, "save", real_save)  # space freed: resume finishes the run
    gda, batches = _toy()
    fit(gda, batches, 3, run_dir=tmp_path / "run", progress=False, resume=True)
    _same_run(tmp_path / "full", tmp_path / "run")


def test_a_nan_loss_stops_before_the_step_updates_anything(tmp_path):
    calls = {"n": 0}

    def exploding(out, target):
        calls["n"] += 1
        loss = F.cross_entropy(out, target)
        return loss * float("nan") if calls["n"] == 6 else loss

    gda, batches = _toy(loss_fn=exploding)
    seen = {}
    step = gda.step

    def watched_step(x, y):  # the state just before each step
        seen["params"] = copy.deepcopy(gda.model.state_dict())
        seen["multipliers"] = copy.deepcopy(gda.problem.state_dict())
        seen["adam"] = copy.deepcopy(gda.primal_optimizer.state_dict()["state"])
        return step(x, y)

    gda.step = watched_step
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 6.*not applied.*epoch 2"):
        fit(gda, batches, 3, run_dir=tmp_path, progress=False)
    now = gda.model.state_dict()
    assert all(torch.equal(now[k], seen["params"][k]) for k in now)
    assert str(gda.problem.state_dict()) == str(seen["multipliers"])
    adam = gda.primal_optimizer.state_dict()["state"]
    assert all(torch.equal(adam[i]["step"], seen["adam"][i]["step"]) for i in adam)
    assert checkpoints.load_checkpoint(tmp_path)["step"] == 4  # the last good one, intact
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]  # every record before it
