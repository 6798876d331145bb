"""Problem files to trainers: user models by import path, structure, optimizer settings."""

import re
import sys

import pytest

from ctrlsparse.experiments.build import build, run_problem
from ctrlsparse.experiments.config import ProblemFileError, load_problem, parse_problem
from ctrlsparse.models import ModelImportError

USER_MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return {"logits": self.body(x)}


def tiny(width=16):
    return Net(width)


def broken():
    return "not a module"
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    (tmp_path / "user_broken.py").write_text("import does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("user_models", "user_broken"):
        sys.modules.pop(name, None)


def _config(model, **sections):
    return parse_problem(
        {
            "name": "user",
            "data": {"name": "digits"},
            "model": model,
            "sparsity": {"target_density": 0.5},
            "train": {"epochs": 1, "batch_size": 64},
            **sections,
        }
    )


def test_a_model_by_import_path_with_kwargs_and_an_output_attribute(user_module, tmp_path):
    config = _config({"factory": "user_models:tiny", "kwargs": {"width": 12}, "output": "logits"})
    experiment = build(config)
    model = experiment.trainer.model
    assert model.body[1].out_features == 12
    assert [(g.name, g.num_units) for g in __import__("ctrlsparse").gate_groups(model)] == [
        ("body.1", 64),
        ("body.1", 12),
    ]
    summary = run_problem(config, tmp_path / "run", progress=False)
    assert 0.0 <= summary.test_error < 0.9


@pytest.mark.parametrize(
    "factory, error, message",
    [
        ("user_models.tiny", ProblemFileError, "must read 'package.module:function'"),
        ("user_broken:f", ModelImportError, "importing 'user_broken' failed: ModuleNotFoundError"),
        ("user_models:nothing", ModelImportError, "'user_models' has no attribute 'nothing'"),
        ("user_models:broken", ValueError, "returned str, not an nn.Module"),
    ],
)
def test_import_path_errors_name_the_path(user_module, factory, error, message):
    with pytest.raises(error, match=message):
        build(_config({"factory": factory}))


PROBLEM_FILE = """
name = "next-door"
[data]
name = "digits"
[model]
factory = "{module}:tiny"
kwargs = {{ width = 12 }}
output = "logits"
{extra}
[sparsity]
target_density = 0.5
"""


@pytest.mark.parametrize("folder, extra", [("problems", ""), ("problems", 'factory_dir = "../lib"')])
def test_a_factory_next_to_the_problem_file_imports_without_pythonpath(tmp_path, monkeypatch, folder, extra):
    module = f"next_door_{len(extra)}"  # a fresh module name per case: sys.modules keeps imports
    where = tmp_path / ("lib" if extra else folder)
    where.mkdir(exist_ok=True)
    (where / f"{module}.py").write_text(USER_MODULE)
    (tmp_path / folder).mkdir(exist_ok=True)
    problem = tmp_path / folder / "mine.toml"
    problem.write_text(PROBLEM_FILE.format(module=module, extra=extra))
    monkeypatch.chdir(tmp_path.parent)  # neither folder is the working directory nor on sys.path
    try:
        config = load_problem(problem)
        assert config.model.factory_dir == str(where.resolve())
        assert build(config).trainer.model.body[1].out_features == 12
        assert str(where.resolve()) not in sys.path  # the folder is searched for the import only
    finally:
        sys.modules.pop(module, None)


def test_a_factory_that_does_not_import_names_the_folder_searched(tmp_path):
    problem = tmp_path / "mine.toml"
    problem.write_text(PROBLEM_FILE.format(module="not_here_at_all", extra=""))
    folder = re.escape(str(tmp_path.resolve()))
    message = rf"importing 'not_here_at_all' failed: .*searched {folder} \(the problem file's folder\)"
    with pytest.raises(ModelImportError, match=message):
        build(load_problem(problem))


def test_include_selects_unit_roots_and_heads_flag_reaches_sparsify():
    config = _config({"name": "mlp", "hidden": [20, 10], "structure": "neuron", "include": ["fc2"]})
    groups = __import__("ctrlsparse").gate_groups(build(config).trainer.model)
    assert [(g.name, g.kind) for g in groups] == [("fc2", "output")]


def test_sgd_momentum_weight_decay_on_weights_only_and_multistep_lr():
    config = _config(
        {"name": "mlp", "hidden": [20, 10]},
        optim={
            "primal": "sgd",
            "primal_lr": 0.1,
            "primal_momentum": 0.8,
            "primal_weight_decay": 5e-4,
            "lr_milestones": [2, 4],
            "lr_gamma": 0.2,
        },
    )
    experiment = build(config)
    weights, gates = experiment.trainer.primal_optimizer.param_groups
    assert weights["momentum"] == 0.8 and weights["weight_decay"] == 5e-4 and gates["weight_decay"] == 0.0
    lrs = []
    for _ in range(5):
        lrs.append(weights["lr"])
        experiment.trainer.primal_optimizer.step()  # no gradients: only keeps the scheduler's order
        experiment.lr_scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004])


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("optim", {"lr_milestones": [4, 2]}, "lr_milestones must be increasing positive epochs"),
        ("optim", {"primal_momentum": 1.0}, "0 <= primal_momentum < 1"),
        ("model", {"factory": "x"}, "must read 'package.module:function'"),
        ("model", {"name": "vgg"}, "name = 'vgg' is not valid; valid choices: mlp, lenet5, fashion_resnet"),
        ("model", {"include": [1]}, "include must be a list of module-name patterns"),
        ("data", {"name": "cifar"}, "name = 'cifar' is not valid; valid choices: digits"),
        ("data", {"name": "synthetic", "shape": [0, 4]}, "shape must be a list of positive integers"),
        ("data", {"augment": "mixup"}, "valid choices: none, crop_flip"),
    ],
)
def test_bad_new_keys(section, values, message):
    with pytest.raises(ProblemFileError, match=message):
        parse_problem({"name": "x", section: values}, "p.toml")


@pytest.mark.parametrize(
    "data, model",
    [
        ({"shape": [1, 16, 16], "num_classes": 3}, {"name": "lenet5", "structure": "neuron"}),
        ({"shape": [3, 16, 16], "augment": "crop_flip"}, {"name": "fashion_resnet"}),
    ],
)
def test_synthetic_data_runs_any_model(tmp_path, data, model):
    config = parse_problem(
        {
            "name": "synthetic",
            "data": {"name": "synthetic", "train_size": 64, "test_size": 32, **data},
            "model": model,
            "sparsity": {"target_density": 0.5},
            "train": {"epochs": 1, "batch_size": 32},
        }
    )
    summary = run_problem(config, tmp_path / "run", progress=False)
    assert summary.steps == 2 and summary.test_error is not None
