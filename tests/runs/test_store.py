import json

import pytest

from ctrlsparse.runs.store import RunFormatError, load_run, read_metrics, write_json, write_summary

RECORD = {
    "step": 1,
    "epoch": 1,
    "loss": 1.0,
    "density": 0.5,
    "densities": {},
    "multipliers": {},
    "violations": {},
}


def test_garbled_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORD) + "\n{not json\n")
    with pytest.raises(RunFormatError, match=r"metrics.jsonl, line 2: not valid JSON"):
        read_metrics(path)


def test_missing_keys_are_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(RunFormatError, match="line 1: missing keys epoch"):
        read_metrics(tmp_path)


def test_missing_summary(tmp_path):
    write_json(tmp_path / "config.json", {})
    with pytest.raises(RunFormatError, match="summary.json: no such file"):
        load_run(tmp_path)


def test_write_json_replaces_nan_by_null(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}
    assert not list(tmp_path.glob("*.tmp"))


def test_label_runs_disambiguates_equal_directory_names(tmp_path, make_run):
    from ctrlsparse.runs.store import label_runs

    a = make_run(tmp_path / "sgd" / "seed0", targets={"model": 0.3})
    b = make_run(tmp_path / "nupi" / "seed0", targets={"model": 0.3})
    c = make_run(tmp_path / "other", targets={"model": 0.3})
    runs = label_runs([load_run(a), load_run(b), load_run(c)])
    assert [r.name for r in runs] == ["sgd/seed0", "nupi/seed0", "other"]


def test_problem_of_groups_runs_by_data_and_model(tmp_path, make_run):
    from ctrlsparse.runs.store import problem_of

    run = make_run(tmp_path / "a", targets={"model": 0.3})
    write_json(
        run / "config.json",
        {"name": "fashion_mlp_rda", "data": {"name": "fashion_mnist"}, "model": {"name": "mlp"}},
    )
    assert problem_of(load_run(run)) == "fashion_mnist / mlp"
    bare = make_run(tmp_path / "b", name="digits_mlp", targets={"model": 0.3})
    assert problem_of(load_run(bare)) == "digits_mlp"  # no data/model sections: the problem's name


def test_incomplete_or_mistyped_summary_is_named(tmp_path, make_run):
    path = make_run(tmp_path / "run")
    data = json.loads((path / "summary.json").read_text())
    del data["densities"]
    write_json(path / "summary.json", data)
    with pytest.raises(RunFormatError, match=r"summary.json: missing keys densities"):
        load_run(path)
    data["densities"] = {}
    data["density"] = "0.3"
    write_json(path / "summary.json", data)
    with pytest.raises(RunFormatError, match=r"summary.json: 'density' should be a number, got '0.3'"):
        load_run(path)


def test_summary_round_trips_and_older_files_still_read(tmp_path, make_run):
    path = make_run(tmp_path / "run", targets={"model": 0.3})
    summary = load_run(path).summary
    write_summary(path, summary)
    assert load_run(path).summary == summary
    # A file from before MACs budgets, tuning and the method field: the defaults fill in.
    old = {k: v for k, v in summary.to_dict().items() if k in ("mode", "targets", "penalties", "density",
                                                                "densities", "realized_density")}  # fmt: skip
    old["unknown_future_key"] = 1
    write_json(path / "summary.json", old)
    read = load_run(path).summary
    assert read.macs_targets == {} and read.tuning_runs is None and read.method == "hard_concrete"
    assert read.all_targets() == {"model": 0.3}
