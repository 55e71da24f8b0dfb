"""Grading: a result's status, the ratios that compare two results, and the targets
(met / NOT met, or the status that kept a ratio from being measured) that every
workload's summary lists."""

from __future__ import annotations

import math

from fastrank.bench.implementations import LIBRARY, SKIPPED


def status_of(result) -> str:
    """A task's status (``ok``, a skip, an error); a missing result is an error."""
    return (result or {}).get("status", "error")


def target(workload, case, what, value, threshold, op=">=", unit="x", blocked=None,
           detail=None) -> dict:
    """One line of the targets table; ``blocked`` (a status) when it could not be measured."""
    if blocked is not None or value is None or (isinstance(value, float) and math.isnan(value)):
        met, status = None, blocked or "error"
    else:
        if op == "within":
            met = bool(threshold[0] <= value <= threshold[1])
        else:
            met = bool(value >= threshold) if op == ">=" else bool(value <= threshold)
        status = "met" if met else "NOT met"
    return {"workload": workload, "case": case, "what": what, "value": value,
            "target": threshold, "op": op, "unit": unit, "met": met, "status": status,
            "detail": detail}


def blocker(*results_and_names):
    """The status that keeps a comparison of these (name, result) from being made, or None."""
    for name, result in results_and_names:
        status = status_of(result)
        if status == SKIPPED:
            return f"skipped ({LIBRARY.get(name, name)} not installed)"
        if status != "ok":
            return f"error ({name})"
    return None


def ratio(a, b):
    """a / b, None where either is missing or b is 0."""
    return a / b if a is not None and b not in (None, 0) else None


def ratio_text(key: str, entry: dict, digits: int) -> str:
    """``key 1.07x (paired 1.21x)``, or the reason it was not measured."""
    if entry["value"] is None:
        return f"{key} {entry['reason'] or '-'}"
    paired = entry["paired_median"]
    paired = f" (paired {paired:.{digits}f}x)" if paired is not None else ""
    return f"{key} {entry['value']:.{digits}f}x{paired}"


def per_layer(result) -> float | None:
    """Median time per layer per network of a stack-like result."""
    if status_of(result) != "ok" or "work" not in result:
        return None
    w = result["work"]
    return result["timing"]["median_s"] / (w["layers"] * w["networks"])
