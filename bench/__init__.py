"""fastrank's benchmark suite: fastrank against the torch, JAX and
numpy code a user would write for the same work, on the same machine, in one run.

    fastrank bench [--quick] [--json PATH] [--markdown PATH] [--only small,rng]
    python -m fastrank.bench ...                 # the same command
    fastrank.bench.run_suite(preset="quick")     # the same, from Python

Workloads: see :mod:`fastrank.bench.workloads` (each in a module of its own, beside the
code it times); every task runs in a fresh worker process (:mod:`fastrank.bench.worker`)
with the same thread counts (:mod:`fastrank.bench.machine`).
"""

from fastrank.bench.suite import SuiteError, parse_only, run_suite
from fastrank.bench.workloads import NAMES, PRESETS

__all__ = ["run_suite", "parse_only", "SuiteError", "NAMES", "PRESETS"]
