import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GDA, SparsityProblem, mlp, sparsify
from ctrlsparse.problem.gda import GDAStep
from ctrlsparse.problem.schedules import TargetSchedule

# The paper's dual mechanics, without the defaults' ramp, horizon and feasibility phase.
PAPER = {
    "dual_optimizer": "sgd",
    "schedule": TargetSchedule("fixed"),
    "total_steps": 10_000,
    "feasibility": False,
}


def _toy(n=512, seed=0):
    """3 classes from a random linear teacher on all 10 features: every gate has a use."""
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    teacher = torch.randn(10, 3, generator=torch.Generator().manual_seed(123))
    return x, (x @ teacher).argmax(1)


def _setup(target=None, penalty=None, restarts=False, dual_lr=0.5, gate_lr=0.05, gates="hard_concrete"):
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper", gates=gates)
    problem = SparsityProblem(model, F.cross_entropy, target_density=target, penalty=penalty)
    gates = [group.gate.parameter for group in problem.groups]
    weights = [p for p in model.parameters() if all(p is not g for g in gates)]
    primal = torch.optim.Adam([{"params": weights}, {"params": gates, "lr": gate_lr}], lr=1e-2)
    return problem, GDA(problem, primal, dual_lr=dual_lr, dual_restarts=restarts, **PAPER)


def _train(gda, steps, seed=0):
    x, y = _toy(seed=seed)
    g = torch.Generator().manual_seed(seed)
    step = None
    for _ in range(steps):
        index = torch.randint(0, len(y), (64,), generator=g)
        step = gda.step(x[index], y[index])
    return step


def _lam(problem, name="model") -> float:
    """The multiplier now (a step's record holds the one its Lagrangian used, before its update)."""
    return float(problem.multiplier(name))


def test_step_returns_named_record():
    _, gda = _setup(target={"fc1": 0.5, "fc2": 0.4})
    step = _train(gda, 1)
    assert isinstance(step, GDAStep)
    assert set(step.densities) == {"fc1", "fc2"} and set(step.multipliers) == {"fc1", "fc2"}
    assert step.violations["fc1"] == pytest.approx(step.densities["fc1"] - 0.5, abs=1e-6)


def test_penalized_multipliers_never_change():
    problem, gda = _setup(penalty={"model": 0.3})
    for _ in range(3):
        step = _train(gda, 20)
        assert step.multipliers == {"model": pytest.approx(0.3)}
    assert float(problem.model.fc1.input_gate.gate.log_alpha.grad.abs().sum()) > 0  # the gates did learn


def test_mixed_penalty_and_target():
    _, gda = _setup(target={"fc1": 0.5}, penalty={"fc2": 0.2})
    step = _train(gda, 30)
    assert step.multipliers["fc2"] == pytest.approx(0.2)
    assert step.multipliers["fc1"] > 0  # initial density ~0.83 > 0.5: the multiplier rose


def test_dual_step_is_sgd_ascent_on_the_violation():
    problem, gda = _setup(target=0.5, dual_lr=0.1)
    step = _train(gda, 1)
    # lambda_1 = [0 + 0.1 * (density_0 - 0.5)]_+
    assert step.multipliers["model"] == 0.0  # the record holds the multiplier of this step's Lagrangian
    assert _lam(problem) == pytest.approx(max(0.0, 0.1 * step.violations["model"]), abs=1e-6)


def test_dual_restarts_reset_satisfied_constraints_to_exactly_zero():
    problem, gda = _setup(target={"fc1": 0.99, "fc2": 0.05}, restarts=True, dual_lr=1.0)
    for _ in range(5):
        step = _train(gda, 1)
        assert step.violations["fc1"] <= 0 and _lam(problem, "fc1") == 0.0  # satisfied from the start
        assert step.violations["fc2"] > 0 and _lam(problem, "fc2") > 0


def test_without_restarts_a_satisfied_multiplier_decays_gradually():
    problem, gda = _setup(target=0.99, dual_lr=0.01)
    with torch.no_grad():
        problem.multiplier("model").fill_(1.0)
    step = _train(gda, 1)
    assert step.multipliers["model"] == 1.0 and 0.99 < _lam(problem) < 1.0


@pytest.mark.parametrize("target", [0.4, {"fc1": 0.3, "fc2": 0.6}])
def test_constrained_run_lands_within_001_of_every_target(target):
    _, gda = _setup(target=target, restarts=True, dual_lr=0.2, gate_lr=5e-3)
    step = _train(gda, 1000)
    targets = target if isinstance(target, dict) else {"model": target}
    for name, eps in targets.items():
        final = step.density if name == "model" else step.densities[name]
        assert abs(final - eps) <= 0.01, (name, final, eps)


