"""The small and large workloads: a BN + ReLU network (float32, Gaussian weights of
variance 2/d), several seeds stacked, singular values every `every` layers (and at layer
0), timed in fastrank, torch, JAX and numpy side by side; ``large`` also against its
floor, one float32 GEMM of the layer's shape. Every implementation's layer is also run on
shared weights and checked against a float64 reference (:func:`layer_check`).

Every competitor's code sits next to fastrank's, so that a reader can check in one place
that they do the same work.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fastrank.bench import implementations
from fastrank.bench.formatting import first_call_cell, fmt_time, repeats_cell, shown
from fastrank.bench.grading import blocker, per_layer, ratio, status_of, target
from fastrank.bench.implementations import (
    COMPARED,
    LIBRARY,
    SKIPPED,
    implementation,
    soft_rank,
    task,
)
from fastrank.bench.timing import measure, measure_side_by_side

EPS_BN = 1e-5

#: Layers, width and relative tolerance of the layer check.
CHECK_LAYERS, CHECK_D, CHECK_RTOL = 3, 24, 1e-4


def stack_rows(case, labels, results, ref_label="fastrank"):
    """The table rows of a stack comparison, one per ``labels`` item (the name shown ->
    its key in ``results``), times per layer also relative to ``ref_label``'s."""
    ref = per_layer(results.get(labels[ref_label]))
    rows = []
    for impl, label in labels.items():
        r = results.get(label)
        pl = per_layer(r)
        work = r.get("work", {}) if status_of(r) == "ok" else {}
        rows.append({
            "case": case,
            "implementation": impl,
            "networks x layers": f"{work.get('networks', '-')} x {work.get('layers', '-')}",
            "median total": shown(r, fmt_time(r.get("timing", {}).get("median_s")) if r else ""),
            "per layer per network": fmt_time(pl),
            "vs fastrank": f"{pl / ref:.2f}x" if pl and ref else "-",
            "first call": first_call_cell(r),
            "final soft rank": (f"{r['final_soft_rank_mean']:.2f}"
                                if status_of(r) == "ok" and r.get("final_soft_rank_mean")
                                is not None else "-"),
            "repeats (s)": repeats_cell(r),
        })
    return rows


def stack_results(result) -> dict:
    """implementation -> its result, from a side-by-side stack task (each one's status is
    the task's where the task itself did not run)."""
    if status_of(result) != "ok":
        return {impl: result for impl in COMPARED}
    return result["impls"]


def _stack_check(impls: dict) -> dict:
    """The sanity check of a stack: every implementation's layer matches the float64
    reference on shared weights, and fastrank's network has not collapsed."""
    ok = {k: r for k, r in impls.items() if status_of(r) == "ok"}
    ranks = {k: r["final_soft_rank_mean"] for k, r in ok.items()}
    checks = {k: r["layer_check"] for k, r in ok.items()}
    ref = ranks.get("fastrank")
    return {"final_soft_rank_mean": ranks, "layer_check": checks,
            "consistent": bool(ref and ref > 1.5 and checks
                               and all(c["ok"] for c in checks.values())),
            "rule": f"each implementation's layer, run {CHECK_LAYERS} times on the "
                    f"same float32 input and weights (d = N = {CHECK_D}), gives "
                    "the singular values of a float64 BN + ReLU reference within "
                    f"{CHECK_RTOL:g} of the largest (leaving out the norm or the "
                    "activation is off by O(1)); fastrank's mean final soft rank > 1.5 (not "
                    "collapsed)"}


