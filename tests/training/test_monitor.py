"""Progress and TensorBoard: what a user watches while fit trains."""

import pytest
import torch
import torch.nn.functional as F

from ctrlsparse import GDA, Batches, SparsityProblem, fit, mlp, read_metrics, sparsify


def _gda():
    torch.manual_seed(0)
    model = sparsify(mlp(input_size=6, hidden=(8,), num_classes=3), "paper")
    return GDA(SparsityProblem(model, F.cross_entropy, target_density={"fc1": 0.5, "model": 0.7}))


def _batches():
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    return Batches(x, x[:, :3].argmax(1), 16)


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_equal_the_metrics_records(tmp_path):
    pytest.importorskip("tensorboard")
    fit(_gda(), _batches(), 3, test_batches=_batches(), run_dir=tmp_path / "run", progress=False,
        tensorboard=tmp_path / "tb")  # fmt: skip
    scalars, records = _scalars(tmp_path / "tb"), read_metrics(tmp_path / "run")
    assert set(scalars) >= {"loss", "density/model", "density/fc1", "multiplier/fc1", "multiplier/model",
                            "violation/fc1", "level/fc1", "level/model", "test_error"}  # fmt: skip
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in records] == list(range(1, 13))
    for tag, key in [("loss", None), ("multiplier/fc1", "multipliers"), ("level/model", "levels")]:
        expected = [r["loss"] if key is None else r[key][tag.split("/")[1]] for r in records]
        assert [v for _, v in scalars[tag]] == pytest.approx(expected, rel=1e-6)
    assert [s for s, _ in scalars["test_error"]] == [4, 8, 12]  # each epoch's end


def test_a_missing_tensorboard_package_is_a_clear_error_before_training(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match=r"pip install 'ctrlsparse\[tensorboard\]'"):
        fit(_gda(), _batches(), 1, run_dir=tmp_path / "run", progress=False, tensorboard=tmp_path / "tb")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_progress_writes_about_ten_lines_a_run_to_a_log_file(capsys):
    fit(_gda(), _batches(), 30, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("epoch 30/30 loss")
    assert "density" in lines[0] and "fc1=" in lines[0] and "model=" in lines[0]


def test_progress_on_a_terminal_is_a_tqdm_bar_with_the_run_s_numbers(capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    fit(_gda(), _batches(), 2, progress=True)
    last = capsys.readouterr().err.split("\r")[-1]
    assert "epoch 2/2" in last and "8/8" in last and "density" in last and "fc1=" in last
