"""GPU benchmarks (issue 5): the GPU backend against the cuBLAS floor, on one device.

* ``large``: one network of d = N = 4096 and 8192, 100 layers of BN + ReLU, float32,
  layer by layer; the floor is the same number of cuBLAS SGEMMs of that shape (the GEMM
  alone: weights, normalisation and bookkeeping are what fastrank adds), run the same way
  (strided-batched SGEMM, TF32 off), in the same process. Also with TF32 on, for both.
* ``small``: 1024 networks of d = N = 64, 2000 layers of BN + ReLU at once (one stack,
  batched GEMMs, CUDA graphs), against 2000 batched SGEMMs of the stack; then the same
  run with graphs off, and with the default measurement schedule (spectra of all 1024
  networks at every 10th and 50 log-spaced layers).

``run(quick, repeats)`` returns a JSON-ready dict; without a usable device its
``status`` is ``skipped`` and ``reason`` says why. Times are wall clock around work
that ends with a device synchronisation: one warm-up call, then the median of
``repeats`` calls (fastrank.bench.timing.measure).
"""

from __future__ import annotations

import math

import numpy as np

SIZES = {
    "full": {"large": {"widths": [4096, 8192], "depth": 100},
             "small": {"width": 64, "seeds": 1024, "depth": 2000}},
    "quick": {"large": {"widths": [2048, 4096], "depth": 20},
              "small": {"width": 64, "seeds": 256, "depth": 500}},
}


def run(quick: bool = False, repeats: int = 3, *, device: int = 0, sizes: dict | None = None,
        make_backend=None) -> dict:
    """The GPU benchmarks as a dict (see the module docstring). ``sizes`` overrides the
    preset's; ``make_backend(**options)`` builds the backends (default: GPUBackend on
    ``device``; tests pass the host stand-in)."""
    from fastrank.backends.gpu import GPUBackend, GPUUnavailable

    preset = "quick" if quick else "full"
    sizes = sizes or SIZES[preset]
    doc = {"name": "gpu", "preset": preset, "repeats": repeats, "sizes": sizes}
    if make_backend is None:
        def make_backend(**options):
            return GPUBackend(device, **options)
    try:
        backend = make_backend()
    except GPUUnavailable as exc:
        return {**doc, "status": "skipped", "reason": str(exc)}
    doc["device"] = backend.describe()
    doc["large"] = [_large(make_backend, d, sizes["large"]["depth"], repeats, tf32)
                    for d in sizes["large"]["widths"] for tf32 in (False, True)]
    doc["small"] = _small(make_backend, sizes["small"], repeats)
    doc["status"] = "ok"
    return doc


def _measure(fn, repeats):
    from fastrank.bench.timing import measure

    record, _ = measure(fn, repeats)
    return record


def _gemm_floor(backend, a, b, out, depth, repeats) -> dict:
    dev = backend.dev

    def floor():
        with dev.context():
            for _ in range(depth):
                dev.gemm(a, b, out)
            dev.synchronize()

    return _measure(floor, repeats)


def _large(make_backend, d: int, depth: int, repeats: int, tf32: bool) -> dict:
    from fastrank.spec import Network

    backend = make_backend(tf32=tf32)
    net = Network(width=d, depth=depth, activation="relu", norm="bn")
    xp = backend.dev.xp

    def fastrank_run():
        batch = backend.start(net, [0])
        backend.advance(batch, depth)  # ends with a copy of the log-norms: synchronised
        return batch

    timing = _measure(fastrank_run, repeats)
    with backend.dev.context():
        a = xp.ones((1, d, d), np.float32)
        b = xp.ones((1, d, d), np.float32)
        out = xp.empty((1, d, d), np.float32)
    floor = _gemm_floor(backend, a, b, out, depth, repeats)
    del a, b, out
    flops = 2.0 * d * d * d * depth
    return {
        "workload": f"BN+ReLU d=N={d}, {depth} layers, float32" + (", TF32" if tf32 else ""),
        "d": d, "depth": depth, "tf32": tf32,
        "fastrank_s": timing["median_s"], "fastrank_first_call_s": timing["first_call_s"],
        "sgemm_floor_s": floor["median_s"],
        "ratio_to_floor": timing["median_s"] / floor["median_s"],
        "per_layer_ms": 1e3 * timing["median_s"] / depth,
        "sgemm_tflops": flops / floor["median_s"] / 1e12,
        "fastrank_tflops": flops / timing["median_s"] / 1e12,
        "timings": {"fastrank": timing, "sgemm": floor},
    }


