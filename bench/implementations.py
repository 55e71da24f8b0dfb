"""The timed implementations: the registry that a task's ``(kind, impl)`` names, the library
each implementation needs, and the measures every implementation's output is checked with.

An implementation is a function ``(params, repeats) -> dict`` in the module of its
workload, registered with :func:`implementation`. It imports its library itself and
returns plain JSON-able data: the timing record (:func:`fastrank.bench.timing.measure`),
the amount of work done (so that times can be compared per layer per network) and a
sanity value computed the same way for every implementation (:func:`soft_rank`,
:func:`numerical_rank`, sample moments).
"""

from __future__ import annotations

import importlib.util

import numpy as np

#: Library each implementation needs (the one reported as not installed).
LIBRARY = {"fastrank": "numba", "numpy": "numpy", "torch": "torch", "jax": "jax"}

#: The implementations of a side-by-side comparison, in the order of the tables.
COMPARED = ("fastrank", "torch", "jax", "numpy")

#: (kind, implementation) -> function(params, repeats) -> dict
IMPLS: dict = {}

#: The result status of an implementation whose library is not installed.
SKIPPED = "skipped (not installed)"


def installed(library: str) -> bool:
    """Whether ``library`` can be imported (tests patch this to simulate its absence:
    callers look it up on this module)."""
    return importlib.util.find_spec(library) is not None


def implementation(kind: str, name: str):
    """Register the decorated function as implementation ``name`` of ``kind``."""
    def register(fn):
        IMPLS[(kind, name)] = fn
        return fn

    return register


def task(workload, label, kind, impl, params, repeats=1, **extra) -> dict:
    """A task for the worker (:mod:`fastrank.bench.worker`): run implementation ``impl``
    of ``kind`` on ``params``; ``label`` names its result within ``workload``."""
    return {"workload": workload, "label": label, "kind": kind, "impl": impl,
            "params": params, "repeats": repeats, **extra}


def soft_rank(s) -> float:
    """(sum s^2)^2 / sum s^4 of one spectrum (the paper's r(H))."""
    s = np.asarray(s, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0 or s.max() <= 0:
        return 0.0
    s2 = np.square(s / s.max())
    return float(s2.sum() ** 2 / np.sum(s2 * s2))


def numerical_rank(s, shape, eps: float = float(np.finfo(np.float32).eps)) -> int:
    """numpy.linalg.matrix_rank's rule: s > s_max * max(shape) * eps (float32 eps)."""
    s = np.asarray(s, dtype=np.float64)
    return int(np.count_nonzero(s > s.max() * max(shape) * eps)) if s.size else 0
