"""The GPU backend on a real CUDA device (skipped, with the reason, without one; see
conftest.py): the same weights as the CPU for the same seed, the same spectra for every
norm, activation and order, the same results files, graphs equal to the eager loop, and
the device's kernels equal to their host build."""

import itertools
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fastrank import cuda_sources, init, rng
from fastrank.backends.cpu import CPUBackend
from fastrank.backends.gpu import GPUBackend, GPUUnavailable, HostDevice
from fastrank.cli import cli
from fastrank.propagate import simulate_many
from fastrank.runner import run_sweep
from fastrank.spec import Network, Schedule, Sweep

SEEDS = [0, 1, 2**40 + 7, 2**64 - 1]


@pytest.fixture(scope="module")
def gpu():
    return GPUBackend()


@pytest.fixture(scope="module")
def cupy():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def cpu():
    return CPUBackend()


def _fill(dev, name, shape, stream, layer, *scalars, dtype):
    seeds = dev.asarray(np.array(SEEDS[: shape[0]], np.uint64))
    out = dev.xp.zeros(shape, dtype)
    n = out[0].size
    blocks = 5
    with dev.context():
        dev.launch(name, shape[0] * blocks, dev.block,
                   (out, np.int64(n), seeds, np.int32(blocks), np.uint32(stream), None,
                    np.int64(layer), *scalars, None))
        return dev.to_host(out)


def test_the_uint32_stream_is_the_cpus(gpu):
    words = _fill(gpu.dev, "fill_uint32", (4, 10_001), 5, 3, dtype=np.uint32)
    for i, s in enumerate(SEEDS):
        assert np.array_equal(words[i], rng.uint32(s, 5, 3, 10_001))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weights", ["gaussian", "uniform"])
def test_the_weights_are_the_cpus(gpu, dtype, weights):
    """Bitwise for float32 Gaussian and uniform weights and float64 uniform ones; to
    rounding for float64 Gaussians (CUDA's log/sin/cos vs libm)."""
    net = Network(width=(301, 64), depth=2, input_dim=129, activation="relu", init=weights,
                  dtype=dtype)
    for layer in (1, 2):
        d_out, d_in = init.layer_shape(net, layer)
        mul, sub = init.weight_affine(net, d_in)
        scalars = (mul,) if weights == "gaussian" else (mul, sub)
        name = f"fill_{'normal' if weights == 'gaussian' else 'uniform'}_" \
               f"{'f32' if dtype == 'float32' else 'f64'}"
        got = _fill(gpu.dev, name, (4, d_out, d_in), rng.WEIGHTS, layer, *scalars, dtype=dtype)
        for i, s in enumerate(SEEDS):
            ref = init.weights(net, s, layer)
            if dtype == "float32" or weights == "uniform":
                assert np.array_equal(got[i].view(np.uint8), ref.view(np.uint8))
            else:
                np.testing.assert_allclose(got[i], ref, rtol=1e-14, atol=1e-14)


def test_many_float32_normals_are_bitwise_the_cpus(gpu):
    n = 1 << 22
    z = _fill(gpu.dev, "fill_normal_f32", (2, n), rng.INPUT, 0, np.float32(1.0), dtype=np.float32)
    for i, s in enumerate(SEEDS[:2]):
        ref = rng.normal(s, rng.INPUT, 0, n)
        bad = np.flatnonzero(z[i].view(np.uint32) != ref.view(np.uint32))
        assert bad.size == 0, f"{bad.size} differ: {z[i][bad[:5]]} vs {ref[bad[:5]]}"


@pytest.mark.parametrize("norm, act, act_first, residual", [
    (1, 1, 0, 0), (2, 0, 1, 0), (0, 2, 0, 1), (1, 1, 1, 1)])
