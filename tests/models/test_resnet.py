import torch

import ctrlsparse as cs
from ctrlsparse.models import build_model, fashion_resnet


def test_fashion_resnet_parameter_count_and_names():
    model = fashion_resnet()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    # stem 1·16·9; layer1 2·16·16·9; layer2 16·32·9 + 32·32·9 + 16·32; layer3 32·64·9 + 64·64·9 + 32·64
    conv = 144 + 4608 + 4608 + 9216 + 512 + 18432 + 36864 + 2048
    bn = 2 * (16 + 16 + 16 + 32 + 32 + 32 + 64 + 64 + 64)
    assert sum(p.numel() for p in model.parameters()) == conv + bn + 64 * 10 + 10
    assert build_model("fashion_resnet", (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_residual_channels_are_one_unit_per_stage():
    model = cs.sparsify(fashion_resnet(), example_input=torch.zeros(2, 1, 28, 28))
    groups = {g.name: g for g in cs.gate_groups(model)}
    assert {n: g.num_units for n, g in groups.items()} == {
        "conv1": 16,  # the stem and layer1's second conv feed the same add
        "layer1.0.conv1": 16,
        "layer2.0.conv1": 32,
        "layer2.0.conv2": 32,  # with layer2's shortcut conv
        "layer3.0.conv1": 64,
        "layer3.0.conv2": 64,
    }
    stage1 = {s.module for s in groups["conv1"].slices}
    assert {"conv1", "bn1", "layer1.0.conv2", "layer1.0.bn2", "layer2.0.conv1"} <= stage1
