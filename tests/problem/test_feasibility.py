"""The feasibility phase with ``round_to``: every group keeps a multiple of N open units (or all of
them), and every realized density or MACs fraction still stays at or below its ε."""

import warnings

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decision = decide(problem)
    said = " ".join(str(w.message) for w in caught)
    for group in problem.groups:  # aligned, or below one block where a block does not fit, with a warning
        kept = int((group.deterministic() > 0).sum())
        assert _allowed(group) or (0 < kept < group.round_to and f"{group.name!r} ({kept} of" in said)
    realized = problem.constraint_values(realized=True)
    for name, eps in problem.targets_all.items():
        assert float(realized[name]) <= eps + 1e-6 and decision.realized_after[name] <= eps + 1e-6


def test_each_group_lands_within_a_block_of_its_unrounded_count():
    """Model-wise ε on LeNet-5: each group's rounded count is its unrounded count rounded down
    or up, never a block further, and never 0 where the unrounded decision kept units."""
    x = torch.randn(2, 1, 28, 28)
    kept = {}
    for round_to in (1, 8):
        torch.manual_seed(0)
        model = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=round_to)
        _random_gates(model)
        decide(cs.SparsityProblem(model, F.cross_entropy, target_density=0.2))
        kept[round_to] = [(int((g.deterministic() > 0).sum()), g) for g in cs.gate_groups(model)]
    for (k, _), (rounded, group) in zip(kept[1], kept[8]):
        assert group.aligned(k) <= rounded <= group.aligned(k + 1, up=True) and (rounded > 0 or k == 0)


def test_a_block_that_does_not_fit_leaves_a_small_group_unaligned_with_a_warning():
    """ResNet's 8-channel stem kept at 3 channels: round_to=16 would open all 8 (a group smaller
    than a block keeps all or none), which ε does not allow beside the others' blocks; the
    group keeps its 3 channels rather than closing the network's first layer."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    model = cs.sparsify(ResNet(), example_input=x, round_to=16)
    with torch.no_grad():
        for group in cs.gate_groups(model):
            group.gate.parameter.fill_(-5.0)
            group.gate.parameter[:3] = 5.0
    problem = cs.SparsityProblem(model, F.cross_entropy, target_density=0.1)
    with pytest.warns(UserWarning, match="keep fewer units than a block, unaligned: .*of 8"):
        decide(problem)
    assert problem.realized_densities()[0] <= 0.1 + 1e-6
    assert all(int((g.deterministic() > 0).sum()) > 0 for g in problem.groups)


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


@pytest.mark.parametrize("structure", ["neuron", "paper"])
def test_block_gates_train_decide_and_purge_in_whole_blocks(structure):
    """block_gates=True: the N units of a block share one sample, one P(z != 0) and one test-time
    gate; the feasibility phase keeps whole blocks under ε, and purge reproduces the gated model."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    model = cs.sparsify(FunctionalLeNet(), structure, example_input=x, round_to=8, block_gates=True)
    aligned = [g for g in cs.gate_groups(model) if g.round_to == 8]
    assert aligned and all(g.gate.block == 8 for g in aligned)

    def tied(values, n):  # equal inside every block of 8 (the last block holds the rest)
        return all(bool((values[a : a + 8] == values[a]).all()) for a in range(0, n, 8))

    model.train()
    _random_gates(model)
    problem = cs.SparsityProblem(model, F.cross_entropy, example_input=x, target_density=0.3)
    state = problem.compute_cmp_state(x, torch.randint(0, 10, (4,)))
    (state.loss + sum(c.violation.sum() for c in state.observed_constraints.values())).backward()
    for group in aligned:
        n = group.num_units
        assert tied(group.current().detach(), n) and tied(group.prob_active().detach(), n)
        assert tied(group.gate.parameter.grad, n)  # one gradient per block: the blocks stay tied
        assert len(set(group.deterministic().tolist())) <= -(-n // 8) < n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decide(problem)
    for group in aligned:
        kept = group.deterministic() > 0
        assert tied(kept, group.num_units) and _allowed(group)
    realized = problem.constraint_values(realized=True)
    assert all(float(realized[name]) <= eps + 1e-6 for name, eps in problem.targets_all.items())
    model.eval()
    small = cs.purge(model, x)
    assert torch.allclose(small(x), model(x), atol=1e-5)


def test_block_gates_need_round_to_and_hard_concrete():
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"block_gates=True .* round_to > 1 \(got 1\)"):
        cs.sparsify(FunctionalLeNet(), example_input=x, block_gates=True)
    with pytest.raises(ValueError, match=r"gates='hard_concrete' \(got 'arm'\)"):
        cs.sparsify(FunctionalLeNet(), example_input=x, round_to=8, block_gates=True, gates="arm")


def test_block_gates_round_trip_through_the_state_dict():
    """The block size is part of a gate's state: a state saved with blocks of 8 loads into a model
    sparsified the same way, and is refused, naming both sizes, by one with other blocks."""
    x = torch.randn(2, 1, 28, 28)
    saved = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=8, block_gates=True).state_dict()
    same = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=8, block_gates=True)
    same.load_state_dict(saved)
    other = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=4, block_gates=True)
    with pytest.raises(RuntimeError, match="block of 8 units, this model has 4"):
        other.load_state_dict(saved)
    unblocked = cs.sparsify(FunctionalLeNet(), example_input=x, round_to=8)
    with pytest.raises(RuntimeError, match="block_units"):
        unblocked.load_state_dict(saved)
