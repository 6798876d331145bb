"""Run directories: what ``fit`` writes and what plots and reports read.

A run directory holds ``config.json`` (how the run was set up), ``metrics.jsonl``
(one JSON record per logged step), ``summary.json`` (final numbers) and ``model.pt``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.runs.records import RunSummary, SummaryFormatError

CONFIG, METRICS, SUMMARY, MODEL = "config.json", "metrics.jsonl", "summary.json", "model.pt"
PATH = "path.json"
"""A density path's list of points (:class:`~ctrlsparse.training.path.DensityPath`)."""
METRIC_KEYS = ("step", "epoch", "loss", "density", "densities", "multipliers", "violations")


class RunFormatError(CtrlsparseError, ValueError):
    """A run directory file is missing, garbled or incomplete."""


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a reader never sees a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    os.replace(tmp, path)


class MetricsWriter:
    """Appends one JSON line per record to ``metrics.jsonl`` and flushes it at once.

    ``offset``: continue a resumed run's file, cut back to its first ``offset`` bytes (the
    length a checkpoint recorded), so no record appears twice.
    """

    def __init__(self, run_dir: str | Path, offset: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS
        if offset is None:
            self._file = self.path.open("wb")
            return
        if not self.path.exists() or self.path.stat().st_size < offset:
            raise RunFormatError(f"{self.path}: shorter than the {offset} bytes the checkpoint recorded")
        with self.path.open("r+b") as f:
            f.truncate(offset)
        self._file = self.path.open("ab")

    def write(self, record: dict) -> None:
        self._file.write((json.dumps(_json_safe(record)) + "\n").encode())
        self._file.flush()

    @property
    def offset(self) -> int:
        """Bytes written so far: where a resumed run cuts the file back to."""
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Read a ``metrics.jsonl`` file (or the one in a run directory).

    Raises:
        RunFormatError: naming the file and line of a garbled or incomplete record.

    Examples:
        >>> records = read_metrics("runs/demo/constrained-model")  # doctest: +SKIP
        >>> [r["multipliers"]["model"] for r in records][-1]  # doctest: +SKIP
        0.045
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.exists():
        raise RunFormatError(f"{path}: no such metrics file")
    records = []
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                raise RunFormatError(f"{path}, line {number}: empty line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RunFormatError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise RunFormatError(f"{path}, line {number}: expected a JSON object")
            missing = [k for k in METRIC_KEYS if k not in record]
            if missing:
                raise RunFormatError(f"{path}, line {number}: missing keys {', '.join(missing)}")
            records.append(record)
    return records


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a missing or malformed file raises :class:`RunFormatError`
    naming it."""
    if not path.exists():
        raise RunFormatError(f"{path}: no such file (is {path.parent} a finished ctrlsparse run?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFormatError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a JSON object")
    return data


@dataclass
class Run:
    """A finished run read back from its directory."""

    path: Path
    config: dict
    summary: RunSummary
    label: str | None = None
    series: str | None = None
    """``"path"`` for a point of a density path (a sub-run of a path's directory), else None."""

    @property
    def name(self) -> str:
        """How tables and figures name the run: ``label``, or the directory's name."""
        return self.label or self.path.name

    def metrics(self) -> list[dict]:
        return read_metrics(self.path / METRICS)


def problem_of(run: Run) -> str:
    """What a run solves: ``"data / model"`` from its config (any method, any targets), else its name.

    Runs with the same data and model are comparable whatever their method or problem
    file (``fashion_mlp.toml`` and ``fashion_mlp_rda.toml`` both give ``"fashion_mnist / mlp"``).
    """
    data, model = run.config.get("data", {}), run.config.get("model", {})
    if "name" in data and "name" in model:
        return f"{data['name']} / {model['name']}"
    return run.config.get("name", "?")


def label_runs(runs: list[Run]) -> list[Run]:
    """Give runs whose directory names collide (``a/seed0``, ``b/seed0``) the label ``a/seed0``.

    Examples:
        >>> [r.name for r in label_runs([load_run("sgd/seed0"), load_run("nupi/seed0")])]  # doctest: +SKIP
        ['sgd/seed0', 'nupi/seed0']
    """
    names = [run.path.name for run in runs]
    for run in runs:
        if names.count(run.path.name) > 1:
            run.label = f"{run.path.parent.name}/{run.path.name}"
    return runs


def load_run(run_dir: str | Path) -> Run:
    """Read ``config.json`` and ``summary.json`` of a run directory.

    Examples:
        >>> run = load_run("runs/demo/penalized")  # doctest: +SKIP
        >>> run.summary.density  # doctest: +SKIP
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFormatError(f"{path}: not a run directory")
    return Run(path, read_json(path / CONFIG), read_summary(path))


def is_path(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a density path's directory (it holds ``path.json``)."""
    return (Path(run_dir) / PATH).is_file()


def load_path(run_dir: str | Path) -> list[Run]:
    """The points of a density path's directory as runs (``series="path"``), labelled
    ``<directory>/<point>``, in the order of the path; the points taken so far when the
    path is not finished.

    Raises:
        RunFormatError: naming ``path.json`` or a point's directory when it is missing or broken.

    Examples:
        >>> [run.name for run in load_path("runs/front")]  # doctest: +SKIP
        ['front/density-0.5', 'front/density-0.3', 'front/density-0.2', 'front/density-0.1']
    """
    path = Path(run_dir)
    listed = read_json(path / PATH).get("points")
    if not isinstance(listed, list) or not all(isinstance(p, dict) and "run" in p for p in listed):
        raise RunFormatError(f"{path / PATH}: no list of points with their 'run' directories")
    runs = [load_run(path / point["run"]) for point in listed]
    for run in runs:
        run.label, run.series = f"{path.name}/{run.path.name}", "path"
    return runs


def read_summary(run_dir: str | Path) -> RunSummary:
    """The :class:`RunSummary` of a finished run directory.

    Raises:
        RunFormatError: naming ``summary.json`` when it is missing, not JSON or incomplete.
    """
    path = Path(run_dir) / SUMMARY
    try:
        return RunSummary.from_dict(read_json(path))
    except SummaryFormatError as error:
        raise RunFormatError(f"{path}: {error}") from None


def write_summary(run_dir: str | Path, summary: RunSummary) -> None:
    """Write ``summary.json`` (atomically) into a run directory."""
    write_json(Path(run_dir) / SUMMARY, summary.to_dict())


def load_model_state(model, path: str | Path) -> None:
    """Load a run's ``model.pt`` into ``model`` (built and sparsified as the run's problem file says).

    Runs written before gates became parametrizations (ctrlsparse 0.1, keys such as
    ``fc1.gate.log_alpha``) cannot be loaded into today's models: the error says so.
    """
    import torch  # runs.py is read by plots and reports: keep torch out of their import

    path = Path(path)
    if not path.exists():
        raise RunFormatError(f"{path}: no such file (is {path.parent} a finished run?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable file: one clear message
        raise RunFormatError(f"{path}: not a readable model state ({error})") from error
    if any(key.endswith((".gate.log_alpha", ".gate.phi")) and "_gate." not in key for key in state):
        raise RunFormatError(
            f"{path} was written by ctrlsparse 0.1 (gated layer classes); today's gates are "
            "parametrizations with other state keys. Re-run the problem to get a loadable model "
            "(its summary.json and metrics.jsonl still read as before)."
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunFormatError(f"{path} does not match the run's model: {error}") from error
