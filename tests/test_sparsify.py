import pytest
import torch
from torch import nn

from ctrlsparse import GatedConv2d, GatedLinear, sparse_layers, sparsify


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def test_sparsify_names_layers_by_module_name_and_keeps_weights():
    net = Net()
    weight = net.features[0].weight
    sparsify(net)
    layers = sparse_layers(net)
    assert list(layers) == ["features.0", "classifier"]
    assert isinstance(layers["features.0"], GatedConv2d) and isinstance(layers["classifier"], GatedLinear)
    assert layers["features.0"].weight is weight


@pytest.mark.parametrize("structure", ["neuron", "weight"])
def test_open_gates_give_original_outputs_in_eval(structure):
    net = Net().eval()
    x = torch.randn(5, 1, 8, 8)
    before = net(x)
    sparsify(net, structure=structure, drop_rate=0.01)  # log_alpha ~ 4.6: test-time gate exactly 1
    net.eval()
    assert torch.allclose(net(x), before, atol=1e-6)


def test_include_and_exclude_patterns():
    net = sparsify(Net(), include=["features.*"])
    assert list(sparse_layers(net)) == ["features.0"]
    net = sparsify(Net(), exclude="classifier")
    assert list(sparse_layers(net)) == ["features.0"]


def test_unknown_layer_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid layer names: features.0, classifier"):
        sparsify(Net(), include=["fc9"])


def test_nothing_to_sparsify():
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        sparsify(nn.Sequential(nn.ReLU()))


def test_multihead_attention_projection_is_left_alone():
    block = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="no nn.Linear"):
        sparsify(block)


def test_sparse_layers_forward_order_from_an_example_input(reordered):
    net = sparsify(reordered)
    assert list(sparse_layers(net)) == ["head", "body"]  # registration order
    assert list(sparse_layers(net, torch.zeros(1, 3))) == ["body", "head"]
    assert net.training  # the probe pass restores the mode
