import torch
from torch import nn

from ctrlsparse import count, sparsify


def test_hand_computed_linear_and_conv_macs():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    total, layers = count(net, torch.zeros(1, 1, 8, 8))
    assert layers["0"].macs_dense == 4 * 6 * 6 * (1 * 3 * 3)
    assert layers["3"].macs_dense == 144 * 5
    assert total.macs_dense == total.macs_remaining == 4 * 36 * 9 + 144 * 5
    assert total.params_dense == total.params_remaining == 4 * 9 + 4 + 144 * 5 + 5


def test_paper_groups_reduce_params_and_macs():
    net = sparsify(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5)), "paper")
    with torch.no_grad():
        net[0].output_gate.gate.log_alpha.copy_(torch.tensor([10.0, 10.0, -10.0, -10.0]))  # 2 of 4 channels
        net[3].input_gate.gate.log_alpha.fill_(10.0)
        net[3].input_gate.gate.log_alpha[:36] = -10.0  # 36 of 144 inputs
    total, layers = count(net, torch.zeros(3, 1, 8, 8))
    assert layers["0"].macs_remaining == 2 * 36 * 9
    assert layers["3"].macs_remaining == 108 * 5
    assert layers["0"].params_remaining == 2 * (9 + 1)  # filter + bias per channel
    assert layers["3"].params_remaining == 108 * 5 + 5  # the bias stays
    assert total.params_dense == 40 + 725  # the gates' log_alpha are not parameters of the model
    assert total.params_remaining == 20 + 545


def test_neuron_units_count_a_weight_dead_when_its_input_or_output_closes():
    net = sparsify(
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)),
        example_input=torch.zeros(1, 4),
        inputs=False,
    )
    with torch.no_grad():
        net[0].output_gate.gate.log_alpha.copy_(torch.tensor([10.0, -10, 10, -10, -10, 10]))  # 3 of 6 open
    total, layers = count(net, torch.zeros(1, 4))
    assert layers["0"].params_remaining == 3 * 4 + 3  # rows and bias entries of open neurons
    assert layers["2"].params_remaining == 2 * 3 + 2  # columns of open neurons, and the output bias
    assert layers["0"].macs_remaining == 12 and layers["2"].macs_remaining == 6
    assert total.params_remaining == 15 + 8


def test_count_restores_training_mode():
    net = sparsify(nn.Sequential(nn.Linear(3, 2)), "paper")
    net.train()
    count(net, torch.zeros(1, 3))
    assert net.training
