"""Run one benchmark task, in this process or as ``python -m fastrank.bench.worker
TASK.json RESULT.json`` in a fresh one (the default: no library's thread pools, caches
or spinning threads leak into another's timing, and peak memory is the task's own).

A task is a dict: ``kind`` and ``impl`` (a key of implementations.IMPLS), ``params``,
``repeats``, ``threads`` and optionally ``imports`` (further libraries the task times
side by side, imported before the thread counts are fixed, where installed). The
result is the implementation's dict plus ``status`` (``ok``, ``skipped (not
installed)`` or ``error``) and the thread counts that were in
effect.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback

from fastrank.bench import (
    implementations,
    machine,
    workloads,  # noqa: F401  (their modules register the implementations)
)

SKIPPED = implementations.SKIPPED


def execute(task: dict, isolated: bool = False) -> dict:
    """Run ``task`` here; ``isolated`` (a fresh worker process) also pins the CPUs."""
    impl = task["impl"]
    library = implementations.LIBRARY[impl]
    if not implementations.installed(library):
        return {"status": SKIPPED, "library": library}
    n = int(task["threads"])
    undone = {}
    if isolated:
        machine.pin_to(n)
        if impl != "fastrank":  # a competitor runs in the environment its user has
            undone = machine.restore_initial_environ()
    if library == "jax" or "jax" in task.get("imports", ()):
        machine.configure_jax_env(n)
    importlib.import_module(library)
    if impl == "fastrank":
        importlib.import_module("fastrank")
    for extra in task.get("imports", ()):  # libraries timed side by side in this task:
        if implementations.installed(extra):  # loaded now, so that their pools get `threads`
            importlib.import_module(extra)
    threads = machine.Threads(n, numba=impl == "fastrank").apply()
    t0 = time.perf_counter()
    try:
        result = implementations.IMPLS[(task["kind"], impl)](task["params"], int(task["repeats"]))
        result["status"] = "ok"
    except Exception as exc:  # reported in the results; the suite goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=6)}
    finally:
        wall = time.perf_counter() - t0
        report = threads.report()
        threads.restore()
    result["threads"] = report
    result["wall_s"] = wall
    result["env_undone"] = undone
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fastrank.bench.worker TASK.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        task = json.load(f)
    result = execute(task, isolated=True)
    with open(argv[1], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
