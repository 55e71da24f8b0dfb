"""The spectra workload: the singular values of d x d float32 test matrices (Gaussian, a
deep linear network's collapsed product, geometric singular values, low rank) by
fastrank, numpy and torch, with the numerical rank each finds against a float64
reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastrank.bench.formatting import fmt_repeats, fmt_time, shown
from fastrank.bench.grading import blocker, ratio, status_of, target
from fastrank.bench.implementations import implementation, numerical_rank, soft_rank, task
from fastrank.bench.timing import measure


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
            reference[name] = {"what": what, "numerical_rank": numerical_rank(
                s64, h.shape), "soft_rank": soft_rank(s64)}
        ctx["spectra_reference"] = reference
        return [task(self.name, impl, "spectra", impl, {"matrices": paths}, c["repeats"])
                for impl in self.IMPLS]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        reference = ctx["spectra_reference"]
        ok = {impl: results[impl] for impl in self.IMPLS if status_of(results.get(impl)) == "ok"}
        total = {impl: sum(m["timing"]["median_s"] for m in r["matrices"].values())
                 for impl, r in ok.items()}
        case = f"d=N={c['d']}, {len(reference)} matrices"
        fr = results.get("fastrank")
        targets = [
            target(self.name, case, f"{impl} / fastrank, total time over the matrices",
                   ratio(total.get(impl), total.get("fastrank")), goal,
                   blocked=blocker(("fastrank", fr), (impl, results.get(impl))))
            for impl, goal in (("numpy", 3.0), ("torch", 1.5))
        ]
        ranks = {name: {"float64 reference": ref["numerical_rank"],
                        **{impl: r["matrices"][name]["numerical_rank"] for impl, r in ok.items()}}
                 for name, ref in reference.items()}
        identical = {name: len(set(v.values())) == 1 for name, v in ranks.items()}
        n_same = sum(identical.values())
        blocked = blocker(("fastrank", fr)) or (None if len(ok) > 1 else "error (no competitor)")
        targets.append(target(
            self.name, case, "matrices on which every implementation and the float64 "
            "reference give the same numerical rank", float(n_same), float(len(ranks)),
            unit="", blocked=blocked,
            detail={"ranks": ranks, "implementations_compared": sorted(ok)}))
        rows = []
        for name, ref in reference.items():
            fastrank_s = (ok["fastrank"]["matrices"][name]["timing"]["median_s"]
                          if "fastrank" in ok else None)
            for impl in self.IMPLS:
                r = results.get(impl)
                m = r["matrices"][name] if status_of(r) == "ok" else None
                rows.append({
                    "matrix": name,
                    "implementation": {"fastrank": "fastrank (float64 Gram + eigvalsh)",
                                       "numpy": "numpy.linalg.svd(compute_uv=False)",
                                       "torch": "torch.linalg.svdvals"}[impl],
                    "median": shown(r, fmt_time(m["timing"]["median_s"]) if m else ""),
                    "vs fastrank": (f"{m['timing']['median_s'] / fastrank_s:.2f}x"
                                    if m and fastrank_s is not None else "-"),
                    "numerical rank": (f"{m['numerical_rank']} (ref {ref['numerical_rank']})"
                                       if m else "-"),
                    "soft rank": f"{m['soft_rank']:.3f}" if m else "-",
                    "repeats (s)": fmt_repeats(m["timing"] if m else None),
                })
        notes = [f"{name}: {ref['what']}" for name, ref in reference.items()]
        notes.append("Numerical rank: numpy's matrix_rank rule for float32, s > s_max * d * "
                     "eps32; the reference is float64 LAPACK SVD of the same float32 matrix. "
                     "Competitors get the float32 matrix as a user would pass it.")
        return {"targets": targets, "rows": rows, "reference": reference,
                "ranks_identical": identical, "notes": notes}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def fastrank_spectrum(h: np.ndarray) -> np.ndarray:
    """The one call that gives fastrank's singular values of a host matrix."""
    from fastrank.backends.cpu import host_spectrum

    return host_spectrum(h, "gram")


def _spectra(p, repeats, svals) -> dict:
    out = {}
    for name, path in p["matrices"].items():
        h = np.load(path)
        timing, s = measure(lambda h=h: svals(h), repeats)
        s = np.asarray(s, dtype=np.float64)
        out[name] = {
            "timing": timing,
            "numerical_rank": numerical_rank(s, h.shape),
            "soft_rank": soft_rank(s),
            "s_max": float(s.max()),
        }
    return {"matrices": out}


@implementation("spectra", "fastrank")
def spectra_fastrank(p, repeats):
    return _spectra(p, repeats, fastrank_spectrum)


@implementation("spectra", "numpy")
def spectra_numpy(p, repeats):
    return _spectra(p, repeats, lambda h: np.linalg.svd(h, compute_uv=False))


@implementation("spectra", "torch")
def spectra_torch(p, repeats):
    import torch

    return _spectra(p, repeats,
                    lambda h: torch.linalg.svdvals(torch.from_numpy(h)).numpy())
