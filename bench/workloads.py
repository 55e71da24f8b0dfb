"""The workloads of the CPU benchmark: what each one runs (its tasks, per preset), and how
its results turn into targets (met / NOT met) and a table of raw times.

A workload's ``plan`` returns tasks (run by fastrank.bench.suite in fresh worker
processes), its ``summarize`` gets their results by label and returns a section of
the JSON: parameters, notes, raw results, targets and table rows.

Long (~1060 lines): one small class per workload, beside the presets table they all
read; each class is independent of the others.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastrank.bench import competitors
from fastrank.bench.competitors import SKIPPED

IMPLS = ("fastrank", "torch", "jax", "numpy")

#: Sizes and repeats of every workload: ``full`` is the reference run, ``quick`` fits in
#: a few minutes on 2 cores, ``smoke`` is for the test suite (seconds, meaningless times).
PRESETS = {
    "full": {
        "small": {"widths": [32, 64], "depth": 2000, "every": 100, "seeds": 8, "repeats": 5},
        "large": {"d": 1024, "depth": 100, "every": 10, "seeds": 1, "repeats": 3,
                  "sgemm_repeats": 15},
        "rng": {"n": 2**24, "repeats": 7},
        "spectra": {"d": 1024, "collapse_depth": 200, "rank": 10, "repeats": 5},
        "measure_every_layer": {"d": 1024, "depth": 100, "repeats": 3},
        "memory": {"d": 256, "depths": [100, 10000]},
        "scaling": {"d": 64, "depths": [250, 500, 1000, 2000], "every": 100, "seeds": 8,
                    "widths": [32, 64, 128, 256, 512, 1024, 2048], "work": 2 * 10**8,
                    "min_k": 10, "max_k": 1000, "repeats": 5},
        "sweep_file": {"widths": [32, 64], "depth": 2000, "every": 10, "seeds": 8,
                       "repeats": 9},
        "depth_scaling": {"d": 32, "depths": [1000, 50000], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 5},
        "compile": {"enabled": True, "repeats": 5},
    },
    "quick": {
        "small": {"widths": [32, 64], "depth": 1000, "every": 100, "seeds": 4, "repeats": 3},
        "large": {"d": 1024, "depth": 30, "every": 10, "seeds": 1, "repeats": 3,
                  "sgemm_repeats": 9},
        "rng": {"n": 2**22, "repeats": 5},
        "spectra": {"d": 1024, "collapse_depth": 200, "rank": 10, "repeats": 3},
        "measure_every_layer": {"d": 1024, "depth": 20, "repeats": 3},
        "memory": {"d": 256, "depths": [100, 3000]},
        "scaling": {"d": 64, "depths": [250, 500, 1000], "every": 100, "seeds": 2,
                    "widths": [32, 64, 128, 256, 512], "work": 5 * 10**7,
                    "min_k": 5, "max_k": 400, "repeats": 3},
        "sweep_file": {"widths": [32, 64], "depth": 500, "every": 10, "seeds": 8,
                       "repeats": 3},
        "depth_scaling": {"d": 32, "depths": [1000, 10000], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 3},
        "compile": {"enabled": True, "repeats": 3},
    },
    "smoke": {
        "small": {"widths": [8, 16], "depth": 40, "every": 10, "seeds": 2, "repeats": 1},
        "large": {"d": 48, "depth": 10, "every": 5, "seeds": 1, "repeats": 1,
                  "sgemm_repeats": 3},
        "rng": {"n": 2**14, "repeats": 1},
        "spectra": {"d": 48, "collapse_depth": 20, "rank": 10, "repeats": 1},
        "measure_every_layer": {"d": 16, "depth": 5, "repeats": 1},
        "memory": {"d": 16, "depths": [10, 50]},
        "scaling": {"d": 8, "depths": [20, 40], "every": 10, "seeds": 1, "widths": [8, 16],
                    "work": 10**4, "min_k": 2, "max_k": 4, "repeats": 1},
        "sweep_file": {"widths": [32], "depth": 20, "every": 10, "seeds": 2, "repeats": 1},
        "depth_scaling": {"d": 32, "depths": [100, 400], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 1},
        "compile": {"enabled": False},
    },
}

#: Order of the workloads in a run and in the report.
NAMES = ("small", "large", "rng", "spectra", "measure_every_layer", "memory", "scaling",
         "sweep_file", "depth_scaling", "compile")


def config(preset: str, repeats: int | None = None) -> dict:
    """The preset's parameters, with ``repeats`` (if given) replacing every workload's."""
    cfg = {name: dict(values) for name, values in PRESETS[preset].items()}
    if repeats is not None:
        for values in cfg.values():
            if "repeats" in values:
                values["repeats"] = repeats
    return cfg


def task(workload, label, kind, impl, params, repeats=1, **extra) -> dict:
    return {"workload": workload, "label": label, "kind": kind, "impl": impl,
            "params": params, "repeats": repeats, **extra}


# ----------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------


def _status(result) -> str:
    return (result or {}).get("status", "error")


def target(workload, case, what, value, threshold, op=">=", unit="x", blocked=None,
           detail=None) -> dict:
    """One line of the targets table; ``blocked`` (a status) when it could not be measured."""
    if blocked is not None or value is None or (isinstance(value, float) and math.isnan(value)):
        met, status = None, blocked or "error"
    else:
        if op == "within":
            met = bool(threshold[0] <= value <= threshold[1])
        else:
            met = bool(value >= threshold) if op == ">=" else bool(value <= threshold)
        status = "met" if met else "NOT met"
    return {"workload": workload, "case": case, "what": what, "value": value,
            "target": threshold, "op": op, "unit": unit, "met": met, "status": status,
            "detail": detail}


def _blocked(*results_and_names):
    """The status that keeps a comparison from being made, or None."""
    for name, result in results_and_names:
        status = _status(result)
        if status == SKIPPED:
            return f"skipped ({competitors.LIBRARY.get(name, name)} not installed)"
        if status != "ok":
            return f"error ({name})"
    return None


def per_layer(result) -> float | None:
    """Median time per layer per network of a stack-like result."""
    if _status(result) != "ok" or "work" not in result:
        return None
    w = result["work"]
    return result["timing"]["median_s"] / (w["layers"] * w["networks"])


def fmt_time(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def _times(result) -> str:
    if _status(result) != "ok" or "timing" not in result:
        return "-"
    return ", ".join(f"{t:.4g}" for t in result["timing"]["times_s"])


def _first(result) -> str:
    t = (result or {}).get("timing", {}).get("first_call_s")
    return fmt_time(t) if t is not None else "-"


def _shown(result, text) -> str:
    status = _status(result)
    if status == "ok":
        return text
    return status if status != "error" else f"error: {result.get('error', '?')}"


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


# ----------------------------------------------------------------------------------
# small / large: the BN + ReLU stack
# ----------------------------------------------------------------------------------


def _stack_rows(case, labels, results, ref_label="fastrank"):
    ref = per_layer(results.get(labels[ref_label]))
    rows = []
    for impl, label in labels.items():
        r = results.get(label)
        pl = per_layer(r)
        work = r.get("work", {}) if _status(r) == "ok" else {}
        rows.append({
            "case": case,
            "implementation": impl,
            "networks x layers": f"{work.get('networks', '-')} x {work.get('layers', '-')}",
            "median total": _shown(r, fmt_time(r.get("timing", {}).get("median_s")) if r else ""),
            "per layer per network": fmt_time(pl),
            "vs fastrank": f"{pl / ref:.2f}x" if pl and ref else "-",
            "first call": _first(r),
            "final soft rank": (f"{r['final_soft_rank_mean']:.2f}"
                                if _status(r) == "ok" and r.get("final_soft_rank_mean")
                                is not None else "-"),
            "repeats (s)": _times(r),
        })
    return rows


def stack_results(result) -> dict:
    """implementation -> its result, from a side-by-side stack task (each one's status is
    the task's where the task itself did not run)."""
    if _status(result) != "ok":
        return {impl: result for impl in IMPLS}
    return result["impls"]


def _stack_check(impls: dict) -> dict:
    """The sanity check of a stack: every implementation's layer matches the float64
    reference on shared weights, and fastrank's network has not collapsed."""
    ok = {k: r for k, r in impls.items() if _status(r) == "ok"}
    ranks = {k: r["final_soft_rank_mean"] for k, r in ok.items()}
    checks = {k: r["layer_check"] for k, r in ok.items()}
    ref = ranks.get("fastrank")
    return {"final_soft_rank_mean": ranks, "layer_check": checks,
            "consistent": bool(ref and ref > 1.5 and checks
                               and all(c["ok"] for c in checks.values())),
            "rule": f"each implementation's layer, run {competitors.CHECK_LAYERS} times on the "
                    f"same float32 input and weights (d = N = {competitors.CHECK_D}), gives "
                    "the singular values of a float64 BN + ReLU reference within "
                    f"{competitors.CHECK_RTOL:g} of the largest (leaving out the norm or the "
                    "activation is off by O(1)); fastrank's mean final soft rank > 1.5 (not "
                    "collapsed)"}


class Small:
    name = "small"
    title = "BN + ReLU, small widths, many layers, several seeds"
    #: Speed-ups asked for (time per layer per network; torch's was 5x, JAX's 1.5x).
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
                blocked = _blocked(("fastrank", fr), (impl, comp))
                value = _ratio(per_layer(comp), per_layer(fr))
                targets.append(target(self.name, f"d=N={d}", f"{impl} / fastrank, time per "
                                      "layer per network", value, goal, blocked=blocked))
            rows += _stack_rows(f"d=N={d}", {k: k for k in IMPLS}, impls)
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
        return {**{impl: impl for impl in IMPLS},
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
        floor = sgemm["timing"]["median_s"] if _status(sgemm) == "ok" else None
        case = f"d=N={c['d']}"
        # torch's target was 1.3x before propagation got a target of its own
        targets = [
            target(self.name, case, "torch / fastrank, time per layer",
                   _ratio(per_layer(torch_r), per_layer(fr)), 1.5,
                   blocked=_blocked(("fastrank", fr), ("torch", torch_r))),
            target(self.name, case, "fastrank per layer / one SGEMM (the floor)",
                   _ratio(per_layer(fr), floor), 1.6, op="<=",
                   blocked=_blocked(("fastrank", fr), ("numpy", sgemm))),
            target(self.name, case, "fastrank per layer, layers 0 and last measured only "
                   "(propagation) / one SGEMM", _ratio(per_layer(ends), floor), 1.3, op="<=",
                   blocked=_blocked(("fastrank", ends), ("numpy", sgemm))),
        ]
        rows = _stack_rows(case, labels, results)
        rows.append({
            "case": case, "implementation": "floor: numpy SGEMM (W @ H, float32)",
            "networks x layers": "1 GEMM",
            "median total": _shown(sgemm, fmt_time(floor)),
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
                "sanity": {case: _stack_check({k: results[k] for k in IMPLS})},
                "notes": notes}


# ----------------------------------------------------------------------------------
# rng
# ----------------------------------------------------------------------------------


class Rng:
    name = "rng"
    title = "float32 standard normals into a preallocated buffer"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        return [task(self.name, impl, "rng", impl, {"n": c["n"]}, c["repeats"]) for impl in IMPLS]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        fr, np_r = results.get("fastrank"), results.get("numpy")
        rate = {k: r["normals_per_s"] for k, r in results.items() if _status(r) == "ok"}
        targets = [target(self.name, f"n=2^{int(math.log2(c['n']))}",
                          "fastrank normals/s / numpy normals/s",
                          _ratio(rate.get("fastrank"), rate.get("numpy")), 3.0,
                          blocked=_blocked(("fastrank", fr), ("numpy", np_r)))]
        rows = []
        for impl in IMPLS:
            r = results.get(impl)
            ok = _status(r) == "ok"
            rows.append({
                "implementation": {
                    "fastrank": "fastrank (Philox4x32-10 fill_normal)",
                    "numpy": "numpy default_rng().standard_normal(out=)",
                    "torch": "torch.randn(out=)",
                    "jax": "jax.random.normal (jit)",
                }[impl],
                "median": _shown(r, fmt_time(r["timing"]["median_s"]) if ok else ""),
                "normals/s": f"{r['normals_per_s'] / 1e9:.3g} G/s" if ok else "-",
                "time vs fastrank": (f"{rate['fastrank'] / r['normals_per_s']:.2f}x"
                                if ok and "fastrank" in rate else "-"),
                "mean / std of sample": (f"{r['sample_mean']:+.4f} / {r['sample_std']:.4f}"
                                         if ok else "-"),
                "first call": _first(r),
                "repeats (s)": _times(r),
            })
        return {"targets": targets, "rows": rows,
                "notes": [f"{c['n']} float32 normals per call."]}


# ----------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------


def spectra_matrices(d: int, collapse_depth: int, rank: int, seed: int = 0) -> dict:
    """The float32 test matrices (d x d), by name, with a description of each."""
    rng = np.random.default_rng(seed)
    mats = {}
    mats["gaussian"] = (rng.standard_normal((d, d), dtype=np.float32),
                        "i.i.d. N(0, 1)")
    h = rng.standard_normal((d, d), dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(d))
    for _ in range(collapse_depth):
        w = rng.standard_normal((d, d), dtype=np.float32)
        w *= scale
        h = w @ h
        h /= np.float32(np.linalg.norm(h))
    mats["collapsed"] = (h, f"product of {collapse_depth} Gaussian layers (float32, "
                            "rescaled to unit norm after each): a deep linear network's "
                            "collapsed representation")
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.logspace(0, -12, d)
    mats["geometric"] = (((u * s) @ v.T).astype(np.float32),
                         "singular values 10^0 .. 10^-12, geometrically spaced, Haar "
                         "singular vectors")
    k = min(rank, max(1, d // 4))
    a = rng.standard_normal((d, k), dtype=np.float32)
    b = rng.standard_normal((k, d), dtype=np.float32)
    mats[f"rank{k}"] = (a @ b, f"product of Gaussian d x {k} and {k} x d (rank {k})")
    return mats


class Spectra:
    name = "spectra"
    title = "singular values of a d x d float32 matrix"
    IMPLS = ("fastrank", "numpy", "torch")

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        folder = Path(ctx["tmpdir"]) / "spectra"
        folder.mkdir(exist_ok=True)
        paths, reference = {}, {}
        for name, (h, what) in spectra_matrices(c["d"], c["collapse_depth"], c["rank"]).items():
            paths[name] = str(folder / f"{name}.npy")
            np.save(paths[name], h)
            s64 = np.linalg.svd(h.astype(np.float64), compute_uv=False)
            reference[name] = {"what": what, "numerical_rank": competitors.numerical_rank(
                s64, h.shape), "soft_rank": competitors.soft_rank(s64)}
        ctx["spectra_reference"] = reference
        return [task(self.name, impl, "spectra", impl, {"matrices": paths}, c["repeats"])
                for impl in self.IMPLS]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        reference = ctx["spectra_reference"]
        ok = {impl: results[impl] for impl in self.IMPLS if _status(results.get(impl)) == "ok"}
        total = {impl: sum(m["timing"]["median_s"] for m in r["matrices"].values())
                 for impl, r in ok.items()}
        case = f"d=N={c['d']}, {len(reference)} matrices"
        fr = results.get("fastrank")
        targets = [
            target(self.name, case, f"{impl} / fastrank, total time over the matrices",
                   _ratio(total.get(impl), total.get("fastrank")), goal,
                   blocked=_blocked(("fastrank", fr), (impl, results.get(impl))))
            for impl, goal in (("numpy", 3.0), ("torch", 1.5))
        ]
        ranks = {name: {"float64 reference": ref["numerical_rank"],
                        **{impl: r["matrices"][name]["numerical_rank"] for impl, r in ok.items()}}
                 for name, ref in reference.items()}
        identical = {name: len(set(v.values())) == 1 for name, v in ranks.items()}
        n_same = sum(identical.values())
        blocked = _blocked(("fastrank", fr)) or (None if len(ok) > 1 else "error (no competitor)")
        targets.append(target(
            self.name, case, "matrices on which every implementation and the float64 "
            "reference give the same numerical rank", float(n_same), float(len(ranks)),
            unit="", blocked=blocked,
            detail={"ranks": ranks, "implementations_compared": sorted(ok)}))
        rows = []
        for name, ref in reference.items():
            for impl in self.IMPLS:
                r = results.get(impl)
                m = r["matrices"][name] if _status(r) == "ok" else None
                rows.append({
                    "matrix": name,
                    "implementation": {"fastrank": "fastrank (float64 Gram + eigvalsh)",
                                       "numpy": "numpy.linalg.svd(compute_uv=False)",
                                       "torch": "torch.linalg.svdvals"}[impl],
                    "median": _shown(r, fmt_time(m["timing"]["median_s"]) if m else ""),
                    "vs fastrank": (f"{m['timing']['median_s'] / ok['fastrank']['matrices'][name]['timing']['median_s']:.2f}x"  # noqa: E501
                                    if m and "fastrank" in ok else "-"),
                    "numerical rank": (f"{m['numerical_rank']} (ref {ref['numerical_rank']})"
                                       if m else "-"),
                    "soft rank": f"{m['soft_rank']:.3f}" if m else "-",
                    "repeats (s)": (", ".join(f"{t:.4g}" for t in m["timing"]["times_s"])
                                    if m else "-"),
                })
        notes = [f"{name}: {ref['what']}" for name, ref in reference.items()]
        notes.append("Numerical rank: numpy's matrix_rank rule for float32, s > s_max * d * "
                     "eps32; the reference is float64 LAPACK SVD of the same float32 matrix. "
                     "Competitors get the float32 matrix as a user would pass it.")
        return {"targets": targets, "rows": rows, "reference": reference,
                "ranks_identical": identical, "notes": notes}


# ----------------------------------------------------------------------------------
# measure_every_layer
# ----------------------------------------------------------------------------------


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
        impls = r["impls"] if _status(r) == "ok" else dict.fromkeys(self.LABELS, r)
        fr, tr = impls.get("fastrank"), impls.get("torch")
        case = f"d=N={c['d']}, depth {c['depth']}"
        targets = [target(self.name, case, "torch (the same quantities) / fastrank "
                          "(cheap_every=1), time per layer",
                          _ratio(per_layer(tr), per_layer(fr)), 5.0,
                          blocked=_blocked(("fastrank", fr), ("torch", tr)))]
        rows = _stack_rows(case, {self.LABELS[k]: k for k in self.LABELS}, impls,
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
# memory
# ----------------------------------------------------------------------------------


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
        ok = _status(lo) == "ok" and _status(hi) == "ok"
        floor = ok and all(r.get("rss_before_bytes") for r in (lo, hi))
        # above the import floor (numpy, numba, h5py: 110-180 MiB), which would hide growth
        value = ((hi["peak_rss_bytes"] - hi["rss_before_bytes"])
                 / (lo["peak_rss_bytes"] - lo["rss_before_bytes"])) if floor else None
        blocked = _blocked(("fastrank", lo), ("fastrank", hi))
        if blocked is None and not floor:
            blocked = "skipped (no way to read the RSS after imports: pip install psutil)"
        targets = [target(self.name, f"d=N={c['d']}", f"peak RSS above the RSS after imports, "
                          f"at depth {c['depths'][1]} / at depth {c['depths'][0]}", value, 1.10,
                          op="<=", blocked=blocked)]
        mb = 2.0**20
        rows = []
        for depth in c["depths"]:
            r = results.get(f"depth={depth}")
            ok = _status(r) == "ok"
            rows.append({
                "depth": depth,
                "peak RSS": _shown(r, f"{r['peak_rss_bytes'] / mb:.1f} MiB" if ok else ""),
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
# scaling
# ----------------------------------------------------------------------------------


def fit_exponent(x, y) -> float | None:
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
        ok = _status(r) == "ok"
        depth_exp = width_exp = None
        if ok:
            depth_exp = fit_exponent([b["depth"] for b in r["by_depth"]],
                                     [b["timing"]["median_s"] for b in r["by_depth"]])
            big = [b for b in r["by_width"] if b["width"] >= 256] or r["by_width"]
            width_exp = fit_exponent([b["width"] for b in big], [b["per_layer_s"] for b in big])
        targets = [target(self.name, f"d=N={c['d']}, depths {c['depths']}",
                          "fitted exponent of time vs depth (linear = 1)", depth_exp,
                          (0.9, 1.1), op="within", unit="",
                          blocked=_blocked(("fastrank", r)))]
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
# sweep_file: the results-file path end to end against the same work in memory
# ----------------------------------------------------------------------------------


class SweepFile:
    name = "sweep_file"
    title = "end to end: a sweep into a results file, in memory, as the command, and torch"
    #: The ways of doing the work, as they appear in the table.
    PATHS = {
        "memory": "in memory: fastrank.simulate_many(net, seeds, schedule)",
        "file": "to a file: fastrank.runner.run_sweep(sweep, path, overwrite=True)",
        "command": "the command: python -m fastrank sweep ... -o FILE (subprocess, wall time)",
        "torch": "torch script, in process: torch_sweep.run (bmm over seeds, BN, ReLU, "
                 "svdvals float64, np.savez)",
        "torch_script": "torch script as a process: python -m fastrank.bench.torch_sweep "
                        "(subprocess, wall time)",
    }
    #: (numerator, denominator, target or None, op): the ratios reported.
    RATIOS = (("file", "memory", 1.3, "<="), ("torch", "file", 5.0, ">="),
              ("torch_script", "command", None, None), ("command", "memory", None, None))

    @staticmethod
    def label(d) -> str:
        return f"d={d}"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        p = {k: c[k] for k in ("depth", "every", "seeds")}
        return [task(self.name, self.label(d), "sweep_file", "fastrank", dict(p, d=d),
                     c["repeats"], imports=["torch"]) for d in c["widths"]]

    @staticmethod
    def ratios(result) -> dict:
        """``a/b`` -> ratio of the medians, the median of the per-round ratios (the paths
        ran round-robin) and why it is missing, if it is."""
        timings = ((result or {}).get("timings") or {}) if _status(result) == "ok" else {}
        skipped = (result or {}).get("skipped") or {}
        out = {}
        for a, b, goal, _ in SweepFile.RATIOS:
            ta, tb = timings.get(a), timings.get(b)
            entry = {"value": None, "paired_median": None, "target": goal, "reason": None}
            if ta and tb:
                entry["value"] = _ratio(ta["median_s"], tb["median_s"])
                pairs = [x / y for x, y in zip(ta["times_s"], tb["times_s"], strict=True) if y]
                entry["paired_median"] = float(np.median(pairs)) if pairs else None
            elif _status(result) != "ok":
                entry["reason"] = _status(result)
            else:
                missing = a if not ta else b
                entry["reason"] = (f"skipped ({missing} not installed)"
                                   if skipped.get(missing) == SKIPPED else f"no {missing} time")
            out[f"{a}/{b}"] = entry
        return out

    WHAT = {"file/memory": "file / memory: run_sweep into a results file / simulate_many "
                           "of the same runs, median time",
            "torch/file": "torch script / fastrank run_sweep into a results file, both in "
                          "process, median time"}

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        targets, rows, sanity, all_ratios, commands = [], [], {}, {}, set()
        for d in c["widths"]:
            r = results.get(self.label(d))
            ok = _status(r) == "ok"
            ratios = all_ratios[self.label(d)] = self.ratios(r)
            case = f"d=N={d}, depth {c['depth']}, {c['seeds']} seeds"
            for a, b, goal, op in self.RATIOS:
                if goal is None:
                    continue
                entry = ratios[f"{a}/{b}"]
                blocked = _blocked(("fastrank", r)) or (
                    entry["reason"] if entry["value"] is None else None)
                targets.append(target(self.name, case, self.WHAT[f"{a}/{b}"], entry["value"],
                                      goal, op=op, blocked=blocked,
                                      detail={"ratios": ratios}))
            rows += self._rows(case, r)
            if ok:
                sanity[case] = self._sanity(r)
                commands.add(r.get("command"))
        notes = [
            f"BN + ReLU, float32, d = N in {c['widths']}, depth {c['depth']}, {c['seeds']} "
            f"seeds, Schedule(every={c['every']}) (log: the default 50 log-spaced layers as "
            "well); each path timed in the same process, round-robin, after one warm-up call "
            "of each, median of the repeats; numba, torch and BLAS at the suite's thread "
            "count (the subprocesses get it as NUMBA_NUM_THREADS, OMP_NUM_THREADS, "
            "OPENBLAS_NUM_THREADS, MKL_NUM_THREADS).",
            "file: the equivalent Sweep(grid={width, depth, activation: relu, norm: bn}, "
            "seeds, schedule) into a temporary directory, laying out the file, every commit "
            "and closing it included. command: `" + (" | ".join(sorted(x for x in commands
                                                                         if x))
                                                     or "python -m fastrank sweep ...")
            + "` as a subprocess, wall time including interpreter start-up and imports (what "
            "a user waits for).",
            "torch: bench/torch_sweep.py, the script a torch user would write: the seeds "
            "stacked, H as (seeds, batch, features), torch.bmm, batch statistics from "
            "torch.var_mean, normalisation and ReLU in place, no_grad, torch.linalg.svdvals "
            "in float64 at the same layers fastrank measures, np.savez at the end. fastrank "
            "computes every measure at those layers as well. torch_script: the same as a "
            "process of its own (torch's import included).",
            "Ratios of medians (paired: median over rounds of the per-round ratio): "
            + "; ".join(f"d={d}: " + ", ".join(_ratio_text(k, v, 2) for k, v in
                                                all_ratios[self.label(d)].items())
                        for d in c["widths"]) + ".",
            "output: the size of the last file each path wrote; a results file's size varies "
            "from run to run with the number of (time-batched) commits.",
        ]
        for d in c["widths"]:
            r = results.get(self.label(d))
            if _status(r) == "ok" and r.get("read_errors"):
                notes.append(f"d={d}: results files that did not read back: {r['read_errors']}")
        return {"targets": targets, "rows": rows, "sanity": sanity, "ratios": all_ratios,
                "notes": notes}

    def _rows(self, case, r) -> list[dict]:
        ok = _status(r) == "ok"
        timings = r.get("timings", {}) if ok else {}
        memory = (timings.get("memory") or {}).get("median_s")
        rows = []
        for key, what in self.PATHS.items():
            t = timings.get(key)
            if not ok:
                shown = _shown(r, "")
            elif t is None:
                shown = (f"skipped ({key} not installed)"
                         if (r.get("skipped") or {}).get(key) == SKIPPED else "-")
            else:
                shown = fmt_time(t["median_s"])
            size = (r.get("file_bytes") or {}).get(key) if ok else None
            soft = (r.get("final_soft_rank_mean") or {}).get(key) if ok else None
            rows.append({
                "case": case,
                "path": what,
                "median": shown,
                "vs in memory": (f"{t['median_s'] / memory:.2f}x" if t and memory else "-"),
                "first call": fmt_time(t["first_call_s"]) if t else "-",
                "measured layers": (r.get("measured_layers") or {}).get(key, "-") if ok else "-",
                "final soft rank": f"{soft:.3f}" if soft is not None else "-",
                "output": f"{size / 2**20:.2f} MiB" if size else "-",
                "repeats (s)": ", ".join(f"{x:.4g}" for x in t["times_s"]) if t else "-",
            })
        return rows

    @staticmethod
    def _sanity(r) -> dict:
        means = r.get("final_soft_rank_mean") or {}
        matches = r.get("file_matches_memory") or {}
        ref = means.get("memory")
        torch_ok = all(bool(ref and 0.5 * ref <= means[k] <= 2 * ref)
                       for k in ("torch", "torch_script") if k in means)
        return {
            "final_soft_rank_mean": means,
            "consistent": bool(ref and ref > 1.5 and matches.get("file") is True
                               and matches.get("command") is True and torch_ok),
            "rule": "both results files read back complete, with the in-memory runs' "
                    "measured layers and final soft ranks (rtol 1e-5); torch's mean final "
                    "soft rank within 0.5x..2x of fastrank's (its own random weights; its "
                    "layer is checked on shared weights in the small workload); fastrank's "
                    "> 1.5 (not collapsed)",
        }


# ----------------------------------------------------------------------------------
# depth_scaling: time per layer of a sweep into a results file, shallow against deep
# ----------------------------------------------------------------------------------


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
        ok = _status(result) == "ok"
        timings = ((result or {}).get("timings") or {}) if ok else {}
        t = {depth: timings.get(cls.label(depth)) for depth in (base, shallow, deep)}
        entry = {"value": None, "paired_median": None, "target": cls.GOAL,
                 "reason": None if ok else _status(result)}
        net = {"value": None, "paired_median": None, "target": None,
               "reason": None if ok else _status(result), "fixed_s": None,
               "per_layer_s": {}}
        if t[shallow] and t[deep]:
            entry["value"] = _ratio(t[deep]["median_s"] / deep, t[shallow]["median_s"] / shallow)
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
            net["value"] = _ratio(hi, lo) if lo > 0 else None
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
        ok = _status(r) == "ok"
        ratios = self.ratios(c, r)
        case = f"d=N={c['d']}, {c['seeds']} seeds, depth {shallow} and {deep}"
        main = ratios["deep/shallow"]
        rss = {depth: results.get(self.rss_label(depth)) for depth in (shallow, deep)}
        rss_ok = all(_status(x) == "ok" for x in rss.values())
        rss_ratio = (rss[deep]["peak_rss_bytes"] / rss[shallow]["peak_rss_bytes"]
                     if rss_ok else None)
        targets = [target(self.name, case, f"time per layer at depth {deep} / at depth "
                          f"{shallow} (run_sweep into a results file, median)", main["value"],
                          self.GOAL, op="<=", blocked=_blocked(("fastrank", r)),
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
            m_ok = _status(m) == "ok"
            per = t["median_s"] / depth if t else None
            rows.append({
                "depth": f"{depth:,}" + (" (fixed-cost reference)" if depth == base else ""),
                "measured rows per run": f.get("measured_layers", "-"),
                "median (whole sweep)": (_shown(r, fmt_time(t["median_s"]) if t else "-")),
                "per layer": fmt_time(per),
                "per layer per network": fmt_time(per / c["seeds"] if per else None),
                "per layer vs depth " + f"{shallow:,}": (f"{per / (ref / shallow):.3f}x"
                                                        if per and ref and depth != base
                                                        else "-"),
                "first call": fmt_time(t["first_call_s"]) if t else "-",
                "peak RSS (fresh process)": (_shown(m, f"{m['peak_rss_bytes'] / mb:.1f} MiB"
                                                    if m_ok else "") if m else "-"),
                "results file": f"{f['bytes'] / mb:.2f} MiB" if f.get("bytes") else "-",
                "repeats (s)": ", ".join(f"{x:.4g}" for x in t["times_s"]) if t else "-",
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
            + "; ".join(_ratio_text(k, ratios[k], 3) for k in ratios)
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
# compile
# ----------------------------------------------------------------------------------


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
            ok = _status(r) == "ok"
            row = {"numba cache": state,
                   "import fastrank": _shown(r, fmt_time(r["import_s"]) if ok else "")}
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
        ok = _status(r) == "ok"
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
                              blocked=None if ok else _status(r)))
        return out


WORKLOADS = {w.name: w for w in (Small(), Large(), Rng(), Spectra(), EveryLayer(), Memory(),
                                 Scaling(), SweepFile(), DepthScaling(), Compile())}
assert tuple(WORKLOADS) == NAMES


def _ratio_text(key: str, entry: dict, digits: int) -> str:
    """``key 1.07x (paired 1.21x)``, or the reason it was not measured."""
    if entry["value"] is None:
        return f"{key} {entry['reason'] or '-'}"
    paired = entry["paired_median"]
    paired = f" (paired {paired:.{digits}f}x)" if paired is not None else ""
    return f"{key} {entry['value']:.{digits}f}x{paired}"


from fastrank.bench import distributed  # noqa: E402  (its case: bench/distributed.py)

NAMES = distributed.register(PRESETS, WORKLOADS, NAMES)
