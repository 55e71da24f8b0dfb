"""Targeted checks of fastrank's CuPy backend on a real GPU, one compact line each: what
the test suite (tests/gpu) does not cover - tangents (issue 30) against the CPU's layer
by layer, whole and their cost, networks whole on the chip against the CPU layer by layer
and their time, the eigen/singular value kernels on many matrices, the
measured rows against the CPU's and their cost, ensemble statistics of 1024 seeds,
timings of graphs, how far whole chaotic trajectories drift from the CPU's, Lanczos,
one very wide network, compute-sanitizer.

    python tools/gpu/check.py [OUT_DIR]          # on the GPU machine (OUT_DIR/checks.json)
    python tools/gpu/check.py --host [OUT_DIR]   # dry run on the CPU stand-in (HostDevice)
    python tools/gpu/check.py --host-rounding    # same, GEMM accumulated in float64 then
                                                 # rounded (unlike the CPU BLAS, as cuBLAS)

Every check is isolated (an exception is reported, the next check runs) and checks run
in order of value; a deadline (env CHECK_BUDGET seconds, default 140) skips the rest.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import warnings

import numpy as np

HOST = any(a.startswith("--host") for a in sys.argv)
ROUND = "--host-rounding" in sys.argv  # stand-in whose GEMM rounds unlike the CPU's BLAS
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
OUT = ARGS[0] if ARGS else os.environ.get("OUT", "/tmp")
BUDGET = float(os.environ.get("CHECK_BUDGET", "140"))
T0 = time.time()
RESULTS: dict = {}

from fastrank.backends.cpu import CPUBackend  # noqa: E402
from fastrank.gpu import GPUBackend  # noqa: E402
from fastrank.gpu.testing import HostDevice, layer_by_layer  # noqa: E402
from fastrank.propagate import simulate_many  # noqa: E402
from fastrank.spec import Network, Schedule  # noqa: E402

if "--kernels-only" in sys.argv:  # the target of compute-sanitizer: every kernel, small
    b = GPUBackend(graphs=False)
    fused = GPUBackend(graphs=False, fused=True)
    f64 = {"dtype": "float64"}
    for net in (Network(width=64, depth=3, batch=64, activation="relu", norm="bn"),
                Network(width=48, depth=3, batch=40, activation="tanh", norm="ln", gamma=0.5,
                        init="uniform")):
        batch = fused.start(net, [0, 1, 2])
        fused.measure_stretch(batch, [1, 3], "gram", (0.1, 0.5))()
    for net in (Network(width=40, depth=3, batch=70, activation="relu", norm="bn"),
                Network(width=40, depth=3, batch=70, activation="tanh", norm="ln", gamma=0.5,
                        init="uniform"),
                Network(width=33, depth=3, activation="relu"),
                Network(width=17, depth=2, activation="relu", norm="bn-rms", init="uniform", **f64),
                Network(width=17, depth=2, activation="tanh", norm="ln", **f64),
                Network(width=17, depth=2, activation="linear", **f64),
                Network(width=80, depth=1, batch=70, activation="relu", norm="bn")):
        batch = b.start(net, [0, 1, 2])
        b.advance(batch, net.depth)
        b.spectrum(batch, 0, "gram")
        b.spectrum(batch, 0, "svd")
        b.gram_stats(batch, 0)
    b.dev.synchronize()
    print("kernels-only done")
    sys.exit(0)

CPU = CPUBackend()
if not HOST:  # one line and out when there is no usable device
    from fastrank.gpu import GPUUnavailable
    try:
        _t = time.time()
        GPUBackend()  # compiles the CUDA program (NVRTC; CuPy caches it on disk)
        RESULTS["first_backend_s"] = {"status": "OK", "seconds": round(time.time() - _t, 2)}
    except GPUUnavailable as exc:
        print(f"FATAL no GPU backend: {exc}")
        sys.exit(3)


class OtherRounding(HostDevice):
    def gemm(self, a, b, out):
        if self._tape is not None or a.dtype != np.float32:
            return super().gemm(a, b, out)
        out[...] = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)


def backend(**kw):
    if HOST:
        graphs = kw.pop("graphs", None)
        kw.pop("tf32", None)
        cls = OtherRounding if ROUND else HostDevice
        return GPUBackend(dev=cls(block=32, eigen_block=32, graphs=graphs is not False),
                          graphs=graphs, **kw)
    return GPUBackend(**kw)


def check(name, need_gpu=False):
    def deco(fn):
        if need_gpu and HOST:
            RESULTS[name] = {"status": "SKIP", "why": "needs the GPU"}
            return fn
        left = BUDGET - (time.time() - T0)
        if left < 5:
            RESULTS[name] = {"status": "SKIP", "why": "check budget spent"}
            print(f"SKIP  {name}: budget spent", flush=True)
            return fn
        t = time.time()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                status, info = fn()
            ws = sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught})
            if ws:
                info["warnings"] = ws
        except Exception as exc:  # report and go on
            status, info = "ERROR", {"error": f"{type(exc).__name__}: {str(exc)[:400]}",
                                     "where": traceback.format_exc().splitlines()[-3:]}
        info["seconds"] = round(time.time() - t, 2)
        RESULTS[name] = {"status": status, **info}
        print(f"{status:5s} {name}: " + json.dumps(info, default=str)[:600], flush=True)
        return fn
    return deco


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ---------------------------------------------------------------------------------------
@check("environment", need_gpu=True)
def _():
    import cupy
    from cupy_backends.cuda.libs import nvrtc as cnvrtc
    info = {"cupy": cupy.__version__, "nvrtc_used_by_cupy": cnvrtc.getVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "driver": cupy.cuda.runtime.driverGetVersion()}
    b = GPUBackend()
    info["first_backend_s"] = RESULTS["first_backend_s"]["seconds"]
    info["describe"] = b.describe()
    info["cublas_library"] = b.dev._gemm.library
    attrs = cupy.cuda.Device(0).attributes
    info["smem_per_block_optin"] = attrs.get("MaxSharedMemoryPerBlockOptin")
    return "OK", info


@check("tangents_vs_cpu_layer_by_layer_and_cost")
def _():
    """Tangents on the cuBLAS path: every layer of a float32 BN+ReLU network and a float64
    LN+tanh residual one (d = N = 64) against the CPU's from the same H, tangents and
    logs, K = 1 and K = 3 re-orthonormalised every 2 layers (CuPy's stacked QR), within
    tangent_tolerance (for the CPU's tangents' dtype; two summation orders); the logs of
    whole BN+ReLU trajectories against the CPU's up to layer 10 (float32 H drifts ~1.5x a
    layer); and the time per layer of 256 seeds with K = 0 (graphs), 1 and 4 (QR every
    layer)."""
    info, ok = {}, True
    layers, seeds, d = (6, [0, 1, 2], 64) if not HOST else (2, [0], 16)
    for kind in ({"activation": "relu", "norm": "bn"},
                 {"activation": "tanh", "norm": "ln", "gamma": 0.5, "dtype": "float64"}):
        net = Network(width=d, depth=layers, batch=d, **kind)
        for count, qr_every in ((1, 1), (3, 2)):
            worst = layer_by_layer(backend(), CPU, net, seeds, layers, tangents=count,
                                   qr_every=qr_every)
            tol = worst["tangent_tolerance"]
            info[f"{kind['activation']}/{kind['norm']} K={count}"] = (
                f"t {worst['tangents']:.1e} logs {worst['tangent_logs']:.1e} (tol {tol:.1e}) "
                f"h {worst['h']:.1e}")
            ok &= (worst["failures_differ"] is None and worst["h"] < 1e-4
                   and worst["tangents"] < tol and worst["tangent_logs"] < tol)
    net = Network(width=32 if not HOST else 12, depth=20, activation="relu", norm="bn")
    runs = [simulate_many(net, range(4), Schedule(every=2, log=0), backend=b, tangents=2,
                          qr_every=2) for b in (backend(), CPU)]
    early = runs[1][0].layer <= 10
    drift = max(float(np.abs(a.tangent_log_norm - b.tangent_log_norm)[early].max())
                for a, b in zip(*runs, strict=True))
    info["whole trajectories, logs to layer 10"] = f"{drift:.1e}"
    ok &= drift < 1e-3
    depth, n = (24, 256) if not HOST else (6, 2)
    net = Network(width=d, depth=depth, activation="relu", norm="bn")
    for count in (0, 1, 4):
        b = backend()
        batch = b.start(net, range(n), tangents=count, qr_every=1)
        b.advance(batch, 4)
        b.dev.synchronize()
        t = time.time()
        b.advance(batch, depth)
        b.dev.synchronize()
        info[f"K={count} us/layer"] = round(1e6 * (time.time() - t) / (depth - 4), 1)
    return ("OK" if ok else "FAIL"), info


FUSED_KINDS = (
    {"activation": "relu", "norm": "bn"},
    {"activation": "tanh", "norm": "ln", "gamma": 0.5, "init": "uniform"},
    {"activation": "linear", "norm": "none"},  # rescaled
    {"activation": "relu", "norm": "bn-rms", "order": "act-norm"},
)


@check("fused_layer_by_layer_vs_cpu_and_time")
def _():
    """Networks whole on the chip (fused=True) against the CPU's layer from the same H,
    every layer, over several kinds at d = N = 64 and 128; then the time per layer of
    1024 networks of d = N = 64 (BN+ReLU) fused against the default path (graphs)."""
    info, ok = {}, True
    layers, seeds = (6, [0, 1, 2]) if not HOST else (2, [0])
    for d in (64, 128) if not HOST else (16,):
        for kind in FUSED_KINDS:
            net = Network(width=d, depth=layers, batch=d, **kind)
            worst = layer_by_layer(backend(fused=True), CPU, net, seeds, layers)
            key = f"d{d} {kind['activation']}/{kind['norm']}"
            info[key] = f"h {worst['h']:.1e} log_norm {worst['log_norm']:.1e}"
            ok &= worst["failures_differ"] is None and worst["h"] < 1e-4
    depth, n = (400, 1024) if not HOST else (16, 2)
    net = Network(width=64 if not HOST else 16, depth=depth, activation="relu", norm="bn")
    for label, options in (("graphs", {}), ("fused", {"fused": True})):
        b = backend(**options)
        batch = b.start(net, range(n))
        b.advance(batch, 8)
        b.dev.synchronize()
        t = time.time()
        b.advance(batch, depth)
        info[f"{label} us/layer"] = round(1e6 * (time.time() - t) / (depth - 8), 1)
    return ("OK" if ok else "FAIL"), info


@check("eigen_and_svd_kernels_vs_lapack_10k")
def _():
    """householder_eigvalsh on 10,000 random Gram matrices and 10,000 nearly collapsed
    ones (k = 64), bidiagonal_svdvals on 2,000 random and 2,000 collapsed 64 x 256
    matrices: the worst error in units of the largest value's eps (tests allow 1e-12)."""
    rng = np.random.default_rng(7)
    count, k = (10_000, 64) if not HOST else (20, 16)
    b = backend()
    xp = b.dev.xp
    info, ok = {}, True
    for label, rank, noise in (("random", k, 0.0), ("collapsed", 1, 1e-7)):
        h = rng.standard_normal((count, k, rank)) @ rng.standard_normal((count, rank, 2 * k))
        h += noise * rng.standard_normal(h.shape)
        g = h @ h.transpose(0, 2, 1)
        with b.dev.context():
            w, status = b._eigvalsh_stack(xp.asarray(g))
            w, status = b.dev.to_host(w), b.dev.to_host(status)
        ref = np.linalg.eigvalsh(g)
        err = float((np.abs(w - ref) / ref[:, -1:]).max())
        info[f"eig {label}"] = f"{err / 2.2e-16:.1f} eps, status ok {int((status == 0).sum())}"
        ok &= err < 1e-12 and bool((status == 0).all())
        a = h[: count // 5, :, :]
        with b.dev.context():
            s, status = b._svdvals_stack(xp.asarray(a))
            s, status = b.dev.to_host(s), b.dev.to_host(status)
        ref = np.linalg.svd(a, compute_uv=False)
        err = float((np.abs(s - ref) / ref[:, :1]).max())
        info[f"svd {label}"] = f"{err / 2.2e-16:.1f} eps, status ok {int((status == 0).sum())}"
        ok &= err < 1e-12 and bool((status == 0).all())
    return ("OK" if ok else "FAIL"), info


@check("measured_rows_vs_cpu_and_cost")
def _():
    """1024 networks of d = N = 64, BN+ReLU, 2000 layers: propagation alone against the
    default schedule, on the default path and whole on the chip (the measuring cost the
    issue bounds at 1.5x); and every measured row's measures against the CPU's measures
    of the same spectra."""
    from fastrank import measures
    from fastrank.propagate import DEFAULT_SCHEDULE, iter_batch
    depth, n, d = (2000, 1024, 64) if not HOST else (30, 2, 16)
    net = Network(width=d, depth=depth, activation="relu", norm="bn")
    info, ok = {}, True
    for label, options in (("default", {}), ("fused", {"fused": True})):
        b = backend(**options)
        batch = b.start(net, range(n))
        b.advance(batch, depth)
        b.dev.synchronize()
        t = time.time()
        batch = b.start(net, range(n))
        b.advance(batch, depth)
        b.dev.synchronize()
        alone = time.time() - t
        t = time.time()
        worst = 0.0
        for _, rows in iter_batch(net, range(n), DEFAULT_SCHEDULE, backend=b):
            ref = measures.all_measures(rows.spectrum, (d, d), "float32", (0.1,))
            for name in measures.SCALARS:
                got, want = rows.measures[name], ref[name]
                fin = np.isfinite(want)
                worst = max(worst, rel(got[fin], want[fin]) if fin.any() else 0.0)
        measured = time.time() - t
        info[label] = (f"propagation {alone:.3f}s, measured {measured:.3f}s "
                       f"({measured / alone:.2f}x)")
        ok &= worst < 1e-12
    info["worst measure vs cpu"] = f"{worst:.1e}"
    return ("OK" if ok else "FAIL"), info


@check("ensemble_1024_seeds_vs_cpu")
def _():
    """1024 seeds of BN+ReLU and of tanh at d = 32, 200 layers, on the GPU (default path
    and fused) and the CPU: mean soft rank and mean log-norm at the last layer agree
    within 4 standard errors."""
    n, depth = (1024, 200) if not HOST else (4, 10)
    sch = Schedule(every=depth, log=0)
    info, ok = {}, True
    for kind in ({"activation": "relu", "norm": "bn"}, {"activation": "tanh", "norm": "none"}):
        net = Network(width=32, depth=depth, **kind)
        ref = simulate_many(net, range(n), sch, backend=CPU)
        for label, options in (("default", {}), ("fused", {"fused": True})):
            ours = simulate_many(net, range(n), sch, backend=backend(**options))
            for stat in ("soft_rank", "log_norm"):
                a = np.array([getattr(t, stat)[-1] for t in ours])
                c = np.array([getattr(t, stat)[-1] for t in ref])
                se = np.sqrt((a.var() + c.var()) / n) + 1e-12
                z = abs(a.mean() - c.mean()) / se
                info[f"{kind['activation']} {label} {stat}"] = (
                    f"{a.mean():.4f}/{c.mean():.4f} z {z:.1f}")
                ok &= z < 4
    return ("OK" if ok else "FAIL"), info


@check("graphs_captured_bitwise_and_speedup")
def _():
    """Graphs on vs off at d = 64 (256 seeds on the device): captured and replayed (the
    device's counters), bitwise the eager loop, and the time per layer of each."""
    depth, seeds = (400, 256) if not HOST else (24, 2)
    net = Network(width=64, depth=depth, activation="relu", norm="bn")
    res, info = {}, {}
    for graphs in (False, True):
        b = backend(graphs=graphs)
        batch = b.start(net, range(seeds))
        b.advance(batch, 12)  # warm-up (and the first graph captures)
        t = time.time()
        b.advance(batch, depth)
        info[f"graphs={graphs} us/layer"] = round(1e6 * (time.time() - t) / (depth - 12), 1)
        res[graphs] = (b.dev.to_host(batch.h.h), batch.log_norm.copy())
        if graphs:
            info["captured"], info["replays"] = b.dev.graphs_captured, b.dev.graph_replays
            info["graphs_failed"] = b._graphs_failed
    same = bool(np.array_equal(res[True][0], res[False][0]) and
                np.array_equal(res[True][1], res[False][1]))
    info["bitwise_equal_to_eager"] = same
    info["speedup"] = round(info["graphs=False us/layer"] / info["graphs=True us/layer"], 2)
    ok = same and not info["graphs_failed"] and info["captured"] > 0 and info["replays"] > 0
    return ("OK" if ok else "FAIL"), info


@check("trajectory_vs_cpu_d64_depth200_bn_relu")
def _():
    """The whole trajectory from the same seeds. BN+ReLU is chaotic (perturbations grow
    ~1.2-1.5x per layer), so agreement decays with depth even when every layer is right;
    the host proxy (float64-accumulated GEMM) gave ~6e-4 at layer 50 and ~5e-2 at 200
    for d=32..64. Also an ensemble statistic, which must agree."""
    depth, seeds = (200, list(range(16))) if not HOST else (20, [0, 1])
    net = Network(width=64, depth=depth, activation="relu", norm="bn")
    sch = Schedule(every=depth // 8, log=0)
    ours = simulate_many(net, seeds, sch, backend=backend())
    ref = simulate_many(net, seeds, sch, backend=CPU)
    layers = ref[0].layer
    diff = np.max([np.abs((a.spectrum - b.spectrum) / a.spectrum[:, :1]).max(axis=1)
                   for a, b in zip(ref, ours, strict=True)], axis=0)
    info = {f"L{int(L)}": f"{d:.1e}" for L, d in zip(layers, diff, strict=True)}
    sr_gpu = np.array([t.soft_rank[-1] for t in ours])
    sr_cpu = np.array([t.soft_rank[-1] for t in ref])
    se = np.sqrt((sr_gpu.var() + sr_cpu.var()) / len(seeds))
    info["soft_rank@200 gpu/cpu"] = f"{sr_gpu.mean():.3f}/{sr_cpu.mean():.3f} (se {se:.3f})"
    early_ok = diff[layers <= 25].max() < 1e-4
    ens_ok = abs(sr_gpu.mean() - sr_cpu.mean()) < 4 * se + 1e-6
    return ("OK" if early_ok and ens_ok else "FAIL"), info


@check("lanczos_gram_tier_k270_and_timing")
def _():
    net = Network(width=300, depth=2, batch=270, activation="relu", norm="bn")
    sch = Schedule(every=2, log=0, cheap_every=1)
    ours = simulate_many(net, [0], sch, backend=backend())[0]
    ref = simulate_many(net, [0], sch, backend=CPU)[0]
    info = {"stable_rank gpu/cpu": [float(ours.stable_rank[1]), float(ref.stable_rank[1])]}
    ok = abs(ours.stable_rank[1] - ref.stable_rank[1]) < 1e-4 * ref.stable_rank[1]
    if not HOST:  # cupyx eigsh: absolute tol; a numpy port of it NaNs on exact low rank
        import cupy
        from cupyx.scipy.sparse.linalg import eigsh
        b = GPUBackend()
        n = 2048
        r = np.random.default_rng(2)
        x = r.standard_normal((n, n))
        h1 = np.outer(r.standard_normal(n), r.standard_normal(n))
        noisy = h1 + 1e-6 * x
        for name, gh in (("wishart", x @ x.T), ("rank1+1e-6noise", noisy.T @ noisy),
                         ("exact_rank1", h1.T @ h1)):
            top_ref = np.linalg.eigvalsh(gh)[-1]
            try:
                with b.dev.context():
                    g = cupy.asarray(gh)
                    t = time.time()
                    top = b.dev.top_eigenvalue(g)  # as shipped: tol=1e-10 absolute
                    err = abs(top - top_ref) / top_ref
                    info[f"{name} shipped"] = f"{time.time() - t:.2f}s rel_err {err:.1e}"
                    ok &= bool(abs(top - top_ref) < 1e-8 * top_ref)
                    t = time.time()
                    v0 = cupy.asarray(np.random.default_rng(12345).standard_normal(n))
                    eigsh(g, k=1, which="LA", v0=v0, tol=1e-10 * top_ref, return_eigenvectors=False)
                    info[f"{name} relative_tol_s"] = round(time.time() - t, 2)
            except Exception as exc:
                info[name] = f"{type(exc).__name__}: {str(exc)[:150]}"
                ok = False
    return ("OK" if ok else "FAIL"), info


@check("wide_d8192_one_layer_and_spectrum_d4096", need_gpu=True)
def _():
    info, ok = {}, True
    net = Network(width=8192, depth=2, activation="relu", norm="bn")
    worst = layer_by_layer(backend(), CPU, net, [0], 1)
    err, dln, why = worst["h"], worst["log_norm"], worst["failures_differ"] or ""
    info["d8192 layer 1"] = f"rel err {err:.1e}, dlog_norm {dln:.1e} {why}"
    ok &= not why and err < 1e-4
    net = Network(width=4096, depth=3, activation="relu", norm="bn")
    b = GPUBackend()
    batch = b.start(net, [0])
    b.advance(batch, 3)
    t = time.time()
    s = b.spectrum(batch, 0, "gram")
    info["d4096 gram spectrum_s"] = round(time.time() - t, 2)
    info["d4096 s_max/s_min"] = float(s[0] / s[-1])
    ok &= bool(np.isfinite(s).all())
    return ("OK" if ok else "FAIL"), info


@check("compute_sanitizer", need_gpu=True)
def _():
    """memcheck, racecheck, synccheck over one small run of every kernel (--kernels-only)."""
    import shutil
    import subprocess
    exe = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    info, ok = {}, True
    for tool in ("memcheck", "racecheck", "synccheck"):
        left = BUDGET - (time.time() - T0) - 5
        if left < 20:
            info[tool] = "skipped (budget)"
            continue
        try:
            p = subprocess.run([exe, "--tool", tool, sys.executable, os.path.abspath(__file__),
                                "--kernels-only"], capture_output=True, text=True,
                               timeout=min(45, left))
        except Exception as exc:
            info[tool], ok = f"{type(exc).__name__}: {str(exc)[:120]}", False
            continue
        text = p.stdout + p.stderr
        lines = [x.strip("= ") for x in text.splitlines()]
        found = re.compile(r"Race|Invalid|Barrier|Error:|error:")
        hits = [i for i, x in enumerate(lines) if found.search(x)]
        events = [" / ".join(lines[i:i + 3]) for i in hits[:3]]
        summary = [x for x in lines if "SUMMARY" in x]
        info[tool] = f"rc={p.returncode} {summary} {events}"[:600]
        ok &= p.returncode == 0 and "kernels-only done" in text and bool(
            re.search(r"SUMMARY: 0 (errors|hazards)", text))
    return ("OK" if ok else "FAIL"), info


# ---------------------------------------------------------------------------------------
bad = [k for k, v in RESULTS.items() if v["status"] not in ("OK", "SKIP")]
print(f"CHECKS: {len(RESULTS) - len(bad)} ok/skipped, {len(bad)} not ok: {', '.join(bad)}")
try:
    with open(os.path.join(OUT, "checks.json"), "w") as fh:
        json.dump(RESULTS, fh, indent=1, default=str)
except OSError as exc:
    print(f"could not write checks.json: {exc}")