class Small:
    name = "small"
    title = "BN + ReLU, small widths, many layers, several seeds"
    #: Speed-ups asked for (time per layer per network).
    TARGETS = {"torch": 10.0, "jax": 5.0, "numpy": 20.0}

    @staticmethod
    def label(d) -> str:
        return f"d={d}"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        return [
            task(self.name, self.label(d), "stack", "fastrank",
                 {"d": d, "n": d, "depth": c["depth"], "every": c["every"],
                  "seeds": c["seeds"]}, c["repeats"], imports=["torch", "jax"])
            for d in c["widths"]
        ]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        targets, rows, sanity = [], [], {}
        for d in c["widths"]:
            impls = stack_results(results.get(self.label(d)))
            fr = impls.get("fastrank")
            for impl, goal in self.TARGETS.items():
                comp = impls.get(impl)
                blocked = blocker(("fastrank", fr), (impl, comp))
                value = ratio(per_layer(comp), per_layer(fr))
                targets.append(target(self.name, f"d=N={d}", f"{impl} / fastrank, time per "
                                      "layer per network", value, goal, blocked=blocked))
            rows += stack_rows(f"d=N={d}", {k: k for k in COMPARED}, impls)
            sanity[f"d={d}"] = _stack_check(impls)
        notes = [
            f"depth {c['depth']}, singular values every {c['every']} layers (and layer 0), "
            f"{c['seeds']} seeds, float32, Gaussian weights N(0, 2/d), BN (training mode, eps "
            "1e-5) then ReLU.",
            "Every implementation runs the seeds together at the suite's thread count, all "
            "in one process, round-robin (fastrank, torch, jax, numpy, fastrank, ...) after a "
            "warm-up call of each: fastrank: simulate_many(Network(width=d, batch=d, depth, "
            "relu, bn), seeds, Schedule(every, log=None)) (one seed per thread; every measure "
            "at each measured layer); torch: bench/torch_sweep.py (seeds stacked, (seeds, "
            "batch, features), torch.bmm, torch.var_mean, in-place normalisation and ReLU, "
            "no_grad, float64 svdvals); JAX: jit of vmap over seeds of a lax.scan over chunks "
            "of `every` layers (svdvals after each chunk); numpy: the seeds stacked, "
            "np.matmul, in-place normalisation, float64 svd.",
            "Sanity: each implementation's layer checked on shared weights against a float64 "
            "reference (see the rule), not only a window on the final soft rank (each "
            "implementation draws its own weights).",
            "Ratios compare time per layer per network (total / (layers x seeds)).",
        ]
        return {"targets": targets, "rows": rows, "sanity": sanity, "notes": notes}


class Large:
    name = "large"
    title = "BN + ReLU, one wide network"

    def labels(self):
        return {**{impl: impl for impl in COMPARED},
                "fastrank (layers 0 and last measured only)": "fastrank-ends"}

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        p = {"d": c["d"], "n": c["d"], "depth": c["depth"], "every": c["every"],
             "seeds": c["seeds"]}
        tasks = [task(self.name, "stack", "stack", "fastrank", p, c["repeats"],
                      imports=["torch", "jax"])]
        tasks.append(task(self.name, "fastrank-ends", "stack", "fastrank",
                          dict(p, every=None, impls=["fastrank"]), c["repeats"]))
        tasks.append(task(self.name, "sgemm", "sgemm", "numpy", {"d": c["d"], "n": c["d"]},
                          c["sgemm_repeats"]))
        return tasks

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        labels = self.labels()
        results = {**stack_results(results.get("stack")),
                   "fastrank-ends": stack_results(results.get("fastrank-ends"))["fastrank"],
                   "sgemm": results.get("sgemm")}
        fr, torch_r, sgemm, ends = (results.get(k) for k in ("fastrank", "torch", "sgemm",
                                                              "fastrank-ends"))
        floor = sgemm["timing"]["median_s"] if status_of(sgemm) == "ok" else None
        case = f"d=N={c['d']}"
        targets = [
            target(self.name, case, "torch / fastrank, time per layer",
                   ratio(per_layer(torch_r), per_layer(fr)), 1.5,
                   blocked=blocker(("fastrank", fr), ("torch", torch_r))),
            target(self.name, case, "fastrank per layer / one SGEMM (the floor)",
                   ratio(per_layer(fr), floor), 1.6, op="<=",
                   blocked=blocker(("fastrank", fr), ("numpy", sgemm))),
            target(self.name, case, "fastrank per layer, layers 0 and last measured only "
                   "(propagation) / one SGEMM", ratio(per_layer(ends), floor), 1.3, op="<=",
                   blocked=blocker(("fastrank", ends), ("numpy", sgemm))),
        ]
        rows = stack_rows(case, labels, results)
        rows.append({
            "case": case, "implementation": "floor: numpy SGEMM (W @ H, float32)",
            "networks x layers": "1 GEMM",
            "median total": shown(sgemm, fmt_time(floor)),
            "per layer per network": fmt_time(floor),
            "vs fastrank": (f"{floor / per_layer(fr):.2f}x" if floor and per_layer(fr)
                            else "-"),
            "first call": "-",
            "final soft rank": (f"{sgemm['gflops']:.0f} GFLOP/s" if floor else "-"),
            "repeats (s)": (f"median of {sgemm['timing']['repeats']} batches of "
                            f"{sgemm['timing']['calls_per_repeat']} GEMMs" if floor else "-"),
        })
        notes = [
            f"depth {c['depth']}, singular values every {c['every']} layers, {c['seeds']} "
            f"seed(s); per-layer times include the measurements (a {c['d']} x {c['d']} "
            f"spectrum every {c['every']} layers).",
            "'fastrank (layers 0 and last measured only)' is Schedule(every=None, log=None): "
            "the propagation cost without the periodic measurements, against the SGEMM "
            "floor.",
        ]
        return {"targets": targets, "rows": rows,
                "sanity": {case: _stack_check({k: results[k] for k in COMPARED})},
                "notes": notes}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def _measured(p) -> list[int]:
    depth, every = p["depth"], p["every"]
    return sorted({0, depth, *(range(every, depth + 1, every) if every else ())})


