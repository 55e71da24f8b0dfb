"""GPU benchmarks: the GPU backend against the cuBLAS floor, on one device.

* ``large``: one network of d = N = 4096 and 8192, 100 layers of BN + ReLU, float32,
  layer by layer; the floor is the same number of cuBLAS SGEMMs of that shape (the GEMM
  alone: weights, normalisation and bookkeeping are what fastrank adds), run the same way
  (strided-batched SGEMM, TF32 off), in the same process. Also with TF32 on, for both.
* ``small``: 1024 networks of d = N = 64, 2000 layers of BN + ReLU at once (one stack,
  batched GEMMs, CUDA graphs), against 2000 batched SGEMMs of the stack; then the same
  run with graphs off, whole on the chip (``fused=True``: kernels/cuda/network.cu), and
  with the default measurement schedule (spectra of all 1024 networks at every 10th and
  50 log-spaced layers) on the default path and whole on the chip. Also against plain torch on the
  same device in the same process, TF32 off as in fastrank: ``torch_batched``, the stack
  with one ``torch.bmm`` per layer (the strongest loop a torch user writes), and
  ``torch_per_network``, one network after the other with ``torch.mm``, timed on a few
  networks and extrapolated linearly to all; ``skipped`` with the reason where torch or
  its CUDA is missing.
* ``sweep``: what a user runs, as whole processes: ``fastrank sweep --gpu`` (interpreter,
  CuPy and kernel start-up, its results file written) against the torch script a user
  would write (fastrank.bench.torch_sweep on the same device: float64 singular values at
  the same measured layers, saved), round-robin; the final soft ranks of both as
  ensemble means (different random streams: the same distribution, not the same
  numbers).
* ``targets``: the GPU targets, each as the measured figure, the target and whether
  it is met.

``run(quick, repeats)`` returns a JSON-ready dict; without a usable device its
``status`` is ``skipped`` and ``reason`` says why. Times are wall clock around work
that ends with a device synchronisation: one warm-up call, then the median of
``repeats`` calls (fastrank.bench.timing.measure).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

SIZES = {
    "full": {"large": {"widths": [4096, 8192], "depth": 100},
             "small": {"width": 64, "seeds": 1024, "depth": 2000, "torch_networks": 8},
             # fewer networks and layers than small's: at 1024 networks x 2000 layers the
             # torch script's float64 svdvals at every measured layer take minutes a run
             "sweep": {"width": 64, "seeds": 256, "depth": 1000, "every": 10}},
    "quick": {"large": {"widths": [2048, 4096], "depth": 20},
              "small": {"width": 64, "seeds": 256, "depth": 500, "torch_networks": 4},
              "sweep": {"width": 64, "seeds": 256, "depth": 500, "every": 10}},
}


def run(quick: bool = False, repeats: int = 3, *, device: int = 0, sizes: dict | None = None,
        make_backend=None) -> dict:
    """The GPU benchmarks as a dict (see the module docstring). ``sizes`` overrides the
    preset's; ``make_backend(**options)`` builds the backends (default: GPUBackend on
    ``device``; tests pass the host stand-in)."""
    from fastrank.gpu import GPUBackend, GPUUnavailable

    preset = "quick" if quick else "full"
    sizes = sizes or SIZES[preset]
    doc = {"name": "gpu", "preset": preset, "repeats": repeats, "sizes": sizes}
    on_device = make_backend is None
    if on_device:
        def make_backend(**options):
            return GPUBackend(device, **options)
    try:
        backend = make_backend()
    except GPUUnavailable as exc:
        return {**doc, "status": "skipped", "reason": str(exc)}
    doc["device"] = backend.describe()
    doc["large"] = [_large(make_backend, d, sizes["large"]["depth"], repeats, tf32)
                    for d in sizes["large"]["widths"] for tf32 in (False, True)]
    doc["small"] = _small(make_backend, sizes["small"], repeats, f"cuda:{device}")
    doc["sweep"] = {"status": "skipped", "reason": "the host stand-in runs in this process"}
    if on_device:
        try:
            doc["sweep"] = sweep_processes(sizes["sweep"], repeats, device)
        except (RuntimeError, OSError) as exc:  # a process that failed: said, not fatal
            doc["sweep"] = {"status": "failed", "reason": str(exc)}
    doc["targets"] = _targets(doc)
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


def _small(make_backend, size: dict, repeats: int, torch_device: str) -> dict:
    from fastrank.propagate import iter_batch
    from fastrank.spec import Network, Schedule

    d, seeds, depth = size["width"], size["seeds"], size["depth"]
    net = Network(width=d, depth=depth, activation="relu", norm="bn")
    out = {"workload": f"{seeds} networks BN+ReLU d=N={d}, {depth} layers, float32",
           "width": d, "seeds": seeds, "depth": depth}
    for label, options in (("graphs", {"graphs": True}), ("no_graphs", {"graphs": False}),
                           ("fused", {"fused": True})):
        backend = make_backend(**options)

        def advance(backend=backend):
            batch = backend.start(net, range(seeds))
            backend.advance(batch, depth)

        out[f"fastrank_{label}"] = _measure(advance, repeats)
    for label, options in (("default_schedule", {}), ("default_schedule_fused", {"fused": True})):
        backend = make_backend(**options)

        def measured(backend=backend):
            for _ in iter_batch(net, range(seeds), Schedule(), backend=backend):
                pass

        out[f"fastrank_{label}"] = _measure(measured, max(1, min(repeats, 2)))
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
    out["fused_speedup"] = best / out["fastrank_fused"]["median_s"]
    out["fused_measurement_overhead"] = (out["fastrank_default_schedule_fused"]["median_s"]
                                         / out["fastrank_fused"]["median_s"])
    out["layers_per_s"] = seeds * depth / best
    out["per_layer_us"] = 1e6 * best / depth
    out["measurement_overhead"] = out["fastrank_default_schedule"]["median_s"] / best
    if not math.isfinite(out["ratio_to_floor"]):
        out["ratio_to_floor"] = None
    out.update(_versus_torch(net, size, repeats, torch_device, best))
    return out


def sweep_processes(size: dict, repeats: int, device: int | None) -> dict:
    """The ``sweep`` section (module docstring): ``fastrank sweep --gpu --device
    <device>`` and the torch script on ``cuda:<device>``, each as a process, side by
    side. ``device`` None runs both on the CPU (the test's dry run of this plumbing)."""
    import functools
    import os
    import tempfile

    from fastrank.bench import implementations
    from fastrank.bench.commands import (
        file_runs,
        run_command,
        sweep_file_command,
        torch_script_command,
    )
    from fastrank.bench.timing import measure_side_by_side
    from fastrank.spec import Schedule

    p = {"d": size["width"], "seeds": size["seeds"], "depth": size["depth"],
         "every": size["every"]}
    layers = [int(x) for x in Schedule(every=p["every"]).points(p["depth"])]
    out = {"workload": f"{p['seeds']} networks BN+ReLU d=N={p['d']}, {p['depth']} layers, "
                       f"spectra at {len(layers)} layers (every {p['every']} and log-spaced)",
           "measured_layers": len(layers), "device": "cpu" if device is None else device}
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-gpu-sweep-") as tmp:
        paths = {"fastrank": os.path.join(tmp, "sweep.h5"),
                 "torch": os.path.join(tmp, "torch.npz")}
        on = [] if device is None else ["--gpu", "--device", str(device)]
        commands = {"fastrank": sweep_file_command(p, paths["fastrank"]) + on}
        if implementations.installed("torch"):
            commands["torch"] = torch_script_command(p, layers, paths["torch"]) + [
                "--device", "cpu" if device is None else f"cuda:{device}"]
        else:
            out["torch"] = {"status": "skipped", "reason": "torch is not installed"}
        fns = {name: functools.partial(run_command, name, command, dict(os.environ), tmp)
               for name, command in commands.items()}
        timings, _ = measure_side_by_side(fns, repeats)
        runs = file_runs(paths["fastrank"])
        finals = {"fastrank": runs["final_soft_rank"]}
        out["fastrank"] = {"status": "ok", **timings["fastrank"],
                           "command": " ".join(["fastrank", *commands["fastrank"][3:]]).replace(
                               paths["fastrank"], "FILE"),
                           "runs": runs["runs"], "run_status": runs["status"],
                           "measured_layers": runs["measured_layers"]}
        if "torch" in commands:
            with np.load(paths["torch"]) as saved:
                finals["torch"] = [implementations.soft_rank(s) for s in saved["spectrum"][-1]]
                out["torch"] = {"status": "ok", **timings["torch"],
                                "measured_layers": int(len(saved["layer"]))}
            out["speedup_vs_torch_script"] = (timings["torch"]["median_s"]
                                              / timings["fastrank"]["median_s"])
    out["final_soft_rank"] = {name: _mean_and_error(v) for name, v in finals.items()}
    out["status"] = "ok"
    return out


def _mean_and_error(values) -> dict:
    """Mean and its standard error (0 for a single value) of ``values``."""
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "standard_error": se, "n": int(v.size)}