def test_arm_gates_learn_from_the_loss_through_the_estimator():
    problem, gda = _setup(penalty={"model": 0.0}, gates="arm")  # no density gradient at all
    x, y = _toy()
    step = gda.step(x[:64], y[:64])
    grads = [group.gate.phi.grad for group in problem.groups]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    # The estimator term adds nothing to the reported loss: it is the loss at the main sample.
    assert step.loss == pytest.approx(float(problem.last_state.misc["loss"]))


def test_arm_constrained_run_closes_gates_down_to_the_target():
    # ARM's loss-gradient estimate is much noisier than the hard concrete's, and on this
    # toy the density hovers 0.02-0.05 above the target instead of within 0.01.
    _, gda = _setup(target=0.25, restarts=True, dual_lr=0.2, gate_lr=5e-3, gates="arm")
    step = _train(gda, 1000)
    assert 0.25 - 0.01 <= step.density <= 0.25 + 0.06, step.density  # from 0.5 at the start


def test_primal_optimizer_must_include_gates():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.5)
    weights_only = torch.optim.Adam(
        [model.fc1.parametrizations.weight.original, model.fc2.parametrizations.weight.original]
    )
    with pytest.raises(ValueError, match="input gates of 'fc1'"):
        GDA(problem, weights_only)


def test_default_primal_optimizer_and_bad_dual_lr():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.5)
    assert isinstance(GDA(problem).primal_optimizer, torch.optim.Adam)
    with pytest.raises(ValueError, match="dual_lr"):
        GDA(problem, dual_lr=0.0)


def test_nupi_without_proportional_gain_is_sgd_ascent():
    trajectories = []
    for optimizer in ("sgd", "nupi"):
        torch.manual_seed(0)
        model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
        problem = SparsityProblem(model, F.cross_entropy, target_density={"fc1": 0.3, "fc2": 0.4})
        gda = GDA(problem, torch.optim.SGD(model.parameters(), lr=0.1), dual_lr=0.5, dual_optimizer=optimizer,
                  dual_kp=0.0, dual_restarts=False)  # fmt: skip
        trajectories.append([_train(gda, 1, seed=s).multipliers for s in range(5)])
    assert trajectories[0] == trajectories[1]


def test_nupi_proportional_term_reacts_to_changes_in_violation():
    _, sgd = _setup(target=0.3, dual_lr=0.1)
    torch.manual_seed(0)
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.3)
    nupi = GDA(
        problem,
        torch.optim.Adam(model.parameters(), lr=0.05),
        dual_lr=0.1,
        dual_optimizer="nupi",
        dual_kp=5.0,
    )
    steps, lams = [], []
    for s in range(3):
        steps.append(_train(nupi, 1, seed=s))
        lams.append(_lam(problem))
    assert lams[0] == pytest.approx(0.1 * steps[0].violations["model"], rel=1e-5)
    assert lams[1] != pytest.approx(lams[0] + 0.1 * steps[1].violations["model"])


def test_alternating_dual_step_sees_the_new_densities():
    problem, gda = _setup(target=0.3, dual_lr=1.0)
    gda = GDA(problem, gda.primal_optimizer, dual_lr=1.0, alternating=True, dual_restarts=False, **PAPER)
    before = float(problem.expected_densities()[0].detach())
    step = _train(gda, 1)
    after = float(problem.expected_densities()[0].detach())
    assert step.density == pytest.approx(before, abs=1e-6)  # the record is the state before the step
    assert _lam(problem) == pytest.approx(after - 0.3, abs=1e-5)  # lambda = 0 + 1.0 * violation(x_{t+1})


def test_augmented_lagrangian_adds_the_quadratic_term():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper").eval()
    x, y = _toy(8)
    plain = SparsityProblem(model, F.cross_entropy, target_density=0.3)
    augmented = SparsityProblem(model, F.cross_entropy, target_density=0.3, augmented_lagrangian=4.0)
    density = float(plain.expected_densities()[0].detach())
    lag = plain.compute_cmp_state(x, y).compute_primal_lagrangian().lagrangian
    aug = augmented.compute_cmp_state(x, y).compute_primal_lagrangian().lagrangian
    assert float((aug - lag).detach()) == pytest.approx(0.5 * 4.0 * (density - 0.3) ** 2, rel=1e-4)


