"""The optimizers ctrlsparse builds take torch's fused Adam where they can; the update is Adam's."""

import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.problem.kernels import adam
from ctrlsparse.problem.schedules import TargetSchedule


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 3))
    return cs.sparsify(net, "paper", example_input=torch.zeros(2, 12))


def test_adam_takes_the_fused_kernel_unless_told_otherwise():
    params = list(nn.Linear(3, 2).parameters())
    assert adam(params, lr=1e-3).defaults["fused"] is True
    assert adam([{"params": params, "weight_decay": 0.1}], lr=1e-3).defaults["fused"] is True
    named = adam(nn.Linear(3, 2).named_parameters(), lr=1e-3)
    assert named.defaults["fused"] is True
    # The caller's choice of implementation, and settings the fused kernel lacks, are kept.
    assert adam(params, lr=1e-3, foreach=True).defaults == torch.optim.Adam(params, foreach=True).defaults
    assert adam(params, lr=1e-3, foreach=False).defaults["fused"] is None
    assert adam(params, lr=1e-3, differentiable=True).defaults["fused"] is None


def test_gda_default_primal_adam_is_fused_and_steps_as_per_tensor_adam():
    """``GDA(problem)`` builds Adam(lr=7e-4) with the fused kernel; its run follows a GDA given
    torch's per-tensor Adam (every parameter, gates included) to rounding."""
    x = torch.randn(320, 12, generator=torch.Generator().manual_seed(0))
    y = (x @ torch.randn(12, 3, generator=torch.Generator().manual_seed(7))).argmax(1)
    runs = []
    for fused in (True, False):
        net = _net()
        problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.3)
        primal = None if fused else torch.optim.Adam(net.parameters(), lr=7e-4, foreach=False)
        opt = cs.GDA(problem, primal, total_steps=60, feasibility=False, schedule=TargetSchedule("fixed"))
        groups = opt.primal_optimizer.param_groups
        assert all(g["fused"] is (True if fused else None) for g in groups), [g["fused"] for g in groups]
        torch.manual_seed(1)
        for i in range(20):
            opt.step(x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16])
        runs.append([p.detach().clone() for p in net.parameters()])
    moved = [not torch.equal(p, q) for p, q in zip(runs[0], _net().parameters())]
    assert all(moved)
    for a, b in zip(*runs):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_a_problem_file_trains_with_the_fused_adam():
    from ctrlsparse.experiments.build import build
    from ctrlsparse.experiments.config import parse_problem

    config = parse_problem({"name": "x", "sparsity": {"target_density": 0.3}, "train": {"epochs": 1}})
    groups = build(config).trainer.primal_optimizer.param_groups
    assert [g["fused"] for g in groups] == [True] * len(groups)


def test_a_checkpoint_of_a_per_tensor_adam_resumes_per_tensor():
    """Saved settings win when an optimizer loads its state (torch's rule): a run saved before
    the fused default goes on with the kernel it started with (bit-identical resumes)."""
    net = _net()
    old = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 12)).sum().backward()
    old.step()
    fresh = adam(net.parameters(), lr=1e-3)
    fresh.load_state_dict(old.state_dict())
    assert fresh.param_groups[0]["fused"] is None