def _small(make_backend, size: dict, repeats: int) -> dict:
    from fastrank.propagate import iter_batch
    from fastrank.spec import Network, Schedule

    d, seeds, depth = size["width"], size["seeds"], size["depth"]
    net = Network(width=d, depth=depth, activation="relu", norm="bn")
    out = {"workload": f"{seeds} networks BN+ReLU d=N={d}, {depth} layers, float32",
           "width": d, "seeds": seeds, "depth": depth}
    for label, options in (("graphs", {"graphs": True}), ("no_graphs", {"graphs": False})):
        backend = make_backend(**options)

        def advance(backend=backend):
            batch = backend.start(net, range(seeds))
            backend.advance(batch, depth)

        out[f"fastrank_{label}"] = _measure(advance, repeats)
    backend = make_backend()

    def measured():
        for _ in iter_batch(net, range(seeds), Schedule(), backend=backend):
            pass

    out["fastrank_default_schedule"] = _measure(measured, max(1, min(repeats, 2)))
    out["measured_layers"] = int(len(Schedule().points(depth)))
    xp = backend.dev.xp
    with backend.dev.context():
        a = xp.ones((seeds, d, d), np.float32)
        b = xp.ones((seeds, d, d), np.float32)
        c = xp.empty((seeds, d, d), np.float32)
    floor = _gemm_floor(backend, a, b, c, depth, repeats)
    out["batched_sgemm_floor"] = floor
    best = out["fastrank_graphs"]["median_s"]
    out["ratio_to_floor"] = best / floor["median_s"]
    out["graph_speedup"] = out["fastrank_no_graphs"]["median_s"] / best
    out["layers_per_s"] = seeds * depth / best
    out["per_layer_us"] = 1e6 * best / depth
    out["measurement_overhead"] = out["fastrank_default_schedule"]["median_s"] / best
    if not math.isfinite(out["ratio_to_floor"]):
        out["ratio_to_floor"] = None
    return out


def markdown(doc: dict) -> str:
    """A short table of the results (for the lead's ``fastrank bench --gpu``)."""
    if doc.get("status") != "ok":
        return f"GPU benchmarks skipped: {doc.get('reason')}\n"
    dev = doc["device"]
    lines = [f"GPU: {dev.get('device')} (CuPy {dev.get('cupy')}, CUDA runtime "
             f"{dev.get('cuda_runtime')}, driver {dev.get('cuda_driver')})", "",
             "| workload | fastrank | cuBLAS floor | ratio |", "|---|---|---|---|"]
    for r in doc["large"]:
        lines.append(f"| {r['workload']} | {r['fastrank_s']:.3f} s ({r['per_layer_ms']:.2f} "
                     f"ms/layer) | {r['sgemm_floor_s']:.3f} s ({r['sgemm_tflops']:.1f} TFLOP/s) "
                     f"| {r['ratio_to_floor']:.2f} |")
    s = doc["small"]
    lines.append(f"| {s['workload']} (graphs; without: {s['graph_speedup']:.2f}x slower) | "
                 f"{s['fastrank_graphs']['median_s']:.3f} s | "
                 f"{s['batched_sgemm_floor']['median_s']:.3f} s | {s['ratio_to_floor']:.2f} |")
    lines.append(f"| same, default schedule ({s['measured_layers']} measured layers) | "
                 f"{s['fastrank_default_schedule']['median_s']:.3f} s | | |")
    return "\n".join(lines) + "\n"
