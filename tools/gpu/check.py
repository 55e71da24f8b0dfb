"""Targeted checks of fastrank's CuPy backend on a real GPU, one compact line each: what
the test suite (tests/gpu) does not cover - timings of graphs, how far whole chaotic
trajectories drift from the CPU's, Lanczos, one very wide network, compute-sanitizer.

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
    f64 = {"dtype": "float64"}
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
