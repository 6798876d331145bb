import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GatedConv2d, GatedLinear
from ctrlsparse.functional import gated_conv2d_channels, gated_linear


def _inputs(closed, n_in=12, n_out=5, batch=7, extra=()):
    torch.manual_seed(0)
    x = torch.randn(batch, *extra, n_in, requires_grad=True)
    w = torch.randn(n_out, n_in, requires_grad=True)
    b = torch.randn(n_out, requires_grad=True)
    z = torch.rand(n_in)
    z[list(closed)] = 0.0
    z[0] = 1.0
    return x, w, b, z.requires_grad_()


def _grads(out, *tensors):
    out.pow(2).sum().backward()
    grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return grads


@pytest.mark.parametrize("extra", [(), (3,)])
def test_skipping_works_with_extra_leading_dimensions(extra):
    x, w, b, z = _inputs(closed=range(2, 11), extra=extra)
    assert torch.allclose(gated_linear(x, w, b, z, skip_below=1.0), F.linear(x * z, w, b), atol=1e-5)


def test_skipping_closed_columns_gives_the_same_output_and_parameter_gradients():
    x, w, b, z = _inputs(closed=range(2, 11))  # 3 of 12 open
    skipped_out = gated_linear(x, w, b, z, skip_below=1.0)
    dense_out = gated_linear(x, w, b, z, skip_below=0.0)
    assert torch.allclose(skipped_out, dense_out, atol=1e-6)
    skipped = _grads(gated_linear(x, w, b, z, skip_below=1.0), x, w, b, z)
    dense = _grads(gated_linear(x, w, b, z, skip_below=0.0), x, w, b, z)
    for a, r in zip(skipped[:3], dense[:3]):
        assert torch.allclose(a, r, atol=1e-5)
    open_ = z.detach() != 0
    assert torch.allclose(skipped[3][open_], dense[3][open_], atol=1e-5)
    assert torch.all(
        skipped[3][~open_] == 0
    )  # closed gates: clamped at 0 in eq. 11, no gradient to log_alpha


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_gated_layer_parameter_gradients_equal_with_and_without_skipping(layer):
    torch.manual_seed(0)
    if layer == "linear":
        module, x = GatedLinear(12, 5), torch.randn(8, 12)
    else:
        module, x = GatedConv2d(3, 10, 3, padding=1), torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        module.gate.log_alpha.fill_(-3.0)  # most samples are exactly 0
        module.gate.log_alpha[:3] = 3.0
    grads = {}
    for skip in (0.0, 1.0):
        module.skip_below = skip
        torch.manual_seed(1)  # the same gate sample for both paths
        out = module(x)
        out.pow(2).sum().backward()
        grads[skip] = (out.detach(), [p.grad.clone() for p in module.parameters()])
        module.zero_grad()
    assert torch.allclose(grads[0.0][0], grads[1.0][0], atol=1e-5)
    for a, b in zip(grads[0.0][1], grads[1.0][1]):
        assert torch.allclose(a, b, atol=1e-5)


def test_conv_channel_skipping_zeroes_closed_channels():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 5, 5), torch.randn(6, 3, 3, 3), torch.randn(6)
    z = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.0, 0.0])
    out = gated_conv2d_channels(x, w, b, z, F.conv2d, skip_below=1.0)
    assert torch.allclose(out, F.conv2d(x, w, b) * z.view(1, -1, 1, 1), atol=1e-6)
    assert torch.all(out[:, [0, 2, 4, 5]] == 0)


def test_all_gates_closed():
    x, w, b, z = _inputs(closed=range(12))
    z = z.detach().zero_().requires_grad_()
    out = gated_linear(x, w, b, z, skip_below=1.0)
    assert torch.allclose(out, b.expand(7, 5))
    grad_x, grad_w, grad_b, grad_z = _grads(out, x, w, b, z)
    assert not grad_w.any() and not grad_z.any() and not grad_x.any()
    assert torch.allclose(grad_b, 2 * out.detach().sum(0))
