import copy

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.models.cifar import build_resnet18, build_wrn28_10, resnet18, wide_resnet

# name: (builder, parameters for 10 classes (the published figures), blocks per stage, BN after conv1)
ARCHITECTURES = {
    "wrn28_10": (wide_resnet, 36_479_194, (4, 4, 4), "bn2"),
    "resnet18": (resnet18, 11_173_962, (2, 2, 2, 2), "bn1"),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def architecture(request):
    """One model per architecture for the whole module: WRN-28-10 takes a second to build."""
    make, count, blocks, bn = ARCHITECTURES[request.param]
    return make(), count, blocks, bn


def test_parameter_count_and_bias_free_convs(architecture):
    model, count, blocks, _ = architecture
    assert sum(p.numel() for p in model.parameters()) == count
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    names = {name for name, _ in model.named_modules()}
    for s, count_s in enumerate(blocks, start=1):
        assert {f"layer{s}.{b}.{conv}" for b in range(count_s) for conv in ("conv1", "conv2")} <= names


def test_first_conv_of_each_block_gated_and_one_sgd_step(architecture):
    model, _, blocks, bn = architecture
    model = copy.deepcopy(model)  # the fixture's model stays plain for the other tests
    cs.sparsify(model, example_input=torch.randn(2, 3, 32, 32), include=["*.conv1"])
    modules = dict(model.named_modules())
    groups = cs.gate_groups(model)
    first_convs = [f"layer{s}.{b}.conv1" for s, n in enumerate(blocks, start=1) for b in range(n)]
    assert [g.name for g in groups] == first_convs  # one unit group per block; the stem conv1 is not matched
    for group in groups:
        block = group.name.removesuffix(".conv1")
        assert group.kind == "output"
        assert group.num_units == modules[group.name].out_channels
        assert group.modules_touched() == [group.name, f"{block}.{bn}", f"{block}.conv2"]

    model.train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = model(x)
    assert logits.shape == (2, 10)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for group in groups:
        grad = group.gate.parameter.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_small_inputs_down_to_8x8():
    model = wide_resnet(depth=10, widen_factor=1, num_classes=3, dropout=0.3).eval()
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    assert build_resnet18((3, 8, 12), 5).eval()(torch.zeros(2, 3, 8, 12)).shape == (2, 5)


def test_builders_take_the_number_of_classes():
    model = build_wrn28_10((3, 32, 32), 100)
    assert model.fc.out_features == 100
    assert sum(p.numel() for p in model.parameters()) == 36_479_194 + 640 * 90 + 90
    assert build_resnet18([3, 32, 32], 100).fc.out_features == 100


@pytest.mark.parametrize("builder", [build_wrn28_10, build_resnet18])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32), (3, 4, 32), (3, 32, 7)])
def test_builders_reject_other_shapes(builder, shape):
    with pytest.raises(ValueError, match="3-channel images of at least 8x8") as info:
        builder(shape, 10)
    assert f"got input_shape={shape}" in str(info.value)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wide_resnet(depth=27)
