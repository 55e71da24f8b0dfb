"""The scaling workload: fastrank's time against depth (a fitted exponent, linear = 1)
and its time per layer against width, next to the SGEMM floor of each width."""

from __future__ import annotations

import numpy as np

from fastrank.bench.formatting import fmt_time
from fastrank.bench.grading import blocker, status_of, target
from fastrank.bench.implementations import implementation, task
from fastrank.bench.stack import sgemm_numpy
from fastrank.bench.timing import measure


def fit_exponent(x, y) -> float | None:
    """The slope of log y against log x over the positive pairs; None with fewer than two."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


class Scaling:
    name = "scaling"
    title = "fastrank time against depth and width"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        return [task(self.name, "fastrank", "scaling", "fastrank",
                     {k: c[k] for k in ("d", "depths", "every", "seeds", "widths", "work",
                                        "min_k", "max_k")}, c["repeats"])]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        r = results.get("fastrank")
        ok = status_of(r) == "ok"
        depth_exp = width_exp = None
        if ok:
            depth_exp = fit_exponent([b["depth"] for b in r["by_depth"]],
                                     [b["timing"]["median_s"] for b in r["by_depth"]])
            big = [b for b in r["by_width"] if b["width"] >= 256] or r["by_width"]
            width_exp = fit_exponent([b["width"] for b in big], [b["per_layer_s"] for b in big])
        targets = [target(self.name, f"d=N={c['d']}, depths {c['depths']}",
                          "fitted exponent of time vs depth (linear = 1)", depth_exp,
                          (0.9, 1.1), op="within", unit="",
                          blocked=blocker(("fastrank", r)))]
        rows = []
        if ok:
            for b in r["by_depth"]:
                rows.append({"sweep": "depth", "size": f"depth {b['depth']} (d={c['d']}, "
                             f"{c['seeds']} seeds)",
                             "median": fmt_time(b["timing"]["median_s"]),
                             "per layer per network": fmt_time(
                                 b["timing"]["median_s"] / (b["depth"] * c["seeds"])),
                             "SGEMM floor": "-", "vs floor": "-"})
            for b in r["by_width"]:
                rows.append({"sweep": "width", "size": f"d=N={b['width']}",
                             "median": f"{fmt_time(b['timing_2k']['median_s'])} ({2 * b['k']} "
                                       f"layers) - {fmt_time(b['timing_k']['median_s'])} "
                                       f"({b['k']})",
                             "per layer per network": fmt_time(b["per_layer_s"]),
                             "SGEMM floor": fmt_time(b["sgemm_s"]),
                             "vs floor": (f"{b['per_layer_s'] / b['sgemm_s']:.2f}x"
                                          if b["per_layer_s"] > 0 else "-")})
        notes = [
            f"Depth: simulate_many(d={c['d']}, relu/bn, {c['seeds']} seeds, Schedule(every="
            f"{c['every']}, log=None)); fitted exponent {_fmt(depth_exp)}.",
            "Width: per-layer time = (t(2k layers) - t(k layers)) / k with only layers 0 and "
            "last measured, so the two end measurements cancel; fitted exponent over d >= "
            f"256: {_fmt(width_exp)} (GEMM-bound: 3).",
        ]
        return {"targets": targets, "rows": rows, "notes": notes,
                "depth_exponent": depth_exp, "width_exponent": width_exp}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


@implementation("scaling", "fastrank")
def scaling_fastrank(p, repeats):
    import fastrank

    by_depth = []
    for depth in p["depths"]:
        net = fastrank.Network(width=p["d"], batch=p["d"], depth=depth, activation="relu",
                               norm="bn")
        sch = fastrank.Schedule(every=p["every"], log=None)
        seeds = range(p["seeds"])
        timing, _ = measure(
            lambda net=net, seeds=seeds, sch=sch: fastrank.simulate_many(net, seeds=seeds,
                                                                       schedule=sch),
            repeats)
        by_depth.append({"depth": depth, "timing": timing})
    by_width = []
    only_ends = fastrank.Schedule(every=None, log=None)
    for width in p["widths"]:
        k = int(min(p["max_k"], max(p["min_k"], p["work"] // width**3)))
        runs = {}
        for depth in (k, 2 * k):
            net = fastrank.Network(width=width, batch=width, depth=depth, activation="relu",
                                   norm="bn")
            runs[depth], _ = measure(lambda net=net: fastrank.simulate(net, 0, only_ends),
                                     repeats)
        per_layer = (runs[2 * k]["median_s"] - runs[k]["median_s"]) / k
        floor = sgemm_numpy({"d": width, "n": width}, max(5, repeats))  # per GEMM
        by_width.append({
            "width": width,
            "k": k,
            "timing_k": runs[k],
            "timing_2k": runs[2 * k],
            "per_layer_s": per_layer,
            "sgemm_s": floor["timing"]["median_s"],
        })
    return {"by_depth": by_depth, "by_width": by_width}
