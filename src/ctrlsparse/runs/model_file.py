"""Saving a model to one file and loading it back: a gated model, or a purged one.

A gated model cannot be pickled whole (``torch.save(model)`` fails on the classes
:mod:`torch.nn.utils.parametrize` creates), but all its state (weights, gate parameters,
decided gates) rides in its ``state_dict``. So a gated model is saved as its state dict
plus the layout of its gate groups, and loaded into a model that ``model_factory`` builds
and sparsifies the way the saved one was. A purged model is a plain ``nn.Module`` whose
layer shapes no factory knows, so it is pickled whole: loading it runs the pickled code
and needs its classes importable (for a file that needs neither, export it to ``.pt2``,
docs/howto/purge-export.md).

Examples:
    >>> import os, tempfile
    >>> import ctrlsparse as cs
    >>> def build():
    ...     net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    ...     return cs.sparsify(net, example_input=torch.zeros(1, 4))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save(build(), os.path.join(d, "gated.pt"))
    ...     load(path, build).__class__.__name__
    'Sequential'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.gating import gate_groups

GATED, PLAIN = "gated", "plain"
FORMAT = "ctrlsparse.model"
SCHEMA_VERSION = 1


class ModelFileError(CtrlsparseError, ValueError):
    """A model file that is not one :func:`save` wrote, or a factory whose model does not fit it."""


@dataclass
class ModelFile:
    """What :func:`save` writes: one ``torch.save`` dict.

    Attributes:
        kind: ``"gated"`` (``state`` is the state dict, ``groups`` the gate layout) or
            ``"plain"`` (``module`` is the pickled model, e.g. a purged one).
        groups: ``[(root module, kind, units)]`` of every gate group, in order.
    """

    kind: str
    groups: list[tuple[str, str, int]]
    state: dict | None = None
    module: nn.Module | None = None

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": SCHEMA_VERSION,
            "kind": self.kind,
            "groups": [list(g) for g in self.groups],
            "state": self.state,
            "module": self.module,
        }

    @classmethod
    def from_dict(cls, data: object, source: str) -> ModelFile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelFileError(f"{source}: not a model file written by ctrlsparse.save")
        if data.get("version") != SCHEMA_VERSION or data.get("kind") not in (GATED, PLAIN):
            raise ModelFileError(
                f"{source}: model file version {data.get('version')!r}, kind {data.get('kind')!r}; "
                f"this ctrlsparse reads version {SCHEMA_VERSION}, kinds {GATED!r} and {PLAIN!r}"
            )
        groups = [(str(n), str(k), int(u)) for n, k, u in data["groups"]]
        return cls(data["kind"], groups, data["state"], data["module"])


def _layout(model: nn.Module) -> list[tuple[str, str, int]]:
    return [(g.name, str(g.kind), g.num_units) for g in gate_groups(model)]


def save(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` to ``path``: a gated model as its state dict and gate layout, any other
    model (a purged one) pickled whole.

    Examples:
        >>> save(model, "runs/mine/gated.pt")  # doctest: +SKIP
        >>> save(cs.purge(model, x), "runs/mine/purged.pt")  # doctest: +SKIP
    """
    layout = _layout(model)
    if layout:
        record = ModelFile(GATED, layout, state=model.state_dict())
    else:
        record = ModelFile(PLAIN, [], module=model)
    path = Path(path)
    torch.save(record.to_dict(), path)
    return path


def load(
    path: str | Path, model_factory: Callable[[], nn.Module] | None = None, map_location: str | None = None
) -> nn.Module:
    """The model :func:`save` wrote to ``path``.

    A gated model needs ``model_factory``: a function returning the model sparsified as the
    saved one was (same model, same :func:`~ctrlsparse.sparsify` arguments); its state is
    replaced by the file's, decided gates included. A plain (purged) model needs none, and
    unpickles its classes, so load only files you trust.

    Raises:
        ModelFileError: the file is not a model file, a gated file comes without a factory,
            or the factory's gate layout differs from the saved one (naming the first
            difference).

    Examples:
        >>> model = load("runs/mine/gated.pt", lambda: cs.sparsify(Net(), example_input=x))  # doctest: +SKIP
        >>> small = load("runs/mine/purged.pt")  # doctest: +SKIP
    """
    source = str(path)
    record = ModelFile.from_dict(torch.load(path, map_location=map_location, weights_only=False), source)
    if record.kind == PLAIN:
        return record.module
    if model_factory is None:
        raise ModelFileError(
            f"{source} holds a gated model: pass model_factory, a function returning your model "
            "sparsified as when it was saved, e.g. lambda: cs.sparsify(Net(), example_input=x)"
        )
    model = model_factory()
    layout = _layout(model)
    if layout != record.groups:
        saved, built = set(record.groups), set(layout)
        first = sorted(saved ^ built)[0] if saved != built else "their order"
        raise ModelFileError(
            f"{source}: the factory's model has {len(layout)} gate groups, the file {len(record.groups)}; "
            f"they differ at {first!r} (root module, kind, units). Sparsify with the arguments used "
            "when saving (structure, include, exclude, heads, inputs)"
        )
    model.load_state_dict(record.state)
    return model
