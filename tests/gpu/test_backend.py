"""The GPU backend on each device of the suite (conftest.py: the host stand-in always, a
CUDA device where one is usable), against the CPU backend and numpy.

What is compared, and how tightly, follows from what a correct GPU can promise:

* the random stream and the weights: bitwise (float64 Gaussians to rounding: CUDA's
  log/sin/cos against libm's);
* one layer at a time, from the device's own previous H: the CPU's layer to float32
  rounding, at every depth (cuBLAS rounds differently from the CPU's BLAS, and BN + ReLU
  is chaotic, so whole trajectories drift apart ~10x per 10 layers on a correct GPU);
* whole trajectories: bitwise between graphs and the eager loop (same kernels, same
  GEMM); close to the CPU only over the first layers; ensemble statistics (mean soft
  rank over seeds) within their standard error at depth.

Inputs are made inside the backend's stream context (CuPy's legacy default stream is
not ordered with the backend's non-blocking stream).
"""

import itertools
import json
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fastrank import init, rng
from fastrank.backends.cpu import CPUBackend
from fastrank.cli import cli
from fastrank.gpu import GPUBackend, GPUUnavailable, program
from fastrank.gpu.device import CaptureUnsupported
from fastrank.gpu.testing import layer_by_layer
from fastrank.propagate import simulate_many
from fastrank.runner import run_sweep
from fastrank.spec import Network, Schedule, Sweep
from fastrank.store import schema

SEEDS = [0, 1, 2**40 + 7, 2**64 - 1]
F32 = np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def cpu():
    return CPUBackend()


def _on_device(dev, host_array):
    with dev.context():
        return dev.asarray(host_array)


def _fill(dev, name, shape, stream, layer, *scalars, blocks=3, failed=None):
    """Run a fill kernel into a stack prefilled with 7 (to see untouched entries)."""
    dtype = {"f32": np.float32, "f64": np.float64, "t32": np.uint32}[name[-3:]]
    with dev.context():
        seeds = dev.asarray(np.array(SEEDS[: shape[0]], np.uint64))
        out = dev.asarray(np.full(shape, 7, dtype))
        flags = None if failed is None else dev.asarray(failed)
        dev.launch(name, shape[0] * blocks, dev.block,
                   (out, np.int64(out[0].size), seeds, np.int32(blocks), np.uint32(stream),
                    None, np.int64(layer), *scalars, flags))
        return dev.to_host(out)


# ---------------------------------------------------------------------------------------
# Kernels: the random stream, the layer pass
# ---------------------------------------------------------------------------------------


def test_the_uint32_stream_is_the_cpus(device):
    words = _fill(device.dev, "fill_uint32", (4, 10_001), 5, 3)
    for i, s in enumerate(SEEDS):
        assert np.array_equal(words[i], rng.uint32(s, 5, 3, 10_001))


def test_float32_normals_are_bitwise_the_cpus(device):
    """Bitwise, also on a device that flushes float32 subnormals (CuPy compiles with
    -ftz=true), because no operation of philox.cuh's Box-Muller meets one: u1 lies in
    [2^-25, 1 - 2^-25], so |ln u1| >= 2^-25 and r >= 2.4e-4; the angle a >= 1.8e-7, so
    the smallest polynomial term, a^2 C12, is ~7e-23; s = (m-1)/(m+1) is 0 or >= 2^-24,
    so s^2 L9 >= 4e-16; the smallest normal drawn is ~4e-11. All far above 1.2e-38."""
    n = (1 << 22) if device.kind == "cuda" else 40_000
    z = _fill(device.dev, "fill_normal_f32", (2, n), rng.INPUT, 0, np.float32(1.0), blocks=64)
    for i, s in enumerate(SEEDS[:2]):
        ref = rng.normal(s, rng.INPUT, 0, n)
        bad = np.flatnonzero(z[i].view(np.uint32) != ref.view(np.uint32))
        assert bad.size == 0, f"{bad.size} differ: {z[i][bad[:5]]} vs {ref[bad[:5]]}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weights", ["gaussian", "uniform"])
