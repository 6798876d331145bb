"""A density path: every point deployed at most its ε, resumable bit for bit, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse import GDA, Batches, SparsityProblem, TargetSchedule, fit, sparsify
from ctrlsparse.runs.checkpoint import CheckpointError
from ctrlsparse.training.path import DensityPath, read_path
from tests.helpers import Stop, stopping_loss


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _data():
    x = torch.randn(384, 16, generator=torch.Generator().manual_seed(1))
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4] > 0).long()
    return x, y


def _problem(loss_fn=F.cross_entropy, seed=0, **targets):
    x, _ = _data()
    model = sparsify(_net(seed), example_input=x[:2])
    return SparsityProblem(model, loss_fn, example_input=x[:2], **(targets or {"target_density": 0.6}))


def _batches():
    x, y = _data()
    return Batches(x, y, 64, shuffle=True, generator=torch.Generator().manual_seed(2)), Batches(x, y, 384)


def _run(out: Path, path, loss_fn=F.cross_entropy, resume=False, **targets):
    problem = _problem(loss_fn, **targets)
    train, test = _batches()
    path = DensityPath.of(path)
    summary = fit(GDA(problem), train, 6, test_batches=test, run_dir=out, path=path, progress=False,
                  checkpoint_every=4, resume=resume)  # fmt: skip
    return path, summary


def test_every_point_is_deployed_at_most_its_target_within_a_unit_share(tmp_path):
    path, _ = _run(tmp_path / "path", [0.6, 0.4, 0.2])
    problem = _problem()
    share = problem.unit_share("model")
    assert [p.targets["model"] for p in path.points] == [0.6, 0.4, 0.2]
    for point in path.points:
        eps = point.targets["model"]
        assert eps - share - 1e-6 <= point.realized_density <= eps + 1e-6
        assert point.test_error is not None and point.finetune_steps >= 1
    # One sub-run per ε with the usual files, and path.json listing every point.
    recorded = read_path(tmp_path / "path")
    assert recorded["complete"] and [p["run"] for p in recorded["points"]] == [
        "density-0.6", "density-0.4", "density-0.2"
    ]  # fmt: skip
    for point in recorded["points"]:
        sub = tmp_path / "path" / point["run"]
        summary = json.loads((sub / "summary.json").read_text())
        assert summary["realized_density"] == pytest.approx(point["realized_density"])
        assert (sub / "model.pt").exists() and (sub / "config.json").exists()
    # The whole path costs at most 1.5 x the run's steps.
    total = 6 * 6
    assert recorded["boundaries"][-1] == total
    assert total + len(path.points) * recorded["finetune_steps"] <= 1.5 * total


def _points(out: Path) -> list[dict]:
    points = read_path(out)["points"]
    for p in points:
        p.pop("seconds")
    return points


@pytest.mark.parametrize("kill_at", [20, 30], ids=["mid-segment", "during-a-point"])
def test_a_killed_path_resumes_bit_identical(tmp_path, kill_at):
    """36 steps, points after steps 12, 24 and 36 with 4 steps of training each: the 20th
    loss is the run's step 16, the 30th the second point's second step."""
    _run(tmp_path / "full", [0.6, 0.4, 0.2])
    with pytest.raises(Stop):
        _run(tmp_path / "cut", [0.6, 0.4, 0.2], loss_fn=stopping_loss(kill_at))
    _run(tmp_path / "cut", [0.6, 0.4, 0.2], resume=True)
    cut, full = tmp_path / "cut", tmp_path / "full"
    assert _points(cut) == _points(full)
    for point in _points(tmp_path / "full"):
        a, b = (torch.load(d / point["run"] / "model.pt", weights_only=True) for d in (cut, full))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (torch.load(d / "model.pt", weights_only=True) for d in (cut, full))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_the_points_do_not_change_the_run(tmp_path):
    """A path's run is the run of its targets: taking a point puts everything back."""
    problem = _problem()
    train, test = _batches()
    path = DensityPath([0.6, 0.4])
    fit(GDA(problem), train, 4, run_dir=tmp_path / "a", path=path, progress=False)
    # The same retargets by hand, no points taken.
    problem = _problem()
    train, _ = _batches()
    gda = GDA(problem, feasibility=False)
    gda.begin(24, 6)
    gda.pace(12)
    gda.retarget({"model": 0.6}, ramp_steps=path.ramps[0])
    for _epoch in range(4):
        for x, y in train:
            gda.step(x, y)
            if gda.steps == 12:
                gda.retarget({"model": 0.4}, ramp_steps=path.ramps[1])
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in gda.model.state_dict().items())


def test_per_layer_and_macs_paths(tmp_path):
    layers = {"target_density": {"0": 0.7, "2": 0.6}}
    path, _ = _run(tmp_path / "layers", {"0": [0.7, 0.5], "2": [0.6, 0.3]}, **layers)
    assert [p.run for p in path.points] == ["point-1", "point-2"]
    for point in path.points:
        for name, eps in point.targets.items():
            assert point.realized[name] <= eps + 1e-6
    path, _ = _run(tmp_path / "macs", [0.6, 0.3], target_macs=0.8)
    assert [p.run for p in path.points] == ["macs-0.6", "macs-0.3"]
    for point in path.points:
        assert point.realized["macs"] <= point.targets["macs"] + 1e-6


