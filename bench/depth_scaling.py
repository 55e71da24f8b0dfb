"""The depth_scaling workload: what a user runs (run_sweep into a results file) at a
shallow and a deep depth, with the same work per layer (a measured row every `every`
layers): the time per layer of both, the fixed cost of a call, and the peak memory of
each depth in a fresh process."""

from __future__ import annotations

import itertools
import time

import numpy as np

from fastrank.bench.commands import file_runs
from fastrank.bench.formatting import fmt_repeats, fmt_time, shown
from fastrank.bench.grading import blocker, ratio, ratio_text, status_of, target
from fastrank.bench.implementations import implementation, task
from fastrank.bench.memory import peak_rss, rss_now
from fastrank.bench.timing import measure_side_by_side


class DepthScaling:
    name = "depth_scaling"
    title = "time per layer against depth: a sweep into a results file, shallow and deep"
    GOAL = 1.1

    @staticmethod
    def label(depth) -> str:
        return f"depth={depth}"

    @staticmethod
    def rss_label(depth) -> str:
        return f"peak RSS, depth={depth}"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        p = {"d": c["d"], "every": c["every"], "seeds": c["seeds"]}
        shallow, deep = c["depths"]
        tasks = [task(self.name, "fastrank", "depth_scaling", "fastrank",
                      dict(p, depths=[c["base_depth"], shallow, deep]), c["repeats"])]
        # after the timing task, which leaves numba's on-disk cache warm for these
        tasks += [task(self.name, self.rss_label(depth), "depth_scaling_memory", "fastrank",
                       dict(p, depth=depth), isolate=True) for depth in (shallow, deep)]
        return tasks

    @classmethod
    def ratios(cls, c, result) -> dict:
        """Per-layer figures of the timing task: ``deep/shallow`` (the target: ratio of
        the per-layer medians, and the median of the per-round ratios) and, for the
        reader, the same with the fixed per-call cost taken out (``net``)."""
        shallow, deep = c["depths"]
        base = c["base_depth"]
        ok = status_of(result) == "ok"
        timings = ((result or {}).get("timings") or {}) if ok else {}
        t = {depth: timings.get(cls.label(depth)) for depth in (base, shallow, deep)}
        entry = {"value": None, "paired_median": None, "target": cls.GOAL,
                 "reason": None if ok else status_of(result)}
        net = {"value": None, "paired_median": None, "target": None,
               "reason": None if ok else status_of(result), "fixed_s": None,
               "per_layer_s": {}}
        if t[shallow] and t[deep]:
            entry["value"] = ratio(t[deep]["median_s"] / deep, t[shallow]["median_s"] / shallow)
            pairs = [(b / deep) / (a / shallow) for a, b in
                     zip(t[shallow]["times_s"], t[deep]["times_s"], strict=True) if a]
            entry["paired_median"] = float(np.median(pairs)) if pairs else None
        elif ok:
            entry["reason"] = "no time"
        if t[base] and t[shallow] and t[deep]:
            def per_layer_net(tb, td, depth):
                return (td - tb) / (depth - base)

            lo = per_layer_net(t[base]["median_s"], t[shallow]["median_s"], shallow)
            hi = per_layer_net(t[base]["median_s"], t[deep]["median_s"], deep)
            net["per_layer_s"] = {cls.label(shallow): lo, cls.label(deep): hi}
            net["value"] = ratio(hi, lo) if lo > 0 else None
            pairs = [per_layer_net(b, x, deep) / per_layer_net(b, a, shallow)
                     for b, a, x in zip(t[base]["times_s"], t[shallow]["times_s"],
                                        t[deep]["times_s"], strict=True) if a > b]
            net["paired_median"] = float(np.median(pairs)) if pairs else None
            # T(depth) = fixed + depth * per layer, through the base and the deep medians
            net["fixed_s"] = t[base]["median_s"] - base * hi
            if net["value"] is None:
                net["reason"] = "the shallow run took no longer than the base run"
        elif ok:
            net["reason"] = "no time"
        return {"deep/shallow": entry, "deep/shallow net of fixed cost": net}

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        shallow, deep = c["depths"]
        base = c["base_depth"]
        r = results.get("fastrank")
        ok = status_of(r) == "ok"
        ratios = self.ratios(c, r)
        case = f"d=N={c['d']}, {c['seeds']} seeds, depth {shallow} and {deep}"
        main = ratios["deep/shallow"]
        rss = {depth: results.get(self.rss_label(depth)) for depth in (shallow, deep)}
        rss_ok = all(status_of(x) == "ok" for x in rss.values())
        rss_ratio = (rss[deep]["peak_rss_bytes"] / rss[shallow]["peak_rss_bytes"]
                     if rss_ok else None)
        targets = [target(self.name, case, f"time per layer at depth {deep} / at depth "
                          f"{shallow} (run_sweep into a results file, median)", main["value"],
                          self.GOAL, op="<=", blocked=blocker(("fastrank", r)),
                          detail={"goal": f"time per layer at depth {deep:,} within "
                                          f"{self.GOAL - 1:.0%} of depth {shallow:,}",
                                  "ratios": ratios, "peak_rss_ratio": rss_ratio})]
        timings = r.get("timings", {}) if ok else {}
        files = r.get("files", {}) if ok else {}
        ref = (timings.get(self.label(shallow)) or {}).get("median_s")
        mb = 2.0**20
        rows = []
        for depth in (shallow, deep, base):
            label = self.label(depth)
            t = timings.get(label)
            f = files.get(label) or {}
            m = rss.get(depth)
            m_ok = status_of(m) == "ok"
            per = t["median_s"] / depth if t else None
            rows.append({
                "depth": f"{depth:,}" + (" (fixed-cost reference)" if depth == base else ""),
                "measured rows per run": f.get("measured_layers", "-"),
                "median (whole sweep)": (shown(r, fmt_time(t["median_s"]) if t else "-")),
                "per layer": fmt_time(per),
                "per layer per network": fmt_time(per / c["seeds"] if per else None),
                "per layer vs depth " + f"{shallow:,}": (f"{per / (ref / shallow):.3f}x"
                                                        if per and ref and depth != base
                                                        else "-"),
                "first call": fmt_time(t["first_call_s"]) if t else "-",
                "peak RSS (fresh process)": (shown(m, f"{m['peak_rss_bytes'] / mb:.1f} MiB"
                                                   if m_ok else "") if m else "-"),
                "results file": f"{f['bytes'] / mb:.2f} MiB" if f.get("bytes") else "-",
                "repeats (s)": fmt_repeats(t),
            })
        sanity = {}
        if ok:
            complete = r.get("complete") or {}
            prefix = r.get("prefix_matches") or {}
            means = r.get("final_soft_rank_mean") or {}
            labels = [self.label(d) for d in (base, shallow, deep)]
            sanity[case] = {
                "final_soft_rank_mean": {k: means[k] for k in labels if k in means},
                "consistent": bool(
                    all(complete.get(k) is True for k in labels)
                    and all(prefix.get(k) is True for k in labels[1:])
                    and all((means.get(k) or 0) > 1.5 for k in labels[1:])),
                "rule": "every results file reads back complete, with the seeds' runs and "
                        "depth / every + 1 measured rows each; each file's first rows equal "
                        "the next shallower file's (same seeds, same layers: rtol 1e-5); "
                        "mean final soft rank > 1.5 (not collapsed)",
            }

        net = ratios["deep/shallow net of fixed cost"]
        per_layer = {depth: ((timings.get(self.label(depth)) or {}).get("median_s") or 0) / depth
                     for depth in (shallow, deep)}
        deep_t = timings.get(self.label(deep)) or {}
        notes = [
            f"What users run: fastrank.runner.run_sweep(Sweep(grid={{width: {c['d']}, depth, "
            f"activation: relu, norm: bn}}, seeds 0..{c['seeds'] - 1}, Schedule(every="
            f"{c['every']}, log=0)), path, overwrite=True) into a temporary results file, "
            "d = N, float32; laying out the file, every commit and closing it included. "
            f"With log=0 a run's rows are layers 0, {c['every']}, .. depth (depth / "
            f"{c['every']} + 1), so the measured rows grow with the depth: the same work per "
            "layer at every depth.",
            f"Depths {base}, {shallow:,} and {deep:,} timed in one process, round-robin "
            "(measure_side_by_side: a slow spell of the machine hits them all alike), after "
            f"one warm-up call of each; {c['repeats']} repeat{'s' if c['repeats'] != 1 else ''} "
            "of each depth, the same number for the deep run (its repeats took "
            + (f"{fmt_time(sum(deep_t['times_s']))} in all, warm-up "
               f"{fmt_time(deep_t['first_call_s'])}" if deep_t else "-")
            + "). Time per layer = median wall time of the whole sweep / depth (all "
            f"{c['seeds']} seeds; per network: / {c['seeds']}): "
            f"{fmt_time(per_layer[shallow] or None)} at depth {shallow:,}, "
            f"{fmt_time(per_layer[deep] or None)} at depth {deep:,}.",
            "Ratios (paired: the median over rounds of the per-round ratio): "
            + "; ".join(ratio_text(k, ratios[k], 3) for k in ratios)
            + f". Target: deep / shallow <= "
            f"{self.GOAL:g}x (time per layer at depth {deep:,} within {self.GOAL - 1:.0%} of "
            f"depth {shallow:,}).",
            "Each run_sweep call also has a fixed cost (creating and closing the file, "
            f"setting up the runs), spread over fewer layers at depth {shallow:,}: that "
            "alone makes deep / shallow below 1. 'net of fixed cost' takes it out with the "
            f"depth-{base} run timed alongside: per layer = (t(depth) - t({base})) / (depth - "
            f"{base}): "
            + (f"{fmt_time(net['per_layer_s'][self.label(shallow)])} at {shallow:,}, "
               f"{fmt_time(net['per_layer_s'][self.label(deep)])} at {deep:,}; fixed cost "
               f"about {fmt_time(net['fixed_s'])} per call" if net["per_layer_s"] else "-")
            + " (no target; a per-layer cost growing with depth would show here).",
            f"Peak RSS: one run_sweep at depth {shallow:,} and at {deep:,}, each in a fresh "
            "process (VmHWM, imports included) after the timing task warmed numba's on-disk "
            "cache: deep / shallow "
            + (f"{rss_ratio:.3f}x" if rss_ratio is not None else "-")
            + " (no target; run_sweep commits the rows to the file as it goes instead of "
            "keeping the trajectory, so this shows what memory still grows with depth).",
        ]
        if ok and r.get("read_errors"):
            notes.append(f"results files that did not read back: {r['read_errors']}")
        return {"targets": targets, "rows": rows, "sanity": sanity, "ratios": ratios,
                "peak_rss_ratio": rss_ratio, "notes": notes}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def depth_scaling_sweep(p, depth):
    """The depth_scaling case's sweep at ``depth``: d = N = p["d"], BN + ReLU, seeds
    0 .. p["seeds"] - 1, Schedule(every=p["every"], log=0) (no log-spaced rows, so the
    measured rows grow in proportion to the depth)."""
    import fastrank

    return fastrank.Sweep(grid={"width": [p["d"]], "depth": [depth], "activation": ["relu"],
                                "norm": ["bn"]},
                          seeds=tuple(range(p["seeds"])),
                          schedule=fastrank.Schedule(every=p["every"], log=0))