def test_augmented_lagrangian_with_per_layer_targets_adds_each_targets_term():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper").eval()
    x, y = _toy(8)
    targets = {"fc1": 0.3, "fc2": 0.9}
    plain = SparsityProblem(model, F.cross_entropy, target_density=targets)
    augmented = SparsityProblem(model, F.cross_entropy, target_density=targets, augmented_lagrangian=4.0)
    _, densities = plain.expected_densities()
    violations = {n: float(densities[n].detach()) - eps for n, eps in targets.items()}
    assert violations["fc1"] > 0 > violations["fc2"]  # only the violated target adds its square
    lag = plain.compute_cmp_state(x, y).compute_primal_lagrangian().lagrangian
    aug = augmented.compute_cmp_state(x, y).compute_primal_lagrangian().lagrangian
    assert float((aug - lag).detach()) == pytest.approx(0.5 * 4.0 * violations["fc1"] ** 2, rel=1e-4)
    # The per-name layout of earlier ctrlsparse (one cooper constraint per name) loads too.
    one = torch.tensor
    old = {
        "multipliers": {"fc1": {"weight": one([0.25])}, "fc2": {"weight": one([0.5])}},
        "penalty_coefficients": {"fc1": {"value": one([2.0])}, "fc2": {"value": one([3.0])}},
    }
    augmented.load_state_dict(old)
    assert {n: float(v) for n, v in augmented.multiplier_values().items()} == {"fc1": 0.25, "fc2": 0.5}
    fresh = SparsityProblem(model, F.cross_entropy, target_density=targets, augmented_lagrangian=4.0)
    fresh.load_state_dict(augmented.state_dict())
    assert {n: float(v) for n, v in fresh.multiplier_values().items()} == {"fc1": 0.25, "fc2": 0.5}
    (coefficient,) = [c.penalty_coefficient for c in fresh.constraints()]
    assert coefficient().tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="'fc3'; this problem's constraints are fc1, fc2"):
        fresh.load_state_dict({"multipliers": {"fc3": {"weight": torch.tensor([1.0])}}})


def _levels_under(schedule: TargetSchedule) -> tuple[float, list[float]]:
    """fc1's initial density, and its level at each of 9 steps (3 epochs of 3 steps) under ``schedule``."""
    problem, gda = _setup(target={"fc1": 0.2})
    gda = GDA(problem, gda.primal_optimizer, dual_lr=0.1, schedule=schedule, steps_per_epoch=3, total_steps=9,
              feasibility=False)  # fmt: skip
    initial = float(problem.expected_densities()[1]["fc1"].detach())
    return initial, [_train(gda, 1).levels["fc1"] for _ in range(9)]


def test_linear_schedule_ramps_the_level_every_step():
    initial, levels = _levels_under(TargetSchedule("linear", epochs=2))
    assert levels[:7] == [pytest.approx(initial + (0.2 - initial) * t / 6) for t in range(7)]
    assert levels[6:] == [pytest.approx(0.2)] * 3


def test_geometric_schedule_moves_levels_at_epoch_boundaries():
    initial, levels = _levels_under(TargetSchedule("geometric", factor=0.5))
    assert levels[:3] == [pytest.approx(initial)] * 3
    assert levels[3:6] == [pytest.approx(max(0.2, initial / 2))] * 3


def test_bad_dual_optimizer():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    with pytest.raises(ValueError, match="valid dual optimizers: sgd, nupi, adam"):
        GDA(SparsityProblem(model, F.cross_entropy, target_density=0.5), dual_optimizer="rmsprop")


def test_arm_estimator_term_survives_weight_decay():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper", gates="arm")
    problem = SparsityProblem(model, F.cross_entropy, penalty=0.0, weight_decay=1e-2)
    x, y = _toy()
    state = problem.compute_cmp_state(x[:64], y[:64])
    phi = model.fc1.input_gate.gate.phi
    (total,) = torch.autograd.grad(state.loss, phi)
    (decay_only,) = torch.autograd.grad(0.5 * 1e-2 * problem.accounting.expected_l2(), phi)
    assert not torch.allclose(total, decay_only)  # the ARM estimate is in the objective too


def _compiled(compile, steps=6):
    torch.manual_seed(0)
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.4)
    gda = GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-2), dual_lr=0.5, compile=compile, **PAPER)
    records = [_train(gda, 1, seed=s) for s in range(steps)]
    return records, model.state_dict(), problem


