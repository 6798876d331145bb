"""The checks every entry point shares: string enums whose parse errors name the bad value
and the valid choices, and the numeric ranges of settings (:class:`Range`). The Python API,
problem files and the command line all check through these, so a value is valid or not
wherever it is given, with one message.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Choice(str, enum.Enum):
    """A string enum. Assign ``Subclass._noun = "..."`` after the class body (inside it,
    the name would become a member) for error messages."""

    @classmethod
    def parse(cls, value: str | Choice) -> Choice:
        """``cls(value)``, or a ValueError listing the valid choices.

        Examples:
            >>> from ctrlsparse.gating import Structure
            >>> Structure.parse("neuron") is Structure.NEURON
            True
        """
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(repr(c.value) for c in cls)
            raise ValueError(f"unknown {cls._noun} {value!r}; valid {cls._noun}s: {valid}") from None


@dataclass(frozen=True)
class Range:
    """An interval of valid numbers, with the text its errors show (``"(0, 1]"``).

    Examples:
        >>> TARGET.contains(0.3), TARGET.contains(0.0)
        (True, False)
        >>> TARGET.check(1.5, "target_density for 'fc1'")
        Traceback (most recent call last):
        ...
        ValueError: target_density for 'fc1' must lie in (0, 1], got 1.5
    """

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @property
    def text(self) -> str:
        if self.high == math.inf:
            return f">= {self.low:g}" if self.low_closed else f"> {self.low:g}"
        return (
            f"{'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"
        )

    def contains(self, value: object) -> bool:
        """Whether ``value`` is a real number (not a bool) inside the range."""
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def check(self, value: object, what: str) -> float:
        """``value`` as a float, or a ``ValueError`` naming ``what``, the value and the range."""
        if not self.contains(value):
            verb = "must lie in" if self.high != math.inf else "must be a finite number"
            raise ValueError(f"{what} {verb} {self.text}, got {value!r}")
        return float(value)


TARGET = Range(0.0, 1.0, low_closed=False, high_closed=True)
"""A target ε: density or MACs fraction, (0, 1]."""
PENALTY = Range(0.0, math.inf, low_closed=True, high_closed=False)
"""A penalty λ: a finite number >= 0."""
FEASIBILITY = Range(0.0, 1.0, low_closed=True, high_closed=False)
"""The feasibility phase's share of the run, [0, 1) (0: no phase)."""
