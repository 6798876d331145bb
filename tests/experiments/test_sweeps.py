from pathlib import Path

import pytest

from ctrlsparse.cli import main
from ctrlsparse.experiments.config import ProblemFileError
from ctrlsparse.experiments.sweeps import load_sweep, mean_ci, run_sweep, sweep_table

DIGITS = Path(__file__).parents[2] / "problems" / "digits_mlp.toml"


def _sweep_file(tmp_path, extra=""):
    path = tmp_path / "sweep.toml"
    path.write_text(
        f"""
name = "tiny"
seeds = [0, 1]
[overrides]
train = {{ epochs = 1, log_every = 5 }}
[[setting]]
label = "MLP, ε=0.5"
problem = "{DIGITS}"
target_density = 0.5
published = {{ density = 0.342, test_error = 0.0177 }}
[[setting]]
label = "MLP, λ"
problem = "{DIGITS}"
penalty = 0.4
{extra}
"""
    )
    return path


def test_mean_ci_matches_hand_computation():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-4)
    assert mean_ci([0.7]) == (0.7, 0.0)


def test_sweep_runs_once_and_resumes(tmp_path, capsys):
    sweep = load_sweep(_sweep_file(tmp_path))
    dirs = run_sweep(sweep, tmp_path / "out")
    assert [d.relative_to(tmp_path / "out").as_posix() for d in dirs] == [
        "mlp-0-5/seed0", "mlp-0-5/seed1", "mlp/seed0", "mlp/seed1",
    ]  # fmt: skip
    stamps = [(d / "summary.json").stat().st_mtime_ns for d in dirs]
    run_sweep(sweep, tmp_path / "out")  # everything finished: nothing re-run
    assert [(d / "summary.json").stat().st_mtime_ns for d in dirs] == stamps
    assert "4 runs done, 0 to go" in capsys.readouterr().out
    table = sweep_table(sweep, tmp_path / "out")
    assert "| MLP, ε=0.5 | 2 |" in table and "| 0.342 | 1.77 |" in table
    assert table.count("\n") == 4
    # A run killed after its last checkpoint resumes from it (same numbers), and a run
    # directory killed before its first checkpoint starts afresh instead of being refused.
    killed, early = dirs[0], dirs[1]
    summary = (killed / "summary.json").read_text()
    (killed / "summary.json").unlink()
    (killed / "model.pt").unlink()
    for path in early.iterdir():
        if path.name != "config.json":
            path.unlink()
    run_sweep(sweep, tmp_path / "out")
    assert "2 runs done, 2 to go" in capsys.readouterr().out
    strip = lambda text: [line for line in text.splitlines() if "train_seconds" not in line]  # noqa: E731
    assert strip((killed / "summary.json").read_text()) == strip(summary)
    assert (early / "summary.json").exists()


def test_overrides_and_seeds_reach_the_config(tmp_path):
    sweep = load_sweep(_sweep_file(tmp_path))
    config = sweep.config(sweep.settings[1], seed=7)
    assert config.train.epochs == 1 and config.train.seed == 7
    assert config.sparsity.penalty == 0.4 and config.sparsity.target_density is None


def test_bad_sweep_fails_before_training(tmp_path):
    bad = _sweep_file(tmp_path, extra='[[setting]]\nlabel = "x"\nproblem = "nope.toml"\n')
    with pytest.raises(ProblemFileError, match="no problem file 'nope.toml'"):
        load_sweep(bad)
    path = tmp_path / "s2.toml"
    path.write_text(_sweep_file(tmp_path).read_text().replace("target_density = 0.5", "target_density = 1.5"))
    with pytest.raises(ProblemFileError, match=r"target_density.*\(0, 1\], got 1.5"):
        load_sweep(path)


def test_cli_reproduce_table_only(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    assert main(["reproduce", str(path), "--out", str(tmp_path / "o"), "--seeds", "0"]) == 0
    assert (tmp_path / "o" / "table.md").exists()
    assert "| MLP, λ | 1 |" in capsys.readouterr().out


def test_cli_reproduce_runs_only_the_settings_asked_for(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    out = str(tmp_path / "o")
    assert main(["reproduce", str(path), "--out", out, "--seeds", "0", "--settings", "λ"]) == 0
    assert (tmp_path / "o" / "mlp" / "seed0").is_dir() and not (tmp_path / "o" / "mlp-0-5").exists()
    table = capsys.readouterr().out
    assert "| MLP, λ | 1 |" in table and "MLP, ε=0.5" not in table
    # A label with a comma selects itself alone, not every label matching one of its parts.
    assert (
        main(["reproduce", str(path), "--out", out, "--seeds", "0", "--settings", "MLP, λ", "--table-only"])
        == 0
    )
    table = capsys.readouterr().out
    assert "| MLP, λ | 1 |" in table and "MLP, ε=0.5" not in table
    assert main(["reproduce", str(path), "--settings", "ResNet"]) == 2
    message = "no setting of sweep 'tiny' matches ResNet; its settings: 'MLP, ε=0.5'; 'MLP, λ'"
    assert message in capsys.readouterr().err


def test_dynamics_table_of_a_sweep(tmp_path):
    from ctrlsparse.experiments.sweeps import sweep_dynamics_table

    sweep = load_sweep(_sweep_file(tmp_path))
    run_sweep(sweep, tmp_path / "out")
    table = sweep_dynamics_table(sweep, tmp_path / "out")
    assert "| MLP, ε=0.5 | 2 |" in table and "MLP, λ" not in table  # penalized settings have no dynamics


def test_table_cells_show_no_negative_zero():
    from ctrlsparse.experiments.sweeps import _fmt

    assert _fmt([-1e-9, -2e-9], digits=4) == "0.0000 ± 0.0000"
    assert _fmt([-0.5, -0.7], digits=1) == "-0.6 ± 1.3"


SWEEPS = sorted((Path(__file__).parents[2] / "problems" / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_files_build_a_valid_config_for_every_run(path, monkeypatch):
    # Settings name their problem files relative to the repository root.
    monkeypatch.chdir(path.parent.parent.parent)
    sweep = load_sweep(path)
    assert sweep.settings and len({s.slug for s in sweep.settings}) == len(sweep.settings)
    for setting in sweep.settings:
        for seed in sweep.seeds:
            assert sweep.config(setting, seed).train.seed == seed
