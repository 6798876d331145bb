import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrlsparse.gates import LOG_ALPHA_RANGE, HardConcrete


def test_prob_active_matches_monte_carlo():
    # Eq. 12 against the frequency of non-zero samples of eq. 10-11.
    gate = HardConcrete((5,))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    samples = torch.stack([gate.sample() for _ in range(40000)])
    frequency = (samples > 0).float().mean(0)
    assert torch.allclose(frequency, gate.prob_active().detach(), atol=0.01)


def test_samples_are_in_unit_interval_with_exact_zeros_and_ones():
    gate = HardConcrete((20000,))
    z = gate.sample()
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).any() and (z == 1).any()
    assert ((z > 0) & (z < 1)).any()


def test_eval_gate_is_eq13_and_deterministic():
    gate = HardConcrete((7,))
    gate.eval()
    expected = (torch.sigmoid(gate.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.equal(gate(), expected)
    assert torch.equal(gate(), gate())


def test_training_gate_is_random_and_differentiable():
    gate = HardConcrete((50,))
    gate.train()
    z1, z2 = gate(), gate()
    assert not torch.equal(z1, z2)
    z1.sum().backward()
    assert gate.log_alpha.grad is not None


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 0.95))
def test_drop_rate_sets_initial_keep_probability(drop_rate):
    # log_alpha starts at log((1 - p) / p): alpha / (1 + alpha) = 1 - p (Louizos et al., section 4).
    gate = HardConcrete((1000,), drop_rate=drop_rate)
    keep = torch.sigmoid(gate.log_alpha.detach())
    assert abs(float(keep.mean()) - (1 - drop_rate)) < 0.01
    assert float(gate.log_alpha.detach().std()) < 0.02


def test_prob_active_closed_form_value():
    gate = HardConcrete((1,), drop_rate=0.5)
    with torch.no_grad():
        gate.log_alpha.zero_()
    # sigmoid(0 - 2/3 * log(0.1 / 1.1))
    assert math.isclose(
        float(gate.prob_active().detach()), 1 / (1 + math.exp((2 / 3) * math.log(0.1 / 1.1))), rel_tol=1e-6
    )


def test_clamp_keeps_log_alpha_in_range():
    gate = HardConcrete((2,))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-100.0, 100.0]))
    gate.clamp_()
    assert gate.log_alpha.tolist() == list(LOG_ALPHA_RANGE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_rate": 0.0},
        {"drop_rate": 1.0},
        {"temperature": 0.0},
        {"stretch": (0.1, 1.1)},
        {"stretch": (-0.1, 0.9)},
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))[:5]):
        HardConcrete((3,), **kwargs)
