import pytest
import torch
from torch import nn

import ctrlsparse
from ctrlsparse import count, lenet5, mlp, sparsify
from ctrlsparse.purge import purge


def _close_some(model, fraction=0.6, seed=0):
    """Close a random `fraction` of every layer's gates (test-time gate exactly 0), open the rest."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in ctrlsparse.sparse_layers(model).values():
            closed = torch.rand(layer.gate.log_alpha.shape, generator=g) < fraction
            layer.gate.log_alpha.copy_(
                torch.where(closed, -10.0, torch.rand(closed.shape, generator=g) * 4 - 1)
            )
    return model.eval()


def _no_ctrlsparse_modules(model):
    return all(not type(m).__module__.startswith("ctrlsparse") for m in model.modules())


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.flatten(1))


def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)  # BN(0) != 0: removed channels leave a constant to fold
    return model


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: mlp(64, (30, 20)), (5, 1, 8, 8)),
        (lambda: lenet5((1, 28, 28)), (5, 1, 28, 28)),
        (ConvBN, (5, 3, 6, 6)),
    ],
    ids=["mlp", "lenet5", "conv-bn-relu-linear"],
)
def test_purged_model_equals_gated_model_and_is_smaller(build, shape):
    torch.manual_seed(0)
    gated = _close_some(sparsify(_randomize_bn(build())))
    x = torch.randn(*shape)
    small = purge(gated, x)
    assert _no_ctrlsparse_modules(small)
    assert torch.allclose(small(x), gated(x), atol=1e-5)
    before, _ = count(gated, x)
    after, _ = count(small, x)
    assert after.params_dense < before.params_dense and after.macs_dense < before.macs_dense
    assert after.params_dense <= before.params_remaining + 1000  # only unremovable zeros remain


def test_removing_a_conv_channel_removes_bn_entries_and_next_columns():
    torch.manual_seed(0)
    gated = sparsify(_randomize_bn(ConvBN()), include=["conv2"])
    with torch.no_grad():
        gated.conv2.gate.log_alpha.copy_(torch.tensor([10.0, -10.0, 10.0, -10.0, 10.0, 10.0]))
    x = torch.randn(3, 3, 6, 6)
    small = purge(gated.eval(), x)
    assert (
        small.conv2.out_channels == 4 and small.bn2.num_features == 4 and small.bn2.running_mean.shape == (4,)
    )
    assert small.head.in_features == 4 * 16
    assert torch.allclose(small(x), gated(x), atol=1e-5)


def test_weight_gates_fold_into_weights():
    torch.manual_seed(0)
    gated = _close_some(sparsify(mlp(16, (8,)), structure="weight"))
    x = torch.randn(4, 1, 4, 4)
    small = purge(gated, x)
    assert torch.allclose(small(x), gated(x), atol=1e-5)
    assert float((small.fc1.weight == 0).float().mean()) > 0.4


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_purged_model_exports():
    torch.manual_seed(0)
    gated = _close_some(sparsify(lenet5((1, 28, 28))))
    x = torch.randn(2, 1, 28, 28)
    small = purge(gated, x)
    traced = torch.jit.trace(small, x)
    assert torch.allclose(traced(x), gated(x), atol=1e-5)
    exported = torch.export.export(small, (x,))
    assert torch.allclose(exported.module()(x), gated(x), atol=1e-5)


def test_untraceable_model_is_folded_but_kept_whole():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.b(torch.relu(self.a(x)))

    gated = _close_some(sparsify(Branchy()))
    x = torch.randn(3, 4).abs()
    small = purge(gated, x)
    assert _no_ctrlsparse_modules(small) and small.a.out_features == 6
    assert torch.allclose(small(x), gated(x), atol=1e-5)
