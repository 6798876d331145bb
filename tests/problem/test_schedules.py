import pytest
import torch

from ctrlsparse.problem.schedules import TargetSchedule


def test_fixed_is_the_target_from_the_start():
    assert [TargetSchedule("fixed").level(e, 0.3, 0.8) for e in (0, 5)] == [0.3, 0.3]


def test_linear_ramp_reaches_target_after_its_epochs():
    s = TargetSchedule("linear", epochs=5)
    levels = [s.level(e, target=0.3, initial=0.8) for e in range(8)]
    assert levels == pytest.approx([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.3, 0.3])


def test_geometric_shrinks_by_factor_and_stops_at_target():
    s = TargetSchedule("geometric", factor=0.5)
    assert [s.level(e, 0.1, 0.8) for e in range(5)] == pytest.approx([0.8, 0.4, 0.2, 0.1, 0.1])


def test_dynamic_tightens_only_when_the_level_is_met():
    s = TargetSchedule("dynamic", factor=0.5)
    level = s.level(0, 0.1, 0.8)
    assert level == pytest.approx(0.4)
    level = s.level(1, 0.1, 0.8, previous=level, density=0.45)  # not met: stays
    assert level == pytest.approx(0.4)
    level = s.level(2, 0.1, 0.8, previous=level, density=0.39)  # met: halves
    assert level == pytest.approx(0.2)
    level = s.level(3, 0.1, 0.8, previous=level, density=0.2)
    assert level == pytest.approx(0.1)
    assert s.level(4, 0.1, 0.8, previous=level, density=0.05) == pytest.approx(0.1)  # never below ε


def test_initial_below_target_starts_at_target():
    assert TargetSchedule("linear", epochs=2).level(0, 0.5, 0.3) == 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [({"kind": "cosine"}, "valid schedules"), ({"factor": 1.0}, "factor"), ({"epochs": 0}, "epochs")],
)
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TargetSchedule(**kwargs)


def test_only_the_schedule_writes_the_levels():
    """The problem's levels are a read-only view of its GDA's schedule: a ramp, the feasibility
    phase and a resume all go through the schedule, and nothing else can write them."""
    import torch.nn.functional as F

    import ctrlsparse as cs

    torch.manual_seed(0)
    net = cs.sparsify(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
                      example_input=torch.zeros(1, 6))  # fmt: skip
    problem = cs.SparsityProblem(net, F.cross_entropy, target_density=0.4)
    assert dict(problem.levels) == {"model": 0.4}  # at rest: ε
    gda = cs.GDA(problem, total_steps=20)
    x, y = torch.randn(8, 6), torch.randint(0, 2, (8,))
    for _ in range(3):
        gda.step(x, y)
    assert problem.levels["model"] > 0.4 and problem.levels == gda.schedule.levels
    with pytest.raises(TypeError):
        problem.levels["model"] = 0.1
    gda.decide()
    assert dict(problem.levels) == {"model": 0.4} == gda.schedule.levels
    state = gda.state_dict()
    fresh = cs.GDA(cs.SparsityProblem(net, F.cross_entropy, target_density=0.4), total_steps=20)
    fresh.load_state_dict(state)
    assert fresh.problem.levels == problem.levels and fresh.schedule.levels is not gda.schedule.levels
