"""The measure_every_layer workload: one wide network measured after every layer,
fastrank's Gram tier (trace, squared Frobenius norm, top eigenvalue) against torch
computing the same quantities and torch computing the whole spectrum."""

from __future__ import annotations

import math

from fastrank.bench import implementations
from fastrank.bench.grading import blocker, per_layer, ratio, status_of, target
from fastrank.bench.implementations import SKIPPED, implementation, soft_rank, task
from fastrank.bench.stack import stack_rows
from fastrank.bench.timing import measure_side_by_side


class EveryLayer:
    name = "measure_every_layer"
    title = "one wide network, measured after every layer"
    LABELS = {"fastrank": "fastrank (Gram tier, cheap_every=1)",
              "torch": "torch (the same quantities: Gram, trace, ||G||_F^2, lobpcg)",
              "torch-svdvals": "torch (svdvals, the whole spectrum)"}

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        p = {"d": c["d"], "n": c["d"], "depth": c["depth"], "seeds": 1, "every": 1}
        return [task(self.name, "side by side", "every_layer", "fastrank", p, c["repeats"],
                     imports=["torch"])]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        r = results.get("side by side")
        impls = r["impls"] if status_of(r) == "ok" else dict.fromkeys(self.LABELS, r)
        fr, tr = impls.get("fastrank"), impls.get("torch")
        case = f"d=N={c['d']}, depth {c['depth']}"
        targets = [target(self.name, case, "torch (the same quantities) / fastrank "
                          "(cheap_every=1), time per layer",
                          ratio(per_layer(tr), per_layer(fr)), 5.0,
                          blocked=blocker(("fastrank", fr), ("torch", tr)))]
        rows = stack_rows(case, {self.LABELS[k]: k for k in self.LABELS}, impls,
                          ref_label=self.LABELS["fastrank"])
        notes = ["fastrank: simulate(net, 0, Schedule(every=None, log=None, cheap_every=1)): "
                 "after every layer the Gram matrix's trace, squared Frobenius norm and top "
                 "eigenvalue (Lanczos, tolerance 1e-6). torch: the torch script's layer, then "
                 "the same three quantities (G in float32, sums in float64, torch.lobpcg with "
                 "tolerance 1e-6) -- the target's competitor; torch-svdvals: the whole "
                 "spectrum after every layer (more work; shown for what a user writes "
                 "without a cheaper tier). Round-robin in one process."]
        return {"targets": targets, "rows": rows, "notes": notes}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def _fastrank_every_layer(p):
    import fastrank

    net = fastrank.Network(width=p["d"], batch=p["n"], depth=p["depth"], activation="relu",
                           norm="bn")
    schedule = fastrank.Schedule(every=None, log=None, cheap_every=1)

    def run():
        traj = fastrank.simulate(net, 0, schedule)
        if traj.failure is not None:
            raise RuntimeError(f"fastrank run failed: {traj.failure}")
        return float(traj.soft_rank[-1])

    return run


def _torch_every_layer(p, measure_layer):
    """One network through the torch script's layer, ``measure_layer(h)`` (h: batch x
    features) after every layer; the run returns the last layer's soft rank."""
    import torch

    from fastrank.bench import torch_sweep

    d, n, depth = p["d"], p["n"], p["depth"]
    scale = math.sqrt(2.0 / d)

    def run():
        with torch.no_grad():
            torch.manual_seed(0)
            h = torch.randn(1, n, d)
            out = measure_layer(h[0])
            for _ in range(depth):
                h = torch_sweep.layer(h, torch.randn(1, d, d).mul_(scale))
                out = measure_layer(h[0])
        return out

    return run


def _torch_gram_tier(h) -> float:
    """fastrank's Gram tier as torch computes it: G = H^T H (the smaller side) in float32,
    its trace and squared Frobenius norm in float64, the top eigenvalue by torch.lobpcg
    (tolerance 1e-6, fastrank's Lanczos tolerance); returns the soft rank."""
    import torch

    g = h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h
    trace = torch.diagonal(g).sum(dtype=torch.float64)
    frob2 = torch.sum(g.double() ** 2)
    torch.lobpcg(g, k=1, largest=True, tol=1e-6)
    return float(trace**2 / frob2)


def _torch_svdvals(h) -> float:
    import torch

    return soft_rank(torch.linalg.svdvals(h).numpy())


@implementation("every_layer", "fastrank")
def every_layer_side_by_side(p, repeats):
    """fastrank's Gram tier after every layer against torch computing the same quantities
    (``torch``) and torch computing the whole spectrum (``torch-svdvals``, what a torch
    user writes without a cheaper tier), round-robin in this process."""
    runners = {"fastrank": _fastrank_every_layer(p)}
    if implementations.installed("torch"):
        runners["torch"] = _torch_every_layer(p, _torch_gram_tier)
        runners["torch-svdvals"] = _torch_every_layer(p, _torch_svdvals)
    timings, last = measure_side_by_side(runners, repeats)
    impls = {k: {"status": SKIPPED, "library": "torch"} for k in ("torch", "torch-svdvals")}
    for k in runners:
        impls[k] = {"status": "ok", "timing": timings[k],
                    "work": {"networks": 1, "layers": p["depth"]},
                    "measured_layers": p["depth"] + 1, "final_soft_rank": [last[k]],
                    "final_soft_rank_mean": last[k]}
    return {"impls": impls}