def test_the_layer_kernels_equal_their_host_build(gpu, cupy, norm, act, act_first, residual):
    """Same kernel, same block size, same reduction tree: the device's results equal the
    host stand-in's to float64 rounding (bitwise except where tanh/log differ by an ulp)."""
    host = HostDevice(block=gpu.dev.block)
    gen = np.random.default_rng(0)
    s, d, n = 3, 40, 300
    z = gen.standard_normal((s, d, n)).astype(np.float32)
    h = gen.standard_normal((s, d, n)).astype(np.float32)
    block = min(gpu.dev.block, 32 * -(-n // 32))
    outs = []
    for dev, xp in ((host, np), (gpu.dev, cupy)):
        zz, hh = xp.asarray(z.copy()), xp.asarray(h)
        part = xp.zeros(s * d)
        failed = xp.full(s, -1, np.int64)
        with dev.context():
            dev.launch("rows_pass_f32", s * d, block,
                       (zz, hh if residual else None, np.float32(0.5), np.int32(residual),
                        np.int32(d), np.int32(n), np.int32(norm), np.int32(act),
                        np.int32(act_first), np.float64(1e-5), part, failed))
            outs.append((dev.to_host(zz), dev.to_host(part)))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=2e-7, atol=1e-7)
    np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-12)


