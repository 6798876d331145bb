import pytest
from matplotlib.figure import Figure

from ctrlsparse import reports as plot
from ctrlsparse.runs.store import RunFormatError, load_run


@pytest.fixture
def runs(tmp_path, make_run):
    _fake_run = make_run
    return [
        _fake_run(tmp_path / "constrained", targets={"model": 0.3}),
        _fake_run(tmp_path / "per-layer", targets={"fc1": 0.3, "fc2": 0.5}),
        _fake_run(tmp_path / "penalized", penalties={"model": 0.5}),
        _fake_run(tmp_path / "mixed", targets={"fc1": 0.4}, penalties={"fc2": 0.1}),
    ]


def test_dynamics_of_each_kind_of_run(runs, tmp_path):
    for run in runs:
        fig = plot.dynamics(run)
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / f"{run.name}.png")
    mult_axis, density_axis = plot.dynamics(runs[1]).axes[:2]
    # One line per layer plus the model, and a dashed target per constraint.
    assert len(density_axis.lines) == 3 + 2
    dashed = [line for line in density_axis.lines if line.get_linestyle() == "--"]
    assert sorted(line.get_ydata()[0] for line in dashed) == [0.3, 0.5]


def test_penalized_dynamics_shows_fixed_lambda(runs):
    labels = [line.get_label() for line in plot.dynamics(runs[2]).axes[0].lines]
    assert labels == ["model (fixed λ=0.5)"]


def test_dynamics_from_records_recovers_targets_and_penalties(runs):
    records = load_run(runs[3]).metrics()
    fig = plot.dynamics(records)
    density_axis = fig.axes[1]
    assert [round(line.get_ydata()[0], 6) for line in density_axis.lines if line.get_linestyle() == "--"] == [
        0.4
    ]
    assert "fc2 (fixed λ=0.1)" in [line.get_label() for line in fig.axes[0].lines]


def test_layer_colors_are_consistent_and_scale_to_many_layers():
    names = [f"layer{i}" for i in range(12)]
    colors = plot.layer_colors(names)
    assert len(set(colors.values())) == 13
    assert plot.layer_colors(names[:3])["layer1"] == plot.layer_colors(names[:5])["layer1"]


def test_dynamics_with_twelve_layers(tmp_path, make_run):
    _fake_run = make_run
    path = _fake_run(
        tmp_path / "deep", targets={"model": 0.2}, layers=tuple(f"block{i}.conv" for i in range(12))
    )
    fig = plot.dynamics(path)
    assert len(fig.axes[1].lines) == 13 + 1


def test_gates_histograms(runs):
    fig = plot.gates(runs[0])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["fc1 input (50 gates)", "fc2 input (50 gates)"]


def test_gates_needs_model_file(tmp_path, make_run):
    _fake_run = make_run
    path = _fake_run(tmp_path / "r", targets={"model": 0.3})
    (path / "model.pt").unlink()
    with pytest.raises(RunFormatError, match="model.pt: no such file"):
        plot.gates(path)


def test_comparison_places_constrained_on_control_axes(runs):
    fig = plot.comparison([load_run(r) for r in runs])
    control, penalized, tradeoff = fig.axes[:3]
    points = sorted(tuple(p) for c in control.collections for p in c.get_offsets().tolist())
    assert len(points) == 4  # model, fc1, fc2, fc1 (mixed run)
    assert sum(len(c.get_offsets()) for c in penalized.collections) == 2
    assert sum(len(c.get_offsets()) for c in tradeoff.collections) == 4


def test_traces_overlay_runs_per_constraint(runs):
    fig = plot.traces([load_run(r) for r in runs], tail=0.2)
    titles = [ax.get_title() for ax in fig.axes]
    expected = [
        f"{name}: expected density (ε = {eps} dashed)"
        for name, eps in (("model", 0.3), ("fc1", 0.3), ("fc2", 0.5))
    ]
    assert titles[:3] == expected
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend == ["constrained", "per-layer", "mixed"]  # the penalized run draws no trace


