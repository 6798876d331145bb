"""Control with defaults: horizon-aware GDA, the feasibility phase, realized densities."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.data import Batches
from ctrlsparse.problem.feasibility import decide
from ctrlsparse.problem.schedules import TargetSchedule


def _data(n=384, seed=0):
    """3 classes from a random linear teacher on 12 features: every input has a use."""
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))
    teacher = torch.randn(12, 3, generator=torch.Generator().manual_seed(7))
    return x, (x @ teacher).argmax(1)


def _net(structure="paper", seed=0, gates="hard_concrete"):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    return cs.sparsify(net, structure, example_input=torch.zeros(2, 12), gates=gates)


def test_realized_densities_of_hand_set_gates():
    net = _net()  # paper structure: one gate per input of each layer
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.5)
    with torch.no_grad():
        for group in problem.groups:
            group.gate.log_alpha.fill_(-5.0)  # eq. 13: closed below log α ≈ -2.4
        problem.groups[0].gate.log_alpha[:3] = 5.0  # 3 of layer 0's 12 inputs open
        problem.groups[1].gate.log_alpha[:6] = 5.0  # 6 of layer 2's 24 inputs open
        problem.groups[2].gate.log_alpha[:] = 5.0  # every input of layer 4
    model, layers = problem.realized_densities()
    # Layer 0: 24 x 12 weights, inputs gated: 3/12 of the weights; its bias is not sparsifiable.
    assert layers == {"0": pytest.approx(3 / 12), "2": pytest.approx(6 / 24), "4": pytest.approx(1.0)}
    sizes = {"0": 24 * 12, "2": 16 * 24, "4": 3 * 16}
    expected = (3 * 24 + 6 * 16 + 16 * 3) / sum(sizes.values())
    assert model == pytest.approx(expected)


def _fit(net, epochs, targets, seed=0, **gda):
    x, y = _data(seed=seed)
    problem = cs.SparsityProblem(net, F.cross_entropy, **targets)
    opt = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=5e-3), **gda)
    train = Batches(x, y, 32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    summary = cs.fit(opt, train, epochs, test_batches=Batches(x, y, 512), progress=False)
    return problem, opt, summary


@pytest.mark.parametrize("epochs", [4, 40])  # 48 and 480 steps
def test_defaults_land_within_a_units_share_at_two_run_lengths(epochs):
    net = _net("neuron")
    targets = {"target_density": {"0": 0.5, "2": 0.35}}
    problem, opt, summary = _fit(net, epochs, targets)
    for name, eps in problem.targets.items():
        realized = summary.realized[name]
        assert realized <= eps + 1e-6, (name, realized)
        assert eps - realized <= max(0.005, problem.unit_share(name)) + 1e-6, (name, realized)
    decision = summary.feasibility
    assert decision["step"] == opt.phase_start == summary.steps - round(0.1 * summary.steps)
    assert set(decision["expected_before"]) == {"0", "2"} and decision["test_error_before"] is not None


def test_defaults_land_with_arm_gates():
    problem, _, summary = _fit(_net("neuron", gates="arm"), 6, {"target_density": 0.4})
    realized = summary.realized["model"]
    assert realized <= 0.4 + 1e-6 and 0.4 - realized <= max(0.005, problem.unit_share("model")) + 1e-6
    assert all(g.decided is not None for g in problem.groups)


def test_feasibility_phase_closes_and_opens_to_land_under_eps():
    net = _net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density={"0": 0.5, "2": 0.25})
    with torch.no_grad():  # every gate open: both layers far above their targets
        for group in problem.groups:
            group.gate.log_alpha.fill_(3.0)
        problem.groups[1].gate.log_alpha[:3] = -6.0  # 3 units of layer 2 already closed
    decision = decide(problem)
    _, layers = problem.realized_densities()
    assert layers["0"] <= 0.5 and 0.5 - layers["0"] <= 1 / 12 + 1e-6  # within one of 12 units
    assert layers["2"] <= 0.25 and 0.25 - layers["2"] <= 1 / 24 + 1e-6
    assert decision.closed == (12 - 6) + (21 - 6) and decision.opened == 0
    assert decision.realized_after == {"0": pytest.approx(layers["0"]), "2": pytest.approx(layers["2"])}
    # Decided gates: train and eval use the same fixed values, and the gates no longer learn.
    group = problem.groups[0]
    assert torch.equal(group.resample(), group.deterministic()) and not group.gate.log_alpha.requires_grad
    assert torch.equal(group.prob_active(), (group.deterministic() > 0).float())


def test_decided_gates_round_trip_through_state_dict():
    net = _net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.3)
    decide(problem)
    fresh = _net(seed=1)
    fresh.load_state_dict(net.state_dict())
    for a, b in zip(cs.gate_groups(net), cs.gate_groups(fresh)):
        assert torch.equal(a.decided, b.decided) and not b.gate.log_alpha.requires_grad
    # ... and an undecided state makes a decided model stochastic again.
    fresh.load_state_dict(_net(seed=2).state_dict())
    assert all(g.decided is None and g.gate.log_alpha.requires_grad for g in cs.gate_groups(fresh))


def test_feasibility_off_keeps_the_gates_stochastic():
    net = _net()
    _, opt, summary = _fit(net, 2, {"target_density": 0.5}, feasibility=False)
    assert summary.feasibility is None and opt.phase_start is None
    assert all(g.decided is None for g in cs.gate_groups(net))


def test_penalized_mode_has_no_feasibility_phase():
    _, opt, summary = _fit(_net(), 2, {"penalty": 0.1})
    assert opt.phase_start is None and summary.feasibility is None


def test_defaults_scale_with_the_run_length():
    net = _net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.5)
    opt = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=1e-4), total_steps=600)
    assert opt.dual_lr == pytest.approx(40 / 600)
    gate_ids = {id(g.gate.parameter) for g in problem.groups}
    gate_group = [g for g in opt.primal_optimizer.param_groups if id(g["params"][0]) in gate_ids]
    assert len(gate_group) == 1 and gate_group[0]["lr"] == pytest.approx(30 / 600)
    assert gate_group[0]["weight_decay"] == 0.0 and all(id(p) in gate_ids for p in gate_group[0]["params"])
    assert opt.phase_start == 540 and opt._ramp_steps == 200


def test_the_gates_fused_adam_group_updates_as_per_tensor_adam_does():
    """GDA gives the gates a group updated by Adam's fused kernel (one call for every gate
    tensor); its steps are per-tensor Adam's, as are the dual Adam's."""
    x, y = _data()
    runs = []
    for fused in (True, False):
        torch.manual_seed(0)
        net = _net()
        problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.3)
        opt = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=1e-2), total_steps=60, feasibility=False,
                     schedule=TargetSchedule("fixed"))  # fmt: skip
        gate_ids = {id(g.gate.parameter) for g in problem.groups}
        (gates,) = [g for g in opt.primal_optimizer.param_groups if id(g["params"][0]) in gate_ids]
        assert gates["fused"] is True and opt.dual_optimizer.param_groups[0]["fused"] is True
        if not fused:
            gates["fused"] = opt.dual_optimizer.param_groups[0]["fused"] = None
        torch.manual_seed(1)
        steps = [opt.step(x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]) for i in range(20)]
        runs.append(
            (
                [g.gate.parameter.detach().clone() for g in problem.groups],
                [s.multipliers["model"] for s in steps],
            )
        )
    (fused_gates, fused_multipliers), (plain_gates, plain_multipliers) = runs
    assert max(fused_multipliers) > 1.0  # the dual Adam moved
    assert fused_multipliers == pytest.approx(plain_multipliers, abs=1e-5)
    for a, b in zip(fused_gates, plain_gates):
        assert torch.allclose(a, b, atol=1e-5)


def test_step_records_carry_the_level_in_force():
    net = _net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.2)
    opt = cs.GDA(problem, total_steps=30, feasibility=False)
    x, y = _data()
    levels = [opt.step(x[:32], y[:32]).levels["model"] for _ in range(12)]
    assert levels[0] > levels[5] > levels[10] == pytest.approx(0.2)  # a third of 30 steps
    assert levels == sorted(levels, reverse=True)


def test_gda_without_the_run_length_refuses_to_step_with_the_default_dual_step():
    """A streaming loop that forgot total_steps gets an error, not a dense model (the dual step
    of the default Adam ascent is DUAL_TRAVEL / total_steps)."""
    net = _net()
    opt = cs.GDA(cs.SparsityProblem(net, F.cross_entropy, target_density=0.5))
    before = [p.detach().clone() for p in net.parameters()]
    x, y = _data()
    with pytest.raises(ValueError, match=r"does not know the length of training.*ramp_steps=<steps>"):
        opt.step(x[:32], y[:32])
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_gda_without_the_run_length_but_a_dual_lr_warns_once_and_still_steps():
    net = _net()
    opt = cs.GDA(cs.SparsityProblem(net, F.cross_entropy, target_density=0.5), dual_lr=1e-3)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            step = opt.step(x[:32], y[:32])
    assert sum("total_steps" in str(w.message) for w in caught) == 1
    assert step.levels == {"model": 0.5} and opt.phase_start is None


def test_a_loop_of_unknown_length_with_ramp_steps_lands_on_the_target():
    """``ramp_steps`` alone (no total_steps): the level ramps to ε over those steps, the user
    calls ``decide()`` when they want the gates decided, and the realized density is <= ε."""
    net = _net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.3)
    opt = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=5e-3), ramp_steps=60)
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown length" warning: the plan is stated
        levels = [opt.step(x[i % 8 * 32 : i % 8 * 32 + 32], y[i % 8 * 32 : i % 8 * 32 + 32]).levels["model"]
                  for i in range(180)]  # fmt: skip
    assert levels[60] == pytest.approx(0.3) and levels[0] > levels[30] > levels[59] > levels[60]
    assert opt.phase_start is None and opt.decision is None  # the user decides when
    opt.decide()
    for i in range(20):
        opt.step(x[i % 8 * 32 : i % 8 * 32 + 32], y[i % 8 * 32 : i % 8 * 32 + 32])
    assert problem.realized_densities()[0] <= 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total_steps": 0}, "total_steps must be an integer >= 1, got 0"),
        ({"ramp_steps": 0}, "ramp_steps must be an integer >= 1, got 0"),
        ({"ramp_steps": 10, "schedule": TargetSchedule("fixed")}, "ramp_steps sets the length of a linear"),
        ({"total_steps": 100, "feasibility": 1.0}, r"feasibility must be a fraction of the run in \[0, 1\)"),
        (
            {"total_steps": 100, "schedule": TargetSchedule("linear", epochs=20), "steps_per_epoch": 5},
            r"target ramp \(100 steps\) and the feasibility phase \(10 steps\) do not fit in a run of 100",
        ),
        (
            {"total_steps": 100, "schedule": TargetSchedule("linear", fraction=0.95)},
            r"ramp \(95 steps\) and the feasibility phase \(10 steps\)",
        ),
        ({"total_steps": 100, "schedule": TargetSchedule("dynamic")}, "needs steps_per_epoch"),
    ],
)
def test_bad_run_settings_fail_at_construction(kwargs, message):
    net = _net()
    with pytest.raises(ValueError, match=message):
        cs.GDA(cs.SparsityProblem(net, F.cross_entropy, target_density=0.5), **kwargs)


@pytest.mark.parametrize(
    "targets",
    [
        {"model": 0.3, "*": 0.9},  # layer caps that the model-wise budget keeps lower
        {"0": 0.2, "2": 0.9, "4": 0.2},  # layer 2 shares units with 0 and 4: it cannot reach 0.9
    ],
)
def test_loose_caps_are_accepted_and_land_at_or_below_each_cap(targets):
    problem, _, summary = _fit(_net("neuron"), 4, {"target_density": targets})
    tight = {"model": 0.3} if "model" in targets else {"0": 0.2, "4": 0.2}
    for name, eps in problem.targets_all.items():
        assert summary.realized[name] <= eps + 1e-6, (name, summary.realized[name], eps)
    for name, eps in tight.items():  # the binding caps still land within a unit's share
        assert eps - summary.realized[name] <= max(0.005, problem.unit_share(name)) + 1e-6, name


def test_loose_caps_do_not_warn_of_a_short_landing():
    net = _net("neuron")
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density={"model": 0.3, "*": 0.9})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decision = decide(problem)
    assert decision.realized_after["model"] <= 0.3
    assert 0.3 - decision.realized_after["model"] <= problem.unit_share("model") + 1e-6


def test_targets_below_what_no_gate_removes_are_refused():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    net = cs.sparsify(plain, "neuron", example_input=torch.zeros(2, 12), include=["0"])
    with pytest.raises(ValueError, match=r"target_macs for 'macs' is 0.05, but 0.0667 .* no gate can remove"):
        cs.SparsityProblem(net, F.cross_entropy, target_macs=0.05)


def test_the_phase_trades_units_between_coupled_layers_to_land_within_a_units_share():
    # A residual stage couples its layers: the stage's channels are the block's second-conv
    # outputs, the shortcut's outputs and the next stage's inputs. Opening unit by unit, or
    # rounding each group's open fraction on its own, leaves a layer more than a unit's share
    # below its ε here; trading units between the coupled groups lands every constraint.
    from ctrlsparse.models.resnet import ResNet
    from ctrlsparse.problem.feasibility import select_units

    torch.manual_seed(0)
    model = ResNet(widths=(4, 8, 8), blocks=(1, 1, 1))
    net = cs.sparsify(model, "neuron", example_input=torch.zeros(2, 1, 8, 8))
    targets = {"layer1.*": 0.5, "layer2.*": 0.4, "layer3.*": 0.3}
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=targets)
    every = torch.ones(sum(g.num_units for g in problem.groups))
    scores = torch.rand(len(every), generator=torch.Generator().manual_seed(0))
    values = problem.target_values_at(select_units(problem, every, scores))
    for name, eps in problem.targets_all.items():
        assert float(values[name]) <= eps + 1e-9
        assert eps - float(values[name]) <= problem.unit_share(name) + 1e-9, name


def test_a_cap_that_coupling_holds_lower_lands_there_without_a_warning():
    # Layer 2's outputs are layer 4's inputs: layer 4 at ε = 0.5 keeps at most half of them
    # open, so layer 2 (24 -> 16) can reach at most 0.5 of its weights. Its ε = 0.6 is an
    # upper bound, met at 0.5: nothing to warn about.
    net = _net("neuron")
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density={"0": 0.3, "2": 0.6, "4": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decision = decide(problem)
    assert 0.5 - problem.unit_share("2") <= decision.realized_after["2"] <= 0.5 + 1e-6
    # A landing within one unit's share of every ε says nothing.
    problem = cs.SparsityProblem(_net("neuron"), F.cross_entropy, target_density={"0": 0.5, "2": 0.35})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decide(problem)
