"""Run directories: what a run writes (config, metrics, summary, model) and reads back."""

from ctrlsparse.runs.records import GDAStep, RunSummary, StepRecord
from ctrlsparse.runs.store import (
    MODEL,
    MetricsWriter,
    Run,
    RunFormatError,
    label_runs,
    load_model_state,
    load_run,
    problem_of,
    read_metrics,
    read_summary,
    write_json,
    write_summary,
)

__all__ = [
    "GDAStep",
    "MODEL",
    "MetricsWriter",
    "Run",
    "RunFormatError",
    "RunSummary",
    "StepRecord",
    "label_runs",
    "load_model_state",
    "load_run",
    "problem_of",
    "read_metrics",
    "read_summary",
    "write_json",
    "write_summary",
]
