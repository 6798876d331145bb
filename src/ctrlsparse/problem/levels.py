"""Constraint levels: a target density or a penalty, for the model or per layer.

A level is given as one number (model-wise), a list in forward order (one per gated
layer) or a ``{layer: value}`` dict; :func:`parse_levels` turns all three into
``{constraint name: value}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MODEL = "model"
"""Name of the model-wise constraint (layer-wise constraints carry their layer's name)."""

Levels = float | Sequence[float] | Mapping[str, float] | None


def parse_levels(value: Levels, layer_names: list[str], argument: str) -> dict[str, float]:
    """Normalise a target/penalty specification to ``{constraint name: value}``."""
    if value is None:
        return {}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {MODEL: float(value)}
    if isinstance(value, Mapping):
        valid = [MODEL, *layer_names]
        unknown = [k for k in value if k not in valid]
        if unknown:
            raise ValueError(
                f"{argument}: unknown layer name {unknown[0]!r}; valid names: {', '.join(valid)}"
            )
        levels = dict(value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != len(layer_names):
            raise ValueError(
                f"{argument}: a list needs one value per gated layer in forward order "
                f"({len(layer_names)}: {', '.join(layer_names)}), got {len(value)}"
            )
        levels = dict(zip(layer_names, value))
    else:
        raise TypeError(f"{argument} must be a number, a list or a {{layer: value}} dict, got {value!r}")
    for name, level in levels.items():
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise TypeError(f"{argument}[{name!r}] must be a number, got {level!r}")
    return {name: float(level) for name, level in levels.items()}
