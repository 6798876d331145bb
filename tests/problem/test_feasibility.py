"""The feasibility phase with ``round_to``: every group keeps a multiple of N open units (or all of
them), and every realized density or MACs fraction still stays at or below its ε."""

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.problem.feasibility import decide
from tests.helpers import FunctionalLeNet, ResNet


def _allowed(group) -> bool:
    kept = int((group.deterministic() > 0).sum())
    return kept == group.num_units or kept % group.round_to == 0


def _random_gates(model, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.copy_(3 * torch.randn(group.num_units, generator=generator))


@pytest.mark.parametrize("round_to", [4, 8, 16])
@pytest.mark.parametrize(
    "build, structure, levels",
    [
        (FunctionalLeNet, "neuron", {"target_density": 0.2}),
        (FunctionalLeNet, "paper", {"target_density": [0.5, 0.3, 0.7, 0.1]}),
        (ResNet, "neuron", {"target_density": 0.4}),
        (ResNet, "neuron", {"target_macs": 0.5}),
    ],
    ids=["lenet-model", "lenet-paper-per-layer", "resnet-model", "resnet-macs"],
)
def test_decided_groups_keep_multiples_and_stay_feasible(build, structure, levels, round_to):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    model = cs.sparsify(build(), structure, example_input=x, round_to=round_to)
    _random_gates(model)
    problem = cs.SparsityProblem(model, F.cross_entropy, example_input=x, **levels)
    decision = decide(problem)
    assert all(_allowed(g) for g in problem.groups), [
        (g.name, int((g.deterministic() > 0).sum()), g.num_units) for g in problem.groups
    ]
    realized = problem.constraint_values(realized=True)
    for name, eps in problem.targets_all.items():
        assert float(realized[name]) <= eps + 1e-6 and decision.realized_after[name] <= eps + 1e-6


def test_rounding_lands_within_a_block_of_the_unrounded_decision():
    """Model-wise ε on LeNet-5: the rounded decision is below the unrounded one by less than
    what one block of each group holds together."""
    x = torch.randn(2, 1, 28, 28)
    realized = {}
    for round_to in (1, 8):
        torch.manual_seed(0)
        model = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=round_to)
        _random_gates(model)
        problem = cs.SparsityProblem(model, F.cross_entropy, target_density=0.2)
        decide(problem)
        realized[round_to] = problem.realized_densities()[0]
    assert realized[8] <= realized[1] <= 0.2 + 1e-6
    assert realized[1] - realized[8] < 0.02


def test_round_to_one_decides_as_before():
    x = torch.randn(2, 1, 28, 28)
    decided = []
    for round_to in (None, 1):
        torch.manual_seed(0)
        options = {} if round_to is None else {"round_to": round_to}
        model = cs.sparsify(ResNet(), example_input=x, **options)
        _random_gates(model)
        decide(cs.SparsityProblem(model, F.cross_entropy, target_density={"b1.conv1": 0.5, "b2.conv1": 0.3}))
        decided.append([g.deterministic() for g in cs.gate_groups(model)])
    assert all(torch.equal(a, b) for a, b in zip(*decided))