def torch_batched(networks: int, d: int, n: int, depth: int, gain: float, eps: float,
                  device, dtype: str = "float32"):
    """H_depth of ``networks`` BN + ReLU networks (d x n) as a good torch user writes it:
    all networks stacked, per layer one ``torch.bmm`` with W ~ N(0, gain/d), batch norm
    of each row over its n samples (biased variance, as fastrank), ReLU. Draws H_0 (the
    stack), then the stack's W_1, ..., W_depth from torch's global generator."""
    import torch

    scale, dtype = math.sqrt(gain / d), getattr(torch, dtype)
    with torch.no_grad():
        h = torch.randn(networks, d, n, device=device, dtype=dtype)
        for _ in range(depth):
            w = torch.randn(networks, d, d, device=device, dtype=dtype).mul_(scale)
            h = _bn_relu(torch.bmm(w, h), eps)
    return h


def torch_per_network(networks: int, d: int, n: int, depth: int, gain: float, eps: float,
                      device, dtype: str = "float32"):
    """The same as :func:`torch_batched` as the naive loop: one network after the other,
    ``torch.mm`` on d x n matrices. Draws, network after network, H_0 then W_1, ...,
    W_depth. Returns the final H of all networks, stacked."""
    import torch

    scale, dtype = math.sqrt(gain / d), getattr(torch, dtype)
    finals = []
    with torch.no_grad():
        for _ in range(networks):
            h = torch.randn(d, n, device=device, dtype=dtype)
            for _ in range(depth):
                w = torch.randn(d, d, device=device, dtype=dtype).mul_(scale)
                h = _bn_relu(torch.mm(w, h), eps)
            finals.append(h)
    return torch.stack(finals)


