import pytest
import torch

from ctrlsparse import lenet5, mlp, sparse_layers, sparsify
from ctrlsparse.models import build_model


def test_paper_models_layer_names():
    assert list(sparse_layers(sparsify(mlp(784), "paper"))) == ["fc1", "fc2", "fc3"]
    net = sparsify(lenet5((1, 28, 28)), "paper")
    assert list(sparse_layers(net)) == ["conv1", "conv2", "fc1", "fc2"]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lenet5_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="16x16"):
        lenet5((1, 8, 8))


def test_mlp_sizes_follow_the_paper():
    net = mlp(784)
    assert [(m.in_features, m.out_features) for m in (net.fc1, net.fc2, net.fc3)] == [
        (784, 300),
        (300, 100),
        (100, 10),
    ]


def test_lenet5_caffe_sizes():
    net = lenet5((1, 28, 28))
    assert (net.conv1.out_channels, net.conv2.out_channels, net.fc1.in_features, net.fc1.out_features) == (
        20,
        50,
        800,
        500,
    )


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="valid models: mlp, lenet5"):
        build_model("resnet", (1, 8, 8), 10)
