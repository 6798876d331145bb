"""Names that were replaced: using them raises a message saying what replaces them."""

from __future__ import annotations

from ctrlsparse.errors import CtrlsparseError


class RemovedError(CtrlsparseError, TypeError):
    """A name ctrlsparse no longer provides."""


_GATED_LAYER = (
    "ctrlsparse no longer has gated layer classes: gates are attached to your own layers by "
    "parametrization. Use ctrlsparse.sparsify(model, example_input=x) (units from the dependency graph) "
    "or sparsify(model, structure='paper') (the papers' per-layer groups), and "
    "ctrlsparse.gate_groups(model) to see the gates."
)


def removed(name: str, message: str = _GATED_LAYER) -> type:
    """A class whose construction (or classmethod) raises :class:`RemovedError` with ``message``."""

    class _Meta(type):
        def __call__(cls, *args, **kwargs):
            raise RemovedError(f"{name}: {message}")

        def __getattr__(cls, attribute):
            if attribute.startswith("__"):  # introspection (doctest, inspect, pickle): a plain miss
                raise AttributeError(attribute)
            raise RemovedError(f"{name}.{attribute}: {message}")

    return _Meta(name, (), {"__doc__": f"Removed. {message}"})
