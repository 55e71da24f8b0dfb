"""The compile workload: what a fresh process pays before the work starts. numba's first
calls with an empty and with a warm on-disk cache, and the start-up of ``python -m
fastrank`` commands as a user meets it."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from fastrank.bench.commands import run_command
from fastrank.bench.formatting import fmt_time, shown
from fastrank.bench.grading import status_of, target
from fastrank.bench.implementations import implementation, task


class Compile:
    name = "compile"
    title = "numba compile time (fresh processes)"

    def plan(self, cfg, ctx):
        if not cfg[self.name]["enabled"]:
            return []
        cache = Path(ctx["tmpdir"]) / "numba-cache"
        cache.mkdir(exist_ok=True)
        env = {"NUMBA_CACHE_DIR": str(cache)}
        return [task(self.name, state, "compile", "fastrank", {}, isolate=True, env=env)
                for state in ("empty cache", "warm cache")] + [
            task(self.name, "start-up", "startup", "fastrank", {}, isolate=True, env=env,
                 repeats=cfg[self.name]["repeats"])]

    def summarize(self, cfg, results, ctx):
        rows = []
        for state in ("empty cache", "warm cache"):
            r = results.get(state)
            if r is None:
                continue
            ok = status_of(r) == "ok"
            row = {"numba cache": state,
                   "import fastrank": shown(r, fmt_time(r["import_s"]) if ok else "")}
            for path in ("narrow", "wide"):
                c = r.get(path) if ok else None
                row[f"first call, {path}"] = (f"{fmt_time(c['first_s'])} (d={c['width']})"
                                              if c else "-")
                row[f"second call, {path}"] = fmt_time(c["second_s"]) if c else "-"
            rows.append(row)
        notes = ["Each in a fresh process with NUMBA_CACHE_DIR pointing to a new folder "
                 "(empty, then filled by the first): " + (results.get("empty cache") or {})
                 .get("what", "") + ". First minus second call is the compile (empty cache) "
                 "or cache-load (warm cache) time. The workloads' 'first call' columns show "
                 "the warm-up call each timing excluded."]
        targets = []
        if not cfg[self.name]["enabled"]:
            notes = ["not measured in this preset"]
        else:
            targets = self._startup_targets(results.get("start-up"))
            notes.append("Start-up: each command as `python -m fastrank ...` in fresh processes "
                         "with the cache warm, one warm-up then the median of the repeats; CPU "
                         "is user + system of the process and its threads.")
        return {"targets": targets, "rows": rows, "notes": notes}

    def _startup_targets(self, r) -> list:
        """--version, --help and completion within 0.3 s (wall), a trivial sweep within
        1 s of CPU, warm cache."""
        ok = status_of(r) == "ok"
        commands = r["commands"] if ok else {}
        out = []
        for name, key, limit in (("--version", "median_wall_s", 0.3),
                                 ("--help", "median_wall_s", 0.3),
                                 ("shell completion", "median_wall_s", 0.3),
                                 ("trivial sweep", "median_cpu_s", 1.0)):
            c = commands.get(name)
            what = ("wall time" if key == "median_wall_s" else "CPU time") + (
                f" of `{c['command']}`" if c else f" of {name}")
            out.append(target(self.name, "start-up, warm cache", what,
                              c[key] if c else None, limit, op="<=", unit="s",
                              blocked=None if ok else status_of(r)))
        return out


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


@implementation("compile", "fastrank")
def compile_fastrank(p, repeats):
    """First calls in a fresh process: numba compiles (empty cache) or loads (warm cache)
    the kernels of the narrow (d=8) and the wide (d=256) code paths."""
    import subprocess

    import fastrank

    code = ("import time; t = time.perf_counter(); import fastrank; "
            "print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        t_import = float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        t_import = None
    sch = fastrank.Schedule(every=None, log=None)
    out = {"import_s": t_import}
    for name, width in (("narrow", 8), ("wide", 256)):
        net = fastrank.Network(width=width, depth=3, activation="relu", norm="bn")
        calls = []
        for _ in range(2):
            t0 = time.perf_counter()
            fastrank.simulate_many(net, seeds=range(2), schedule=sch)
            calls.append(time.perf_counter() - t0)
        out[name] = {"width": width, "first_s": calls[0], "second_s": calls[1]}
    out["what"] = ("simulate_many of relu/bn float32 networks of depth 3, 2 seeds, at d=8 "
                   "(narrow path) then d=256 (wide path); import timed in a fresh interpreter")
    return out


#: The start-up commands timed by the compile workload (arguments after ``fastrank``;
#: FILE is a temporary path), with the environment each needs.
STARTUP_COMMANDS = {
    "--version": (["--version"], {}),
    "--help": (["--help"], {}),
    "shell completion": ([], {"_FASTRANK_COMPLETE": "bash_complete", "COMP_WORDS": "fastrank sw",
                              "COMP_CWORD": "1"}),
    "trivial sweep": (["sweep", "--width", "8", "--depth", "10", "-q", "-o", "FILE",
                       "--overwrite"], {}),
}


def _child_seconds() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@implementation("startup", "fastrank")
def startup_fastrank(p, repeats):
    """``python -m fastrank`` start-up as a user meets it, each command in fresh processes
    (the numba cache as the suite's compile cases left it: warm): wall and CPU time,
    one warm-up then the median of ``repeats``."""
    import os
    import statistics
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-startup-") as tmp:
        path = os.path.join(tmp, "trivial.h5")
        for name, (args, extra_env) in STARTUP_COMMANDS.items():
            command = [sys.executable, "-m", "fastrank",
                       *[path if a == "FILE" else a for a in args]]
            env = dict(os.environ, **extra_env)
            walls, cpus = [], []
            for i in range(repeats + 1):
                cpu0, t0 = _child_seconds(), time.perf_counter()
                run_command(name, command, env, tmp)
                if i:  # the first is the warm-up
                    walls.append(time.perf_counter() - t0)
                    cpus.append(_child_seconds() - cpu0)
            shown = " ".join([*(f"{k}={v!r}" for k, v in extra_env.items()), "fastrank", *args])
            out[name] = {"command": shown, "wall_s": walls,
                         "cpu_s": cpus, "median_wall_s": statistics.median(walls),
                         "median_cpu_s": statistics.median(cpus)}
    return {"commands": out}