def _fastrank_stack(p):
    import fastrank

    net = fastrank.Network(width=p["d"], batch=p["n"], depth=p["depth"], activation="relu",
                           norm="bn")
    schedule = fastrank.Schedule(every=p["every"], log=None)

    def run():
        trajs = fastrank.simulate_many(net, seeds=range(p["seeds"]), schedule=schedule)
        for t in trajs:
            if t.failure is not None or int(t.layer[-1]) != p["depth"]:
                raise RuntimeError(f"fastrank run of seed {t.seed} did not finish: {t.failure}")
        return [t.spectrum[-1] for t in trajs]

    return run


def _fastrank_layer(h, w):
    """fastrank's layer on given weights: H (d x N), W (d x d), float32."""
    from fastrank import codes
    from fastrank.kernels.cpu import layer

    z = np.matmul(w, h)
    layer.normalize_activate(z, codes.NORM_BN, codes.ACT_RELU, False, EPS_BN)
    return z


def _torch_stack(p):
    from fastrank.bench import torch_sweep

    if p["n"] != p["d"]:
        raise ValueError("the torch script runs d = N")
    layers = _measured(p)
    return lambda: list(torch_sweep.run(p["d"], p["depth"], p["seeds"], layers)[-1])


def _torch_layer(h, w):
    import torch

    from fastrank.bench import torch_sweep

    with torch.no_grad():  # H^T (1, N, d) @ W^T: the script's (seeds, batch, features)
        out = torch_sweep.layer(torch.from_numpy(h.T[None].copy()),
                                torch.from_numpy(w.T[None].copy()))
    return out[0].numpy().T


def _numpy_layer_stack(h, w):
    """act(BN(H W)) for a stack (seeds, batch, features), in place after the GEMM."""
    z = np.matmul(h, w)
    z -= z.mean(axis=1, keepdims=True)
    z /= np.sqrt(np.mean(z * z, axis=1, keepdims=True) + np.float32(EPS_BN))
    return np.maximum(z, 0, out=z)


def _numpy_stack(p):
    d, n, depth, seeds = p["d"], p["n"], p["depth"], p["seeds"]
    scale = np.float32(math.sqrt(2.0 / d))
    measured = set(_measured(p))

    def run():
        rng = np.random.default_rng(0)
        h = rng.standard_normal((seeds, n, d), dtype=np.float32)
        s = np.linalg.svd(h.astype(np.float64), compute_uv=False)
        for layer in range(1, depth + 1):
            w = rng.standard_normal((seeds, d, d), dtype=np.float32)
            w *= scale
            h = _numpy_layer_stack(h, w)
            if layer in measured:
                s = np.linalg.svd(h.astype(np.float64), compute_uv=False)
        return list(s)

    return run


def _numpy_layer(h, w):
    return _numpy_layer_stack(h.T[None], w.T[None])[0].T


def _jax_layer(h, w):
    """act(BN(W H)), H (d x N): BN over the batch (axis 1)."""
    import jax
    import jax.numpy as jnp

    z = w @ h
    mean = jnp.mean(z, axis=1, keepdims=True)
    var = jnp.var(z, axis=1, keepdims=True)
    return jax.nn.relu((z - mean) * jax.lax.rsqrt(var + EPS_BN))