def test_the_weights_are_init_weights(device, dtype, weights):
    """Bitwise for float32 and for uniform weights; to rounding for float64 Gaussians."""
    net = Network(width=(301, 64), depth=2, input_dim=129, activation="relu", init=weights,
                  dtype=dtype)
    for layer in (1, 2):
        d_out, d_in = init.layer_shape(net, layer)
        mul, sub = init.weight_affine(net, d_in)
        scalars = (mul,) if weights == "gaussian" else (mul, sub)
        kind = "normal" if weights == "gaussian" else "uniform"
        name = f"fill_{kind}_{'f32' if dtype == 'float32' else 'f64'}"
        got = _fill(device.dev, name, (4, d_out, d_in), rng.WEIGHTS, layer, *scalars)
        for i, s in enumerate(SEEDS):
            ref = init.weights(net, s, layer)
            if dtype == "float32" or weights == "uniform":
                assert np.array_equal(got[i].view(np.uint8), ref.view(np.uint8))
            else:
                np.testing.assert_allclose(got[i], ref, rtol=1e-13, atol=1e-14)


def test_fill_skips_failed_seeds(device):
    failed = np.array([-1, 4, -1, 0], np.int64)
    z = _fill(device.dev, "fill_normal_f32", (4, 100), 0, 1, np.float32(1.0), failed=failed)
    assert np.all(z[[1, 3]] == 7) and not np.any(z[[0, 2]] == 7)


@pytest.mark.parametrize("norm, act, act_first, residual", [
    (1, 1, 0, 0), (2, 0, 1, 0), (0, 2, 0, 1), (1, 1, 1, 1)])
def test_the_device_layer_kernels_equal_their_host_build(cuda, norm, act, act_first, residual):
    """Same kernel, block size and reduction tree on both: the device's results equal the
    host build's to float rounding. Bitwise but for tanhf and log, which differ from
    glibc's by up to 2 ulp (CUDA Programming Guide, Table of single-precision functions),
    and -ftz (none of these values is subnormal)."""
    from fastrank.gpu.testing import HostDevice

    host = HostDevice(block=cuda.dev.block)
    gen = np.random.default_rng(0)
    s, d, n = 3, 40, 300
    z = gen.standard_normal((s, d, n)).astype(np.float32)
    h = gen.standard_normal((s, d, n)).astype(np.float32)
    block = cuda.dev.block
    outs = []
    for dev in (host, cuda.dev):
        with dev.context():
            zz, hh = dev.asarray(z.copy()), dev.asarray(h)
            part = dev.asarray(np.zeros(s * d))
            failed = dev.asarray(np.full(s, -1, np.int64))
            dev.launch("rows_pass_f32", -(-s * d * 32 // block), block,
                       (zz, hh if residual else None, np.float32(0.5), np.int32(residual),
                        np.int32(s * d), np.int32(d), np.int32(n), np.int32(norm), np.int32(act),
                        np.int32(act_first), np.float64(1e-5), part, failed))
            outs.append((dev.to_host(zz), dev.to_host(part)))
    ulps = 4 if act == 2 else 1  # tanhf: 2 ulp each way
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=ulps * F32, atol=ulps * F32)
    np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=ulps * 2 * F32)


def test_account_moves_the_layer_counter_on_once_all_blocks_read_it(device):
    """The layer is the counter + 1 for every seed (a failure is booked there), and the
    counter moves on exactly once per launch, ready for the next (its block count
    reset), whatever the grid."""
    dev = device.dev
    for s in (1, 5, 67):
        part = np.ones(s * 3)
        part[1::3][::2] = np.nan  # every other seed fails at this layer
        with dev.context():
            layer, done = dev.asarray(np.array([41], np.int64)), dev.asarray(np.zeros(1, np.uint32))
            failed = dev.asarray(np.full(s, -1, np.int64))
            reason = dev.asarray(np.zeros(s, np.int64))
            log_norm, factor = dev.asarray(np.zeros(s)), dev.asarray(np.ones(s))
            for _ in range(2):
                dev.launch("account", s, 64, (dev.asarray(part), np.int32(3), layer, np.int64(1),
                                              done, np.int32(0), log_norm, failed, reason,
                                              factor))
            got = [dev.to_host(x) for x in (layer, done, failed, log_norm)]
        assert got[0].tolist() == [43] and got[1].tolist() == [0]
        assert got[2].tolist() == [42 if i % 2 == 0 else -1 for i in range(s)]
        np.testing.assert_allclose(got[3][1::2], 0.5 * np.log(3.0), rtol=1e-15)


# ---------------------------------------------------------------------------------------
# GEMM and CUDA graphs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("s, m, k, n, dtype", [(3, 5, 7, 11, np.float32),
                                               (2, 300, 257, 70, np.float32),
                                               (4, 33, 17, 65, np.float64)])
