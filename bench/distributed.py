"""The distributed case of ``fastrank bench``: one sweep in one process
(1 process x T threads) and on a Dask LocalCluster (T workers x 1 thread), the ratio of
their times, the scheduler's cost per task and each worker's numba warm-up with an empty
and with a warm on-disk cache."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from fastrank.bench.formatting import fmt_repeats, fmt_time
from fastrank.bench.grading import blocker, ratio_text, status_of, target
from fastrank.bench.implementations import implementation, task
from fastrank.bench.timing import measure_side_by_side

#: distributed / local on a running cluster: the goal of a case with enough work per task.
GOAL = 1.2


class Distributed:
    name = "distributed"
    title = "a sweep on a Dask LocalCluster against the same sweep in one process"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        if not c.get("enabled", True):
            return []
        cache = Path(ctx["tmpdir"]) / "numba-cache-distributed"
        cache.mkdir(exist_ok=True)  # empty: the first workers compile, later ones load
        p = {k: c[k] for k in ("d", "depth", "every", "seeds", "noop_tasks")}
        return [task(self.name, "fastrank", "distributed", "fastrank", p, c["repeats"],
                     isolate=True, env={"NUMBA_CACHE_DIR": str(cache)})]

    #: The timed paths, as the table names them.
    PATHS = {"local": "one process: fastrank.sweep(sweep, path)",
             "cluster": "running LocalCluster: fastrank.sweep(sweep, path, client=client)",
             "end_to_end": "start a LocalCluster, sweep, shut it down (sweep --workers)"}

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        if not c.get("enabled", True):
            return {"targets": [], "rows": [], "notes": ["not measured in this preset"]}
        r = results.get("fastrank")
        ok = status_of(r) == "ok"
        ratios = self.ratios(r)
        case = (f"{c['seeds']} runs, d=N={c['d']}, depth {c['depth']}, BN + ReLU, every "
                f"{c['every']}")
        targets = [target(self.name, case, "T workers x 1 thread (running LocalCluster) / 1 "
                          "process x T threads, median time of the sweep",
                          ratios["cluster/local"]["value"], GOAL, op="<=",
                          blocked=blocker(("fastrank", r)),
                          detail={"goal": f"within {GOAL - 1:.0%} of one process",
                                  "ratios": ratios})]
        if not ok:
            return {"targets": targets, "rows": [], "ratios": ratios, "notes": []}
        timings = r["timings"]
        local = timings["local"]["median_s"]
        rows = [{"path": what,
                 "median": fmt_time(timings[key]["median_s"]),
                 "vs one process": f"{timings[key]['median_s'] / local:.2f}x",
                 "first call": fmt_time(timings[key]["first_call_s"]),
                 "repeats (s)": fmt_repeats(timings[key])}
                for key, what in self.PATHS.items()]
        soft = r["final_soft_rank_mean"]
        sanity = {case: {
            "final_soft_rank_mean": soft,
            "consistent": bool(r["files_equal"] and soft["local"] > 1.5),
            "rule": "every dataset of each cluster's file equals the local file's, bit for "
                    "bit; mean final soft rank > 1.5 (not collapsed)"}}
        warm, gap = r["warm_up_s"], r["gap_between_tasks_s"] or {"median": None, "max": None}
        notes = [
            f"T = {r['process_threads']}: the local sweep runs in the benchmark process with "
            "T numba and BLAS threads; the cluster has T worker processes of one Dask thread and "
            "one numba/BLAS thread each. Schedule(every="
            f"{c['every']}, log=None); {r['tasks']} tasks per sweep (one network, "
            f"{c['seeds'] // r['tasks']} seeds each).",
            "Ratios of medians (paired: median over rounds of the per-round ratio): "
            + "; ".join(ratio_text(k, ratios[k], 2) for k in ratios) + f". Target: "
            f"cluster / local <= {GOAL:g}x.",
            "Scheduler overhead per task: a worker waited "
            f"{fmt_time(gap['median'])} (median; at most {fmt_time(gap['max'])}) between the "
            "end of a task and the start of its next (Dask's task stream, timed sweeps); "
            f"{fmt_time(r['noop_task_s'])} per no-op task ({r['noop_tasks']} submitted at "
            "once: wall time / tasks); (wall time x Dask threads - the tasks' own time) / "
            f"tasks = {fmt_time(r['overhead_per_task_s'])} (median over the repeats: it also "
            "counts the submission, the warm-up check and a worker idle while the other "
            "runs the last task).",
            "Numba warm-up per worker (before the first task, all workers at once): "
            f"{', '.join(fmt_time(x) for x in warm['cold'])} with an empty cache (they "
            f"compile), median {fmt_time(warm['warm_median'])} for fresh workers with a warm "
            "cache (they load it); never again per task.",
            "end_to_end adds what `fastrank sweep --workers` adds: starting the worker "
            "processes, importing fastrank there, the warm-up and the shutdown.",
        ]
        return {"targets": targets, "rows": rows, "ratios": ratios, "notes": notes,
                "sanity": sanity}

    @staticmethod
    def ratios(result) -> dict:
        ok = status_of(result) == "ok"
        timings = (result or {}).get("timings") or {} if ok else {}
        out = {}
        for a in ("cluster", "end_to_end"):
            ta, tb = timings.get(a), timings.get("local")
            entry = {"value": None, "paired_median": None, "reason": None if ok else
                     status_of(result)}
            if ta and tb:
                entry["value"] = ta["median_s"] / tb["median_s"]
                entry["paired_median"] = float(np.median(
                    [x / y for x, y in zip(ta["times_s"], tb["times_s"], strict=True)]))
            out[f"{a}/local"] = entry
        return out


@implementation("distributed", "fastrank")
def distributed_fastrank(p, repeats):
    """The sweep locally and on LocalClusters, side by side (round-robin, one warm-up
    each); the first cluster meets an empty numba cache and compiles."""
    import tempfile

    import numba
    from distributed import get_task_stream, wait

    import fastrank
    from fastrank.distributed import Cluster
    from fastrank.runner import open_writer

    threads = numba.get_num_threads()
    sweep = fastrank.Sweep(
        grid={"width": (p["d"],), "depth": (p["depth"],), "activation": ("relu",),
              "norm": ("bn",)},
        seeds=tuple(range(p["seeds"])), schedule=fastrank.Schedule(every=p["every"], log=None))
    stats = {"cluster": [], "end_to_end": []}
    gaps: list[float] = []  # between a worker's consecutive tasks, timed cluster sweeps
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-dist-") as tmp, \
            Cluster.local(threads, threads=1) as running:
        files = {k: Path(tmp) / f"{k}.h5" for k in ("local", "cluster", "end_to_end")}

        def on(cluster, key):
            with open_writer(files[key], sweep, overwrite=True, backend=cluster) as writer, \
                    get_task_stream(cluster.client) as stream:
                stats[key].append(cluster.fill(writer))
            if key == "cluster":
                gaps.extend(_gaps(stream.data))

        def end_to_end():
            with Cluster.local(threads, threads=1) as cluster:
                on(cluster, "end_to_end")

        on(running, "cluster")  # before anything else compiled: the workers meet no cache
        cold = stats["cluster"].pop()
        gaps.clear()
        timings, _ = measure_side_by_side({
            "local": lambda: fastrank.sweep(sweep, files["local"], overwrite=True),
            "cluster": lambda: on(running, "cluster"),
            "end_to_end": end_to_end,
        }, repeats)
        equal = all(_same_datasets(files["local"], files[k]) for k in ("cluster", "end_to_end"))
        soft = {k: _final_soft_rank_mean(files[k]) for k in files}
        t0 = time.perf_counter()
        wait(running.client.map(abs, range(p["noop_tasks"]), pure=False))
        noop = (time.perf_counter() - t0) / p["noop_tasks"]
    timed = stats["cluster"][-repeats:]  # the first call was the warm-up
    overhead = [(s["wall_s"] * s["dask_threads"] - s["task_seconds"]) / s["tasks"]
                for s in timed]
    warm = [s for run in stats["end_to_end"] for s in run["warm_up_s"].values()
            if s is not None]
    return {
        "timings": timings, "process_threads": threads,
        "tasks": timed[0]["tasks"], "overhead_per_task_s": float(np.median(overhead)),
        "gap_between_tasks_s": {"median": float(np.median(gaps)), "max": float(max(gaps))}
        if gaps else None,
        "noop_task_s": noop, "noop_tasks": p["noop_tasks"], "files_equal": equal,
        "final_soft_rank_mean": soft,
        "warm_up_s": {"cold": list(cold["warm_up_s"].values()),
                      "warm_median": float(np.median(warm)) if warm else None},
        "cluster_stats": {"cold": cold, **stats},
    }


def _gaps(stream: list[dict]) -> list[float]:
    """Idle seconds of each worker between the end of a task and the start of its next
    (Dask's task stream), over one sweep."""
    spans: dict = {}
    for rec in stream:
        for ss in rec["startstops"]:
            if ss["action"] == "compute":
                spans.setdefault(rec["worker"], []).append((ss["start"], ss["stop"]))
    return [b[0] - a[1] for s in spans.values() for a, b in itertools.pairwise(sorted(s))]


def _final_soft_rank_mean(path) -> float:
    import fastrank

    with fastrank.open(path) as results:
        return float(np.mean([run.soft_rank[-1] for run in results]))


def _same_datasets(a, b) -> bool:
    import h5py

    from fastrank.store.schema import THREAD_DATASETS

    def datasets(path):  # but the threads that computed each run, which differ on purpose
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj[()]).tobytes())
                         if isinstance(obj, h5py.Dataset) and name not in THREAD_DATASETS
                         else None)
        return out

    return datasets(a) == datasets(b)
