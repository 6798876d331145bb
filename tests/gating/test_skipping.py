"""Conditional computation: skipped units give the outputs and gradients of the full layers."""

import copy

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.gating import skipping
from ctrlsparse.models import fashion_resnet


def _mlp():
    return cs.mlp(input_size=20, hidden=(16, 12), num_classes=3)


def _half_dead(build, x, structure="paper"):
    torch.manual_seed(0)
    net = cs.sparsify(build(), structure, example_input=x)
    with torch.no_grad():
        for group in cs.gate_groups(net):
            group.gate.parameter.fill_(3.0)
            group.gate.parameter[::3] = -30.0  # P(z != 0) ~ 1e-13: every sample closes these
    return net, x


CASES = {
    "mlp": lambda: _half_dead(
        lambda: cs.mlp(input_size=20, hidden=(16, 12), num_classes=3), torch.randn(8, 20)
    ),
    "lenet5": lambda: _half_dead(cs.lenet5, torch.randn(4, 1, 28, 28)),
    # Every conv feeds a gated BatchNorm (block channels, residual stream): producers skip.
    "resnet": lambda: _half_dead(fashion_resnet, torch.randn(4, 1, 28, 28), "neuron"),
}
SKIPPING = {"mlp": 3, "lenet5": 4, "resnet": 9}  # layers that skip: every gated Linear/Conv2d


@pytest.mark.parametrize("case", list(CASES))
def test_skipping_gives_the_outputs_and_gradients_of_the_full_layers(case):
    net, x = CASES[case]()
    full = copy.deepcopy(net)
    dead = skipping.refresh(net, below=1e-3)
    assert dead == sum(int((g.prob_active() < 1e-3).sum()) for g in cs.gate_groups(full)) > 0
    skipped = [m for m in net.modules() if hasattr(m, skipping.SKIP_ATTRIBUTE)]
    assert len(skipped) == SKIPPING[case]
    outputs = []
    for model in (net, full):
        torch.manual_seed(1)  # the same gate samples in both
        model.zero_grad()
        outputs.append(model(x))
        outputs[-1].square().sum().backward()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    grads, full_grads = dict(net.named_parameters()), dict(full.named_parameters())
    for name, p in grads.items():
        assert torch.allclose(p.grad, full_grads[name].grad, atol=1e-6), name
    net.eval(), full.eval()
    assert torch.allclose(net(x), full(x), atol=1e-6)  # eq. 13 closes dead units anyway


def test_with_every_unit_live_the_layers_keep_their_own_forward():
    net = cs.sparsify(cs.mlp(input_size=20, hidden=(16,), num_classes=3), "paper")
    assert skipping.refresh(net, below=1e-3) == 0
    assert not any(hasattr(m, skipping.SKIP_ATTRIBUTE) or "forward" in vars(m) for m in net.modules())
    assert all(g.live is None for g in cs.gate_groups(net))


def test_stop_and_a_unit_that_comes_back():
    net, x = CASES["mlp"]()
    skipping.refresh(net, below=1e-3)
    with torch.no_grad():
        for group in cs.gate_groups(net):
            group.gate.parameter.fill_(3.0)
    assert skipping.refresh(net, below=1e-3) == 0  # reopened units compute again
    assert not any(hasattr(m, skipping.SKIP_ATTRIBUTE) for m in net.modules())
    skipping.refresh(copy.deepcopy(net), below=1e-3)
    skipping.stop(net)
    assert all(g.live is None for g in cs.gate_groups(net))


