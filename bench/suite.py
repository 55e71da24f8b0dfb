"""Run the benchmark suite: plan every selected workload's tasks, run each in a fresh
worker process (or in this one), summarise, and write the JSON, markdown and plot."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastrank.bench import implementations, machine, report, workloads
from fastrank.bench.formatting import fmt_time

SCHEMA = "fastrank-bench"
SCHEMA_VERSION = 1
#: A worker that runs longer than this is stopped and its task reported as an error.
TASK_TIMEOUT_S = 1800


class SuiteError(ValueError):
    """A request the suite cannot run (unknown workload, bad thread count)."""


def parse_only(text: str | None) -> tuple[str, ...]:
    """``small,rng`` -> the workload names, validated; None or '' -> all of them."""
    if not text:
        return workloads.NAMES
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in workloads.WORKLOADS]
    if bad or not names:
        raise SuiteError(f"unknown workload {', '.join(bad) or repr(text)}: choose from "
                         f"{', '.join(workloads.NAMES)}")
    return tuple(n for n in workloads.NAMES if n in names)


def max_threads() -> int:
    import numba

    return min(numba.config.NUMBA_NUM_THREADS, machine.logical_cores())


def run_task(task: dict, isolate: bool, tmpdir: str) -> dict:
    """One task in a fresh ``python -m fastrank.bench.worker`` (or here)."""
    library = implementations.LIBRARY[task["impl"]]
    if not implementations.installed(library):
        return {"status": implementations.SKIPPED, "library": library}
    if not (isolate or task.get("isolate")):
        # imported here: `python -m fastrank.bench.worker` must find it not yet imported
        from fastrank.bench import worker

        return worker.execute(task, isolated=False)
    fd, task_path = tempfile.mkstemp(suffix=".json", dir=tmpdir)
    result_path = task_path[:-5] + "-result.json"
    with os.fdopen(fd, "w") as f:
        json.dump(task, f)
    env = dict(machine.initial_environ() or os.environ, **task.get("env", {}))
    try:
        proc = subprocess.run([sys.executable, "-m", "fastrank.bench.worker", task_path,
                               result_path], env=env, capture_output=True, text=True,
                              timeout=TASK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"worker timed out after {TASK_TIMEOUT_S} s"}
    try:
        with open(result_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
        return {"status": "error",
                "error": f"worker exited with status {proc.returncode}: " + " | ".join(tail)}


#: A task during which other processes used at least this fraction of the CPUs is
#: run again (up to ``retries`` times) and the attempt with the least background load
#: kept; all attempts' loads are recorded.
RETRY_BUSY = 0.20
#: Before a task (and before rerunning one), wait up to this long for the machine to
#: be quiet (other processes below QUIET_BUSY of the CPUs over a short sample).
QUIET_WAIT_S = {"before": 60.0, "retry": 180.0}
QUIET_BUSY = 0.10
QUIET_SAMPLE_S = 0.5
#: Total seconds a run may spend waiting for quiet (then it goes on and flags busy tasks).
QUIET_BUDGET_S = {"full": 1200.0, "quick": 120.0, "smoke": 0.0}


def busy_fraction(load: dict | None) -> float:
    load = load or {}
    return (load.get("other_busy_fraction") or 0.0) + (load.get("steal_fraction") or 0.0)


def _ungraded_when_busy(section: dict) -> None:
    """A workload whose tasks ran while other processes kept the CPUs busy (the report
    flags them: report.BUSY) keeps its measured figures but grades no target: a ratio
    taken on a loaded machine says little about either side."""
    busy = max((busy_fraction(r.get("background_load")) for r in section["results"].values()),
               default=0.0)
    if busy < report.BUSY:
        return
    for t in section["targets"]:
        if t["met"] is not None:
            t["met"] = None
            t["status"] = f"not graded (other processes used {busy:.0%} of the CPUs)"


class _Budget:
    def __init__(self, seconds: float):
        self.left = seconds


def wait_for_quiet(max_wait: float) -> float:
    """Sleep until other processes leave the CPUs (nearly) idle, at most ``max_wait``
    seconds; returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        with machine.BackgroundLoad() as load:
            time.sleep(QUIET_SAMPLE_S)
        waited = time.perf_counter() - t0
        if load.result is None or busy_fraction(load.result) < QUIET_BUSY or waited >= max_wait:
            return waited


