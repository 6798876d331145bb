"""ctrlsparse: neural-network sparsity as a constraint you state.

Data flow: :mod:`~ctrlsparse.data` → :mod:`~ctrlsparse.gating` (:func:`sparsify`: units,
gate groups, gates; counting; :func:`purge`) → :class:`SparsityProblem` (loss + density constraints)
→ :class:`GDA` (primal-dual step) → :func:`fit` (:mod:`~ctrlsparse.training`; a run
directory, :mod:`~ctrlsparse.runs`) → :mod:`~ctrlsparse.reports`.
Problem files, sweeps and benchmarks: :mod:`~ctrlsparse.experiments`.

Examples:
    >>> import torch, ctrlsparse as cs
    >>> model = cs.sparsify(my_model, example_input=x)  # doctest: +SKIP
    >>> problem = cs.SparsityProblem(model, torch.nn.functional.cross_entropy,
    ...                              target_density={"features.0": 0.5, "classifier": 0.3})  # doctest: +SKIP
    >>> opt = cs.GDA(problem, primal_optimizer=torch.optim.Adam(model.parameters(), lr=7e-4), dual_lr=1e-4)
    ...  # doctest: +SKIP
    >>> for x, y in loader:  # doctest: +SKIP
    ...     step = opt.step(x, y)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctrlsparse._removed import removed

# The public names are imported on first use (PEP 562), so that `import ctrlsparse.cli` and
# `ctrlsparse --help` do not pay for torch, cooper and torch_pruning. The block under
# TYPE_CHECKING names the same imports for type checkers, editors and the API reference.
_LAZY = {
    "ctrlsparse.data": ("Batches", "load_dataset"),
    "ctrlsparse.experiments": ("ProblemConfig", "load_problem", "run_problem"),
    "ctrlsparse.gating": (
        "GateGroup", "HardConcrete", "Structure", "count", "gate_groups", "purge", "register_attention",
        "register_decoder", "register_layer", "sparse_layers", "sparsify", "to_pretrained",
    ),
    "ctrlsparse.models": ("lenet5", "mlp"),
    "ctrlsparse.problem": (
        "GDA", "GDAStep", "SparsityProblem", "TargetSchedule", "penalty_from_per_parameter",
    ),
    "ctrlsparse.runs": ("RunSummary", "load_run", "read_metrics"),
    "ctrlsparse.runs.model_file": ("load", "save"),
    "ctrlsparse.training": ("DensityPath", "evaluate", "fit"),
}  # fmt: skip
_HOME = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from ctrlsparse.data import Batches, load_dataset
    from ctrlsparse.experiments import ProblemConfig, load_problem, run_problem
    from ctrlsparse.gating import (
        GateGroup,
        HardConcrete,
        Structure,
        count,
        gate_groups,
        purge,
        register_attention,
        register_decoder,
        register_layer,
        sparse_layers,
        sparsify,
        to_pretrained,
    )
    from ctrlsparse.models import lenet5, mlp
    from ctrlsparse.problem import GDA, GDAStep, SparsityProblem, TargetSchedule, penalty_from_per_parameter
    from ctrlsparse.runs import RunSummary, load_run, read_metrics
    from ctrlsparse.runs.model_file import load, save
    from ctrlsparse.training import DensityPath, evaluate, fit

GatedLayer = removed("GatedLayer")
GatedLinear = removed("GatedLinear")
GatedConv2d = removed("GatedConv2d")

__version__ = "0.1.0"

__all__ = [
    "GDA",
    "Batches",
    "DensityPath",
    "GDAStep",
    "GatedConv2d",
    "GatedLayer",
    "GateGroup",
    "GatedLinear",
    "HardConcrete",
    "ProblemConfig",
    "RunSummary",
    "SparsityProblem",
    "Structure",
    "TargetSchedule",
    "count",
    "evaluate",
    "fit",
    "gate_groups",
    "lenet5",
    "load",
    "load_dataset",
    "load_problem",
    "load_run",
    "mlp",
    "penalty_from_per_parameter",
    "purge",
    "read_metrics",
    "register_attention",
    "register_decoder",
    "register_layer",
    "run_problem",
    "save",
    "sparse_layers",
    "sparsify",
    "to_pretrained",
]


def __getattr__(name: str) -> Any:
    """A public name or a subpackage (``ctrlsparse.gating``), imported when first asked for."""
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":  # a subpackage that exists but failed to import
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
