import pytest
import torch
from torch import nn

from ctrlsparse.layers import GatedConv2d, GatedLinear, Structure


def _open(layer):
    with torch.no_grad():
        layer.gate.log_alpha.fill_(10.0)  # eq. 13 gives exactly 1
    return layer


def _close(layer, index):
    with torch.no_grad():
        layer.gate.log_alpha[index] = -10.0
    return layer


@pytest.mark.parametrize("bias", [True, False])
def test_linear_neuron_counts(bias):
    layer = GatedLinear(4, 3, bias=bias, structure="neuron")
    assert layer.num_gates == 4 and layer.group_size == 3 and layer.num_sparsifiable == 12


def test_linear_weight_counts():
    layer = GatedLinear(4, 3, structure="weight")
    assert layer.num_gates == 12 and layer.group_size == 1 and layer.num_sparsifiable == 12


@pytest.mark.parametrize("bias, group", [(True, 2 * 3 * 3 + 1), (False, 2 * 3 * 3)])
def test_conv_neuron_counts_include_bias(bias, group):
    layer = GatedConv2d(2, 5, 3, bias=bias, structure="neuron")
    assert layer.num_gates == 5 and layer.group_size == group and layer.num_sparsifiable == 5 * group


def test_conv_weight_counts():
    layer = GatedConv2d(2, 5, 3, structure="weight")
    assert layer.num_gates == 90 and layer.num_sparsifiable == 90


def test_expected_density_of_hand_set_gates():
    layer = GatedLinear(4, 3, structure="neuron")
    with torch.no_grad():
        layer.gate.log_alpha.copy_(torch.tensor([10.0, 10.0, -10.0, -10.0]))
    p = layer.gate.prob_active().detach()
    assert torch.isclose(layer.expected_density(), p.sum() * 3 / 12)
    assert abs(float(layer.expected_density().detach()) - 0.5) < 1e-3
    assert layer.realized_active() == 6


def test_expected_density_conv_with_bias():
    layer = GatedConv2d(1, 4, 2, structure="neuron")  # group = 4 weights + 1 bias
    with torch.no_grad():
        layer.gate.log_alpha.copy_(torch.tensor([10.0, -10.0, -10.0, -10.0]))
    assert abs(float(layer.expected_density().detach()) - 0.25) < 1e-3
    assert layer.realized_active() == 5


def test_closed_input_neuron_removes_its_column():
    linear = nn.Linear(4, 3)
    layer = _close(_open(GatedLinear.from_linear(linear)), 1).eval()
    x = torch.randn(5, 4)
    x_without = x.clone()
    x_without[:, 1] = 0
    assert torch.allclose(layer(x), linear(x_without))


def test_closed_conv_channel_outputs_zero_including_bias():
    conv = nn.Conv2d(2, 3, 3)
    layer = _close(_open(GatedConv2d.from_conv(conv)), 2).eval()
    x = torch.randn(2, 2, 6, 6)
    out = layer(x)
    assert torch.all(out[:, 2] == 0)
    assert torch.allclose(out[:, :2], conv(x)[:, :2])


def test_weight_gates_multiply_weights():
    linear = nn.Linear(3, 2)
    layer = _open(GatedLinear.from_linear(linear, structure="weight")).eval()
    with torch.no_grad():
        layer.gate.log_alpha[0, 0] = -10.0
    w = linear.weight.detach().clone()
    w[0, 0] = 0
    x = torch.randn(4, 3)
    assert torch.allclose(layer(x), x @ w.T + linear.bias)


def test_from_module_shares_parameters_and_state_dict_keys():
    linear = nn.Linear(4, 3)
    layer = GatedLinear.from_linear(linear)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert set(layer.state_dict()) == {"weight", "bias", "gate.log_alpha"}


def test_expected_l2_neuron_is_eq17():
    layer = GatedLinear(3, 2, structure="neuron")
    p = layer.gate.prob_active()
    expected = (p * layer.weight.pow(2).sum(0)).sum()
    assert torch.isclose(layer.expected_l2(), expected)


def test_expected_l2_conv_neuron_counts_bias():
    layer = GatedConv2d(1, 2, 2, structure="neuron")
    p = layer.gate.prob_active()
    norms = layer.weight.pow(2).flatten(1).sum(1) + layer.bias.pow(2)
    assert torch.isclose(layer.expected_l2(), (p * norms).sum())


def test_unknown_structure_names_choices():
    with pytest.raises(ValueError, match="'neuron', 'weight'"):
        GatedLinear(2, 2, structure="channel")


def test_circular_padding_is_rejected():
    with pytest.raises(ValueError, match="padding_mode"):
        GatedConv2d.from_conv(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))


def test_structure_parse():
    assert Structure.parse("weight") is Structure.WEIGHT
