"""Checks of one option value, shared by the specs (fastrank.spec, fastrank.schedule) and
the parsing of option text (fastrank.options): each returns the value in its canonical
type, or raises :class:`SpecError` in one line naming the option, the value and what
the option accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from fastrank.errors import SpecError


def choice(option: str, value, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``."""
    if value not in allowed:
        raise SpecError(f"invalid {option} {value!r}: choose one of {', '.join(allowed)}")
    return value


def positive_int(option: str, value, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpecError(f"invalid {option} {value!r}: must be an integer >= {minimum}")
    return int(value)


def listed(option: str, values) -> tuple:
    """``values`` as a tuple, where a list is asked for; SpecError for one value or a text."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SpecError(f"invalid {option} {values!r}: give a list of values")
    return tuple(values)


def number(option: str, value, *, positive: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float when it is a number (not a bool, not NaN), finite unless
    ``allow_inf``, above 0 with ``positive``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise SpecError(f"invalid {option} {value!r}: must be a number")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise SpecError(f"invalid {option} {value!r}: must be a finite number")
    if positive and value <= 0:
        raise SpecError(f"invalid {option} {value!r}: must be > 0")
    return value
