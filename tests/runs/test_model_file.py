"""cs.save / cs.load: a gated model and a purged one, saved and loaded back with equal outputs."""

import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.problem.feasibility import decide
from ctrlsparse.runs.model_file import ModelFileError
from tests.helpers import ResNet

X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _gated(seed=0, **options):
    torch.manual_seed(seed)
    return cs.sparsify(ResNet(), example_input=X, **options)


@pytest.mark.parametrize("decided", [False, True])
def test_a_gated_model_loads_into_a_fresh_sparsified_model_with_equal_outputs(tmp_path, decided):
    model = _gated()
    with torch.no_grad():  # some gates closed, so the state differs from a fresh model's
        for group in cs.gate_groups(model):
            group.gate.log_alpha.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(1))
    if decided:
        decide(cs.SparsityProblem(model, F.cross_entropy, target_density=0.5))
    path = cs.save(model, tmp_path / "gated.pt")
    loaded = cs.load(path, lambda: _gated(seed=1))  # other initial weights: all state comes from the file
    torch.testing.assert_close(loaded.eval()(X), model.eval()(X), rtol=0, atol=0)
    assert [g.decided is not None for g in cs.gate_groups(loaded)] == [decided] * len(cs.gate_groups(model))


def test_a_purged_model_saves_and_loads_as_a_plain_module(tmp_path):
    model = _gated()
    decide(cs.SparsityProblem(model, F.cross_entropy, target_density=0.5))
    small = cs.purge(model.eval(), X).eval()
    loaded = cs.load(cs.save(small, tmp_path / "purged.pt"))
    assert isinstance(loaded, torch.nn.Module) and not cs.gate_groups(loaded)
    torch.testing.assert_close(loaded(X), model(X), rtol=1e-5, atol=1e-5)
    assert loaded.stem.out_channels == small.stem.out_channels < 8  # the cut shapes came back


def test_loading_a_gated_model_names_what_the_factory_got_wrong(tmp_path):
    path = cs.save(_gated(), tmp_path / "gated.pt")
    with pytest.raises(ModelFileError, match="pass model_factory"):
        cs.load(path)
    with pytest.raises(ModelFileError, match=r"differ at .*Sparsify with the arguments used when saving"):
        cs.load(path, lambda: _gated(exclude=["b1.conv1"]))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a model file written by ctrlsparse.save"):
        cs.load(tmp_path / "other.pt")