def _bn_relu(z, eps: float):
    """ReLU of the batch norm of every row of ``z`` (..., d, n) over its n samples (mean,
    biased variance, eps inside the square root). ``var_mean`` and elementwise ops, not
    ``F.layer_norm`` over the last axis or ``F.batch_norm`` (rows as channels): the
    fastest of the three in torch_batched on a GPU, so that torch is timed at its best."""
    import torch

    var, mean = torch.var_mean(z, dim=-1, correction=0, keepdim=True)
    return ((z - mean) * torch.rsqrt(var + eps)).relu_()


@contextlib.contextmanager
def _torch_tf32_off(torch):
    """TF32 off in torch's float32 GEMMs and cuDNN (fastrank's default), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _versus_torch(net, size: dict, repeats: int, device: str, fastrank_s: float) -> dict:
    """The small workload with :func:`torch_batched` and :func:`torch_per_network` on
    ``device`` (the latter on ``torch_networks`` networks, extrapolated linearly), and
    fastrank's speedups over them (torch time / ``fastrank_s``)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        reason = ("torch is not installed" if torch is None else
                  f"torch {torch.__version__}: torch.cuda.is_available() is False")
        return {"torch_batched": {"status": "skipped", "reason": reason},
                "torch_per_network": {"status": "skipped", "reason": reason},
                "speedup_vs_torch_batched": None, "speedup_vs_torch_per_network": None}
    seeds, k = size["seeds"], min(size["seeds"], size.get("torch_networks", 8))
    args = {"d": size["width"], "n": net.batch, "depth": size["depth"],
            "gain": net.weight_gain, "eps": net.eps, "device": device}

    def timed(loop, networks):
        def call():
            loop(networks, **args)
            torch.cuda.synchronize(device)

        return _measure(call, repeats)

    with _torch_tf32_off(torch):
        batched = timed(torch_batched, seeds)
        subset = timed(torch_per_network, k)
    extrapolated = subset["median_s"] * seeds / k
    return {
        "torch_batched": {"status": "ok", "torch": torch.__version__, **batched},
        "torch_per_network": {"status": "ok", "torch": torch.__version__,
                              "networks_timed": k, "subset": subset,
                              "extrapolated_s": extrapolated,
                              "basis": f"extrapolated from {k} networks"},
        "speedup_vs_torch_batched": batched["median_s"] / fastrank_s,
        "speedup_vs_torch_per_network": extrapolated / fastrank_s,
    }


