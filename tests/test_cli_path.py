"""``ctrlsparse path``: one sub-run per point, path.json, resume, bad input, the front in compare."""

import json
import re
from pathlib import Path

import pytest

from ctrlsparse.cli import main
from ctrlsparse.cli.commands import CLIError, parse_path
from ctrlsparse.reports import front
from ctrlsparse.runs.store import load_path, load_run

DIGITS = str(Path(__file__).parent.parent / "problems" / "digits_mlp.toml")
SMALL = ["--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def path_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("path") / "front"
    assert main(["path", DIGITS, "--densities", "0.5,0.3,0.2", "--out", str(out), "--purge", *SMALL]) == 0
    return out


def test_path_writes_one_sub_run_per_point_and_path_json(path_dir, capsys):
    listed = json.loads((path_dir / "path.json").read_text())
    assert [p["run"] for p in listed["points"]] == ["density-0.5", "density-0.3", "density-0.2"]
    for point in listed["points"]:
        sub = path_dir / point["run"]
        for name in ("summary.json", "model.pt", "config.json", "purged.pt2"):
            assert (sub / name).exists(), name
        # The sub-run states its point's target, so it reloads and purges like any run.
        config = json.loads((sub / "config.json").read_text())
        assert config["sparsity"]["target_density"] == point["targets"]["model"]
        summary = load_run(sub).summary
        assert summary.realized_density <= point["targets"]["model"] + 1e-6
    assert json.loads((path_dir / "config.json").read_text())["path"]["points"] == [0.5, 0.3, 0.2]


def test_path_resumes_and_refuses_a_used_directory(path_dir, capsys):
    assert main(["path", DIGITS, "--densities", "0.5,0.3,0.2", "--out", str(path_dir), *SMALL]) == 2
    assert "--resume" in capsys.readouterr().err
    # Another path in the same directory is refused on resume: the settings differ.
    assert main(["path", DIGITS, "--densities", "0.5,0.3", "--out", str(path_dir), "--resume", *SMALL]) == 2
    assert "path.points" in capsys.readouterr().err


def test_compare_draws_the_front_with_one_point_per_target(path_dir, tmp_path, capsys):
    assert main(["compare", str(path_dir), "--out", str(tmp_path / "report")]) == 0
    assert "| front/density-0.3 | hard_concrete | constrained | ε[model]=0.3 |" in capsys.readouterr().out
    assert (tmp_path / "report" / "front.png").exists()
    assert "front.png" in (tmp_path / "report" / "report.md").read_text()
    figure = front(load_path(path_dir))
    curves = figure.axes[0].containers  # one errorbar per curve
    assert [len(curve.lines[0].get_xdata()) for curve in curves] == [3]  # one point per ε


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--densities", "0.3,0.5"], "must decrease"),
        (["--densities", "0.5,1.5"], r"must lie in \(0, 1\], got 1.5"),
        (
            ["--densities", "0.5,0.3", "--penalty", "0.1"],
            "--penalty: a density path lowers",
        ),
        (["--densities", '{"fc1": [0.5, 0.3], "fc2": [0.4]}'], "of the same length"),
        (["--densities", '{"fc1": [0.5, 0.3'], "not valid JSON"),
        (["--densities", "fc1=0.5"], "per-layer points go as JSON"),
    ],
)
def test_path_refuses_bad_input_before_training(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert main(["path", DIGITS, "--out", str(out), *args, *SMALL]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "metrics.jsonl").exists()


def test_a_penalized_problem_file_is_refused(tmp_path, capsys):
    problem = tmp_path / "p.toml"
    problem.write_text(Path(DIGITS).read_text().replace("target_density = 0.3", "penalty = 0.01"))
    assert main(["path", str(problem), "--densities", "0.5,0.3", "--out", str(tmp_path / "o"), *SMALL]) == 2
    assert "is penalized" in capsys.readouterr().err


def test_parse_path_forms():
    assert parse_path("0.4") == [0.4]
    assert parse_path('[{"fc1": 0.5}, {"fc1": 0.3}]') == [{"fc1": 0.5}, {"fc1": 0.3}]
    with pytest.raises(CLIError, match="--densities"):
        parse_path("0.5,x")
