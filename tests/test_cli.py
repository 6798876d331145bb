import json
from pathlib import Path

import pytest

from ctrlsparse.cli import CLIError, main, parse_levels
from ctrlsparse.reports.tables import SIZE_NOTE, Results
from ctrlsparse.runs.store import load_run, read_summary

DIGITS = str(Path(__file__).parent.parent / "problems" / "digits_mlp.toml")


def test_parse_levels_forms():
    assert parse_levels("0.3", "--target-density") == 0.3
    assert parse_levels("0.5,0.3,0.7", "--target-density") == [0.5, 0.3, 0.7]
    assert parse_levels("fc1=0.5, fc2=0.3", "--target-density") == {"fc1": 0.5, "fc2": 0.3}


@pytest.mark.parametrize("text", ["abc", "0.5,,0.3", "fc1=0.5,0.3", "fc1=x"])
def test_parse_levels_rejects(text):
    with pytest.raises(CLIError, match="--target-density"):
        parse_levels(text, "--target-density")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-density", "150"], r"target_density values must lie in \(0, 1\], got 150"),
        (
            ["--target-density", "30"],
            r"--target-density: 30 is not a fraction in \(0, 1\]; did you mean 0.3 \(30%\)\?",
        ),
        (["--target-density", "fc1=0.5,fc2=45"], r"--target-density: 45 .*did you mean 0.45"),
        (["--target-macs", "50"], r"--target-macs: 50 .*did you mean 0.5"),
        (["--target-density", "0"], r"in \(0, 1\], got 0"),
        (["--penalty", "-0.1"], "penalty values must be a finite number >= 0, got -0.1"),
        (["--target-density", "fc9=0.5"], "unknown layer name 'fc9'; valid names: model, fc1, fc2, fc3"),
        (["--target-density", "0.5,0.5"], "one value per gated layer"),
        (["--target-density", "zero"], "cannot read 'zero'"),
        (["--epochs", "0"], r"\[train\] epochs must be >= 1"),
        (["--schedule-factor", "1.5"], r"\[schedule\] needs epochs >= 1, 0 < factor < 1"),
        (["--augmented-lagrangian", "-1"], r"augmented_lagrangian must be > 0"),
        (["--target-macs", "150"], r"target_macs values must lie in \(0, 1\], got 150"),
        (["--target-macs", "fc9=0.5"], "target_macs: unknown layer name 'fc9'"),
        (
            ["--feasibility", "1.0"],
            r"feasibility must be a fraction of the run in \[0, 1\) or false, got 1.0",
        ),
        (["--schedule-epochs", "400"], r"ramps longer than the run \(\[train\] epochs = 300\)"),
        (
            ["--target-density", "0.3", "--schedule-fraction", "0.95"],
            r"the target ramp .* and the feasibility phase .* do not fit",
        ),
    ],
)
def test_run_rejects_bad_input_before_training(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", DIGITS, "--out", str(out), *args]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_target_and_penalty_flags_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["run", DIGITS, "--target-density", "0.3", "--penalty", "0.1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_broken_problem_file(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[train]\nepochs = "many"\n')
    assert main(["run", str(path)]) == 2
    assert "epochs must be int" in capsys.readouterr().err


def test_run_and_compare(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(["run", DIGITS, "--epochs", "1", "--target-density", "fc1=0.5", "--out", str(a), "--quiet"]) == 0
    )
    assert (
        main(["run", DIGITS, "--epochs", "1", "--penalty", "0.5", "--seed", "3", "--out", str(b), "--quiet"])
        == 0
    )
    config = json.loads((b / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["sparsity"]["penalty"] == 0.5
    assert config["sparsity"]["target_density"] is None
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| a | hard_concrete | constrained | ε[fc1]=0.5 |" in table
    assert "| b | hard_concrete | penalized | λ[model]=0.5 |" in table
    report = (tmp_path / "report.md").read_text()
    assert report.split("## Dual dynamics")[0].count("\n| ") == 3  # header, a, b
    assert "| a | fc1 | 0.5 |" in report.split("## Dual dynamics")[1]
    assert SIZE_NOTE in report  # both sizes, and why they differ
    results = Results.read(tmp_path / "results.json")  # the record the docs are checked against
    assert list(results.runs) == ["a", "b"] and results.runs["a"].targets == {"fc1": 0.5}


def test_compare_rejects_unfinished_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "config.json: no such file" in capsys.readouterr().err


def test_compare_refuses_different_problems_unless_allowed(tmp_path, capsys, make_run):
    a = make_run(tmp_path / "a", name="digits_mlp", targets={"model": 0.3})
    b = make_run(tmp_path / "b", name="fashion_mlp", penalties={"model": 0.1})
    assert main(["compare", str(a), str(b)]) == 2
    assert "different problems (digits_mlp, fashion_mlp); pass --allow-mixed" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--allow-mixed", "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0


def test_plot_writes_figures(tmp_path, make_run):
    run = make_run(tmp_path / "a", targets={"model": 0.3})
    assert main(["plot", str(run)]) == 0
    assert (run / "dynamics.png").exists() and (run / "gates.png").exists()


def test_plot_reports_garbled_metrics(tmp_path, capsys, make_run):
    run = make_run(tmp_path / "a", targets={"model": 0.3})
    with (run / "metrics.jsonl").open("a") as f:
        f.write("{oops\n")
    assert main(["plot", str(run)]) == 2
    assert "metrics.jsonl, line 31: not valid JSON" in capsys.readouterr().err


def test_tune_penalty_rejects_bad_target(capsys):
    assert main(["tune-penalty", DIGITS, "--target-density", "1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert main(["tune-penalty", DIGITS, "--target-density", "30"]) == 2
    assert "did you mean 0.3 (30%)?" in capsys.readouterr().err


def test_compare_reports_dynamics_of_constrained_runs(tmp_path, capsys, make_run):
    a = make_run(tmp_path / "a", targets={"fc1": 0.4, "fc2": 0.5}, steps=50)
    b = make_run(tmp_path / "b", penalties={"model": 0.1}, steps=50)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "## Dual dynamics" in out
    assert "| a | fc1 | 0.4 | 40 |" in out and "| a | fc2 | 0.5 | 30 |" in out  # densities 0.8 - 0.5 step/50
    assert "| b |" not in out.split("## Dual dynamics")[1]


def test_every_method_runs_and_compares(tmp_path, capsys):
    runs = {
        "hc": ["--target-density", "0.5"],
        "arm": ["--gates", "arm", "--target-density", "0.5"],
        "rda": ["--method", "l1_rda", "--penalty", "1e-3"],
        "prune": ["--method", "magnitude", "--target-density", "0.5", "--finetune-epochs", "1"],
    }
    for name, args in runs.items():
        assert main(["run", DIGITS, "--epochs", "2", "--out", str(tmp_path / name), "--quiet", *args]) == 0
    capsys.readouterr()
    assert main(["compare", *(str(tmp_path / name) for name in runs), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| hc | hard_concrete | constrained | ε[model]=0.5 |" in table
    assert "| arm | arm | constrained | ε[model]=0.5 |" in table
    assert "| rda | l1_rda | penalized | λ[fc1]=0.001, λ[fc2]=0.001, λ[fc3]=0.001 |" in table
    assert "| prune | magnitude | pruned | ε[model]=0.5 | 0.5000 |" in table
    assert main(["plot", str(tmp_path / "arm")]) == 0  # ARM gate histogram from phi


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "l1_rda", "--target-density", "0.3"], "takes a penalty .* tune-penalty"),
        (["--method", "magnitude", "--penalty", "0.1"], "'magnitude' takes a target_density"),
        (
            ["--method", "magnitude", "--finetune-epochs", "9", "--epochs", "3"],
            r"finetune_epochs must lie in \[0, epochs=3\]",
        ),
    ],
)
def test_method_options_are_checked(tmp_path, capsys, args, message):
    assert main(["run", DIGITS, "--out", str(tmp_path / "r"), *args]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_tune_penalty_searches_the_l1_rda_penalty(tmp_path, capsys):
    problem = tmp_path / "rda.toml"
    problem.write_text(
        'name = "rda"\n[sparsity]\nmethod = "l1_rda"\npenalty = 1e-3\n[train]\nepochs = 2\nlog_every = 5\n'
    )
    out = tmp_path / "tune"
    args = ["tune-penalty", str(problem), "--target-density", "0.05", "--tolerance", "0.001"]
    # Two probes cannot land within 0.001: exit status 1 ("did not land").
    assert main([*args, "--max-runs", "2", "--initial-penalty", "1e-3", "--out", str(out), "--quiet"]) == 1
    assert "did not land" in capsys.readouterr().out
    history = json.loads((out / "tuning.json").read_text())["history"]
    assert [h["penalty"] for h in history] == [1e-3, 1e-2]  # too dense at 1e-3: λ grows
    assert history[0]["density"] > history[1]["density"]  # a larger ℓ1 penalty zeroes more weights
    assert all(load_run(h["run"]).summary.method == "l1_rda" for h in history)

    # Asked again, the search reuses its finished probes: same answers, nothing retrained.
    # (The best probe's summary.json is rewritten with the tuning fields, to the same content.)
    def trained():
        return {p: p.stat().st_mtime_ns for p in out.glob("probe*/*") if p.name != "summary.json"}

    stamps, summaries = trained(), [load_run(h["run"]).summary for h in history]
    assert main([*args, "--max-runs", "2", "--initial-penalty", "1e-3", "--out", str(out), "--quiet"]) == 1
    assert json.loads((out / "tuning.json").read_text())["history"] == history
    assert trained() == stamps and [load_run(h["run"]).summary for h in history] == summaries


def test_purge_writes_an_exported_program_that_loads_with_torch_alone(tmp_path, capsys):
    import torch

    from ctrlsparse.experiments.build import rebuild_run

    run = tmp_path / "run"
    assert (
        main(["run", DIGITS, "--target-density", "0.3", "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    )
    summary, printed = read_summary(run), capsys.readouterr().out  # both sizes, in one vocabulary
    assert f"density {summary.realized_density:.4f} (realized, what ε bounds" in printed
    assert f"parameters kept {summary.params['remaining']:,} of {summary.params['dense']:,}" in printed
    assert main(["purge", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "purged.pt2" in printed and "parameters kept" in printed
    program = torch.export.load(run / "purged.pt2")
    gated = rebuild_run(run).model
    x = torch.rand(5, 1, 8, 8)  # another batch size than the example the export traced
    with torch.no_grad():
        assert torch.allclose(program.module()(x), gated(x), atol=1e-5)


def test_round_to_from_the_command_line_aligns_the_purged_widths(tmp_path, capsys):
    """--round-to 8 with no feasibility phase: the gates stay undecided, so purge pads each layer
    with zeroed units up to a multiple of 8 (or the whole layer)."""
    import torch

    run = tmp_path / "run"
    args = ["--target-density", "0.3", "--epochs", "1", "--round-to", "8", "--no-feasibility"]
    assert main(["run", DIGITS, *args, "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["round_to"] == 8
    assert main(["purge", str(run)]) == 0
    printed = capsys.readouterr().out
    program = torch.export.load(run / "purged.pt2")
    widths = [p.shape[0] for name, p in program.module().named_parameters() if name.endswith("weight")]
    assert all(w % 8 == 0 or w in (300, 100, 10) for w in widths), widths
    assert "purged.pt2" in printed
    assert main(["run", DIGITS, "--round-to", "0", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "round_to must be an integer >= 1" in capsys.readouterr().err


def test_block_gates_from_the_command_line_keep_whole_blocks(tmp_path, capsys):
    """--round-to 8 --block-gates: one gate per block of 8 units; the feasibility phase keeps whole
    blocks, so every purged width is a multiple of 8 or the dense width."""
    import torch

    import ctrlsparse as cs
    from ctrlsparse.experiments.build import rebuild_run

    run = tmp_path / "run"
    args = ["--target-density", "0.3", "--epochs", "1", "--round-to", "8", "--block-gates"]
    assert main(["run", DIGITS, *args, "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["block_gates"] is True
    model = rebuild_run(run).model
    blocked = [g for g in cs.gate_groups(model) if g.round_to == 8]
    assert blocked and all(g.gate.block == 8 for g in blocked)
    assert main(["purge", str(run)]) == 0
    program = torch.export.load(run / "purged.pt2")
    widths = [p.shape[0] for name, p in program.module().named_parameters() if name.endswith("weight")]
    assert all(w % 8 == 0 or w in (300, 100, 10) for w in widths) and min(widths) < 100, widths


def test_purge_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["purge", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_every_library_error_shares_one_base_class():
    from ctrlsparse.data import ArchiveError, DownloadError, IDXError
    from ctrlsparse.errors import CtrlsparseError
    from ctrlsparse.experiments.config import ProblemFileError
    from ctrlsparse.gating import PurgeError, TraceError
    from ctrlsparse.models import ModelImportError
    from ctrlsparse.runs import RunFormatError
    from ctrlsparse.training import NonFiniteLossError

    errors = [ArchiveError, DownloadError, IDXError, ProblemFileError, PurgeError, TraceError]
    errors += [ModelImportError, RunFormatError, NonFiniteLossError, CLIError]
    assert all(issubclass(e, CtrlsparseError) for e in errors)
    assert issubclass(DownloadError, OSError) and issubclass(ProblemFileError, ValueError)


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"ctrlsparse {version('ctrlsparse')}"


def test_a_misspelt_run_option_shows_the_run_usage_and_the_option_meant(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", DIGITS, "--target-densty", "0.3", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ctrlsparse run ") and "--target-density TARGET_DENSITY" in err
    assert (
        "ctrlsparse run: error: unrecognized arguments: --target-densty (did you mean --target-density?)"
        in err
    )
    assert not (tmp_path / "run").exists()


def test_a_misspelt_option_of_a_nested_command_shows_that_command_s_usage(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "overhead", DIGITS, "--repetitons", "5"])
    err = capsys.readouterr().err
    assert err.startswith("usage: ctrlsparse bench overhead ")
    assert "(did you mean --repetitions?)" in err


def test_the_schedule_choices_are_the_schedule_kinds():
    from ctrlsparse.cli import SCHEDULES
    from ctrlsparse.problem.schedules import ScheduleKind

    assert tuple(kind.value for kind in ScheduleKind) == SCHEDULES


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    for module in ("ctrlsparse.cli", "ctrlsparse"):  # torchrun -m ctrlsparse needs the second
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "purge" in out.stdout


def test_run_refuses_a_used_directory_then_resumes_or_overwrites_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", DIGITS, "--epochs", "1", "--target-density", "0.5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = (out / "summary.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "summary.json").read_bytes() == summary  # untouched
    (out / "summary.json").unlink()  # as if killed after the last checkpoint
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["density"] == json.loads(summary)["density"]
    assert main([*args[:-1], "--epochs", "2", "--resume", "--quiet"]) == 2  # another run length
    assert "epochs: 1 → 2" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["run", DIGITS, "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["run", DIGITS, "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_run_with_a_macs_budget_and_no_feasibility_phase(tmp_path):
    import json

    out = tmp_path / "macs"
    args = [
        "run",
        DIGITS,
        "--epochs",
        "2",
        "--target-macs",
        "0.6",
        "--no-feasibility",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    summary = read_summary(out)
    assert summary.macs_targets == {"macs": 0.6} and summary.targets == {}
    assert summary.feasibility is None and set(summary.macs) >= {"dense", "expected", "realized"}
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["levels"]) == {"macs"} and set(record["macs"]) == {"macs"}
    # Reports treat the MACs constraint like a density one: realized − ε, dynamics, traces.
    assert main(["compare", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    gap = summary.realized["macs"] - 0.6
    assert f"macs {gap:+.4f}" in report and "| macs | 0.6 |" in report
    assert (tmp_path / "report" / "traces.png").exists()


@pytest.mark.parametrize(
    "sections",
    [
        '[model]\ngates = "arm"\n[sparsity]\ntarget_density = 0.5\n',
        '[sparsity]\nmethod = "l1_rda"\npenalty = 1e-3\n',
        '[model]\nstructure = "neuron"\n[sparsity]\nmethod = "magnitude"\ntarget_density = 0.5\n',
        '[model]\nstructure = "weight"\n[sparsity]\nmethod = "magnitude"\ntarget_density = 0.5\n',
    ],
    ids=["arm", "l1_rda", "magnitude-neuron", "magnitude-weight"],
)
def test_every_method_s_run_reloads_into_the_model_it_trained(tmp_path, sections):
    """One loader (``rebuild_run``) for every kind of run: its test error is the summary's."""
    from ctrlsparse import Batches, evaluate
    from ctrlsparse.experiments.build import rebuild_run

    problem = tmp_path / "p.toml"
    problem.write_text(f'name = "p"\n{sections}[train]\nepochs = 2\n')
    assert main(["run", str(problem), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = rebuild_run(tmp_path / "run")
    x, y = run.data.test
    error = evaluate(run.model, Batches(x, y, 256))
    assert error == pytest.approx(read_summary(tmp_path / "run").test_error, abs=1e-9)


def test_run_with_tensorboard_writes_event_files_into_the_run_directory(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    args = ["run", DIGITS, "--target-density", "0.3", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main([*args, "--tensorboard"]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_run_compile_records_it_and_compiles_the_forward(tmp_path, monkeypatch):
    import torch

    compiled = []

    def eager_backend(model, _compile=torch.compile):
        compiled.append(model)
        return _compile(model, backend="eager")  # dynamo's tracing, without the slow C++ backend

    monkeypatch.setattr(torch, "compile", eager_backend)
    out = tmp_path / "run"
    assert main(["run", DIGITS, "--epochs", "1", "--compile", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["compile"] is True
    assert len(compiled) == 1 and read_summary(out).test_error < 0.9


def test_run_compile_step_compiles_the_step(tmp_path, monkeypatch):
    import torch

    compiled = []

    def aot_eager(function, _compile=torch.compile):
        compiled.append(function)
        return _compile(function, backend="aot_eager")  # AOTAutograd's graphs, run eagerly

    monkeypatch.setattr(torch, "compile", aot_eager)
    out = tmp_path / "run"
    assert main(["run", DIGITS, "--epochs", "1", "--compile", "step", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["compile"] == "step"
    # One region: the forward, Lagrangian and backward (the updates run eagerly).
    assert len(compiled) == 1 and compiled[0].__name__ == "_eager_lagrangian"
    assert read_summary(out).test_error < 0.9


def test_run_skip_below_reaches_gda_and_a_bad_value_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", DIGITS, "--epochs", "1", "--target-density", "0.3", "--out", str(out), "--quiet"]
    assert main([*args, "--skip-below", "1e-3"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["skip_below"] == 1e-3
    assert main([*args, "--skip-below", "2", "--overwrite"]) != 0
    assert "skip_below must lie in (0, 1), got 2.0" in capsys.readouterr().err
