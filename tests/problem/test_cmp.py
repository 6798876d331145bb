import cooper
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse import SparsityProblem, mlp, penalty_from_per_parameter, sparsify
from ctrlsparse.problem.levels import MODEL
from ctrlsparse.problem.stacking import CONSTRAINED, PENALIZED, VectorLagrangian


def _model():
    return sparsify(
        mlp(input_size=6, hidden=(5,), num_classes=3), "paper"
    )  # fc1: 6 gates x 5, fc2: 5 gates x 3


def test_is_a_cooper_cmp_with_one_constraint_per_target():
    problem = SparsityProblem(_model(), F.cross_entropy, target_density={"fc1": 0.5, "fc2": 0.3})
    assert isinstance(problem, cooper.ConstrainedMinimizationProblem)
    assert problem.constraint_names == ["fc1", "fc2"]
    assert problem.mode == "constrained"


def test_number_gives_model_wise_and_list_gives_forward_order():
    assert list(SparsityProblem(_model(), F.cross_entropy, target_density=0.3).targets) == [MODEL]
    problem = SparsityProblem(_model(), F.cross_entropy, target_density=[0.4, 0.6])
    assert problem.targets == {"fc1": 0.4, "fc2": 0.6}


def test_model_density_weights_layers_by_parameter_count():
    model = _model()
    with torch.no_grad():
        model.fc1.input_gate.gate.log_alpha.fill_(10.0)  # P(active) ~ 1: 30 params
        model.fc2.input_gate.gate.log_alpha.fill_(-10.0)  # P(active) ~ 0: 15 params
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.5)
    density, densities = problem.expected_densities()
    assert abs(float(density.detach()) - 30 / 45) < 1e-3
    assert abs(float(densities["fc1"].detach()) - 1) < 1e-3 and abs(float(densities["fc2"].detach())) < 1e-3


def test_cmp_state_violation_is_density_minus_target():
    problem = SparsityProblem(_model(), F.cross_entropy, target_density={"fc1": 0.5}, penalty={"fc2": 0.1})
    state = problem.compute_cmp_state(torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    _, densities = problem.expected_densities()
    # One cooper constraint holds the targets, one the penalties, an entry per name.
    by_kind = {c.name: s for c, s in state.observed_constraints.items()}
    assert problem.stacking.stacked_names == ["fc1", "fc2"]
    assert torch.allclose(by_kind[CONSTRAINED].violation, (densities["fc1"] - 0.5).reshape(1))
    # A penalty is "density <= 0": its violation is the density.
    assert torch.allclose(by_kind[PENALIZED].violation, densities["fc2"].reshape(1))
    assert (
        by_kind[CONSTRAINED].contributes_to_dual_update and not by_kind[PENALIZED].contributes_to_dual_update
    )


def _primal_grads(problem, x, y):
    problem.model.zero_grad()
    problem.compute_cmp_state(x, y).compute_primal_lagrangian().lagrangian.backward()
    return [p.grad.clone() for p in problem.model.parameters()]


def test_penalized_primal_gradient_equals_classic_penalty():
    # lambda * (density - eps) and lambda * density have the same primal gradient.
    model = _model().eval()  # deterministic gates (eq. 13): both passes see the same network
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    penalized = _primal_grads(SparsityProblem(model, F.cross_entropy, penalty=0.7), x, y)
    constrained = SparsityProblem(model, F.cross_entropy, target_density=0.3)
    with torch.no_grad():
        constrained.multiplier(MODEL).fill_(0.7)
    shifted = _primal_grads(constrained, x, y)
    model.zero_grad()
    density, _ = constrained.expected_densities()
    (F.cross_entropy(model(x), y) + 0.7 * density).backward()
    classic = [p.grad for p in model.parameters()]
    for a, b, c in zip(penalized, shifted, classic):
        assert torch.allclose(a, c, atol=1e-6) and torch.allclose(b, c, atol=1e-6)


def test_penalty_per_parameter_conversion():
    model = _model()
    assert penalty_from_per_parameter(0.01, model) == pytest.approx(0.01 * 45)


def test_gated_weight_decay_adds_expected_l2():
    model = _model()
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    plain = SparsityProblem(model, F.cross_entropy, target_density=0.5)
    decayed = SparsityProblem(model, F.cross_entropy, target_density=0.5, weight_decay=0.1)
    model.eval()  # deterministic gates: the same data loss twice
    # Eq. 15/17 by hand for input-feature gates: sum_i P(z_i != 0) * ||W[:, i]||^2 per layer.
    l2 = sum(
        (layer.input_gate.gate.prob_active() * layer.parametrizations.weight.original.pow(2).sum(0)).sum()
        for layer in (model.fc1, model.fc2)
    )
    diff = decayed.compute_cmp_state(x, y).loss - plain.compute_cmp_state(x, y).loss
    assert torch.isclose(diff, 0.05 * l2)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_target_outside_unit_interval(target):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SparsityProblem(_model(), F.cross_entropy, target_density=target)


def test_negative_penalty():
    with pytest.raises(ValueError, match=">= 0"):
        SparsityProblem(_model(), F.cross_entropy, penalty=-1e-3)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match="'fc9'.*valid names: model, fc1, fc2"):
        SparsityProblem(_model(), F.cross_entropy, target_density={"fc9": 0.5})


