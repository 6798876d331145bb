"""Run directories: what a run writes (config, metrics, summary, model) and reads back."""

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
    write_json,
)

__all__ = [
    "MODEL",
    "MetricsWriter",
    "Run",
    "RunFormatError",
    "label_runs",
    "load_model_state",
    "load_run",
    "problem_of",
    "read_metrics",
    "write_json",
]
