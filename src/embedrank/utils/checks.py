"""Argument checks shared by every layer (each names the argument and what was wrong)."""

from __future__ import annotations

import numbers

from embedrank.errors import InvalidValueError

__all__ = ["check_positive_int"]


def check_positive_int(value, name: str, allow_none: bool = False) -> int | None:
    """`value` as an int >= 1 (numpy integers accepted, bools refused); None passes when
    `allow_none`. Anything else is an InvalidValueError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
