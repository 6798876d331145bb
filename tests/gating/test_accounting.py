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


def _by_entry(acc: Accounting, units: torch.Tensor) -> dict:
    """The definition, entry by entry: an entry is active with the product of its gates' values."""
    p = torch.cat([units, units.new_ones(1)])
    counts = {}
    for q in acc.params:
        value = p[q.full] if q.full is not None else torch.ones(q.gated.shape)
        for dim, index in q.maps.items():
            view = [1] * q.gated.dim()
            view[dim] = -1
            value = value * p[index].view(view)
        counts[(q.layer, q.name)] = (value * q.gated).sum()
    return counts


def test_counts_of_a_residual_network_equal_the_entry_by_entry_product():
    from ctrlsparse.models.resnet import ResNet

    torch.manual_seed(0)
    net = sparsify(ResNet(widths=(4, 8, 8), blocks=(1, 1, 1)), example_input=torch.zeros(1, 1, 28, 28))
    acc = Accounting(net)
    units = torch.rand(acc.vector().numel())
    expected = _by_entry(acc, units)
    counts = acc.per_param(units=units)
    assert set(counts) == set(expected)
    for key in expected:
        assert torch.isclose(counts[key], expected[key], rtol=1e-5), key
    _, layers = acc.active(units=units)
    for layer in acc.layer_sizes:  # BatchNorm entries count in the model's total, in no layer
        assert torch.isclose(layers[layer], sum(v for (n, _), v in expected.items() if n == layer), rtol=1e-5)


def test_counts_mix_element_wise_and_unit_gates_in_the_parameters_order():
    from ctrlsparse.gating.groups import attach
    from ctrlsparse.gating.sparsify import Structure, _group
    from ctrlsparse.gating.units import paper_units, weight_units

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    units = weight_units({"0": net[0]}) + paper_units({"2": net[2]})
    groups = [_group(units[0], "hard_concrete", 0.5, {"0": net[0]}, Structure.WEIGHT),
              _group(units[1], "hard_concrete", 0.5, {"2": net[2]}, Structure.PAPER)]  # fmt: skip
    attach(net, groups, [(g, s) for g, u in zip(groups, units) for s in u.sites])
    acc = Accounting(net)
    values = torch.rand(12 + 4)
    counts = acc.per_param(units=values)
    assert torch.isclose(counts[("0", "weight")], values[:12].sum())
    assert torch.isclose(counts[("2", "weight")], 2 * values[12:].sum())
    density = (values[:12].sum() + 2 * values[12:].sum()) / (12 + 8)
    assert torch.isclose(acc.densities(units=values)[0], density)