def test_target_and_penalty_on_same_layer():
    with pytest.raises(ValueError, match="'fc1' has both"):
        SparsityProblem(_model(), F.cross_entropy, target_density={"fc1": 0.5}, penalty={"fc1": 0.1})


def test_list_of_wrong_length():
    with pytest.raises(ValueError, match="one value per gated layer"):
        SparsityProblem(_model(), F.cross_entropy, target_density=[0.5, 0.5, 0.5])


def test_model_without_gates():
    with pytest.raises(ValueError, match="sparsify"):
        SparsityProblem(nn.Sequential(nn.Linear(2, 2)), F.cross_entropy, target_density=0.5)


def test_neither_target_nor_penalty():
    with pytest.raises(ValueError, match="target_density.*penalty"):
        SparsityProblem(_model(), F.cross_entropy)


def test_target_list_follows_forward_order_of_example_input(reordered):
    model = sparsify(reordered, "paper")
    problem = SparsityProblem(
        model, F.cross_entropy, target_density=[0.2, 0.7], example_input=torch.zeros(1, 3)
    )
    assert problem.targets == {"body": 0.2, "head": 0.7}


@pytest.mark.parametrize("dual", [True, False])
def test_the_vector_formulation_gives_cooper_lagrangians_and_gradients(dual):
    """The stacked constraints' formulation is cooper's Lagrangian: same values, and the
    primal gradient reaches only the violations, the dual one only the multipliers."""
    results = []
    for formulation in (cooper.formulations.Lagrangian, VectorLagrangian):
        torch.manual_seed(0)
        theta = torch.randn(3, requires_grad=True)
        multiplier = cooper.multipliers.DenseMultiplier(init=torch.tensor([0.5, 0.0, 2.0]))
        constraint = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, formulation_type=formulation, multiplier=multiplier
        )
        violation = theta.sigmoid() - torch.tensor([0.1, 0.9, 0.3])
        state = cooper.ConstraintState(violation=violation, contributes_to_dual_update=dual)
        cmp_state = cooper.CMPState(loss=(theta**2).sum(), observed_constraints={constraint: state})
        primal = cmp_state.compute_primal_lagrangian().lagrangian
        dual_store = cmp_state.compute_dual_lagrangian()
        primal.backward()
        if dual:
            dual_store.lagrangian.backward()
        else:
            assert dual_store.lagrangian is None
        grad = multiplier.weight.grad
        results.append((primal.detach(), theta.grad.clone(), None if grad is None else grad.clone()))
    (value, primal_grad, dual_grad), (value2, primal_grad2, dual_grad2) = results
    assert torch.allclose(value, value2) and torch.allclose(primal_grad, primal_grad2)
    assert (dual_grad is None) == (dual_grad2 is None) == (not dual)
    if dual:  # d(lambda . g)/d lambda = g, the violation
        assert torch.allclose(dual_grad2, dual_grad) and torch.allclose(dual_grad2, violation.detach())