def test_gemm_is_the_row_major_batched_product(device, s, m, k, n, dtype):
    gen = np.random.default_rng(0)
    a = gen.standard_normal((s, m, k)).astype(dtype)
    b = gen.standard_normal((s, k, n)).astype(dtype)
    dev = device.dev
    with dev.context():
        out = dev.asarray(np.full((s, m, n), np.nan, dtype))
        dev.gemm(dev.asarray(a), dev.asarray(b), out)
        got = dev.to_host(out)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(dtype).eps
    # |error| <= k eps sum|a||b| (Higham), here with sum|a||b| <= k max|a| max|b|
    bound = k * eps * np.abs(a).max() * np.abs(b).max() * k ** 0.5
    assert np.abs(got - ref).max() < bound


def test_tf32_only_when_asked(cuda):
    """TF32 rounds float32 GEMM inputs to 10 mantissa bits: off by default (errors at
    float32 level), on when asked (errors ~1e-3 relative at k = 1024)."""
    gen = np.random.default_rng(1)
    a = gen.standard_normal((2, 256, 1024)).astype(np.float32)
    b = gen.standard_normal((2, 1024, 256)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    errors = {}
    for tf32 in (False, True):
        dev = cuda.backend(tf32=tf32).dev
        with dev.context():
            out = dev.empty((2, 256, 256), np.float32)
            dev.gemm(dev.asarray(a), dev.asarray(b), out)
            errors[tf32] = np.abs(dev.to_host(out) - ref).max() / np.abs(ref).max()
    assert errors[False] < 1e-5 < 1e-4 < errors[True] < 3e-2, errors


def _graphs_and_eager(device, net, seeds, schedule, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused capture warns: that is a failure here
        with_graphs = device.backend(graphs=True, **options)
        ours = simulate_many(net, seeds, schedule, backend=with_graphs)
    eager = simulate_many(net, seeds, schedule, backend=device.backend(graphs=False))
    return ours, eager, with_graphs.dev


@pytest.mark.parametrize("graph_layers, every, cheap_every", [(2, 7, 3), (4, 13, None),
                                                              (8, 10, None)])
@pytest.mark.slow
def test_graphs_are_captured_and_replay_the_eager_loop_bitwise(device, graph_layers, every,
                                                               cheap_every):
    """Runs of layers are captured once and replayed (the layer counter on the device, H
    and Z alternating, odd remainders eager, so the graphs' parity flips): bitwise the
    eager loop, and the graphs were really captured and replayed."""
    net = Network(width=13, depth=40, batch=9, activation="relu", norm="bn")
    schedule = Schedule(every=every, log=0, cheap_every=cheap_every)
    ours, eager, dev = _graphs_and_eager(device, net, [0, 1, 5], schedule,
                                         graph_layers=graph_layers)
    assert dev.graphs_captured >= 1 and dev.graph_replays >= 2
    for a, b in zip(eager, ours, strict=True):
        assert np.array_equal(a.spectrum, b.spectrum, equal_nan=True)
        assert np.array_equal(a.log_norm, b.log_norm)


@pytest.mark.slow
def test_graphs_at_the_benchmark_width(device):
    depth = 64 if device.kind == "cuda" else 24
    net = Network(width=64, depth=depth, activation="relu", norm="bn")
    seeds = list(range(64 if device.kind == "cuda" else 2))
    ours, eager, dev = _graphs_and_eager(device, net, seeds, Schedule(every=depth // 2, log=0))
    assert dev.graphs_captured >= 1 and dev.graph_replays >= 2
    for a, b in zip(eager, ours, strict=True):
        assert np.array_equal(a.spectrum, b.spectrum)


def test_the_stand_in_refuses_what_cupy_refuses_in_a_capture(device):
    """Inside a capture a copy to the host is refused (on a device: CUDA's rule); the
    stand-in also refuses allocations and CuPy's own cuBLAS calls (the strictest reading
    of CuPy, see docs/gpu.md), and the backend then runs on layer by layer with a warning
    (and the same numbers)."""
    dev = device.backend(capture_safe_gemm=False).dev
    if device.kind == "host":
        x = np.ones((1, 4, 4), np.float32)
        with pytest.raises(CaptureUnsupported, match="cuBLAS"):
            dev.capture(lambda: dev.gemm(x, x, x))
        with pytest.raises(CaptureUnsupported, match="allocation"):
            dev.capture(lambda: dev.empty((3,), np.float64))
    with dev.context():
        y = dev.empty((3,), np.float64)
    with pytest.raises(CaptureUnsupported):
        dev.capture(lambda: dev.to_host(y))
    assert dev.graphs_captured == 0
    if device.kind == "host":
        net = Network(width=8, depth=24, batch=6, activation="relu", norm="bn")
        refused = device.backend(graphs=True, capture_safe_gemm=False)
        with pytest.warns(RuntimeWarning, match="capture refused"):
            ours = simulate_many(net, [0, 1], Schedule(every=12, log=0), backend=refused)
        eager = simulate_many(net, [0, 1], Schedule(every=12, log=0),
                              backend=device.backend(graphs=False))
        for a, b in zip(eager, ours, strict=True):
            assert np.array_equal(a.spectrum, b.spectrum)


# ---------------------------------------------------------------------------------------
# Against the CPU backend
# ---------------------------------------------------------------------------------------


def _per_layer(backend, cpu, net, seeds, layers):
    worst = layer_by_layer(backend, cpu, net, seeds, layers)
    assert worst.pop("failures_differ") is None, "failures differ from the CPU's"
    return worst


def _layer_tolerance(net) -> float:
    """A float32 layer: GEMM error ~ sqrt(d) eps relative, then normalisation and
    activation add a few ulps; 64 eps covers d up to a few thousand with margin."""
    return (64 * F32) if net.dtype == "float32" else 1e-12


@pytest.mark.parametrize("activation, norm, order", list(itertools.product(
    ["linear", "relu", "tanh"], ["none", "bn", "bn-rms", "ln"], ["norm-act", "act-norm"])))
@pytest.mark.slow
def test_every_layer_kind_agrees_with_the_cpu_layer_by_layer(device, cpu, activation, norm,
                                                             order):
    net = Network(width=24, depth=30, batch=20, activation=activation, norm=norm, order=order)
    worst = _per_layer(device.backend(), cpu, net, [0, 1, 2**64 - 1], 30)
    tol = _layer_tolerance(net)
    assert worst["h"] < tol and worst["log_norm"] < tol and worst["spectrum"] < 1e-6, worst


@pytest.mark.parametrize("net", [
    Network(width=24, depth=12, batch=20, activation="relu", norm="bn"),
    Network(width=24, depth=12, batch=20, activation="tanh", norm="ln", order="act-norm"),
    Network(width=24, depth=12, batch=20, activation="linear", norm="none"),
    Network(width=24, depth=12, batch=20, activation="relu", norm="bn-rms", gamma=0.5),
    Network(width=33, depth=12, batch=17, activation="relu", norm="bn", init="uniform"),
], ids=lambda net: net.label())
def test_networks_whole_on_the_chip_agree_with_the_cpu_layer_by_layer(device, cpu, net):
    """GPUBackend(fused=True): every layer of an advance in one launch of network_f32
    (asserted), each layer against the CPU's from the same H."""
    backend = device.backend(fused=True)
    launched = []
    launch = backend.dev.launch
    backend.dev.launch = lambda name, *a, **k: launched.append(name) or launch(name, *a, **k)
    worst = _per_layer(backend, cpu, net, [0, 2**64 - 1], net.depth)
    tol = _layer_tolerance(net)
    assert worst["h"] < tol and worst["log_norm"] < tol and worst["spectrum"] < 1e-6, worst
    # every layer one launch of network_f32; the weights' fill and the row pass only once,
    # for the input (layer 0)
    assert launched.count("network_f32") == net.depth, launched
    assert launched.count("fill_normal_f32") + launched.count("fill_uniform_f32") <= 1, launched


def test_the_fused_path_is_only_for_what_it_can_run(device):
    backend = device.backend(fused=True)
    assert backend._use_fused(Network(width=64, batch=64))
    for net in (Network(width=64, dtype="float64"), Network(width=64, init="orthogonal"),
                Network(width=129, batch=64), Network(width=(64, 32), depth=2),
                Network(width=64, batch=129)):
        assert not backend._use_fused(net), net.label()
    assert not device.backend()._use_fused(Network(width=64, batch=64))  # off by default


@pytest.mark.parametrize("net", [
    Network(width=24, depth=8, batch=20, activation="relu", norm="bn", dtype="float64"),
    Network(width=24, depth=8, batch=20, activation="tanh", norm="ln", gamma=0.5),
    Network(width=24, depth=8, batch=20, activation="relu", norm="bn", init="uniform"),
    Network(width=24, depth=8, batch=20, activation="relu", norm="bn", init="orthogonal"),
    Network(width=24, depth=8, batch=26, activation="relu", norm="bn", input="orthogonal"),
    Network(width=(24, 50, 15, 32), depth=4, batch=20, activation="relu", norm="ln"),
    Network(width=300, depth=3, batch=200, activation="relu", norm="bn"),
], ids=lambda net: net.label())
def test_every_path_agrees_with_the_cpu_layer_by_layer(device, cpu, net):
    worst = _per_layer(device.backend(), cpu, net, [0, 5], net.depth)
    tol = _layer_tolerance(net)
    assert worst["h"] < tol and worst["log_norm"] < tol and worst["spectrum"] < 1e-6, worst


def _compare(device, cpu, net, seeds=(0, 1, 5), schedule=None, method="auto"):
    """Whole trajectories of a few layers against the CPU: the same layers and failures,
    spectra, log-norms and ranks within what float32 rounding allows after that many
    layers (bitwise-close on the stand-in, which shares the CPU's BLAS)."""
    schedule = schedule or Schedule(every=4, log=0)
    tol = 1e-6 if device.kind == "host" else 1e-4
    ours = simulate_many(net, list(seeds), schedule, method=method, backend=device.backend())
    theirs = simulate_many(net, list(seeds), schedule, method=method, backend=cpu)
    for a, b in zip(theirs, ours, strict=True):
        assert np.array_equal(a.layer, b.layer)
        assert (a.failure is None) == (b.failure is None)
        if a.failure is not None:
            assert (a.failure.layer, a.failure.reason) == (b.failure.layer, b.failure.reason)
        full = a.tier == 1
        if not full.any():
            continue
        top = a.spectrum[full][:, :1]
        np.testing.assert_allclose(b.spectrum[full] / top, a.spectrum[full] / top, atol=tol)
        np.testing.assert_allclose(b.log_norm, a.log_norm, rtol=tol, atol=tol)
        for m in ("soft_rank", "stable_rank"):
            np.testing.assert_allclose(b.measures[m], a.measures[m], rtol=tol)
        if device.kind == "host" and not (net.dtype == "float64" and method == "gram"):
            # ranks at a float32 threshold flip with any rounding change: host only
            np.testing.assert_array_equal(b.numerical_rank, a.numerical_rank)
    return ours


@pytest.mark.parametrize("net, schedule, method", [
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn", gamma=0.3), None, "auto"),
    (Network(width=12, depth=12, batch=10, activation="relu", dtype="float64"), None, "gram"),
    (Network(width=12, depth=12, batch=10, init="uniform", dtype="float64"), None, "auto"),
    (Network(width=(12, 9, 15, 7, 11, 13), depth=6, batch=10, activation="relu", norm="ln"),
     Schedule(every=1, log=0), "auto"),
    (Network(width=13, depth=12, batch=9, activation="relu", norm="bn"),
     Schedule(every=7, log=0, cheap_every=3), "auto"),
    (Network(width=12, depth=10, batch=10, activation="relu", norm="bn"), None, "svd"),
    (Network(width=70, depth=4, batch=80, activation="relu", norm="bn"),  # k > 64: cuSOLVER
     Schedule(every=2, log=0), "auto"),
    (Network(width=80, depth=4, batch=67, activation="tanh", norm="bn-rms"),  # odd k = 67
     Schedule(every=2, log=0), "auto"),
    (Network(width=33, depth=4, batch=65, activation="tanh", norm="ln"),  # odd k = 33
     Schedule(every=2, log=0), "auto"),
    (Network(width=300, depth=2, batch=270, activation="relu", norm="bn"),  # Lanczos (k > 256)
     Schedule(every=2, log=0, cheap_every=1), "auto"),
], ids=lambda x: x.label() if isinstance(x, Network) else str(x))
@pytest.mark.slow
def test_short_trajectories_match_the_cpu_on_every_path(device, cpu, net, schedule, method):
    _compare(device, cpu, net, schedule=schedule, method=method)


def test_failed_seeds_stop_at_the_cpus_layer(device, cpu):
    """Vanilla ReLU at width 2 loses every unit within a few layers: the same seeds fail
    at the same layer, for the same reason, as on the CPU."""
    ours = _compare(device, cpu, Network(width=2, depth=300, activation="relu"), seeds=range(8),
                    schedule=Schedule(every=50, log=0))
    assert sum(t.failure is not None for t in ours) >= 4


@pytest.mark.slow
def test_deep_chaotic_ensembles_agree_with_the_cpu(device, cpu):
    """BN + ReLU at depth 200: single trajectories decorrelate from the CPU's on a correct
    GPU, the ensemble does not: the mean final soft rank over 16 seeds agrees within 4
    standard errors of the difference (a 1-in-15,000 false alarm for a true match). The
    stand-in, slow and bitwise-close to the CPU, runs a shallower version."""
    depth = 200 if device.kind == "cuda" else 30
    net = Network(width=32 if device.kind == "cuda" else 12, depth=depth, activation="relu",
                  norm="bn")
    seeds = list(range(16))
    schedule = Schedule(every=depth, log=0)
    ours = np.array([t.soft_rank[-1] for t in simulate_many(net, seeds, schedule,
                                                            backend=device.backend())])
    ref = np.array([t.soft_rank[-1] for t in simulate_many(net, seeds, schedule, backend=cpu)])
    se = np.sqrt((ours.var(ddof=1) + ref.var(ddof=1)) / len(seeds))
    assert abs(ours.mean() - ref.mean()) < 4 * se, (ours.mean(), ref.mean(), se)


@pytest.mark.slow
def test_many_seeds_at_once_agree_layer_by_layer(device, cpu):
    """A thousand seeds (70,000 on a device: more than a grid's y/z limit of 65,535) in
    one stack: cuBLAS's batch, the kernels' grids and the eigensolver's grid all index them."""
    seeds = list(range(70_000 if device.kind == "cuda" else 64))
    net = Network(width=16, depth=2, activation="relu", norm="bn")
    worst = _per_layer(device.backend(), cpu, net, seeds, 2)
    assert worst["h"] < _layer_tolerance(net) and worst["spectrum"] < 1e-6, worst


def test_results_files_have_the_cpus_layout_and_numbers(device, tmp_path):
    sweep = Sweep(grid={"width": [8], "depth": [12], "activation": ["linear", "relu"],
                        "norm": ["none", "bn"]}, seeds=(0, 1),
                  schedule=Schedule(every=4, log=3, cheap_every=2))
    tol = 1e-6 if device.kind == "host" else 1e-4
    a = run_sweep(sweep, tmp_path / "cpu.h5", backend="cpu")
    b = run_sweep(sweep, tmp_path / "gpu.h5", backend=device.backend())
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert json.loads(fb.attrs["provenance"])["backend"] == "gpu"
        names, seen = [], []
        fa.visit(names.append)
        fb.visit(seen.append)
        assert names == seen
        for name in names:
            x, y = fa[name], fb[name]
            assert dict(x.attrs).keys() == dict(y.attrs).keys(), name
            if not isinstance(x, h5py.Dataset):
                continue
            assert x.shape == y.shape and x.dtype == y.dtype, name
            if name == "spectrum":  # tiny singular values are Gram noise
                top = x[()][..., :1]
                np.testing.assert_allclose(y[()] / top, x[()] / top, atol=tol, err_msg=name)
            elif name == "condition_number":  # s_max / (Gram noise) where collapsed
                ok = x[()] < 1e5
                np.testing.assert_allclose(y[()][ok], x[()][ok], rtol=10 * tol, err_msg=name)
            elif name == "numerical_rank" and device.kind == "cuda":
                continue  # thresholds at float32 rounding: see _compare
            elif name in schema.THREAD_DATASETS:  # CPU threads: not what a GPU run used
                assert (y[()] == -1).all() and (x[()] >= 1).all(), name
            elif x.dtype.kind == "f":
                np.testing.assert_allclose(y[()], x[()], rtol=10 * tol, atol=1e-9, err_msg=name)
            elif x.dtype.kind in "iub":
                np.testing.assert_array_equal(y[()], x[()], err_msg=name)


# ---------------------------------------------------------------------------------------
# The device itself, and machines without one
# ---------------------------------------------------------------------------------------


def test_sweep_gpu_on_the_command_line(cuda, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--gpu", "--device", "0", "--width", "16",
                                      "--depth", "50", "--seed", "0-7", "-q", "-o", "r.h5"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert json.loads(f.attrs["provenance"])["backend"] == "gpu"


def test_a_missing_device_index_says_so(cuda):
    n = cuda.xp.cuda.runtime.getDeviceCount()
    with pytest.raises(GPUUnavailable, match=f"no CUDA device {n}"):
        GPUBackend(device=n)


def test_env_lists_the_devices(cuda):
    result = CliRunner().invoke(cli, ["env"])
    line = [x for x in result.stdout.splitlines() if x.startswith("cuda")][0]
    assert "device 0:" in line and "cupy" in line


def test_the_module_has_every_kernel(cuda):
    assert set(cuda.dev._kernels) == set(program.KERNELS)


def test_nothing_imports_cupy_unless_the_gpu_is_used(device):
    code = ("import sys, fastrank, fastrank.cli, fastrank.gpu, fastrank.gpu.testing as t; "
            "fastrank.gpu.GPUBackend(dev=t.HostDevice()); "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_a_device_the_backend_says_why_in_one_line(unless_cuda):
    with pytest.raises(GPUUnavailable) as info:
        GPUBackend()
    assert "\n" not in str(info.value) and str(info.value)


def test_sweep_gpu_without_a_device_exits_2_with_one_line(unless_cuda, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--gpu", "--width", "8", "--depth", "5",
                                      "-o", "r.h5"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrank: error: --gpu:"), result.output
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("args, words", [
    (["--device", "1"], "--device needs --gpu"),
    (["--gpu", "--device", "-1"], "--device"),
])
def test_device_option_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", *args, "-o", "r.h5"])
    assert result.exit_code == 2 and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_reports_cuda():
    result = CliRunner().invoke(cli, ["env"])
    assert result.exit_code == 0
    line = [x for x in result.stdout.splitlines() if x.startswith("cuda")]
    assert len(line) == 1 and ("driver" in line[0])


# ---------------------------------------------------------------------------------------
# No silent paths: the stand-in's blocks and refusals, the capture fallback, cuBLAS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [64, 128, 256])
@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_blocks_of_several_warps_agree_with_the_cpu(device, cpu, block, norm):
    """The suite's stand-in runs one warp per block; here the row pass (bn: a block of
    up to ``block`` threads over 260 columns) and ``account`` (ln: over 260 column sums)
    run several warps, so fr_block_sum's cross-warp half is what adds them up."""
    if device.kind != "host":
        pytest.skip("the stand-in's block size")
    net = Network(width=40, depth=2, batch=260, activation="relu", norm=norm)
    worst = _per_layer(device.backend(block=block), cpu, net, [0, 7], 2)
    assert worst["h"] < _layer_tolerance(net) and worst["log_norm"] < 1e-12, worst


def test_the_stand_in_refuses_launches_cuda_would_misread(device):
    """No block, a value of the wrong width or type, an argument missing: one line each,
    and nothing runs (the output keeps its 7s)."""
    if device.kind != "host":
        pytest.skip("the stand-in's checks")
    dev = device.dev
    out, seeds = np.full((2, 8), 7, np.uint32), np.array(SEEDS[:2], np.uint64)

    def args(blocks=None):
        blocks = np.int32(1) if blocks is None else blocks
        return [out, np.int64(8), seeds, blocks, np.uint32(0), None, np.int64(1), None]

    refusals = [
        (0, args(), ValueError, "fill_uint32: a grid of 0 blocks"),
        (2, args(np.int64(1)), TypeError, "argument 3: the kernel takes int32, got int64"),
        (2, args(1), TypeError, "argument 3: the kernel takes int32, got int"),
        (2, args()[:-1], TypeError, "fill_uint32 takes 8 arguments, got 7"),
        (2, [np.int64(0), *args()[1:]], TypeError, "argument 0: the kernel takes a pointer"),
    ]
    for grid, call, error, words in refusals:
        with pytest.raises(error) as info:
            dev.launch("fill_uint32", grid, 32, call)
        assert words in str(info.value) and "\n" not in str(info.value)
    assert (out == 7).all()
    dev.launch("fill_uint32", 2, 32, args())
    assert (out != 7).all()


def test_graphs_fall_back_only_for_a_refused_capture(device, monkeypatch):
    """Any other error in a capture is raised, whatever its message says; the device
    tells a refusal by CuPy's NotImplementedError or a CUDA capture status, never by
    the message."""
    from fastrank.gpu.device import refused_in_capture

    class CUDARuntimeError(RuntimeError):  # as CuPy's: the cudaError_t in .status
        def __init__(self, status, message):
            super().__init__(message)
            self.status = status

    assert refused_in_capture(NotImplementedError("cuBLAS"), CUDARuntimeError)
    assert refused_in_capture(CUDARuntimeError(900, "x"), CUDARuntimeError)
    assert refused_in_capture(CUDARuntimeError(908, "x"), CUDARuntimeError)
    for other in (CUDARuntimeError(2, "out of memory while capturing"),
                  RuntimeError("operation not permitted when stream is capturing"),
                  ValueError("capture")):
        assert not refused_in_capture(other, CUDARuntimeError)
    if device.kind != "host":
        return
    net = Network(width=8, depth=24, batch=6, activation="relu", norm="bn")
    backend = device.backend(graphs=True)

    def broken(fn):
        raise RuntimeError("cudaErrorStreamCaptureInvalidated: the stream capture failed")

    monkeypatch.setattr(backend.dev, "capture", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="capture failed"):
            simulate_many(net, [0, 1], Schedule(every=12, log=0), backend=backend)


class _FakeCublas:
    """Stands for libcublas: every entry point succeeds and is recorded; cublasCreate
    hands out handle 1234."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if not name.startswith("cublas"):
            raise AttributeError(name)

        def entry(*args):
            self.calls.append(name)
            if name == "cublasCreate_v2":
                args[0]._obj.value = 1234
            return 0

        setattr(self, name, entry)  # where _bind sets its argtypes
        return entry


def test_the_cublas_handle_is_made_at_the_first_gemm_and_never_destroyed_by_del():
    """No handle nor workspace until a GEMM is asked for; made once; destroyed by close
    (a device synchronisation, at a safe point) or at exit, never when collected."""
    import gc
    from types import SimpleNamespace

    from fastrank.gpu import cublas

    lib, made = _FakeCublas(), []
    workspace = SimpleNamespace(data=SimpleNamespace(ptr=8), nbytes=cublas.WORKSPACE_BYTES)
    a = SimpleNamespace(shape=(2, 3, 3), dtype=np.dtype(np.float32), data=SimpleNamespace(ptr=0))
    gemm = cublas.StreamGemm(5, lambda: made.append(1) or workspace, tf32=False, library=lib)
    assert not gemm.ready and lib.calls == [] and made == []
    gemm(a, a, a)
    gemm(a, a, a)
    assert lib.calls.count("cublasCreate_v2") == 1 and made == [1]
    assert lib.calls.index("cublasSetStream_v2") < lib.calls.index("cublasSetWorkspace_v2")
    assert lib.calls.count("cublasGemmStridedBatchedEx") == 2
    assert "__del__" not in vars(cublas.StreamGemm)
    del gemm
    gc.collect()
    assert "cublasDestroy_v2" not in lib.calls
    cublas._close_all()  # what atexit runs
    assert lib.calls[-1] == "cublasDestroy_v2" and not cublas._OPEN
    closed = cublas.StreamGemm(5, lambda: workspace, tf32=True, library=lib)
    closed(a, a, a)
    closed.close()
    assert lib.calls[-1] == "cublasDestroy_v2" and not closed.ready and not cublas._OPEN


def test_libcublas_is_the_one_cupys_module_resolves(tmp_path):
    """Through the module that uses it (dladdr of its cublasCreate_v2), in folders with
    spaces; else the mapped libcublas of CuPy's CUDA major version, not the first
    mapped (torch's may come first)."""
    import os
    import shutil

    from fastrank.gpu import cublas

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    libs, users = tmp_path / "cuda libs", tmp_path / "site packages"
    libs.mkdir()
    users.mkdir()
    (tmp_path / "blas.c").write_text("int cublasCreate_v2(void** h) { *h = 0; return 0; }\n")
    (tmp_path / "user.c").write_text("int cublasCreate_v2(void**);\n"
                                     "int probe(void) { void* h; return cublasCreate_v2(&h); }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcublas.so.13", "-o",
                    str(libs / "libcublas.so.13"), str(tmp_path / "blas.c")], check=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(users / "cublas module.so"),
                    str(tmp_path / "user.c"), "-L", str(libs), "-l:libcublas.so.13",
                    f"-Wl,-rpath,{libs}"], check=True)
    found = cublas.library_path(str(users / "cublas module.so"), 13, maps="")
    assert os.path.samefile(found, libs / "libcublas.so.13")
    maps = ("7f0 r-xp 0 08:01 1 /opt/torch/lib/libcublas.so.12\n"
            "7f1 r-xp 0 08:01 2 /opt/my env/nvidia/cu13/lib/libcublasLt.so.13\n"
            "7f2 r-xp 0 08:01 3 /opt/my env/nvidia/cu13/lib/libcublas.so.13\n"
            "7f3 rw-p 0 00:00 0\n")
    assert cublas.library_path(None, 13, maps) == "/opt/my env/nvidia/cu13/lib/libcublas.so.13"
    assert cublas.library_path(str(tmp_path / "missing.so"), 12, maps) == \
        "/opt/torch/lib/libcublas.so.12"