def _run_quietest(task, isolate, tmpdir, retries, say, budget: _Budget) -> dict:
    attempts = []
    for attempt in range(retries + 1):
        waited = 0.0
        if retries and budget.left > 0:
            waited = wait_for_quiet(min(budget.left,
                                        QUIET_WAIT_S["retry" if attempt else "before"]))
            budget.left -= waited
            if budget.left <= 0:
                say("    the time budget for waiting is spent: going on without waiting")
            if waited > 2 * QUIET_SAMPLE_S:
                say(f"    waited {waited:.0f} s for other processes to leave the CPUs")
        with machine.BackgroundLoad() as load:
            result = run_task(task, isolate, tmpdir)
        result["background_load"] = load.result
        result["waited_for_quiet_s"] = round(waited, 1)
        result["load_average"] = machine.load_average()
        attempts.append(result)
        frac = busy_fraction(load.result)
        if (frac < RETRY_BUSY or result.get("status") != "ok" or attempt == retries
                or budget.left <= 0):
            break
        say(f"    other processes used {frac:.0%} of the CPUs; running it again when they "
            f"leave them (attempt {attempt + 2} of {retries + 1})")
    best = min(attempts, key=lambda r: busy_fraction(r["background_load"]))
    if len(attempts) > 1:
        best["attempts"] = [
            {"background_load": r["background_load"],
             "median_s": (r.get("timing") or {}).get("median_s"),
             **({"medians_s": {k: t.get("median_s") for k, t in r["timings"].items()}}
                if r.get("timings") else {}),
             "kept": r is best}
            for r in attempts]
    return best


def _describe_result(result: dict) -> str:
    status = result.get("status")
    if status != "ok":
        return status if status != "error" else f"error: {result.get('error')}"
    timings = result.get("timings") or {  # several things timed side by side
        k: r["timing"] for k, r in (result.get("impls") or {}).items() if r.get("timing")}
    if timings:
        return "; ".join(f"{name} median {fmt_time(t['median_s'])} of {t['repeats']}"
                         for name, t in timings.items())
    timing = result.get("timing")
    if timing:
        return (f"median {fmt_time(timing['median_s'])} of {timing['repeats']}, "
                f"first call {fmt_time(timing['first_call_s'])}")
    return f"done in {fmt_time(result.get('wall_s'))}"


def _threads_summary(sections: dict, requested: int) -> dict:
    """What each library reported, over every task: a set of values per library."""
    seen: dict = {}
    for section in sections.values():
        for result in section.get("results", {}).values():
            rep = result.get("threads") or {}
            for key in ("numba", "torch", "jax", "numba_threading_layer",
                        "torch_cpu_capability", "torch_blas"):
                if rep.get(key) is not None:
                    seen.setdefault(key, set()).add(str(rep[key]))
            for pool in rep.get("pools", []):
                name = f"{pool.get('internal_api')} ({pool.get('file')})"
                seen.setdefault(name, set()).add(
                    f"{pool.get('num_threads')} threads"
                    + (f", {pool['architecture']} kernel" if pool.get("architecture") else ""))
    return {"requested": requested, **{k: sorted(v) for k, v in seen.items()}}


