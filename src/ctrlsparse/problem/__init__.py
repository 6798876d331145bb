"""The problem: task loss + expected-L0 density constraints (or penalties), solved by GDA.

Data flow: :mod:`~ctrlsparse.problem.levels` (targets and penalties, model-wise or per
layer) → :class:`~ctrlsparse.problem.cmp.SparsityProblem` (a cooper CMP; MACs budgets from
:mod:`~ctrlsparse.problem.macs`, refused targets from :mod:`~ctrlsparse.problem.reachability`)
→ :class:`~ctrlsparse.problem.gda.GDA` (one primal-dual step; dual optimizers in
:mod:`~ctrlsparse.problem.dual`), with target :mod:`~ctrlsparse.problem.schedules` and the
closing :mod:`~ctrlsparse.problem.feasibility` phase.
"""

from ctrlsparse.modelio import forward_order
from ctrlsparse.problem.cmp import SparsityProblem, penalty_from_per_parameter
from ctrlsparse.problem.gda import GDA, GDAStep
from ctrlsparse.problem.levels import MODEL, Levels, parse_levels
from ctrlsparse.problem.schedules import ScheduleKind, TargetSchedule

__all__ = [
    "GDA",
    "MODEL",
    "GDAStep",
    "Levels",
    "ScheduleKind",
    "SparsityProblem",
    "TargetSchedule",
    "forward_order",
    "parse_levels",
    "penalty_from_per_parameter",
]