def _target(what: str, measured, rule: str, target: float, reason: str, **extra) -> dict:
    """One target: ``met`` is ``measured rule target``, None (with ``reason``) where
    nothing was measured."""
    met = None if measured is None else bool(
        measured <= target if rule == "<=" else measured >= target)
    return {"what": what, "measured": measured, "rule": rule, "target": target, "met": met,
            **extra, **({"reason": reason} if measured is None else {})}


def _targets(doc: dict) -> dict:
    """The three GPU targets from the figures of ``doc``."""
    large = [r for r in doc["large"] if r["d"] == 4096 and not r["tf32"]]
    s = doc["small"]
    return {
        "large_vs_sgemm": _target(
            "d=N=4096 BN+ReLU float32 layer / one cuBLAS SGEMM of that shape (TF32 off)",
            large[0]["ratio_to_floor"] if large else None, "<=", 1.3,
            "d = 4096 is not among the widths run"),
        "small_vs_torch": _target(
            f"{s['seeds']} networks d=N={s['width']}, {s['depth']} layers: torch time / "
            "fastrank time, against torch_batched (the strongest torch loop)",
            s["speedup_vs_torch_batched"], ">=", 10.0,
            s["torch_batched"].get("reason"),
            per_network=s["speedup_vs_torch_per_network"]),
        "graphs_vs_eager": _target(
            f"d={s['width']}: time without CUDA graphs / with them",
            s["graph_speedup"], ">=", 3.0, None),
    }


def _sweep_lines(sweep: dict) -> list[str]:
    """The ``sweep`` section's rows for :func:`markdown`."""
    if sweep["status"] != "ok":
        return ["", f"Whole processes: {sweep['status']} ({sweep['reason']})"]
    lines = ["", f"| whole processes, {sweep['workload']} | time | final soft rank |",
             "|---|---|---|"]
    for name, label in (("fastrank", f"`{sweep['fastrank']['command']}`"),
                        ("torch", "the torch script (fastrank.bench.torch_sweep)")):
        entry = sweep[name]
        if entry["status"] != "ok":
            lines.append(f"| {label} | skipped: {entry['reason']} | |")
            continue
        rank = sweep["final_soft_rank"][name]
        lines.append(f"| {label} | {entry['median_s']:.2f} s | {rank['mean']:.3f} +- "
                     f"{rank['standard_error']:.3f} |")
    if "speedup_vs_torch_script" in sweep:
        lines.append(f"| fastrank is faster by | {sweep['speedup_vs_torch_script']:.2f}x | |")
    return lines


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
    lines.append(f"| same, whole on the chip (`fused=True`: {s['fused_speedup']:.2f}x the "
                 f"graphs) | {s['fastrank_fused']['median_s']:.3f} s | | |")
    lines.append(f"| same, default schedule ({s['measured_layers']} measured layers) | "
                 f"{s['fastrank_default_schedule']['median_s']:.3f} s | | |")
    lines.append(f"| same, default schedule, whole on the chip | "
                 f"{s['fastrank_default_schedule_fused']['median_s']:.3f} s "
                 f"({s['fused_measurement_overhead']:.2f}x unmeasured) | | |")
    lines += ["", f"| torch on the same device, {s['workload']}, TF32 off | time | "
              "fastrank is faster by |", "|---|---|---|"]
    batched, single = s["torch_batched"], s["torch_per_network"]
    if batched["status"] != "ok":
        lines.append(f"| torch | skipped: {batched['reason']} | |")
    else:
        lines.append(f"| torch_batched: the stack, torch.bmm per layer | "
                     f"{batched['median_s']:.3f} s | {s['speedup_vs_torch_batched']:.3g}x |")
        lines.append(f"| torch_per_network: one network at a time, torch.mm per layer "
                     f"({single['basis']}: {single['subset']['median_s']:.3f} s) | "
                     f"{single['extrapolated_s']:.3f} s | "
                     f"{s['speedup_vs_torch_per_network']:.3g}x |")
    lines += _sweep_lines(doc["sweep"])
    lines += ["", "| target | measured | target | met |", "|---|---|---|---|"]
    for t in doc["targets"].values():
        if t["met"] is None:
            lines.append(f"| {t['what']} | not measured: {t['reason']} | "
                         f"{t['rule']} {t['target']:g} | |")
        else:
            also = (f" (torch_per_network: {t['per_network']:.3g})"
                    if t.get("per_network") is not None else "")
            lines.append(f"| {t['what']} | {t['measured']:.2f}{also} | {t['rule']} "
                         f"{t['target']:g} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
