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
    first = None
    out = None
    for i in range(max(warmup, 0)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(max(repeats, 1)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    record = {
        "first_call_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
    }
    return record, out
