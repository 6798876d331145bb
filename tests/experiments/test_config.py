from pathlib import Path

import pytest

from ctrlsparse.experiments.config import ProblemFileError, load_problem, parse_problem

PROBLEMS = Path(__file__).parents[2] / "problems"


@pytest.mark.parametrize("path", sorted(PROBLEMS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_problem_files_parse(path):
    config = load_problem(path)
    assert config.name == path.stem


def test_defaults_and_round_trip():
    config = parse_problem({"name": "x", "sparsity": {"target_density": [0.5, 0.3]}})
    assert config.optim.primal == "adam" and config.sparsity.target_density == [0.5, 0.3]
    assert parse_problem(config.to_dict()) == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "optimizer": {}}, "unknown key 'optimizer'; valid top-level keys"),
        ({"name": "x", "train": {"epoch": 3}}, r"unknown key 'epoch' in \[train\]; valid keys: epochs"),
        ({"name": "x", "train": {"epochs": "3"}}, r"\[train\] epochs must be int, got '3'"),
        ({"name": "x", "train": {"epochs": 2.5}}, "epochs must be int"),
        ({"name": "x", "optim": {"dual_restarts": 1}}, "dual_restarts must be bool"),
        ({"name": "x", "train": {"epochs": True}}, "epochs must be int"),
        ({"name": "x", "data": {"name": "cifar"}}, "valid choices: digits"),
        ({"name": "x", "model": {"name": "vgg"}}, "valid choices: mlp, lenet5"),
        ({"name": "x", "model": {"structure": "channel"}}, "valid choices: neuron, paper, weight"),
        ({"name": "x", "model": {"drop_rate": 1.0}}, r"drop_rate must lie in \(0, 1\)"),
        ({"name": "x", "optim": {"dual_lr": 0}}, "dual_lr must be > 0"),
        ({"name": "x", "train": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"name": "x", "model": {"hidden": [300, -1]}}, "hidden must be a list of positive integers"),
        (
            {"name": "x", "model": {"round_to": 0}},
            r"\[model\] round_to must be an integer >= 1 \(e.g. 8\), got 0",
        ),
        ({"name": "x", "model": {"round_to": 8.0}}, "round_to must be int, got 8.0"),
        ({"name": "x", "model": {"round_to": 8, "structure": "weight"}}, 'structure = "weight" has one gate'),
        (
            {"name": "x", "model": {"block_gates": True}},
            r"block_gates = true .* needs round_to > 1 \(got 1\)",
        ),
        (
            {"name": "x", "model": {"block_gates": True, "round_to": 8, "gates": "arm"}},
            r"block_gates = true .*gates = \"hard_concrete\" \(got 'arm'\)",
        ),
        ({"name": "x", "train": {"compile": "graph"}}, r"compile = 'graph' is not valid; valid"),
        ({"name": "x", "data": "digits"}, r"\[data\] must be a table"),
        ({"sparsity": {}}, "name"),
    ],
)
def test_bad_problem_descriptions(data, message):
    with pytest.raises(ProblemFileError, match=message):
        parse_problem(data, "p.toml")


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ProblemFileError, match="broken.toml: not valid TOML"):
        load_problem(path)


def test_missing_file():
    with pytest.raises(ProblemFileError, match="no such problem file"):
        load_problem("nope.toml")


def test_default_schedule_ramps_the_target_over_a_third_of_training():
    from ctrlsparse.experiments.build import build
    from ctrlsparse.problem.schedules import ScheduleKind

    config = parse_problem({"name": "x", "sparsity": {"target_density": 0.3}, "train": {"epochs": 9}})
    assert config.schedule.kind == "linear" and config.schedule.epochs is None
    trainer = build(config).trainer
    assert trainer.schedule.kind is ScheduleKind.LINEAR and trainer._ramp_steps == trainer.total_steps // 3
    explicit = parse_problem(
        {"name": "x", "sparsity": {"target_density": 0.3}, "schedule": {"epochs": 5}, "train": {"epochs": 9}}
    )
    trainer = build(explicit).trainer
    assert trainer._ramp_steps == 5 * trainer.steps_per_epoch
    fixed = parse_problem({"name": "x", "sparsity": {"target_density": 0.3}, "schedule": {"kind": "fixed"}})
    assert build(fixed).trainer.schedule.kind is ScheduleKind.FIXED


@pytest.mark.parametrize(
    ("key", "bad", "text"),
    [("target_density", 1.5, "(0, 1]"), ("penalty", -0.1, ">= 0"), ("target_macs", 0.0, "(0, 1]")],
)
def test_a_bad_level_is_refused_with_the_same_range_by_the_file_and_the_python_api(key, bad, text):
    """One range per setting (ctrlsparse.choices): a problem file and SparsityProblem agree."""
    import torch
    import torch.nn.functional as F

    import ctrlsparse as cs

    with pytest.raises(ProblemFileError, match=rf"\[sparsity\] {key} values must .*{text.replace('(', '.')}"):
        parse_problem({"name": "t", "sparsity": {key: bad}})
    net = cs.sparsify(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                      example_input=torch.zeros(1, 4))  # fmt: skip
    with pytest.raises(
        ValueError, match=rf"{key} for '(model|macs)' must .*{text.replace('(', '.')}, got {bad}"
    ):
        cs.SparsityProblem(net, F.cross_entropy, example_input=torch.zeros(1, 4), **{key: bad})


@pytest.mark.parametrize("key, value", [("target_params", 0.5), ("target_shape", {"heads": 2})])
def test_parameter_and_shape_targets_need_gates(key, value):
    with pytest.raises(ProblemFileError, match=rf"\[sparsity\] {key} needs method = 'l0'"):
        parse_problem({"name": "t", "sparsity": {"method": "magnitude", "target_density": 0.5, key: value}})
    assert getattr(parse_problem({"name": "t", "sparsity": {key: value}}).sparsity, key) == value
