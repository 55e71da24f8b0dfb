"""How measurements appear in the tables of the report: times with their unit, the
repeats of a timing, and a result's status where it has no figure."""

from __future__ import annotations

import math

from fastrank.bench.grading import status_of


def fmt_time(seconds) -> str:
    """``12.3 ms``: three significant digits in the largest unit below the value."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def fmt_repeats(timing) -> str:
    """The repeats of a timing record in seconds (``0.1234, 0.1301``); ``-`` without one."""
    return ", ".join(f"{t:.4g}" for t in timing["times_s"]) if timing else "-"


def repeats_cell(result) -> str:
    """The repeats of a result's timing, ``-`` where it did not run."""
    if status_of(result) != "ok" or "timing" not in result:
        return "-"
    return fmt_repeats(result["timing"])


def first_call_cell(result) -> str:
    """The warm-up call that a result's timing left out, ``-`` without one."""
    t = (result or {}).get("timing", {}).get("first_call_s")
    return fmt_time(t) if t is not None else "-"


def shown(result, text) -> str:
    """``text`` where the result is ok, else its status (an error with its message)."""
    status = status_of(result)
    if status == "ok":
        return text
    return status if status != "error" else f"error: {result.get('error', '?')}"