def test_traces_need_a_constrained_run(runs):
    with pytest.raises(ValueError, match="constrained runs"):
        plot.traces([load_run(runs[2])])


def test_tradeoff_one_point_per_setting_by_method(tmp_path, make_run):
    from ctrlsparse.reports import tradeoff

    settings = {
        "hc 0.3": [load_run(make_run(tmp_path / f"hc{s}", targets={"model": 0.3})) for s in range(2)],
        "pen": [load_run(make_run(tmp_path / "pen", penalties={"model": 0.1}))],
    }
    fig = tradeoff(settings)
    ax = fig.axes[0]
    assert ax.get_title() == "digits_mlp"
    # One curve per method (both settings are hard concrete runs), one point per setting.
    assert len(ax.containers) == 1 and len(ax.containers[0].lines[0].get_xdata()) == 2
    fig.savefig(tmp_path / "t.png")
    with pytest.raises(ValueError, match="no finished run"):
        tradeoff({"empty": []})


def test_dynamics_dashes_a_ramped_target_as_it_moved(tmp_path, make_run):
    records = load_run(make_run(tmp_path / "ramped", targets={"model": 0.3})).metrics()
    ramp = [max(0.3, 0.9 - 0.05 * r["step"]) for r in records]  # TargetSchedule("linear") shape
    for record, level in zip(records, ramp):
        record["violations"]["model"] = record["density"] - level
    density_axis = plot.dynamics(records).axes[1]
    (dashed,) = [line for line in density_axis.lines if line.get_linestyle() == "--"]
    assert dashed.get_ydata() == pytest.approx(ramp)


def test_tradeoff_separates_structured_from_unstructured_pruning(tmp_path, make_run):
    from ctrlsparse.reports import tradeoff
    from ctrlsparse.runs.store import write_json

    def pruned(name, structure):
        path = make_run(tmp_path / name, targets={"model": 0.3})
        write_json(path / "config.json", {"name": "p", "model": {"name": "mlp", "structure": structure}})
        run = load_run(path)
        run.summary.method = "magnitude"
        return [run]

    fig = tradeoff({"by weight": pruned("w", "weight"), "by neuron": pruned("n", "neuron")})
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["magnitude pruning, by weight", "magnitude pruning, by neuron/channel"]
    assert len(fig.axes[0].containers) == 2


def test_magnitude_at_target_one_is_drawn_as_the_dense_baseline():
    from pathlib import Path

    from ctrlsparse.reports.compare_plots import _method_of
    from ctrlsparse.runs import Run, RunSummary

    def magnitude(target):
        summary = RunSummary("magnitude", "pruned", {"model": target}, {}, target, {}, target)
        return Run(Path("d"), {"model": {"structure": "neuron"}}, summary)

    dense, pruned = magnitude(1.0), magnitude(0.3)
    assert _method_of(dense) == "dense (nothing pruned)"
    assert _method_of(pruned) == "magnitude pruning, by neuron/channel"


def test_the_tradeoff_panel_places_runs_at_their_deployed_density_with_readable_labels(tmp_path, make_run):
    """The x axis is the realized (deployed) density, the one ε bounds, not the expected one;
    two runs at nearly the same point get labels at different heights."""
    import json

    paths = [make_run(tmp_path / name, targets={"model": 0.3}) for name in ("a", "b")]
    for path, realized in zip(paths, (0.25, 0.27)):
        summary = json.loads((path / "summary.json").read_text())
        summary["realized_density"] = realized  # the expected density stays at 0.3
        (path / "summary.json").write_text(json.dumps(summary))
    fig = plot.comparison([load_run(p) for p in paths])
    tradeoff = fig.axes[2]
    xs = sorted(p[0] for c in tradeoff.collections for p in c.get_offsets().tolist())
    assert xs == pytest.approx([0.25, 0.27])
    assert "realized" in tradeoff.get_xlabel() and "realized" in fig.axes[1].get_ylabel()
    offsets = [text.xyann for text in tradeoff.texts]
    assert len(offsets) == 2 and offsets[0] != offsets[1]
