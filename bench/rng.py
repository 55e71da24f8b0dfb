"""The rng workload: float32 standard normals into a preallocated buffer, fastrank's
Philox stream against numpy's, torch's and JAX's generators."""

from __future__ import annotations

import itertools
import math

import numpy as np

from fastrank.bench.formatting import first_call_cell, fmt_time, repeats_cell, shown
from fastrank.bench.grading import blocker, ratio, status_of, target
from fastrank.bench.implementations import COMPARED, implementation, task
from fastrank.bench.timing import measure


class Rng:
    name = "rng"
    title = "float32 standard normals into a preallocated buffer"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        return [task(self.name, impl, "rng", impl, {"n": c["n"]}, c["repeats"])
                for impl in COMPARED]

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        fr, np_r = results.get("fastrank"), results.get("numpy")
        rate = {k: r["normals_per_s"] for k, r in results.items() if status_of(r) == "ok"}
        targets = [target(self.name, f"n=2^{int(math.log2(c['n']))}",
                          "fastrank normals/s / numpy normals/s",
                          ratio(rate.get("fastrank"), rate.get("numpy")), 3.0,
                          blocked=blocker(("fastrank", fr), ("numpy", np_r)))]
        rows = []
        for impl in COMPARED:
            r = results.get(impl)
            ok = status_of(r) == "ok"
            rows.append({
                "implementation": {
                    "fastrank": "fastrank (Philox4x32-10 fill_normal)",
                    "numpy": "numpy default_rng().standard_normal(out=)",
                    "torch": "torch.randn(out=)",
                    "jax": "jax.random.normal (jit)",
                }[impl],
                "median": shown(r, fmt_time(r["timing"]["median_s"]) if ok else ""),
                "normals/s": f"{r['normals_per_s'] / 1e9:.3g} G/s" if ok else "-",
                "time vs fastrank": (f"{rate['fastrank'] / r['normals_per_s']:.2f}x"
                                if ok and "fastrank" in rate else "-"),
                "mean / std of sample": (f"{r['sample_mean']:+.4f} / {r['sample_std']:.4f}"
                                         if ok else "-"),
                "first call": first_call_cell(r),
                "repeats (s)": repeats_cell(r),
            })
        return {"targets": targets, "rows": rows,
                "notes": [f"{c['n']} float32 normals per call."]}


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


def fastrank_fill_normal(out: np.ndarray, seed: int, layer: int) -> None:
    """float32 normals into a preallocated array from fastrank's Philox stream."""
    from fastrank.kernels.cpu.philox import fill_normal

    fill_normal(out, np.uint64(seed), np.uint32(0), np.uint32(layer), np.int64(0))


def _rng_result(timing, n, sample) -> dict:
    sample = np.asarray(sample[: min(len(sample), 1 << 20)], dtype=np.float64)
    return {
        "timing": timing,
        "n": n,
        "normals_per_s": n / timing["median_s"],
        "sample_mean": float(sample.mean()),
        "sample_std": float(sample.std()),
    }


@implementation("rng", "fastrank")
def rng_fastrank(p, repeats):
    out = np.empty(p["n"], dtype=np.float32)
    layers = itertools.count(1)
    timing, _ = measure(lambda: fastrank_fill_normal(out, 12345, next(layers)), repeats)
    return _rng_result(timing, p["n"], out)


@implementation("rng", "numpy")
def rng_numpy(p, repeats):
    out = np.empty(p["n"], dtype=np.float32)
    gen = np.random.default_rng(12345)
    timing, _ = measure(lambda: gen.standard_normal(dtype=np.float32, out=out), repeats)
    return _rng_result(timing, p["n"], out)


@implementation("rng", "torch")
def rng_torch(p, repeats):
    import torch

    out = torch.empty(p["n"], dtype=torch.float32)
    torch.manual_seed(12345)
    timing, _ = measure(lambda: torch.randn(p["n"], out=out), repeats)
    return _rng_result(timing, p["n"], out.numpy())


@implementation("rng", "jax")
def rng_jax(p, repeats):
    import jax
    import jax.numpy as jnp

    draw = jax.jit(lambda key: jax.random.normal(key, (p["n"],), jnp.float32))
    keys = iter(jax.random.split(jax.random.key(12345), repeats + 2))
    timing, out = measure(lambda: draw(next(keys)).block_until_ready(), repeats)
    result = _rng_result(timing, p["n"], np.asarray(out))
    result["note"] = "allocates its output (JAX arrays are immutable)"
    return result
