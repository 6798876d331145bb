"""MACs budgets: expected MACs under the gates, constraints named macs / macs:<layer>, realized MACs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.data import Batches
from ctrlsparse.gating.counting import macs_of


def _conv_net():
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten()]
    net = nn.Sequential(*layers, nn.Linear(96, 3))
    return cs.sparsify(net, "neuron", example_input=torch.zeros(2, 1, 6, 6))


def _set_open(group, units):
    with torch.no_grad():
        group.gate.log_alpha.fill_(-10.0)
        group.gate.log_alpha[units] = 10.0


def test_expected_macs_of_conv_and_linear_layers_equal_a_hand_count():
    net = _conv_net()
    problem = cs.SparsityProblem(net, F.cross_entropy, target_macs=0.5)
    dense = {"0": 6 * 6 * 4 * 1 * 9, "2": 4 * 4 * 6 * 4 * 9, "5": 96 * 3}
    assert problem.dense_macs == dense
    groups = {g.name: g for g in problem.groups}
    # Hand-set gates: P(z != 0) = sigmoid(log_alpha - beta log(-gamma/zeta)) -> 1 or 0 at +-10.
    _set_open(groups["0"], [0, 1, 2])  # 3 of conv 0's 4 output channels
    _set_open(groups["2"], [0, 1])  # 2 of conv 2's 6 output channels
    fraction, layers = problem.expected_macs()
    hand = {"0": dense["0"] * 3 / 4, "2": dense["2"] * (3 / 4) * (2 / 6), "5": dense["5"] * 2 / 6}
    fractions = {n: float(v) * dense[n] for n, v in layers.items()}  # MACs / dense MACs per layer
    assert fractions == {n: pytest.approx(v, rel=1e-3) for n, v in hand.items()}
    assert float(fraction) == pytest.approx(sum(hand.values()) / sum(dense.values()), rel=1e-3)
    # Independent gates: the expected MACs of layer 2 are the product of the open fractions.
    with torch.no_grad():
        groups["0"].gate.log_alpha.fill_(0.0)
        groups["2"].gate.log_alpha.fill_(0.0)
    p = float(groups["0"].prob_active()[0])
    _, layers = problem.expected_macs()
    assert float(layers["2"]) == pytest.approx(p * p, rel=1e-4)


def test_macs_constraints_are_named_apart_from_density_constraints():
    net = _conv_net()
    problem = cs.SparsityProblem(
        net, F.cross_entropy, target_density={"2": 0.5}, target_macs={"model": 0.4, "2": 0.3}
    )
    assert problem.constraint_names == ["macs", "2", "macs:2"]
    state = problem.compute_cmp_state(torch.zeros(2, 1, 6, 6), torch.zeros(2, dtype=torch.long))
    assert set(state.misc["macs"]) == {"macs", "macs:2"}


def test_a_macs_only_problem_lands_within_001_and_its_summary_counts_the_purged_model():
    net = _conv_net()
    x = torch.randn(256, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = (x.flatten(1) @ torch.randn(36, 3, generator=torch.Generator().manual_seed(1))).argmax(1)
    problem = cs.SparsityProblem(net, F.cross_entropy, target_macs=0.3)
    opt = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=5e-3))
    train = Batches(x, y, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    summary = cs.fit(opt, train, 30, test_batches=Batches(x, y, 256), progress=False)
    realized = summary.realized["macs"]
    assert 0.29 <= realized <= 0.3 + 1e-6
    macs = summary.macs
    assert macs["realized_by"] == "purge" and macs["dense"] == sum(problem.dense_macs.values())
    assert macs["realized"] == macs_of(cs.purge(net, x[:1]), x[:1])
    assert macs["realized"] / macs["dense"] == pytest.approx(realized, abs=1e-6)
    assert summary.multipliers.keys() == {"macs"}


def test_bad_macs_budgets_fail_before_training():
    net = _conv_net()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"target_macs for 'macs' must lie in \(0, 1\], got {bad}"):
            cs.SparsityProblem(net, F.cross_entropy, target_macs=bad)
    with pytest.raises(ValueError, match="unknown layer name 'fc'; valid names: model, 0, 2, 5"):
        cs.SparsityProblem(net, F.cross_entropy, target_macs={"fc": 0.5})
    plain = cs.sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "paper")
    with pytest.raises(ValueError, match="pass example_input=<one batch>"):
        cs.SparsityProblem(plain, F.cross_entropy, target_macs=0.5)
    cs.SparsityProblem(plain, F.cross_entropy, target_macs=0.5, example_input=torch.zeros(1, 4))