def _jax_stack(p):
    import jax
    import jax.numpy as jnp

    d, n, depth, every = p["d"], p["n"], p["depth"], p["every"]
    if depth % every:
        raise ValueError("the JAX version scans whole chunks: depth must be a multiple of every")
    scale = math.sqrt(2.0 / d)

    def layer(h, key):
        return _jax_layer(h, jax.random.normal(key, (d, d), jnp.float32) * scale), None

    def chunk(h, keys):  # `every` layers, then the singular values
        h, _ = jax.lax.scan(layer, h, keys)
        return h, jnp.linalg.svdvals(h)

    def network(key):
        k_in, k_w = jax.random.split(key)
        h0 = jax.random.normal(k_in, (d, n), jnp.float32)
        keys = jax.random.split(k_w, depth).reshape(depth // every, every)
        _, svs = jax.lax.scan(chunk, h0, keys)
        return svs[-1]

    run = jax.jit(jax.vmap(network))
    keys = jax.vmap(jax.random.key)(jnp.arange(p["seeds"]))
    return lambda: list(np.asarray(run(keys).block_until_ready()))


STACKS = {"fastrank": (_fastrank_stack, _fastrank_layer), "torch": (_torch_stack, _torch_layer),
          "jax": (_jax_stack, lambda h, w: np.asarray(_jax_layer(h, w))),
          "numpy": (_numpy_stack, _numpy_layer)}


def _reference_layer(h, w):
    """float64 BN (over the batch, biased variance) then ReLU of W H."""
    z = w.astype(np.float64) @ h
    z = (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + EPS_BN)
    return np.maximum(z, 0.0)


def layer_check(layers: dict) -> dict:
    """Each implementation's layer run CHECK_LAYERS times on the same float32 input and
    weights: the singular values of its output against a float64 reference, relative to
    the largest. A layer without its BN or ReLU, or with another variance, is off by
    O(1); float32 rounding by ~1e-6."""
    rng = np.random.default_rng(2024)
    h0 = rng.standard_normal((CHECK_D, CHECK_D)).astype(np.float32)
    ws = [(rng.standard_normal((CHECK_D, CHECK_D)) * math.sqrt(2.0 / CHECK_D)).astype(np.float32)
          for _ in range(CHECK_LAYERS)]
    ref = h0.astype(np.float64)
    for w in ws:
        ref = _reference_layer(ref, w)
    s_ref = np.linalg.svd(ref, compute_uv=False)
    out = {}
    for name, fn in layers.items():
        h = h0
        for w in ws:
            h = np.asarray(fn(h, w), dtype=np.float32)
        s = np.linalg.svd(h.astype(np.float64), compute_uv=False)
        error = float(np.max(np.abs(s - s_ref)) / s_ref[0])
        out[name] = {"max_relative_error": error, "ok": bool(error <= CHECK_RTOL)}
    return out


@implementation("stack", "fastrank")
def stack_side_by_side(p, repeats):
    """fastrank and every installed competitor in this process, round-robin (A B C D A B
    C D ...), after a check of each one's layer on shared weights."""
    wanted = p.get("impls", list(STACKS))
    names = [k for k in wanted if k == "fastrank" or implementations.installed(LIBRARY[k])]
    runners = {k: STACKS[k][0](p) for k in names}
    check = layer_check({k: STACKS[k][1] for k in names})
    timings, last = measure_side_by_side(runners, repeats)
    work = {"networks": p["seeds"], "layers": p["depth"]}
    impls = {k: {"status": SKIPPED, "library": LIBRARY[k]} for k in wanted if k not in names}
    for k in names:
        finals = [soft_rank(s) for s in last[k]]
        impls[k] = {"status": "ok", "timing": timings[k], "work": work,
                    "final_soft_rank": finals, "final_soft_rank_mean": float(np.mean(finals)),
                    "layer_check": check[k]}
    return {"impls": impls, "layer_check": check, "measured_layers": len(_measured(p))}


@implementation("sgemm", "numpy")
def sgemm_numpy(p, repeats):
    """The floor: one float32 GEMM W (d x d) @ H (d x n), what every layer must do."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((p["d"], p["d"]), dtype=np.float32)
    h = rng.standard_normal((p["d"], p["n"]), dtype=np.float32)
    z = np.empty_like(h)
    # Time batches of back-to-back GEMMs (as in a depth loop), >= ~20 ms each, so that
    # small ones are not dominated by the timer and a cold cache after gc.
    t0 = time.perf_counter()
    np.matmul(w, h, out=z)
    inner = max(1, min(100_000, int(0.02 / max(time.perf_counter() - t0, 1e-7))))

    def batch():
        for _ in range(inner):
            np.matmul(w, h, out=z)

    timing, _ = measure(batch, repeats, warmup=2)
    timing = {**timing, "calls_per_repeat": inner}
    for key in ("first_call_s", "median_s", "min_s"):
        timing[key] /= inner
    timing["times_s"] = [t / inner for t in timing["times_s"]]
    flops = 2.0 * p["d"] * p["d"] * p["n"]
    return {"timing": timing, "gflops": flops / timing["median_s"] / 1e9}