def test_a_compiled_forward_trains_like_the_eager_one(monkeypatch):
    eager, eager_state, _ = _compiled(False)
    # Dynamo's tracing (parametrizations, the sampling pre-hook) without the slow C++ backend.
    eager_backend = torch.compile

    monkeypatch.setattr(torch, "compile", lambda model: eager_backend(model, backend="eager"))
    compiled, compiled_state, problem = _compiled(True)
    assert type(problem.forward_model).__name__ == "OptimizedModule"
    assert [r.loss for r in compiled] == pytest.approx([r.loss for r in eager], rel=1e-5)
    assert all(torch.allclose(compiled_state[k], eager_state[k], atol=1e-6) for k in eager_state)


def test_a_compiler_that_fails_leaves_gda_eager_with_a_warning(monkeypatch):
    eager, eager_state, _ = _compiled(False)

    def broken(model):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    message = r"torch.compile failed \(RuntimeError: no C\+\+ compiler\); GDA goes on eagerly"
    with pytest.warns(UserWarning, match=message) as record:
        compiled, compiled_state, problem = _compiled(True)
    assert record[0].filename.endswith("test_gda.py")  # where the step was called (via _train)
    assert problem.forward_model is None  # back to the model itself, from the first step on
    assert [r.loss for r in compiled] == [r.loss for r in eager]
    assert all(torch.equal(compiled_state[k], eager_state[k]) for k in eager_state)


def test_without_the_runs_length_the_warning_names_the_callers_line():
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, target_density=0.5)
    gda = GDA(problem, torch.optim.Adam(model.parameters()), dual_lr=1e-3)
    with pytest.warns(UserWarning, match="does not know the length of training") as record:
        gda.step(*_toy(8))
    assert record[0].filename == __file__


@pytest.mark.parametrize(
    ("saved", "levels"),
    [
        ("gda_state_per_name.pt", {"target_density": {"model": 0.3, "fc1": 0.4}, "penalty": {"fc2": 0.2}}),
        # One target and one penalty: as many names as the stacked layout has cooper constraints.
        ("gda_state_per_name_mixed.pt", {"target_density": {"fc2": 0.3}, "penalty": {"fc1": 0.2}}),
    ],
)
def test_a_state_saved_with_one_cooper_constraint_per_name_continues_the_same_run(saved, levels):
    """``tests/data/gda_state_per_name*.pt`` hold ``GDA.state_dict()`` after 5 steps, saved by
    ctrlsparse 61897a5 (one cooper constraint, and one dual Adam state, per name), with the
    6th step's numbers. Built as below with ``torch.manual_seed(0)`` before ``sparsify``, and
    ``torch.manual_seed(7)`` before the 6th step."""
    from pathlib import Path

    saved = torch.load(Path(__file__).parents[1] / "data" / saved, weights_only=True)
    names = set(levels["target_density"]) | set(levels["penalty"])
    assert set(saved["gda"]["multipliers"]["multipliers"]) == names  # the old layout
    torch.manual_seed(0)
    model = sparsify(mlp(input_size=10, hidden=(16,), num_classes=3), "paper")
    problem = SparsityProblem(model, F.cross_entropy, **levels)
    gda = GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-2), total_steps=100,
              schedule=TargetSchedule("fixed"), feasibility=False)  # fmt: skip
    gda.load_state_dict(saved["gda"])
    model.load_state_dict(saved["model"])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(7)
    step = gda.step(x, y)
    expected = saved["expected"]
    assert step.loss == pytest.approx(expected["loss"], abs=1e-6)
    assert step.multipliers == pytest.approx(expected["multipliers_before"], abs=1e-6)
    after = {name: float(value) for name, value in problem.multiplier_values().items()}
    assert after == pytest.approx(expected["multipliers_after"], abs=1e-6)  # the dual Adam state carried over
    target = next(iter(levels["target_density"]))
    assert after[target] > step.multipliers[target]


def test_state_dict_round_trips_the_stacked_multipliers():
    problem, gda = _setup(target={"fc1": 0.3, "fc2": 0.2}, penalty=None, dual_lr=0.5)
    _train(gda, 5)
    state = gda.state_dict()
    fresh_problem, fresh = _setup(target={"fc1": 0.3, "fc2": 0.2}, dual_lr=0.5)
    fresh.load_state_dict(state)
    assert {n: float(v) for n, v in fresh_problem.multiplier_values().items()} == {
        n: float(v) for n, v in problem.multiplier_values().items()
    }
    assert fresh_problem.multiplier("fc1") > 0


def test_an_unknown_constraint_name_lists_the_constraints():
    problem, _ = _setup(target={"fc1": 0.3})
    with pytest.raises(KeyError, match="no constraint named 'fc3'; constraints: fc1"):
        problem.multiplier("fc3")
