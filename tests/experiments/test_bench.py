import statistics
from pathlib import Path

from ctrlsparse.cli import main
from ctrlsparse.experiments.bench import Timing, alternate, overhead
from ctrlsparse.experiments.config import load_problem

DIGITS = Path(__file__).parents[2] / "problems" / "digits_mlp.toml"


def test_alternate_runs_both_and_reports_ratio_per_repetition():
    calls = []
    timing = alternate(lambda: calls.append("g"), lambda: calls.append("d"), steps=10, repetitions=4)
    assert len(timing.gated) == len(timing.dense) == 4
    assert calls.count("g") == calls.count("d") == 1 + 40  # one warm-up call each
    assert calls[-20:] == ["d"] * 10 + ["g"] * 10  # the order alternates between repetitions


def test_timing_report():
    timing = Timing(gated=[2.0, 3.0, 4.0], dense=[1.0, 2.0, 2.0])
    assert timing.ratios == [2.0, 1.5, 2.0]
    assert "median ratio 2.000 (min 1.500, max 2.000, 3 repetitions)" in timing.report()
    assert statistics.median(timing.ratios) == 2.0


def test_overhead_measures_the_problem(capsys):
    timing = overhead(load_problem(DIGITS), steps=2, repetitions=2)
    assert len(timing.ratios) == 2 and all(r > 0 for r in timing.ratios)
    assert main(["bench", "overhead", str(DIGITS), "--steps", "2", "--repetitions", "2"]) == 0
    assert "digits_mlp (batch 128" in capsys.readouterr().out


def test_bench_purge_on_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["run", str(DIGITS), "--epochs", "1", "--target-density", "0.5", "--out", str(run), "--quiet"])
        == 0
    )
    assert main(["bench", "purge", str(run), "--steps", "2", "--repetitions", "2", "--batch-size", "32"]) == 0
    assert "purged / dense: median ratio" in capsys.readouterr().out


def test_overhead_with_mostly_closed_gates(capsys):
    args = ["bench", "overhead", str(DIGITS), "--steps", "2", "--repetitions", "2", "--open-fraction", "0.1"]
    assert main(args) == 0
    assert "0.1 of the gates open" in capsys.readouterr().out