def _clean(obj):
    """JSON-safe: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run_suite(
    preset: str = "full",
    only=None,
    repeats: int | None = None,
    threads: int | None = None,
    isolate: bool = True,
    retries: int | None = None,
    json_path=None,
    markdown_path=None,
    plot_path=None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the selected workloads and return the results document (also written to
    ``json_path``/``markdown_path`` and the scaling plot to ``plot_path`` if given).

    ``isolate``: every task in a fresh worker process (the honest default); False runs
    them in this process (tests), except the memory and compile tasks, which need one.
    ``retries``: how often a task is rerun when other processes kept the CPUs busy
    (default: 2, smoke preset 0); the attempt with the least background load is kept.
    """
    if preset not in workloads.PRESETS:
        raise SuiteError(f"unknown preset {preset!r}: choose {', '.join(workloads.PRESETS)}")
    names = parse_only(only) if not isinstance(only, (list, tuple)) else parse_only(",".join(only))
    limit = max_threads()
    threads = limit if threads is None else int(threads)
    if not 1 <= threads <= limit:
        raise SuiteError(f"invalid threads {threads}: must lie in 1..{limit}")
    if repeats is not None and int(repeats) < 1:
        raise SuiteError(f"invalid repeats {repeats}: must be >= 1")
    say = progress or (lambda line: None)
    if retries is None:
        retries = 0 if preset == "smoke" else 2
    cfg = workloads.config(preset, repeats)
    started = time.perf_counter()
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "preset": preset,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "isolated": isolate,
        "retry_policy": (
            f"before each task, wait up to {QUIET_WAIT_S['before']:g} s for other processes to "
            f"use < {QUIET_BUSY:.0%} of the CPUs; a task during which they used >= "
            f"{RETRY_BUSY:.0%} is rerun up to {retries} times (after waiting up to "
            f"{QUIET_WAIT_S['retry']:g} s for quiet) and the attempt with the least background "
            "load is kept (all attempts recorded under 'attempts'); at most "
            f"{QUIET_BUDGET_S.get(preset, 0.0):g} s of waiting per run" if retries else
            "none (every task run once)"),
        "machine": machine.describe(),
        "config": {name: cfg[name] for name in names},
        "workloads": {},
        "targets": [],
    }
    doc["machine"]["short_name"] = machine.short_name(doc["machine"])
    say(f"fastrank bench ({preset}): {', '.join(names)}; {threads} threads; "
        f"{'a fresh process per task' if isolate else 'in-process'}")
    parent_threads = machine.Threads(threads, numba=False).apply()  # matrix generation etc. in here
    try:
        with tempfile.TemporaryDirectory(prefix="fastrank-bench-") as tmpdir:
            ctx = {"tmpdir": tmpdir, "threads": threads}
            budget = _Budget(QUIET_BUDGET_S.get(preset, 0.0))
            for name in names:
                wl = workloads.WORKLOADS[name]
                results = {}
                t0 = time.perf_counter()
                for t in wl.plan(cfg, ctx):
                    t["threads"] = threads
                    say(f"  {name} / {t['label']} ...")
                    result = _run_quietest(t, isolate, tmpdir, retries, say, budget)
                    results[t["label"]] = _clean(result)
                    say(f"  {name} / {t['label']}: {_describe_result(results[t['label']])}")
                section = {"title": wl.title, "params": cfg[name], "results": results}
                section.update(wl.summarize(cfg, results, ctx))
                _ungraded_when_busy(section)
                section["seconds"] = time.perf_counter() - t0
                doc["workloads"][name] = section
                doc["targets"] += section["targets"]
    finally:
        parent_threads.restore()
    doc["threads"] = _threads_summary(doc["workloads"], threads)
    doc["waited_for_quiet_s"] = QUIET_BUDGET_S.get(preset, 0.0) - budget.left
    doc["duration_s"] = time.perf_counter() - started
    doc = _clean(doc)
    if plot_path is not None and "scaling" in doc["workloads"]:
        doc["workloads"]["scaling"]["plot"] = report.plot_scaling(doc, plot_path)
    doc["markdown"] = None  # filled below so that the JSON says where the table went
    text = report.markdown(doc)
    if markdown_path is not None:
        Path(markdown_path).write_text(text)
        doc["markdown"] = str(markdown_path)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    doc["markdown_text"] = text
    return doc
