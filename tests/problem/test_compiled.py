"""``GDA(..., compile="step")``: the forward pass, Lagrangian and backward pass through
``torch.compile``, the updates eager (src/ctrlsparse/problem/compiled.py). Inductor's C++
build takes minutes on the CPU, so the compiled runs here trace with AOTAutograd and run its
graphs eagerly (``backend="aot_eager"``): the same graphs, forward and backward, without the
C++ step."""

import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GDA, SparsityProblem, mlp, sparsify
from ctrlsparse.problem.schedules import TargetSchedule


def _run(compile, steps=5, schedule="linear", restarts=True, **levels):
    torch.manual_seed(0)
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, **(levels or {"target_density": 0.4}))
    primal = torch.optim.Adam(model.parameters(), lr=1e-2)
    gda = GDA(
        problem,
        primal,
        dual_lr=0.5,
        dual_optimizer="sgd",
        dual_restarts=restarts,
        schedule=TargetSchedule(schedule),
        total_steps=steps,
        feasibility=False,
        compile=compile,
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 10, generator=g)
    y = (x @ torch.randn(10, 3, generator=g)).argmax(1)
    records = [gda.step(x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]) for i in range(steps)]
    return records, model.state_dict(), gda


@pytest.fixture
def aot_eager(monkeypatch):
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function: compile(function, backend="aot_eager"))


@pytest.mark.parametrize(
    ("schedule", "restarts", "levels"),
    [
        ("linear", True, {"target_density": {"fc1": 0.3, "fc2": 0.5}}),  # levels move every step
        ("fixed", False, {"target_density": 0.3, "penalty": {"fc2": 0.1}}),
    ],
)
def test_a_compiled_step_trains_like_the_eager_one(aot_eager, schedule, restarts, levels):
    compiled, compiled_state, gda = _run("step", schedule=schedule, restarts=restarts, **levels)
    assert gda._compiled_step._lagrangian.compiled
    torch._dynamo.reset()
    eager, eager_state, _ = _run(False, schedule=schedule, restarts=restarts, **levels)
    assert [r.loss for r in compiled] == pytest.approx([r.loss for r in eager], rel=1e-5)
    assert [r.levels for r in compiled] == [r.levels for r in eager]
    for a, b in zip(compiled, eager):
        assert a.multipliers == pytest.approx(b.multipliers, rel=1e-5, abs=1e-7)
    assert all(torch.allclose(compiled_state[k], eager_state[k], atol=1e-6) for k in eager_state)


@pytest.mark.parametrize("when", ["building", "calling"])
def test_a_compiler_that_fails_leaves_the_step_eager_with_a_warning(monkeypatch, when):
    eager, eager_state, _ = _run(False)

    def broken(function):
        if when == "building":
            raise RuntimeError("no C++ compiler")

        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    message = r"torch.compile failed \(RuntimeError: no C\+\+ compiler\); GDA runs .* eagerly"
    with pytest.warns(UserWarning, match=message) as record:
        compiled, compiled_state, gda = _run("step")
    assert len(record) == 1  # once, for the run
    assert record[0].filename == __file__  # where the step was called
    assert not gda._compiled_step._lagrangian.compiled
    assert [r.loss for r in compiled] == [r.loss for r in eager]
    assert all(torch.equal(compiled_state[k], eager_state[k]) for k in eager_state)


def test_compile_names_the_valid_choices():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.4)
    with pytest.raises(ValueError, match=r"compile must be False .*, True .* or 'step' .*got 'full'"):
        GDA(problem, compile="full")
    with pytest.raises(ValueError, match="alternating=True use compile=True"):
        GDA(problem, compile="step", alternating=True)


def test_the_levels_view_is_rebuilt_only_when_a_level_moves():
    _, _, gda = _run(False, steps=2, schedule="fixed")
    problem = gda.problem
    view = problem.levels
    gda.step(torch.randn(8, 10), torch.zeros(8, dtype=torch.long))
    assert problem.levels is view  # a fixed schedule: the same view every step
    gda.schedule.hold({"model": 0.2})
    assert problem.levels["model"] == 0.2 and problem.stacking.level_tensor.tolist() == [pytest.approx(0.2)]
    step = gda.step(torch.randn(8, 10), torch.zeros(8, dtype=torch.long))
    assert step.violations["model"] == pytest.approx(step.density - 0.2, abs=1e-6)


def test_the_compiled_region_backpropagates_the_lagrangian_alone(aot_eager):
    # The logged values leave the region detached: differentiable outputs would make its
    # compiled backward build a zero gradient for each of them at every step.
    _, _, gda = _run("step", steps=2)
    assert gda._compiled_step._lagrangian.compiled
    state = gda.problem.last_state
    logged = [state.loss, *state.misc["densities"].values(), state.misc["layer_densities"]]
    logged += [constraint.violation for constraint in state.observed_constraints.values()]
    assert logged and not any(value.requires_grad for value in logged)
