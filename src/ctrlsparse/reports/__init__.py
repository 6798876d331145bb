"""Reports: figures of one run, figures and tables that compare runs, dynamics measures."""

from ctrlsparse.reports.compare_plots import comparison, front, traces, tradeoff
from ctrlsparse.reports.measures import ConstraintDynamics, constraint_dynamics, run_dynamics
from ctrlsparse.reports.run_plots import dynamics, gates, layer_colors
from ctrlsparse.reports.tables import Results, comparison_table, dynamics_table, results_table

__all__ = [
    "ConstraintDynamics",
    "Results",
    "comparison",
    "comparison_table",
    "front",
    "constraint_dynamics",
    "dynamics",
    "dynamics_table",
    "gates",
    "layer_colors",
    "results_table",
    "run_dynamics",
    "traces",
    "tradeoff",
]