@pytest.mark.parametrize(
    ("points", "targets", "message"),
    [
        ([0.3, 0.5], {}, "must decrease"),
        ([0.5, 0.5], {}, "must decrease"),
        ([1.2, 0.5], {}, r"must lie in \(0, 1\], got 1.2"),
        ([0.5, 0.0], {}, r"must lie in \(0, 1\], got 0.0"),
        ({"0": [0.5, 0.3], "2": [0.4]}, {"target_density": {"0": 0.5, "2": 0.4}}, "of the same length"),
        ([0.5, 0.3], {"target_density": {"0": 0.5, "2": 0.4}}, "in the form of the problem's"),
        ([{"nope": 0.5}], {}, "nope"),
        ([0.5, 0.3], {"penalty": 1e-3}, "penalized"),
        ([], {}, "non-empty"),
        (DensityPath([0.5, 0.3], quantity="macs"), {}, "quantity='macs' moves MACs budgets"),
    ],
)
def test_bad_paths_are_refused_before_training(tmp_path, points, targets, message):
    with pytest.raises(ValueError, match=message):
        _run(tmp_path / "bad", points, **targets)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_retarget_ramps_from_the_level_in_force_and_round_trips():
    problem = _problem()
    x, y = _data()
    gda = GDA(problem, total_steps=40)
    for _ in range(20):  # the ramp to 0.6 is over (a third of 40)
        gda.step(x[:64], y[:64])
    assert problem.levels["model"] == pytest.approx(0.6)
    gda.retarget({"model": 0.3}, ramp_steps=10)
    for _ in range(5):
        gda.step(x[:64], y[:64])
    assert problem.levels["model"] == pytest.approx(0.6 - 0.3 * 4 / 10)
    state = gda.state_dict()
    fresh = GDA(_problem(), total_steps=40)
    fresh.load_state_dict(state)
    assert fresh.problem.targets_all == {"model": 0.3} and fresh.problem.levels == problem.levels
    with pytest.raises(ValueError, match="geometric"):
        GDA(_problem(), schedule=TargetSchedule("geometric"), total_steps=40, steps_per_epoch=4).retarget(
            {"model": 0.3}
        )
    with pytest.raises(ValueError, match="unknown"):
        gda.retarget({"fc": 0.3})


def test_a_path_refuses_a_gda_that_planned_its_own_phase(tmp_path):
    train, _ = _batches()
    with pytest.raises(ValueError, match="planned its own feasibility phase"):
        fit(GDA(_problem(), total_steps=36), train, 6, path=[0.5, 0.3], progress=False)


def test_a_parameter_budget_path_on_a_decoder_lm(tmp_path):
    """The language-model budget: each point keeps at most its fraction of all parameters."""
    pytest.importorskip("transformers")
    from tests.helpers import VOCAB, tiny_decoder  # transformers only where it is installed

    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (48, 12), generator=torch.Generator().manual_seed(3))
    total = sum(p.numel() for p in tiny_decoder("llama").parameters())
    model = sparsify(tiny_decoder("llama"), example_input=ids[:2])

    def loss(output, targets):
        return F.cross_entropy(output.logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())

    problem = SparsityProblem(model, loss, target_params=0.9)
    path = DensityPath([0.9, 0.7], quantity="params")
    fit(GDA(problem), Batches(ids, ids, 8), 2, path=path, progress=False, output_fn=lambda out: out.logits)
    for point, budget in zip(path.points, [0.9, 0.7]):
        kept = total - (point.params["dense"] - point.params["remaining"])
        assert kept <= budget * total + 1


@pytest.mark.parametrize("decay", [True, False])
def test_a_point_trains_at_rates_decaying_to_zero_and_the_run_keeps_its_own(decay):
    gda = GDA(_problem())
    train, _ = _batches()
    rates, step = [], gda.primal_optimizer.step

    def record(*args, **kwargs):
        rates.append(gda.primal_optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    gda.primal_optimizer.step = record
    path = DensityPath([0.6, 0.4], finetune=0.25, decay=decay)  # 24 steps; each point trains 6
    fit(gda, train, 4, path=path, progress=False)
    lr = rates[0]
    point = [lr * (6 - s) / 6 for s in range(6)] if decay else [lr] * 6
    assert rates == pytest.approx([lr] * 12 + point + [lr] * 12 + point)
    assert gda.primal_optimizer.param_groups[0]["lr"] == lr


def test_a_path_resumed_with_another_decay_is_refused(tmp_path):
    with pytest.raises(Stop):  # killed after its first point (steps 12 + 4)
        _run(tmp_path / "cut", DensityPath([0.6, 0.4, 0.2], decay=False), loss_fn=stopping_loss(20))
    with pytest.raises(CheckpointError, match="written with decay=False, this path has decay=True"):
        _run(tmp_path / "cut", [0.6, 0.4, 0.2], resume=True)
