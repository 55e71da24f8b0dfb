"""Wall-clock timing: one warm-up call (compilation, caches, page faults) timed on its
own, then ``repeats`` timed calls whose median is the figure reported."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[dict, object]:
    """Time ``fn``: ``warmup`` untimed-in-the-median calls, then ``repeats`` calls.

    ``fn`` must finish its work before returning (JAX: ``block_until_ready``).
    Returns the timing record and the last call's result.
    """
    records, out = measure_side_by_side({"fn": fn}, repeats, warmup)
    return records["fn"], out["fn"]


def measure_side_by_side(fns: dict[str, Callable[[], object]], repeats: int,
                         warmup: int = 1) -> tuple[dict, dict]:
    """Time several functions in the same process, round-robin: ``warmup`` calls of each
    (in order), then ``repeats`` rounds of one timed call of each, so that a slow spell
    of the machine hits them all alike.

    Returns ({name: timing record as :func:`measure` gives}, {name: last result}).
    """
    first: dict = {name: None for name in fns}
    out: dict = {name: None for name in fns}
    for i in range(max(warmup, 0)):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out[name] = fn()
            if i == 0:
                first[name] = time.perf_counter() - t0
    times: dict = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t0)
    records = {
        name: {"first_call_s": first[name], "times_s": ts, "median_s": statistics.median(ts),
               "min_s": min(ts), "repeats": len(ts)}
        for name, ts in times.items()
    }
    return records, out
