"""What is timed: fastrank and the code a torch, JAX or numpy user would write for the
same work, one function per (kind of work, implementation).

Every function takes the task's parameters and the number of repeats, imports its
library itself, and returns plain JSON-able data: the timing record
(:func:`fastrank.bench.timing.measure`), the amount of work done (so that times can be
compared per layer per network) and a sanity value computed the same way for every
implementation (the final soft rank, numerical ranks, sample moments).

Long (~870 lines) on purpose: every competitor's code for a kind of work sits next to
fastrank's, so a reader can check in one place that they do the same work.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import resource
import sys
import time

import numpy as np

from fastrank.bench.timing import measure, measure_side_by_side

#: Library each implementation needs (the one reported as not installed).
LIBRARY = {"fastrank": "numba", "numpy": "numpy", "torch": "torch", "jax": "jax"}

#: (kind, implementation) -> function(params, repeats) -> dict
IMPLS: dict = {}

EPS_BN = 1e-5

#: The result status of an implementation whose library is not installed.
SKIPPED = "skipped (not installed)"

def installed(library: str) -> bool:
    """Whether ``library`` can be imported (tests patch this to simulate its absence)."""
    return importlib.util.find_spec(library) is not None


def impl(kind: str, name: str):
    def register(fn):
        IMPLS[(kind, name)] = fn
        return fn

    return register


# ----------------------------------------------------------------------------------
# Shared helpers: one definition of each measure, applied to every implementation
# ----------------------------------------------------------------------------------


def soft_rank(s) -> float:
    """(sum s^2)^2 / sum s^4 of one spectrum (the paper's r(H))."""
    s = np.asarray(s, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0 or s.max() <= 0:
        return 0.0
    s2 = np.square(s / s.max())
    return float(s2.sum() ** 2 / np.sum(s2 * s2))


def numerical_rank(s, shape, eps: float = float(np.finfo(np.float32).eps)) -> int:
    """numpy.linalg.matrix_rank's rule: s > s_max * max(shape) * eps (float32 eps)."""
    s = np.asarray(s, dtype=np.float64)
    return int(np.count_nonzero(s > s.max() * max(shape) * eps)) if s.size else 0


def fastrank_spectrum(h: np.ndarray) -> np.ndarray:
    """The one call that gives fastrank's singular values of a host matrix."""
    from fastrank.backends.cpu import host_spectrum

    return host_spectrum(h, "gram")


def fastrank_fill_normal(out: np.ndarray, seed: int, layer: int) -> None:
    """float32 normals into a preallocated array from fastrank's Philox stream."""
    from fastrank.kernels.cpu.philox import fill_normal

    fill_normal(out, np.uint64(seed), np.uint32(0), np.uint32(layer), np.int64(0))


def _stack_result(timing, p, finals) -> dict:
    return {
        "timing": timing,
        "work": {"networks": p["seeds"], "layers": p["depth"]},
        "final_soft_rank": [float(x) for x in finals],
        "final_soft_rank_mean": float(np.mean(finals)) if len(finals) else None,
    }


# ----------------------------------------------------------------------------------
# stack: a BN + ReLU network (float32, Gaussian weights of variance 2/d), several
# seeds stacked, singular values every `every` layers (and at layer 0). Every
# implementation's layer is also run on shared weights and checked (layer_check).
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

#: Layers, width and relative tolerance of the layer check.
CHECK_LAYERS, CHECK_D, CHECK_RTOL = 3, 24, 1e-4


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


@impl("stack", "fastrank")
def stack_side_by_side(p, repeats):
    """fastrank and every installed competitor in this process, round-robin (A B C D A B
    C D ...), after a check of each one's layer on shared weights."""
    wanted = p.get("impls", list(STACKS))
    names = [k for k in wanted if k == "fastrank" or installed(LIBRARY[k])]
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


@impl("sgemm", "numpy")
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


# ----------------------------------------------------------------------------------
# rng: float32 standard normals into a preallocated buffer
# ----------------------------------------------------------------------------------


def _rng_result(timing, n, sample) -> dict:
    sample = np.asarray(sample[: min(len(sample), 1 << 20)], dtype=np.float64)
    return {
        "timing": timing,
        "n": n,
        "normals_per_s": n / timing["median_s"],
        "sample_mean": float(sample.mean()),
        "sample_std": float(sample.std()),
    }


@impl("rng", "fastrank")
def rng_fastrank(p, repeats):
    out = np.empty(p["n"], dtype=np.float32)
    layers = itertools.count(1)
    timing, _ = measure(lambda: fastrank_fill_normal(out, 12345, next(layers)), repeats)
    return _rng_result(timing, p["n"], out)


@impl("rng", "numpy")
def rng_numpy(p, repeats):
    out = np.empty(p["n"], dtype=np.float32)
    gen = np.random.default_rng(12345)
    timing, _ = measure(lambda: gen.standard_normal(dtype=np.float32, out=out), repeats)
    return _rng_result(timing, p["n"], out)


@impl("rng", "torch")
def rng_torch(p, repeats):
    import torch

    out = torch.empty(p["n"], dtype=torch.float32)
    torch.manual_seed(12345)
    timing, _ = measure(lambda: torch.randn(p["n"], out=out), repeats)
    return _rng_result(timing, p["n"], out.numpy())


@impl("rng", "jax")
def rng_jax(p, repeats):
    import jax
    import jax.numpy as jnp

    draw = jax.jit(lambda key: jax.random.normal(key, (p["n"],), jnp.float32))
    keys = iter(jax.random.split(jax.random.key(12345), repeats + 2))
    timing, out = measure(lambda: draw(next(keys)).block_until_ready(), repeats)
    result = _rng_result(timing, p["n"], np.asarray(out))
    result["note"] = "allocates its output (JAX arrays are immutable)"
    return result


# ----------------------------------------------------------------------------------
# spectra: singular values of stored float32 test matrices
# ----------------------------------------------------------------------------------


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


@impl("spectra", "fastrank")
def spectra_fastrank(p, repeats):
    return _spectra(p, repeats, fastrank_spectrum)


@impl("spectra", "numpy")
def spectra_numpy(p, repeats):
    return _spectra(p, repeats, lambda h: np.linalg.svd(h, compute_uv=False))


@impl("spectra", "torch")
def spectra_torch(p, repeats):
    import torch

    return _spectra(p, repeats,
                    lambda h: torch.linalg.svdvals(torch.from_numpy(h)).numpy())


# ----------------------------------------------------------------------------------
# every_layer: one network, a measurement after every layer
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


@impl("every_layer", "fastrank")
def every_layer_side_by_side(p, repeats):
    """fastrank's Gram tier after every layer against torch computing the same quantities
    (``torch``) and torch computing the whole spectrum (``torch-svdvals``, what a torch
    user writes without a cheaper tier), round-robin in this process."""
    runners = {"fastrank": _fastrank_every_layer(p)}
    if installed("torch"):
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


# ----------------------------------------------------------------------------------
# memory: peak RSS of one simulation (run in a fresh process each)
# ----------------------------------------------------------------------------------


def _rss_now() -> int | None:
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


def _peak_rss() -> tuple[int, str]:
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


@impl("memory", "fastrank")
def memory_fastrank(p, repeats):
    import fastrank

    net = fastrank.Network(width=p["d"], batch=p["d"], depth=p["depth"], activation="relu",
                           norm="bn")
    before = _rss_now()
    t0 = time.perf_counter()
    traj = fastrank.simulate(net, 0)
    seconds = time.perf_counter() - t0
    peak, source = _peak_rss()
    return {
        "rss_before_bytes": before,
        "rss_after_bytes": _rss_now(),
        "peak_rss_bytes": peak,
        "peak_rss_source": source,
        "seconds": seconds,
        "measured_layers": int(len(traj.layer)),
        "final_soft_rank_mean": float(traj.soft_rank[-1]),
    }


# ----------------------------------------------------------------------------------
# scaling: fastrank time against depth and width
# ----------------------------------------------------------------------------------


@impl("scaling", "fastrank")
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


# ----------------------------------------------------------------------------------
# sweep_file: what a user runs (a sweep into a results file, from Python and as the
# command) against the same work in memory, and the torch script a user would write
# ----------------------------------------------------------------------------------

#: Thread settings handed to the `fastrank sweep` subprocess (the suite's count).
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


def sweep_file_command(p, path) -> list[str]:
    """``python -m fastrank sweep ...`` for the sweep_file case, writing ``path``."""
    seeds = f"0-{p['seeds'] - 1}" if p["seeds"] > 1 else "0"
    return [sys.executable, "-m", "fastrank", "sweep", "--width", str(p["d"]),
            "--depth", str(p["depth"]), "--activation", "relu", "--norm", "bn",
            "--seed", seeds, "--every", str(p["every"]), "-q", "-o", str(path), "--overwrite"]


def torch_script_command(p, layers, path) -> list[str]:
    """``python -m fastrank.bench.torch_sweep ...``: the torch script as a whole process."""
    return [sys.executable, "-m", "fastrank.bench.torch_sweep", "--d", str(p["d"]),
            "--depth", str(p["depth"]), "--seeds", str(p["seeds"]),
            "--layers", ",".join(str(int(x)) for x in layers), "-o", str(path)]


def run_command(name: str, command: list[str], env: dict, cwd) -> None:
    """Run ``command`` to its end; a non-zero exit raises RuntimeError naming ``name``
    with the last lines of its output."""
    import subprocess

    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-4:]
        raise RuntimeError(f"{name} exited with status {proc.returncode}: " + " | ".join(tail))


def file_runs(path) -> dict:
    """What a results file holds, read back with fastrank.open (outside the timing)."""
    import fastrank

    with fastrank.open(path) as results:
        runs = list(results)
        soft = [np.asarray(r.measure("soft_rank"), np.float64) for r in runs]
        return {
            "status": sorted({r.status for r in runs}),
            "runs": len(runs),
            "measured_layers": int(len(runs[0].layer)) if runs else 0,
            "last_layer": int(runs[0].layer[-1]) if runs else None,
            "soft_rank": soft,
            "final_soft_rank": [float(s[-1]) for s in soft],
        }


@impl("sweep_file", "fastrank")
def sweep_file_fastrank(p, repeats):
    """The same sweep four ways, side by side in this process (round-robin, one warm-up
    each): simulate_many in memory, run_sweep into a results file, the `fastrank sweep`
    command as a subprocess (wall time, interpreter start-up included), and a torch
    script (where torch is installed)."""
    import os
    import tempfile

    import numba

    import fastrank
    import fastrank.runner

    d, depth, seeds = p["d"], p["depth"], p["seeds"]
    schedule = fastrank.Schedule(every=p["every"])  # log: the default, as the command's
    net = fastrank.Network(width=d, batch=d, depth=depth, activation="relu", norm="bn")
    sweep = fastrank.Sweep(grid={"width": [d], "depth": [depth], "activation": ["relu"],
                                 "norm": ["bn"]},
                           seeds=tuple(range(seeds)), schedule=schedule)
    if sweep.networks() != [net]:
        raise RuntimeError(f"the sweep's network {sweep.networks()} is not {net}")
    threads = numba.get_num_threads()  # as the worker set it for this task
    env = dict(os.environ, **{k: str(threads) for k in THREAD_VARS})
    layers = [int(x) for x in schedule.points(depth)]  # what fastrank measures
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-sweep-") as tmp:
        paths = {"file": os.path.join(tmp, "run_sweep.h5"),
                 "command": os.path.join(tmp, "command.h5"),
                 "torch": os.path.join(tmp, "torch.npz"),
                 "torch_script": os.path.join(tmp, "torch_script.npz")}
        commands = {"command": sweep_file_command(p, paths["command"]),
                    "torch_script": torch_script_command(p, layers, paths["torch_script"])}

        def process(key):
            run_command(key, commands[key], env, tmp)

        fns = {
            "memory": lambda: fastrank.simulate_many(net, range(seeds), schedule),
            "file": lambda: fastrank.runner.run_sweep(sweep, paths["file"], overwrite=True),
            "command": lambda: process("command"),
        }
        skipped = {}
        if installed("torch"):
            from fastrank.bench import torch_sweep

            fns["torch"] = lambda: torch_sweep.run(d, depth, seeds, layers, paths["torch"])
            fns["torch_script"] = lambda: process("torch_script")
        else:
            skipped["torch"] = skipped["torch_script"] = SKIPPED
        timings, last = measure_side_by_side(fns, repeats)

        trajs = last["memory"]
        for t in trajs:
            if t.failure is not None or int(t.layer[-1]) != depth:
                raise RuntimeError(f"fastrank run of seed {t.seed} did not finish: {t.failure}")
        memory_finals = [float(t.soft_rank[-1]) for t in trajs]
        measured = {"memory": int(len(trajs[0].layer))}
        finals = {"memory": memory_finals}
        matches, read_errors = {}, {}
        for key in ("file", "command"):
            try:
                got = file_runs(paths[key])
            except Exception as exc:  # reported: the timings stand on their own
                read_errors[key] = f"{type(exc).__name__}: {exc}"
                continue
            measured[key] = got["measured_layers"]
            finals[key] = got["final_soft_rank"]
            matches[key] = bool(got["status"] == ["complete"] and got["runs"] == seeds
                                and got["measured_layers"] == measured["memory"]
                                and np.allclose(got["final_soft_rank"], memory_finals,
                                                rtol=1e-5, atol=0.0))
        if "torch" in fns:
            spectra = last["torch"]
            measured["torch"] = measured["torch_script"] = int(spectra.shape[0])
            finals["torch"] = [soft_rank(spectra[-1, i]) for i in range(seeds)]
            with np.load(paths["torch_script"]) as saved:
                finals["torch_script"] = [soft_rank(s) for s in saved["spectrum"][-1]]
        file_bytes = {key: os.path.getsize(path) for key, path in paths.items()
                      if os.path.exists(path)}
    return {
        "timings": timings,
        "skipped": skipped,
        "work": {"networks": seeds, "layers": depth},
        "measured_layers": measured,
        "final_soft_rank": finals,
        "final_soft_rank_mean": {k: float(np.mean(v)) for k, v in finals.items() if v},
        "file_matches_memory": matches,
        "read_errors": read_errors,
        "file_bytes": file_bytes,
        "schedule": schedule.to_dict(),
        "command": " ".join(["python", *commands["command"][1:-2], "FILE", "--overwrite"]),
        "command_env": {k: env[k] for k in THREAD_VARS},
        "threads_used": threads,
    }


# ----------------------------------------------------------------------------------
# depth_scaling: what a user runs (run_sweep into a results file) at a shallow and a
# deep depth, the same work per layer (a measured row every `every` layers)
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


@impl("depth_scaling", "fastrank")
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


@impl("depth_scaling_memory", "fastrank")
def depth_scaling_memory_fastrank(p, repeats):
    """One run_sweep of the depth_scaling sweep at ``p["depth"]`` (in a fresh process:
    the peak RSS is this run's, imports and numba's cached kernels included)."""
    import os
    import tempfile

    import fastrank.runner

    sweep = depth_scaling_sweep(p, p["depth"])
    before = _rss_now()
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-depth-rss-") as tmp:
        path = os.path.join(tmp, "sweep.h5")
        t0 = time.perf_counter()
        fastrank.runner.run_sweep(sweep, path, overwrite=True)
        seconds = time.perf_counter() - t0
        peak, source = _peak_rss()
        size = os.path.getsize(path)
    return {
        "depth": int(p["depth"]),
        "rss_before_bytes": before,
        "rss_after_bytes": _rss_now(),
        "peak_rss_bytes": peak,
        "peak_rss_source": source,
        "seconds": seconds,
        "file_bytes": size,
    }


# ----------------------------------------------------------------------------------
# compile: numba's first-call cost (run in fresh processes, cold and warm cache)
# ----------------------------------------------------------------------------------


@impl("compile", "fastrank")
def compile_fastrank(p, repeats):
    """First calls in a fresh process: numba compiles (empty cache) or loads (warm cache)
    the kernels of the narrow (d=8) and the wide (d=256) code paths."""
    import subprocess

    import fastrank

    code = ("import time; t = time.perf_counter(); import fastrank; "
            "print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        t_import = float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        t_import = None
    sch = fastrank.Schedule(every=None, log=None)
    out = {"import_s": t_import}
    for name, width in (("narrow", 8), ("wide", 256)):
        net = fastrank.Network(width=width, depth=3, activation="relu", norm="bn")
        calls = []
        for _ in range(2):
            t0 = time.perf_counter()
            fastrank.simulate_many(net, seeds=range(2), schedule=sch)
            calls.append(time.perf_counter() - t0)
        out[name] = {"width": width, "first_s": calls[0], "second_s": calls[1]}
    out["what"] = ("simulate_many of relu/bn float32 networks of depth 3, 2 seeds, at d=8 "
                   "(narrow path) then d=256 (wide path); import timed in a fresh interpreter")
    return out


#: The start-up commands timed by the compile workload (arguments after ``fastrank``;
#: FILE is a temporary path), with the environment each needs.
STARTUP_COMMANDS = {
    "--version": (["--version"], {}),
    "--help": (["--help"], {}),
    "shell completion": ([], {"_FASTRANK_COMPLETE": "bash_complete", "COMP_WORDS": "fastrank sw",
                              "COMP_CWORD": "1"}),
    "trivial sweep": (["sweep", "--width", "8", "--depth", "10", "-q", "-o", "FILE",
                       "--overwrite"], {}),
}


def _child_seconds() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@impl("startup", "fastrank")
def startup_fastrank(p, repeats):
    """``python -m fastrank`` start-up as a user meets it, each command in fresh processes
    (the numba cache as the suite's compile cases left it: warm): wall and CPU time,
    one warm-up then the median of ``repeats``."""
    import os
    import statistics
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-startup-") as tmp:
        path = os.path.join(tmp, "trivial.h5")
        for name, (args, extra_env) in STARTUP_COMMANDS.items():
            command = [sys.executable, "-m", "fastrank",
                       *[path if a == "FILE" else a for a in args]]
            env = dict(os.environ, **extra_env)
            walls, cpus = [], []
            for i in range(repeats + 1):
                cpu0, t0 = _child_seconds(), time.perf_counter()
                run_command(name, command, env, tmp)
                if i:  # the first is the warm-up
                    walls.append(time.perf_counter() - t0)
                    cpus.append(_child_seconds() - cpu0)
            shown = " ".join([*(f"{k}={v!r}" for k, v in extra_env.items()), "fastrank", *args])
            out[name] = {"command": shown, "wall_s": walls,
                         "cpu_s": cpus, "median_wall_s": statistics.median(walls),
                         "median_cpu_s": statistics.median(cpus)}
    return {"commands": out}
