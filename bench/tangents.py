"""The tangents workload: what carrying tangents through every layer's Jacobian costs
(``--tangents K``, fastrank.tangents), the same networks with K = 0, 1 and 8 timed side
by side, at a narrow width (the whole-depth kernel) and a wide one (layer by layer)."""

from __future__ import annotations

from fastrank.bench.grading import blocker, ratio, status_of, target
from fastrank.bench.implementations import implementation, task
from fastrank.bench.stack import stack_rows
from fastrank.bench.timing import measure_side_by_side

#: Tangent counts timed, and the cost the issue allows each (time / time without).
COUNTS = {0: None, 1: 2.2, 8: 6.0}


class Tangents:
    name = "tangents"
    title = "tangents through the Jacobians: the cost of --tangents K"

    def plan(self, cfg, ctx):
        return [task(self.name, f"d={case['d']}", "tangents", "fastrank", case,
                     cfg[self.name]["repeats"]) for case in cfg[self.name]["cases"]]

    def summarize(self, cfg, results, ctx):
        targets, rows = [], []
        for case in cfg[self.name]["cases"]:
            label = f"d={case['d']}"
            r = results.get(label)
            impls = (r["impls"] if status_of(r) == "ok"
                     else {f"K={k}": r for k in COUNTS})
            described = (f"BN+ReLU d=N={case['d']}, {case['depth']} layers, "
                         f"{case['seeds']} seeds")
            none = impls.get("K=0")
            for k, most in COUNTS.items():
                if most is None:
                    continue
                with_k = impls.get(f"K={k}")
                targets.append(target(
                    self.name, described, f"--tangents {k} / without, time",
                    ratio(_median(with_k), _median(none)), most, op="<=",
                    blocked=blocker(("fastrank", none), ("fastrank", with_k))))
            rows += stack_rows(described, {f"--tangents {k}": f"K={k}" for k in COUNTS},
                               impls, ref_label="--tangents 0")
        notes = ["fastrank.simulate_many(net, seeds, Schedule(every=100, log=None), "
                 "tangents=K), K = 0, 1, 8, round-robin in one process; the narrow case "
                 "runs in the whole-depth kernel, the wide one layer by layer (numpy's "
                 "BLAS for the products, kernels/cpu/tangents.py for the rest; without "
                 "tangents, the wide kernel)."]
        return {"targets": targets, "rows": rows, "notes": notes}


def _median(result) -> float | None:
    return result["timing"]["median_s"] if status_of(result) == "ok" else None


@implementation("tangents", "fastrank")
def tangents_side_by_side(p, repeats):
    """The same sweep of BN+ReLU networks with 0, 1 and 8 tangents, round-robin."""
    import fastrank

    net = fastrank.Network(width=p["d"], depth=p["depth"], activation="relu", norm="bn")
    schedule = fastrank.Schedule(every=100, log=None)

    def runner(k):
        def run():
            runs = fastrank.simulate_many(net, range(p["seeds"]), schedule, tangents=k)
            return sum(float(t.soft_rank[-1]) for t in runs) / len(runs)

        return run

    timings, last = measure_side_by_side({f"K={k}": runner(k) for k in COUNTS}, repeats)
    return {"impls": {key: {"status": "ok", "timing": timings[key],
                            "work": {"networks": p["seeds"], "layers": p["depth"]},
                            "final_soft_rank_mean": last[key]} for key in timings}}