@implementation("depth_scaling", "fastrank")
def depth_scaling_fastrank(p, repeats):
    """run_sweep of the same sweep at each of ``p["depths"]``, side by side in this
    process (round-robin, one warm-up each), each into its own temporary results file;
    the files are read back afterwards (outside the timing)."""
    import os
    import tempfile

    import fastrank
    import fastrank.runner

    depths = [int(x) for x in p["depths"]]
    labels = {depth: f"depth={depth}" for depth in depths}
    sweeps = {depth: depth_scaling_sweep(p, depth) for depth in depths}
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-depth-") as tmp:
        paths = {depth: os.path.join(tmp, f"depth-{depth}.h5") for depth in depths}
        fns = {labels[depth]: (lambda depth=depth: fastrank.runner.run_sweep(
            sweeps[depth], paths[depth], overwrite=True)) for depth in depths}
        timings, _ = measure_side_by_side(fns, repeats)

        files, soft_ranks, read_errors = {}, {}, {}
        for depth in depths:
            label = labels[depth]
            try:
                got = file_runs(paths[depth])
            except Exception as exc:  # reported: the timings stand on their own
                read_errors[label] = f"{type(exc).__name__}: {exc}"
                continue
            soft_ranks[label] = got.pop("soft_rank")
            del got["final_soft_rank"]
            files[label] = {**got, "bytes": os.path.getsize(paths[depth])}
    expected_rows = {labels[depth]: int(len(sweeps[depth].schedule.points(depth)))
                     for depth in depths}
    complete = {label: bool(f["status"] == ["complete"] and f["runs"] == p["seeds"]
                            and f["measured_layers"] == expected_rows[label])
                for label, f in files.items()}
    # the same seeds give the same layers: a deeper file's first rows are the next
    # shallower file's rows (label -> whether they agree)
    prefix_matches = {}
    order = sorted(depths)
    for lo, hi in itertools.pairwise(order):
        a_label, b_label = labels[lo], labels[hi]
        if a_label in soft_ranks and b_label in soft_ranks:
            prefix_matches[b_label] = bool(
                len(soft_ranks[a_label]) == len(soft_ranks[b_label]) and all(
                    len(b) >= len(a) and np.allclose(b[:len(a)], a, rtol=1e-5, atol=0.0)
                    for a, b in zip(soft_ranks[a_label], soft_ranks[b_label], strict=True)))
    finals = {label: [float(s[-1]) for s in v] for label, v in soft_ranks.items()}
    return {
        "timings": timings,
        "depths": depths,
        "per_layer_s": {labels[d]: timings[labels[d]]["median_s"] / d for d in depths},
        "work": {"networks": p["seeds"], "layers": {labels[d]: d for d in depths}},
        "expected_rows": expected_rows,
        "files": files,
        "complete": complete,
        "prefix_matches": prefix_matches,
        "read_errors": read_errors,
        "final_soft_rank": finals,
        "final_soft_rank_mean": {k: float(np.mean(v)) for k, v in finals.items() if v},
        "schedule": sweeps[depths[0]].schedule.to_dict(),
    }


@implementation("depth_scaling_memory", "fastrank")
def depth_scaling_memory_fastrank(p, repeats):
    """One run_sweep of the depth_scaling sweep at ``p["depth"]`` (in a fresh process:
    the peak RSS is this run's, imports and numba's cached kernels included)."""
    import os
    import tempfile

    import fastrank.runner

    sweep = depth_scaling_sweep(p, p["depth"])
    before = rss_now()
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-depth-rss-") as tmp:
        path = os.path.join(tmp, "sweep.h5")
        t0 = time.perf_counter()
        fastrank.runner.run_sweep(sweep, path, overwrite=True)
        seconds = time.perf_counter() - t0
        peak, source = peak_rss()
        size = os.path.getsize(path)
    return {
        "depth": int(p["depth"]),
        "rss_before_bytes": before,
        "rss_after_bytes": rss_now(),
        "peak_rss_bytes": peak,
        "peak_rss_source": source,
        "seconds": seconds,
        "file_bytes": size,
    }
