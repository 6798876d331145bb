"""String enums whose parse errors name the bad value and the valid choices."""

from __future__ import annotations

import enum


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