@pytest.mark.parametrize("k", [2, 17, 33, 64])
def test_the_jacobi_kernel_agrees_with_cusolver(gpu, cupy, k):
    gen = np.random.default_rng(k)
    x = gen.standard_normal((50, k, k // 2 + 1))
    g = cupy.asarray(np.ascontiguousarray(x @ x.transpose(0, 2, 1)))
    with gpu.dev.context():
        w = np.sort(gpu._eigvalsh_stack(g), axis=1)
        ref = np.stack([cupy.asnumpy(cupy.linalg.eigvalsh(g[i])) for i in range(50)])
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-12 * ref.max())


def _compare(cpu, backend, net, seeds=(0, 1, 5), schedule=None, method="auto", atol=1e-5):
    schedule = schedule or Schedule(every=5, log=0)
    ours = simulate_many(net, list(seeds), schedule, method=method, backend=backend)
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
        np.testing.assert_allclose(b.spectrum[full] / top, a.spectrum[full] / top, atol=atol)
        np.testing.assert_allclose(b.log_norm, a.log_norm, rtol=atol, atol=atol)
        np.testing.assert_allclose(b.soft_rank, a.soft_rank, rtol=10 * atol)
    return ours


@pytest.mark.parametrize("activation, norm, order", list(itertools.product(
    ["linear", "relu", "tanh"], ["none", "bn", "bn-rms", "ln"], ["norm-act", "act-norm"])))
def test_spectra_match_the_cpu_for_every_layer_kind(cpu, gpu, activation, norm, order):
    _compare(cpu, gpu, Network(width=48, depth=30, batch=40, activation=activation, norm=norm,
                               order=order))


@pytest.mark.parametrize("net, method", [
    (Network(width=48, depth=20, activation="relu", norm="bn", dtype="float64"), "auto"),
    (Network(width=48, depth=20, activation="relu", norm="bn", gamma=0.3), "auto"),
    (Network(width=48, depth=20, activation="relu", norm="bn", init="uniform"), "auto"),
    (Network(width=48, depth=20, activation="relu", norm="bn", init="orthogonal"), "auto"),
    (Network(width=48, depth=20, activation="relu", norm="bn", input="orthogonal"), "auto"),
    (Network(width=(48, 100, 30, 64), depth=4, batch=50, activation="relu", norm="ln"), "auto"),
    (Network(width=300, depth=10, batch=200, activation="relu", norm="bn"), "auto"),
    (Network(width=48, depth=10, activation="relu", norm="bn"), "svd"),
], ids=lambda x: x.label() if isinstance(x, Network) else str(x))
def test_spectra_match_the_cpu_on_every_path(cpu, gpu, net, method):
    _compare(cpu, gpu, net, schedule=Schedule(every=2, log=0, cheap_every=1), method=method)


def test_failures_match_the_cpu(cpu, gpu):
    ours = _compare(cpu, gpu, Network(width=2, depth=300, activation="relu"), seeds=range(16),
                    schedule=Schedule(every=50, log=0))
    assert any(t.failure is not None for t in ours)


def test_graphs_give_the_eager_results(gpu):
    net = Network(width=64, depth=200, activation="relu", norm="bn")
    schedule = Schedule(every=25, log=7)
    eager = simulate_many(net, range(64), schedule, backend=GPUBackend(graphs=False))
    graphs = simulate_many(net, range(64), schedule, backend=GPUBackend(graphs=True))
    for a, b in zip(eager, graphs, strict=True):
        np.testing.assert_allclose(b.spectrum, a.spectrum, rtol=1e-6, atol=1e-7)


def test_many_small_networks_at_once(cpu, gpu):
    """A thousand seeds of d = 32 in one stack; a few checked against the CPU."""
    net = Network(width=32, depth=100, activation="relu", norm="bn")
    trajs = simulate_many(net, range(1024), Schedule(every=50, log=0), backend=gpu)
    for i in (0, 517, 1023):
        ref = simulate_many(net, [i], Schedule(every=50, log=0), backend=cpu)[0]
        top = ref.spectrum[:, :1]
        np.testing.assert_allclose(trajs[i].spectrum / top, ref.spectrum / top, atol=1e-4)


def test_tf32_only_when_asked(cpu):
    net = Network(width=512, depth=5, activation="relu", norm="bn")
    plain = simulate_many(net, [0], Schedule(every=5, log=0), backend=GPUBackend(tf32=False))[0]
    tf32 = simulate_many(net, [0], Schedule(every=5, log=0), backend=GPUBackend(tf32=True))[0]
    ref = simulate_many(net, [0], Schedule(every=5, log=0), backend=cpu)[0]
    top = ref.spectrum[:, :1]
    np.testing.assert_allclose(plain.spectrum / top, ref.spectrum / top, atol=1e-5)
    np.testing.assert_allclose(tf32.spectrum / top, ref.spectrum / top, atol=5e-2)


def test_results_files_match_the_cpu(tmp_path):
    sweep = Sweep(grid={"width": [16], "depth": [40], "activation": ["linear", "relu"],
                        "norm": ["none", "bn"]}, seeds=(0, 1, 2),
                  schedule=Schedule(every=10, log=5, cheap_every=5))
    a = run_sweep(sweep, tmp_path / "cpu.h5", backend="cpu")
    b = run_sweep(sweep, tmp_path / "gpu.h5", backend="gpu")
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert json.loads(fb.attrs["provenance"])["backend"] == "gpu"
        names, seen = [], []
        fa.visit(names.append)
        fb.visit(seen.append)
        assert names == seen
        for name in names:
            x, y = fa[name], fb[name]
            if not isinstance(x, h5py.Dataset):
                continue
            assert x.shape == y.shape and x.dtype == y.dtype, name
            if name.endswith("/spectrum"):
                top = x[()][:, :1]
                np.testing.assert_allclose(y[()] / top, x[()] / top, atol=1e-5, err_msg=name)
            elif name.endswith("/condition_number"):
                ok = x[()] < 1e5
                np.testing.assert_allclose(y[()][ok], x[()][ok], rtol=1e-3, err_msg=name)
            elif x.dtype.kind == "f":
                np.testing.assert_allclose(y[()], x[()], rtol=1e-4, atol=1e-7, err_msg=name)


def test_sweep_gpu_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--gpu", "--device", "0", "--width", "16",
                                      "--depth", "50", "--seed", "0-7", "-q", "-o", "r.h5"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert json.loads(f.attrs["provenance"])["backend"] == "gpu"


def test_a_missing_device_index_says_so(cupy):
    n = cupy.cuda.runtime.getDeviceCount()
    with pytest.raises(GPUUnavailable, match=f"no CUDA device {n}"):
        GPUBackend(device=n)


def test_env_lists_the_devices():
    result = CliRunner().invoke(cli, ["env"])
    line = [x for x in result.stdout.splitlines() if x.startswith("cuda")][0]
    assert "device 0:" in line and "cupy" in line


def test_the_module_compiles_for_this_device(gpu):
    assert set(gpu.dev._kernels) == set(cuda_sources.KERNELS)
