"""The memory workload: the peak resident memory of one simulation against its depth,
each in a fresh process; and how this process's resident memory is read (also for
depth_scaling's peak)."""

from __future__ import annotations

import resource
import sys
import time

from fastrank.bench.formatting import fmt_time, shown
from fastrank.bench.grading import blocker, status_of, target
from fastrank.bench.implementations import implementation, task


class Memory:
    name = "memory"
    title = "peak memory against depth (fresh process each)"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        shallow = c["depths"][0]
        tasks = [task(self.name, "prime", "memory", "fastrank", {"d": c["d"], "depth": shallow},
                      isolate=True)]
        tasks += [task(self.name, f"depth={depth}", "memory", "fastrank",
                       {"d": c["d"], "depth": depth}, isolate=True) for depth in c["depths"]]
        return tasks

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        lo, hi = (results.get(f"depth={depth}") for depth in c["depths"][:2])
        ok = status_of(lo) == "ok" and status_of(hi) == "ok"
        floor = ok and all(r.get("rss_before_bytes") for r in (lo, hi))
        # above the import floor (numpy, numba, h5py), which would hide growth
        value = ((hi["peak_rss_bytes"] - hi["rss_before_bytes"])
                 / (lo["peak_rss_bytes"] - lo["rss_before_bytes"])) if floor else None
        blocked = blocker(("fastrank", lo), ("fastrank", hi))
        if blocked is None and not floor:
            blocked = "skipped (no way to read the RSS after imports: pip install psutil)"
        targets = [target(self.name, f"d=N={c['d']}", f"peak RSS above the RSS after imports, "
                          f"at depth {c['depths'][1]} / at depth {c['depths'][0]}", value, 1.10,
                          op="<=", blocked=blocked)]
        mb = 2.0**20
        rows = []
        for depth in c["depths"]:
            r = results.get(f"depth={depth}")
            ok = status_of(r) == "ok"
            rows.append({
                "depth": depth,
                "peak RSS": shown(r, f"{r['peak_rss_bytes'] / mb:.1f} MiB" if ok else ""),
                "RSS after imports": (f"{r['rss_before_bytes'] / mb:.1f} MiB"
                                      if ok and r.get("rss_before_bytes") else "-"),
                "RSS at the end": (f"{r['rss_after_bytes'] / mb:.1f} MiB"
                                   if ok and r.get("rss_after_bytes") else "-"),
                "measured layers": r.get("measured_layers", "-") if ok else "-",
                "simulate time": fmt_time(r["seconds"]) if ok else "-",
            })
        notes = [f"fastrank.simulate(Network(width={c['d']}, depth, relu, bn), 0) with the "
                 "default Schedule, each in a fresh process (peak RSS = VmHWM); a first process "
                 "warms numba's on-disk cache so that both see the same compile state. The "
                 "target compares the peak above the RSS after imports (the import floor "
                 "would hide any growth). The trajectory kept in memory grows with the "
                 "number of measured layers."]
        return {"targets": targets, "rows": rows, "notes": notes}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def rss_now() -> int | None:
    """Resident memory now: psutil, else Linux's VmRSS, else None."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> tuple[int, str]:
    """Peak resident memory of this process image and where the number comes from.

    Linux: VmHWM of /proc/self/status. Not ru_maxrss: Linux carries the parent's
    high-water mark across fork + exec into it, so a worker started by a big process
    would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM (/proc/self/status)"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


@implementation("memory", "fastrank")
def memory_fastrank(p, repeats):
    import fastrank

    net = fastrank.Network(width=p["d"], batch=p["d"], depth=p["depth"], activation="relu",
                           norm="bn")
    before = rss_now()
    t0 = time.perf_counter()
    traj = fastrank.simulate(net, 0)
    seconds = time.perf_counter() - t0
    peak, source = peak_rss()
    return {
        "rss_before_bytes": before,
        "rss_after_bytes": rss_now(),
        "peak_rss_bytes": peak,
        "peak_rss_source": source,
        "seconds": seconds,
        "measured_layers": int(len(traj.layer)),
        "final_soft_rank_mean": float(traj.soft_rank[-1]),
    }
