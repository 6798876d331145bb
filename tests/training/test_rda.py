import math

import pytest
import torch

from ctrlsparse.training.rda import RDA


def _quadratic_steps(w0, c, gamma, penalty, steps):
    """Run RDA on f(w) = (w - c)^2 / 2 and return the iterates."""
    w = torch.nn.Parameter(torch.tensor([w0]))
    opt = RDA([w], gamma=gamma, penalty=penalty)
    iterates = []
    for _ in range(steps):
        w.grad = (w.detach() - c).clone()
        opt.step()
        iterates.append(w.item())
    return iterates


def test_matches_hand_computed_closed_form_steps():
    # w_{t+1} = shrink(w0 - sum(g) / (gamma sqrt t), sqrt(t) / gamma * lambda)
    # with w0 = 1, gamma = 2, lambda = 0.1.
    w1, w2 = _quadratic_steps(1.0, 0.2, gamma=2.0, penalty=0.1, steps=2)
    assert w1 == pytest.approx(0.55)  # g1 = 0.8: v = 1 - 0.8 / 2 = 0.6, tau = 0.05
    g2 = w1 - 0.2  # 0.35
    v2 = 1.0 - (0.8 + g2) / (2.0 * math.sqrt(2))  # 0.59341
    assert w2 == pytest.approx(v2 - math.sqrt(2) / 2.0 * 0.1)  # 0.52270
    assert w2 == pytest.approx(0.522703, abs=1e-6)


def test_exact_zeros_where_the_average_gradient_is_below_the_penalty():
    # f = (w - 0.05)^2 / 2 with lambda = 0.5: the l1 solution shrink(0.05, 0.5) is exactly 0.
    iterates = _quadratic_steps(1.0, 0.05, gamma=1.0, penalty=0.5, steps=50)
    assert iterates[-1] == 0.0 and all(w == 0.0 for w in iterates[10:])


def test_converges_to_the_l1_solution():
    # argmin (w - c)^2 / 2 + lambda |w| = shrink(c, lambda) = 0.4 for c = 0.5, lambda = 0.1.
    iterates = _quadratic_steps(-1.0, 0.5, gamma=1.0, penalty=0.1, steps=20000)
    assert iterates[-1] == pytest.approx(0.4, abs=0.02)


def test_zero_penalty_is_dual_averaging_and_groups_keep_their_settings():
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = RDA([{"params": [a], "penalty": 10.0}, {"params": [b]}], gamma=4.0)
    a.grad, b.grad = torch.tensor([1.0]), torch.tensor([1.0])
    opt.step()
    assert a.item() == 0.0  # shrink(1 - 1/4, 10/4)
    assert b.item() == pytest.approx(0.75)


@pytest.mark.parametrize(
    "kwargs, message", [({"gamma": 0}, "gamma must be"), ({"penalty": -1}, "penalty must")]
)
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RDA([torch.nn.Parameter(torch.zeros(1))], **kwargs)
