"""Experiments: problem files (config), building and running them, sweeps, tuning, benchmarks."""

from ctrlsparse.experiments.build import build, run_problem
from ctrlsparse.experiments.config import ProblemConfig, ProblemFileError, load_problem, parse_problem

__all__ = ["ProblemConfig", "ProblemFileError", "build", "load_problem", "parse_problem", "run_problem"]
