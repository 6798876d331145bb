"""A Linear's column gates scale its input instead of its weight when the input is smaller."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.gating.groups import INPUT_SCALE_ATTRIBUTE, remove_input_scaling


def _net(structure="paper"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    return cs.sparsify(net, structure, example_input=torch.zeros(2, 12))


def _without_input_scaling(net):
    """The oracle: the same model whose gates always scale the weights."""
    oracle = copy.deepcopy(net)
    remove_input_scaling(oracle)
    return oracle


def _paths_taken(net):
    """Record, per gated Linear, whether its forward scaled the input (a hook after ours)."""
    taken = {}
    for name, module in net.named_modules():
        if INPUT_SCALE_ATTRIBUTE in vars(module):

            def record(module, args, name=name):
                taken[name] = vars(module)[INPUT_SCALE_ATTRIBUTE].on_input

            module.register_forward_pre_hook(record)
    return taken


def test_without_gradients_the_input_path_serves_every_small_batch():
    net = _net().eval()
    oracle = _without_input_scaling(net)
    taken = _paths_taken(net)
    x = torch.randn(4, 12)
    with torch.no_grad():
        out = net(x)
    assert taken == {"0": True, "2": True, "4": False}
    torch.testing.assert_close(out, oracle(x))


def _step(net, x, y, seed):
    torch.manual_seed(seed)  # the same gate sample in both models
    net.zero_grad()
    out = net(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("structure", ["paper", "neuron"])
@pytest.mark.parametrize("batch", [4, 20, 40])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("input_grad", [False, True])
def test_input_scaling_gives_the_outputs_and_gradients_of_weight_scaling(structure, batch, mode, input_grad):
    net = _net(structure)
    oracle = _without_input_scaling(net)
    taken = _paths_taken(net)
    getattr(net, mode)(), getattr(oracle, mode)()
    x = torch.randn(batch, 12, generator=torch.Generator().manual_seed(1)).requires_grad_(input_grad)
    y = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(2))
    out, grads = _step(net, x, y, seed=3)
    x_grad, x.grad = x.grad, None
    expected_out, expected_grads = _step(oracle, x, y, seed=3)
    torch.testing.assert_close(out, expected_out)
    assert grads.keys() == expected_grads.keys() and any("log_alpha" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], msg=name)
    # The input path where the batch has fewer rows than the layer has outputs (24, 16, 3)
    # and the input's gradient is computed anyway (not the model's own input, unless asked).
    outputs = {"0": 24, "2": 16, "4": 3}
    assert taken == {n: batch < outputs[n] and (n != "0" or input_grad) for n in taken} and taken
    if input_grad:
        torch.testing.assert_close(x_grad, x.grad)  # the oracle's
    # Outside the forward the weight is gated again.
    assert not any(
        s.on_input for m in net.modules() if hasattr(m, "parametrizations") for s in m.parametrizations.weight
    )


def test_an_error_inside_the_forward_leaves_the_weight_gated():
    net = _net()
    with pytest.raises(RuntimeError):
        # 11 features, not 12; an input needing a gradient: the first layer takes the input path
        net(torch.zeros(2, 11, requires_grad=True))
    layer = net[0]
    scale = vars(layer)[INPUT_SCALE_ATTRIBUTE]
    assert scale is layer.parametrizations.weight[0] and not scale.on_input
    z = layer.input_gate.current()
    torch.testing.assert_close(layer.weight, layer.parametrizations.weight.original * z)


def test_a_deepcopy_scales_with_its_own_gates_and_purging_drops_the_hooks():
    net = _net()
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin[0].input_gate.gate.log_alpha.fill_(-10.0)  # every input of the copy's first layer closed
    net.eval(), twin.eval()
    x = torch.randn(4, 12)  # 4 rows < 24 outputs: the first layer scales its input
    hidden = F.relu(twin[0].parametrizations.weight.original[:, :0].sum(1) + twin[0].bias).expand(4, 24)
    torch.testing.assert_close(twin(x), twin[4](F.relu(twin[2](hidden))))  # the copy's gates, not net's
    assert not torch.allclose(twin(x), net(x))
    small = cs.purge(net, x)
    torch.testing.assert_close(small(x), net(x))
    for module in small.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks
        assert INPUT_SCALE_ATTRIBUTE not in vars(module)
