import statistics
from pathlib import Path

import pytest
import torch

from ctrlsparse.cli import main
from ctrlsparse.experiments.bench import Timing, alternate, alternate_many, overhead, peak_memory
from ctrlsparse.experiments.config import load_problem

DIGITS = Path(__file__).parents[2] / "problems" / "digits_mlp.toml"


def test_alternate_runs_both_and_reports_ratio_per_repetition():
    calls = []
    timing = alternate(lambda: calls.append("g"), lambda: calls.append("d"), steps=10, repetitions=4)
    assert len(timing.gated) == len(timing.dense) == 4
    assert calls.count("g") == calls.count("d") == 3 + 40  # three warm-up calls each
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
    args = ["--steps", "2", "--repetitions", "2", "--batch-size", "32"]
    assert main(["bench", "purge", str(run), str(run), *args]) == 0
    out = capsys.readouterr().out
    assert out.count("purged / dense: median ratio") == 2 and "(dense FLOPs / kept FLOPs)" in out
    ideal = float(out.split("of an ideal ")[1].split("x")[0])
    assert ideal >= 1.0  # purging never adds FLOPs
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(f"| {run} |")]
    assert len(rows) == 2 and rows[0][2] == f"{ideal:.2f}×"  # run, speed-up, FLOP ideal, their ratio
    speedup = float(rows[0][1].split("×")[0])
    assert float(rows[0][3]) == pytest.approx(speedup / ideal, abs=0.02)
    work = float(rows[0][4].rstrip("×"))  # between 1 (nothing shrinks) and the FLOP ideal
    assert 1.0 <= work <= ideal + 0.01
    assert float(rows[0][5].rstrip(" |")) == pytest.approx(speedup / work, abs=0.02)
    # Both models and the digits' 1x8x8 images in channels_last: the same table, said so.
    assert main(["bench", "purge", str(run), *args, "--channels-last"]) == 0
    assert "threads, channels_last)" in capsys.readouterr().out


def test_work_ideal_lies_between_the_element_ratio_and_the_flop_ideal():
    """LeNet-5 with 8 of 20 and 20 of 50 channels and 200 of 500 neurons: the FLOPs shrink by
    about 5x, the elements the pooling and activations write by 2.5x; the work ideal weighs the
    two by the dense forward's time in each, so it lies between them."""
    import ctrlsparse as cs
    from ctrlsparse.experiments.bench import flops, work_ideal

    torch.manual_seed(0)
    dense = cs.lenet5().eval()
    small = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(320, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10),
    ).eval()  # fmt: skip
    x = torch.randn(16, 1, 28, 28)
    ideal, share = work_ideal(dense, small, x)
    assert 0.0 < share < 1.0
    assert 2.5 < ideal < flops(dense, x) / flops(small, x)


def test_overhead_with_mostly_closed_gates(capsys):
    args = ["bench", "overhead", str(DIGITS), "--steps", "2", "--repetitions", "2", "--open-fraction", "0.1"]
    assert main(args) == 0
    assert "0.1 of the gates open" in capsys.readouterr().out


def test_alternate_many_rotates_the_order_every_repetition():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = alternate_many(functions, steps=1, repetitions=3)
    assert {name: len(v) for name, v in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == list("abc") * 3 + list("abc") + list("bca") + list("cab")  # warm-up, then rotated


def test_alternate_many_runs_its_rewind_before_each_repetition_untimed():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    seconds = alternate_many(functions, 2, 2, before_repetition=lambda: calls.append("rewind"))
    assert calls == list("ab") * 3 + ["rewind", *"aabb", "rewind", *"bbaa"]  # not in the warm-up
    assert all(len(v) == 2 for v in seconds.values())


def test_peak_memory_sees_what_a_step_allocates():
    def step():
        big = torch.ones(1_000_000)  # 4 MB, alive until the sum below
        big.sum()

    assert 4_000_000 <= peak_memory(step) < 8_000_000
    assert peak_memory(lambda: None) == 0


def test_overhead_reports_peak_memory_and_takes_models_by_import_path(tmp_path):
    problem = tmp_path / "bert.toml"
    problem.write_text(
        'name = "tiny_bert"\n'
        '[data]\nname = "synthetic"\nshape = [16]\nvocab_size = 50\nnum_classes = 2\n'
        "train_size = 8\ntest_size = 4\n"
        '[model]\nfactory = "ctrlsparse.models.hf:bert_classifier"\noutput = "logits"\n'
        "kwargs = { hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 32,"
        " vocab_size = 50, num_labels = 2 }\n"
        "[sparsity]\ntarget_density = 0.5\n[train]\nbatch_size = 4\n"
    )
    timing = overhead(load_problem(problem), steps=1, repetitions=2)
    assert len(timing.ratios) == 2 and all(b > 0 for b in timing.peak_bytes)
    assert "peak memory" in timing.report() and "MiB" in timing.report()


def test_compile_that_fails_falls_back_to_eager_steps_with_a_warning(monkeypatch):
    def broken(model):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler.*eager"):
        timing = overhead(load_problem(DIGITS), steps=1, repetitions=2, compile=True)
    assert len(timing.ratios) == 2