def test_gda_skips_and_its_state_restores_what_was_skipped():
    net, x = CASES["mlp"]()
    y = torch.zeros(len(x), dtype=torch.long)
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.5)
    settings = {"total_steps": 10, "skip_below": 1e-3, "skip_every": 4}
    gda = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=1e-3), **settings)
    for _ in range(3):
        gda.step(x, y)
    state = copy.deepcopy(gda.state_dict())
    twin = copy.deepcopy(net)
    skipping.stop(twin)
    twin_problem = cs.SparsityProblem(twin, F.cross_entropy, target_density=0.5)
    other = cs.GDA(twin_problem, torch.optim.Adam(twin.parameters(), lr=1e-3), **settings)
    other.load_state_dict(state)
    plans = [getattr(m, skipping.SKIP_ATTRIBUTE, None) for m in net.modules()]
    twin_plans = [getattr(m, skipping.SKIP_ATTRIBUTE, None) for m in twin.modules()]
    assert [p is None for p in plans] == [p is None for p in twin_plans] and any(p is not None for p in plans)
    for a, b in zip(plans, twin_plans):
        assert a is None or all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_a_threshold_outside_the_unit_interval_is_refused(bad):
    net = cs.sparsify(cs.mlp(input_size=4, hidden=(3,), num_classes=2), "paper")
    with pytest.raises(ValueError, match=f"skip_below must lie in \\(0, 1\\), got {bad}"):
        cs.GDA(cs.SparsityProblem(net, F.cross_entropy, target_density=0.5), skip_below=bad)


def test_a_model_that_skipped_purges_and_exports():
    net, x = CASES["lenet5"]()
    skipping.refresh(net, below=1e-3)
    net.eval()
    small = cs.purge(net, x)
    assert not any(hasattr(m, skipping.SKIP_ATTRIBUTE) for m in small.modules())
    assert small.conv1.out_channels == 13 and torch.allclose(small(x), net(x), atol=1e-5)
    torch.export.export(small, (x,))


def test_a_layer_whose_units_all_died_still_computes_exactly():
    torch.manual_seed(0)
    net = cs.sparsify(cs.lenet5(), "paper")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        net.conv2.output_gate.gate.log_alpha.fill_(-30.0)  # every conv2 channel dead
        net.fc2.input_gate.gate.log_alpha.fill_(-30.0)  # every fc2 input dead
    full = copy.deepcopy(net)
    skipping.refresh(net, below=1e-3)
    torch.manual_seed(1)
    out = net(x)
    torch.manual_seed(1)
    assert torch.allclose(out, full(x), atol=1e-6)


def test_grouped_convs_and_unaffine_norms_are_left_alone():
    grouped = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 4 * 4, 3))  # fmt: skip
    nn = torch.nn
    plain_bn = torch.nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
                                   nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3))  # fmt: skip
    for net, x in ((grouped, torch.randn(2, 4, 6, 6)), (plain_bn, torch.randn(2, 3, 6, 6))):
        cs.sparsify(net, "neuron" if net is plain_bn else "paper", example_input=x)
        with torch.no_grad():
            for group in cs.gate_groups(net):
                group.gate.parameter[::2] = -30.0
        full = copy.deepcopy(net)
        skipping.refresh(net, below=1e-3)
        if net is grouped:
            assert not hasattr(net[0], skipping.SKIP_ATTRIBUTE)  # a grouped conv's rows read input slices
        else:  # the first conv's only reader normalises without a gate: it must compute every channel
            assert not hasattr(net[0], skipping.SKIP_ATTRIBUTE)
        torch.manual_seed(1)
        out = net(x)
        torch.manual_seed(1)
        assert torch.allclose(out, full(x), atol=1e-5)


def test_eval_mode_computes_every_unit_whatever_the_threshold():
    net, x = CASES["mlp"]()
    with torch.no_grad():
        for group in cs.gate_groups(net):
            group.gate.parameter.fill_(-2.0)  # P(z != 0) = 0.40 < 0.5, but eq. 13 keeps it open
    full = copy.deepcopy(net).eval()
    skipping.refresh(net, below=0.5)
    assert torch.equal(net.eval()(x), full(x))


def test_a_model_that_skips_moves_to_another_dtype():
    net, x = CASES["lenet5"]()
    skipping.refresh(net, below=1e-3)
    net.double()
    assert net(x.double()).dtype == torch.float64
