import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse import gate_groups, sparse_layers, sparsify
from ctrlsparse.gating import TraceError
from ctrlsparse.gating.groups import GateScale
from tests.helpers import Encoder, FunctionalLeNet


class ConvNet(nn.Module):
    def __init__(self, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_neuron_units_of_an_mlp_and_their_slices():
    net = sparsify(
        nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), example_input=torch.zeros(2, 5)
    )
    groups = {(g.name, g.kind): g for g in gate_groups(net)}
    assert list(groups) == [("0", "input"), ("0", "output")]  # the logits are not a unit
    hidden = groups[("0", "output")]
    assert {(s.module, s.param, s.dim) for s in hidden.slices} == {
        ("0", "weight", 0),
        ("0", "bias", 0),
        ("2", "weight", 1),
    }
    assert list(sparse_layers(net)) == ["0", "2"]


def test_batchnorm_carries_the_gate_and_its_gradient():
    """BN(z a) = BN(a) in training mode: a gate on the conv would get almost no gradient."""

    def median_gate_grad(norm: bool) -> float:
        torch.manual_seed(0)
        net = sparsify(ConvNet(norm), example_input=torch.zeros(2, 3, 8, 8))
        x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
        for _ in range(20):  # a hard concrete sample at exactly 0 or 1 passes no gradient: sum over samples
            F.cross_entropy(net(x), y).backward()
        return float(torch.cat([g.gate.log_alpha.grad.abs() for g in gate_groups(net)]).median())

    with_bn, without_bn = median_gate_grad(True), median_gate_grad(False)
    assert without_bn > 0
    assert with_bn > without_bn / 10
    net = sparsify(ConvNet(), example_input=torch.zeros(2, 3, 8, 8))
    sites = {name for name, m in net.named_modules() if isinstance(m, GateScale)}
    assert sites == {"bn1.parametrizations.weight.0", "bn1.parametrizations.bias.0",
                     "bn2.parametrizations.weight.0", "bn2.parametrizations.bias.0"}  # fmt: skip


def test_weight_scaling_equals_an_activation_scaled_oracle():
    torch.manual_seed(1)
    plain = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    net = sparsify(copy.deepcopy(plain), example_input=torch.zeros(1, 5))
    x = torch.randn(7, 5)
    out = net(x)  # training mode: one sample per group
    z_in, z_hidden = (g.current() for g in gate_groups(net))
    oracle = plain[2](torch.relu(plain[0](x * z_in)) * z_hidden)
    assert torch.allclose(out, oracle, atol=1e-6)


@pytest.mark.parametrize("structure", ["neuron", "paper", "weight"])
def test_open_gates_give_original_outputs_in_eval(structure):
    net = ConvNet().eval()
    x = torch.randn(5, 3, 8, 8)
    before = net(x)
    sparsify(net, structure, example_input=x, drop_rate=0.01)  # log_alpha ~ 4.6: test-time gate exactly 1
    assert torch.allclose(net.eval()(x), before, atol=1e-6)


def test_state_dict_round_trips_into_a_fresh_sparsified_model():
    x = torch.randn(2, 3, 8, 8)
    a = sparsify(ConvNet(), example_input=x)
    with torch.no_grad():
        for g in gate_groups(a):
            g.gate.log_alpha.uniform_(-3, 3)
    b = sparsify(ConvNet(), example_input=x)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_include_selects_unit_roots_and_bad_patterns_list_valid_names():
    x = torch.zeros(1, 3, 8, 8)
    net = sparsify(ConvNet(), example_input=x, include=["conv2"])
    assert [g.name for g in gate_groups(net)] == ["conv2"]
    with pytest.raises(ValueError, match="valid names: conv1, conv2"):
        sparsify(ConvNet(), example_input=x, exclude=["conv9"])


def test_neuron_structure_needs_an_example_input():
    with pytest.raises(ValueError, match="example_input"):
        sparsify(ConvNet())


def test_a_rejected_example_input_names_the_module():
    with pytest.raises(TraceError, match="rejected example_input .* in module 'conv1'"):
        sparsify(ConvNet(), example_input=torch.zeros(1, 5, 8, 8))


def test_sparsify_twice_and_nothing_to_sparsify():
    net = sparsify(ConvNet(), "paper")
    with pytest.raises(ValueError, match="only once"):
        sparsify(net, "paper")
    with pytest.raises(ValueError, match="no Linear or convolution"):
        sparsify(nn.Sequential(nn.ReLU()), "paper")


def test_a_layer_feeding_an_lstm_is_left_dense_and_listed():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.lstm, self.head = (
                nn.Linear(4, 6),
                nn.LSTM(6, 5, batch_first=True),
                nn.Linear(5, 2),
            )

        def forward(self, x):
            return self.head(self.lstm(self.proj(x))[0][:, -1])

    with pytest.warns(UserWarning, match="left these modules dense: proj .*lstm"):
        net = sparsify(Recurrent(), example_input=torch.zeros(2, 3, 4))
    assert [(g.name, g.kind) for g in gate_groups(net)] == [("proj", "input")]  # the model's inputs only
    with pytest.raises(ValueError, match="no prunable unit .*its units reach lstm"):
        sparsify(Recurrent(), example_input=torch.zeros(2, 3, 4), inputs=False)


def test_hidden_dimension_is_refused_with_the_reason():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(NotImplementedError, match="LayerNorm normalizes over that dimension"):
        sparsify(net, example_input=torch.zeros(1, 4), hidden=True)
    assert not gate_groups(net)


@pytest.mark.parametrize("bad", [0, -8, 2.0, "8", True])
def test_a_bad_round_to_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match=rf"round_to must be an integer >= 1 .*got {re.escape(repr(bad))}"):
        sparsify(FunctionalLeNet(), example_input=torch.zeros(1, 1, 28, 28), round_to=bad)


def test_round_to_needs_units_rather_than_weights():
    with pytest.raises(ValueError, match="round_to=8 aligns .*structure='weight'"):
        sparsify(FunctionalLeNet(), "weight", round_to=8)


def test_round_to_aligns_channels_and_neurons_and_leaves_heads_whole():
    net = sparsify(Encoder(), example_input=torch.randn(2, 5, 8), round_to=8)
    kinds = {(g.kind, g.round_to) for g in gate_groups(net)}
    assert ("head", 1) in kinds and ("output", 8) in kinds
    assert not any(kind == "head" and round_to > 1 for kind, round_to in kinds)
