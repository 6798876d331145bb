"""The CIFAR problem files build and train one step (at batch 2, on generated archives)."""

from pathlib import Path

import pytest
import torch

import ctrlsparse as cs
from ctrlsparse.data.cifar import CIFAR10, CIFAR100
from ctrlsparse.experiments.build import build
from ctrlsparse.experiments.config import load_problem
from tests.helpers import write_cifar_archive

PROBLEMS = Path(__file__).parents[2] / "problems"


@pytest.mark.parametrize(
    "name, archive",
    [("cifar10_resnet18", CIFAR10), ("cifar10_wrn28_10", CIFAR10), ("cifar100_wrn28_10", CIFAR100)],
)
def test_reference_settings_build_and_step(tmp_path, monkeypatch, name, archive):
    monkeypatch.setenv("CTRLSPARSE_DATA", str(tmp_path))
    write_cifar_archive(tmp_path / archive.name / archive.file, archive)
    config = load_problem(PROBLEMS / f"{name}.toml")
    assert (config.optim.primal, config.optim.primal_momentum, config.optim.primal_weight_decay) == (
        "sgd",
        0.9,
        5e-4,
    )
    assert (config.optim.lr_milestones, config.optim.lr_gamma, config.train.epochs) == (
        [60, 120, 160],
        0.2,
        200,
    )
    config.train.batch_size = 2
    experiment = build(config)
    model = experiment.trainer.model
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    roots = {g.name for g in cs.gate_groups(model)}
    assert roots and all(root.endswith(".conv1") for root in roots)
    x, y = next(iter(experiment.train))
    assert x.shape == (2, 3, 32, 32)
    step = experiment.trainer.step(x, y)
    assert step.loss == step.loss  # finite, not NaN
    assert set(step.densities) >= {f"{root}" for root in roots}
