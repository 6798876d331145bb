import functools
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrlsparse.gating.gates import LOG_ALPHA_RANGE, ARMGate, HardConcrete, antithetic, make_gate


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


# --- ARM gates (Li & Ji, 2019) -------------------------------------------------------------

_A, _B = torch.tensor([1.0, -2.0, 0.5]), 0.3


def _f(z: torch.Tensor) -> torch.Tensor:
    """A small non-linear objective of three binary gates."""
    return (z @ _A - _B) ** 2 + 0.7 * z[0] * z[2]


def _exact_gradient(gate: ARMGate) -> torch.Tensor:
    """d E[f(z)] / d phi, with E[f] enumerated over all 2^3 gate values."""
    pi = gate.prob_active()
    expectation = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        z = torch.tensor(bits)
        expectation = expectation + torch.prod(torch.where(z > 0, pi, 1 - pi)) * _f(z)
    (grad,) = torch.autograd.grad(expectation, gate.phi)
    return grad


@pytest.mark.parametrize("squash", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("estimator", ["arm", "ar"])
def test_arm_estimator_is_unbiased(squash, estimator):
    gate = ARMGate((3,), k=3.0, squash=squash, estimator=estimator)
    with torch.no_grad():
        gate.phi.copy_(torch.tensor([-0.4, 0.1, 0.5]))  # pi between 0.2 and 0.8 for both squashes
    exact = _exact_gradient(gate)
    estimates = []
    for _ in range(4000):
        loss = _f(gate())
        with antithetic([gate]):
            antithetic_loss = _f(gate())
        (grad,) = torch.autograd.grad(gate.estimator_term(loss, antithetic_loss), gate.phi)
        estimates.append(grad)
    estimates = torch.stack(estimates)
    tolerance = 4 * estimates.std(0) / math.sqrt(len(estimates))  # 4 standard errors
    assert torch.all((estimates.mean(0) - exact).abs() < tolerance), (estimates.mean(0), exact, tolerance)
    # Resolution: an estimator biased by a factor 1.5 (e.g. the hard sigmoid without its
    # chain-rule factor, which is 0.57-1 here) would fail.
    assert torch.any((1.5 * estimates.mean(0) - exact).abs() > tolerance)


def test_arm_samples_are_binary_with_probability_pi_and_antithetic_pairs():
    gate = ARMGate((4,), k=2.0)
    with torch.no_grad():
        gate.phi.copy_(torch.tensor([-1.0, -0.2, 0.3, 1.0]))
    pi = gate.prob_active().detach()
    main, anti = [], []
    for _ in range(20000):
        main.append(gate())
        with antithetic([gate]):
            anti.append(gate())
    main, anti = torch.stack(main), torch.stack(anti)
    assert set(main.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(main.mean(0), pi, atol=0.015) and torch.allclose(anti.mean(0), pi, atol=0.015)
    # Same u: 1[u < pi] and 1[u > 1 - pi] are both 1 only where pi > 1/2 can make them so.
    both = (main * anti).mean(0)
    assert torch.allclose(both, (2 * pi - 1).clamp_min(0), atol=0.015)
    assert not gate.antithetic


def test_arm_initial_probability_and_test_time_gate():
    for squash in ("sigmoid", "hard_sigmoid"):
        gate = ARMGate((1000,), drop_rate=0.3, squash=squash)
        assert gate.prob_active().mean().item() == pytest.approx(0.7, abs=0.01)
        gate.eval()
        assert torch.equal(gate(), (gate.phi > 0).float())


def test_arm_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown squash function 'tanh'; valid squash functions: 'sigmoid'"):
        ARMGate((2,), squash="tanh")
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'"):
        ARMGate((2,), estimator="reinforce")
    with pytest.raises(ValueError, match="k must be a finite number > 0"):
        ARMGate((2,), k=0)
    with pytest.raises(RuntimeError, match="needs a regular sample first"), antithetic([g := ARMGate((2,))]):
        g()


def test_make_gate_kinds_and_factories():
    assert isinstance(make_gate("hard_concrete", (3,), 0.5), HardConcrete)
    assert isinstance(make_gate("arm", (3,), 0.5), ARMGate)
    gate = make_gate(functools.partial(ARMGate, k=5.0), (3,), 0.2)
    assert gate.k == 5.0 and gate.drop_rate == 0.2
    with pytest.raises(
        ValueError, match="unknown gate kind 'relu'; valid gate kinds: 'hard_concrete', 'arm'"
    ):
        make_gate("relu", (3,), 0.5)


def test_gates_drawn_together_follow_each_gates_own_log_alpha():
    # HardConcrete.sample_all draws every gate tensor of a model in one pass (eq. 10-11).
    gates = [HardConcrete((3,)), HardConcrete((2, 2))]
    with torch.no_grad():
        gates[0].log_alpha.copy_(torch.tensor([-3.0, 0.0, 3.0]))
        gates[1].log_alpha.copy_(torch.tensor([[1.0, -1.0], [2.0, -2.0]]))
    samples = [HardConcrete.sample_all(gates) for _ in range(20000)]
    assert [s.shape for s in samples[0]] == [(3,), (2, 2)]
    for k, gate in enumerate(gates):
        frequency = (torch.stack([s[k] for s in samples]) > 0).float().mean(0)
        assert torch.allclose(frequency, gate.prob_active().detach(), atol=0.015)
    probabilities = HardConcrete.prob_active_all(gates)
    assert torch.equal(probabilities, torch.cat([g.prob_active().flatten() for g in gates]))
    sum(s.sum() for s in samples[0]).backward()
    assert all(g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0 for g in gates)


def test_a_model_draws_its_groups_together_only_while_they_are_all_stochastic():
    from ctrlsparse import sparsify
    from ctrlsparse.gating.groups import fusable, gate_groups

    net = sparsify(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)),
                   example_input=torch.zeros(1, 4))  # fmt: skip
    groups = gate_groups(net)
    assert fusable(groups)
    net(torch.zeros(1, 4))
    assert all(g.current().shape == g.gate.parameter.shape for g in groups)
    groups[0].decide_(torch.ones(4))
    assert not fusable(groups)
    net(torch.zeros(1, 4))
    assert torch.equal(groups[0].current(), torch.ones(4))  # the decided group keeps its values
    net.eval()
    net(torch.zeros(1, 4))
    assert torch.equal(groups[1].current(), groups[1].deterministic())  # eq. 13 in eval mode
