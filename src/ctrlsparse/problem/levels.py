"""Constraint levels: a target density or a penalty, for the model or per layer.

A level is given as one number (model-wise), a list in forward order (one per gated
layer) or a ``{layer: value}`` dict, whose keys may be patterns (``"layer2.*"``);
:func:`parse_levels` turns all three into ``{constraint name: value}``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ctrlsparse.choices import PENALTY, TARGET, Choice

MODEL = "model"
"""Name of the model-wise constraint (layer-wise constraints carry their layer's name)."""

MACS = "macs"
"""Name of the model-wise MACs constraint; a layer's is ``"macs:<layer>"`` (:class:`ConstraintKey`)."""


class Quantity(Choice):
    """What a constraint bounds: the density of the sparsifiable parameters, the MACs fraction, or
    a gate group's open fraction (a decoder LM's target shape, :mod:`~ctrlsparse.problem.shape`)."""

    DENSITY = "density"
    MACS = "macs"
    SHAPE = "shape"


Quantity._noun = "constrained quantity"


@dataclass(frozen=True)
class ConstraintKey:
    """A constraint's name, read: what it bounds and where (a layer, or None for the model; for
    a shape target, ``"<unit kind>:<gate group>"``).

    Names are ``"model"`` and ``"<layer>"`` (densities), ``"macs"`` and ``"macs:<layer>"``
    (MACs budgets), ``"shape:<unit kind>:<gate group>"`` (shape targets): :attr:`name` writes
    them, :meth:`parse` reads them, and nothing else slices them.

    Examples:
        >>> ConstraintKey.parse("macs:fc1")
        ConstraintKey(quantity=<Quantity.MACS: 'macs'>, layer='fc1')
        >>> ConstraintKey(Quantity.MACS, None).name, ConstraintKey(Quantity.DENSITY, "fc1").name
        ('macs', 'fc1')
    """

    quantity: Quantity
    layer: str | None = None

    @classmethod
    def parse(cls, name: str) -> ConstraintKey:
        if name == MODEL:
            return cls(Quantity.DENSITY)
        if name == MACS:
            return cls(Quantity.MACS)
        for quantity in (Quantity.MACS, Quantity.SHAPE):
            if name.startswith(quantity.value + ":"):
                return cls(quantity, name[len(quantity.value) + 1 :])
        return cls(Quantity.DENSITY, name)

    @classmethod
    def macs(cls, scope: str) -> ConstraintKey:
        """The MACs budget on ``scope``: a layer, or ``"model"``."""
        return cls(Quantity.MACS, None if scope == MODEL else scope)

    @property
    def name(self) -> str:
        if self.quantity is Quantity.DENSITY:
            return MODEL if self.layer is None else self.layer
        return self.quantity.value if self.layer is None else f"{self.quantity.value}:{self.layer}"

    @property
    def scope(self) -> str:
        """The layer it bounds, or ``"model"``."""
        return MODEL if self.layer is None else self.layer


Levels = float | Sequence[float] | Mapping[str, float] | None


def _expand(value: Mapping[str, float], layer_names: list[str], argument: str) -> dict[str, float]:
    """Layer names as given, and patterns (``"layer2.*"``) as every layer they match that is not
    named outright; a pattern matching several layers gives each its own constraint."""
    valid = [MODEL, *layer_names]
    levels: dict[str, float] = {}
    patterns = {k: v for k, v in value.items() if any(c in k for c in "*?[")}
    for key, level in value.items():
        if key in patterns:
            continue
        if key not in valid:
            raise ValueError(f"{argument}: unknown layer name {key!r}; valid names: {', '.join(valid)}")
        levels[key] = level
    for pattern, level in patterns.items():
        matched = [n for n in layer_names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(
                f"{argument}: pattern {pattern!r} matches no layer; valid names: {', '.join(layer_names)}"
            )
        for name in matched:
            levels.setdefault(name, level)
    return levels


def parse_levels(value: Levels, layer_names: list[str], argument: str) -> dict[str, float]:
    """Normalise a target/penalty specification to ``{constraint name: value}``.

    Examples:
        >>> parse_levels({"layer1.*": 0.5, "fc": 0.8}, ["layer1.conv1", "layer1.conv2", "fc"], "target")
        {'fc': 0.8, 'layer1.conv1': 0.5, 'layer1.conv2': 0.5}
    """
    if value is None:
        return {}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {MODEL: float(value)}
    if isinstance(value, Mapping):
        levels = _expand(value, layer_names, argument)
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


def check_levels(
    targets: dict[str, float], penalties: dict[str, float], target_arg: str, penalty_arg: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Targets in (0, 1], penalties finite and >= 0, and no constraint given both (else ``ValueError``)."""
    for name, eps in targets.items():
        TARGET.check(eps, f"{target_arg} for {name!r}")
    for name, lam in penalties.items():
        PENALTY.check(lam, f"{penalty_arg} for {name!r}")
    both = sorted(set(targets) & set(penalties))
    if both:
        raise ValueError(f"{both[0]!r} has both a {target_arg} and a {penalty_arg}; give one of them")
    return targets, penalties
