import torch
from torch import nn

from ctrlsparse import sparsify
from ctrlsparse.gating import Accounting


def _net():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    sparsify(net, example_input=torch.zeros(1, 3))  # units: 3 inputs, 4 hidden neurons
    return net


def test_expected_active_is_the_product_of_the_gates_probabilities():
    net = _net()
    p_in = net[0].input_gate.gate.prob_active().detach()
    p_out = net[0].output_gate.gate.prob_active().detach()
    acc = Accounting(net)
    # fc1 weight W[o, i] lives while input i and neuron o are open; its bias while o is;
    # fc2's columns while o is; fc2's bias has no gate and is not sparsifiable.
    fc1 = p_in.sum() * p_out.sum() + p_out.sum()
    fc2 = 2 * p_out.sum()
    assert acc.num_sparsifiable == 12 + 4 + 8
    assert acc.layer_sizes == {"0": 16, "2": 8}
    total, layers = acc.active()
    assert torch.isclose(layers["0"], fc1) and torch.isclose(layers["2"], fc2)
    assert torch.isclose(total, fc1 + fc2)


def test_realized_active_counts_open_test_time_gates():
    net = _net()
    with torch.no_grad():
        net[0].input_gate.gate.log_alpha.copy_(torch.tensor([10.0, -10.0, 10.0]))  # 2 of 3 inputs
        net[0].output_gate.gate.log_alpha.copy_(torch.tensor([10.0, 10.0, 10.0, -10.0]))  # 3 of 4 neurons
    density, layers = Accounting(net).densities(realized=True)
    assert float(layers["0"]) == (2 * 3 + 3) / 16
    assert float(layers["2"]) == (2 * 3) / 8
    assert float(density) == (9 + 6) / 24


def test_paper_counting_owns_only_its_own_layers_slice():
    net = sparsify(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "paper")
    acc = Accounting(net)
    assert acc.layer_sizes == {"0": 12, "2": 8}  # the weight columns (eq. 16's groups)
    p0 = net[0].input_gate.gate.prob_active()
    p2 = net[2].input_gate.gate.prob_active()
    _, layers = acc.active()
    assert torch.isclose(layers["0"], 4 * p0.sum()) and torch.isclose(layers["2"], 2 * p2.sum())


def test_expected_density_is_differentiable_in_every_gate():
    net = _net()
    density, _ = Accounting(net).densities()
    density.backward()
    assert all(float(g.abs().sum()) > 0 for g in (net[0].input_gate.gate.log_alpha.grad,
                                                    net[0].output_gate.gate.log_alpha.grad))  # fmt: skip
