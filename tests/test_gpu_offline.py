"""The GPU backend, checked on a machine without a GPU (CI).

* Every CUDA source compiles: to PTX with NVRTC (the ``nvidia-cuda-nvrtc`` wheel of the
  test extra, no GPU needed), and to SASS with nvcc where a CUDA toolkit is installed.
* The Philox/Box-Muller header compiled for the host as plain C gives the numba stream
  bitwise (uint32 words and float32 normals).
* The CUDA kernels themselves, compiled for the CPU (host_emulation.cuh: CUDA threads as
  fibers, __syncthreads as a barrier, shuffles through memory), draw the CPU's weights
  bitwise, and the GPU backend's orchestration (fastrank.backends.gpu.GPUBackend on the
  HostDevice stand-in) gives the CPU backend's spectra, log-norms, failures and results
  files, for every norm, activation and order, with and without "graphs".
* Without a device, ``--gpu`` exits 2 with one line; cupy is never imported otherwise.
"""

import ctypes
import itertools
import json
import re
import shutil
import subprocess
import sys

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


# ---------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nvrtc():
    try:
        lib, path = cuda_sources.nvrtc()
    except OSError as exc:
        pytest.skip(f"NVRTC unavailable, CUDA sources not compiled: {exc}")
    print(f"NVRTC {cuda_sources.nvrtc_version()} from {path}")
    return lib


def _kernel_names(text: str) -> set:
    return set(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', text))


def test_the_kernel_table_lists_every_kernel_of_the_sources():
    assert _kernel_names(cuda_sources.program()) == set(cuda_sources.KERNELS)
    for name in cuda_sources.source_names():
        assert "cupy" not in cuda_sources.source(name)


@pytest.mark.parametrize("arch", ["compute_75", "compute_80", "compute_90"])
@pytest.mark.parametrize("extra", [(), ("--device-as-default-execution-space",)])  # as CuPy
def test_the_program_compiles_to_ptx_with_nvrtc(nvrtc, arch, extra):
    ptx = cuda_sources.compile_ptx(cuda_sources.program(), arch,
                                   cuda_sources.NVRTC_OPTIONS + extra)
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries == set(cuda_sources.KERNELS)
    assert f".target sm_{arch.split('_')[1]}" in ptx


@pytest.mark.parametrize("name", cuda_sources.SOURCES)
def test_each_source_compiles_on_its_own(nvrtc, name):
    ptx = cuda_sources.compile_ptx(cuda_sources.assemble(name), "compute_75")
    assert set(re.findall(r"\.entry\s+(\w+)", ptx)) == _kernel_names(cuda_sources.assemble(name))


@pytest.mark.parametrize("header", ["philox.cuh", "common.cuh"])
def test_headers_compile_alone(nvrtc, header):
    code = cuda_sources.assemble(header) + '\nextern "C" __global__ void probe() {}\n'
    assert ".entry probe" in cuda_sources.compile_ptx(code, "compute_75")


def test_a_compile_error_comes_with_nvrtc_log(nvrtc):
    with pytest.raises(cuda_sources.CompileError, match="undefined_thing"):
        cuda_sources.compile_ptx('extern "C" __global__ void k() { undefined_thing(); }')


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_the_program_compiles_to_sass_with_nvcc(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed: the SASS (ptxas) check needs a CUDA toolkit")
    src = tmp_path / "fastrank.cu"
    src.write_text(cuda_sources.program())
    proc = subprocess.run([nvcc, "-cubin", f"-arch={arch}", *cuda_sources.NVRTC_OPTIONS,
                           "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", proc.stderr)
    assert spills and set(spills) == {"0"}, proc.stderr
    # the Jacobi kernel's shared memory fits the 48 KiB every device has without opt-in
    smem = re.search(r"entry function 'jacobi_eigvalsh'.*?(\d+) bytes smem", proc.stderr, re.S)
    assert smem and int(smem.group(1)) <= 48 * 1024


# ---------------------------------------------------------------------------------------
# The random streams: the header as plain C, and the kernels on the host, vs numba
# ---------------------------------------------------------------------------------------

HARNESS = r"""
#include "philox.cuh"
void words(fr_u64 seed, fr_u32 stream, fr_u32 layer, fr_u64 block0, long long n, fr_u32* out)
{
    for (long long b = 0; b < n; ++b) {
        fr_words w = fr_stream_block(seed, stream, layer, block0 + b);
        for (int t = 0; t < 4; ++t) out[4 * b + t] = w.x[t];
    }
}
void normals_f32(fr_u64 seed, fr_u32 stream, fr_u32 layer, fr_u64 block0, long long n, float* out)
{
    for (long long b = 0; b < n; ++b)
        fr_normals4_f32(fr_stream_block(seed, stream, layer, block0 + b), out + 4 * b);
}
void normals_f64(fr_u64 seed, fr_u32 stream, fr_u32 layer, fr_u64 block0, long long n, double* out)
{
    for (long long b = 0; b < n; ++b)
        fr_normals2_f64(fr_stream_block(seed, stream, layer, block0 + b), out + 2 * b);
}
"""


@pytest.fixture(scope="module")
def c_header(tmp_path_factory):
    """philox.cuh compiled as C99 by the host's C compiler, in a tiny shared library."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("header")
    (d / "philox.cuh").write_text(cuda_sources.source("philox.cuh"))
    (d / "harness.c").write_text(HARNESS)
    lib = d / "harness.so"
    subprocess.run([cc, "-std=c99", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wall",
                    "-Werror", "-o", str(lib), str(d / "harness.c"), "-lm"], check=True)
    so = ctypes.CDLL(str(lib))
    for fn in (so.words, so.normals_f32, so.normals_f64):
        fn.argtypes = [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint64,
                       ctypes.c_longlong, ctypes.c_void_p]
    return so


@pytest.mark.parametrize("seed, stream, layer, block0", [
    (0, 0, 0, 0), (1, 0, 1, 0), (2**40 + 7, 1, 0, 12345), (2**64 - 1, 7, 2**32 - 1, 2**33 + 5),
])
def test_header_as_c_gives_the_numba_stream_bitwise(c_header, seed, stream, layer, block0):
    n = 50_000  # blocks: 200,000 words, 200,000 float32 normals
    got = np.empty(4 * n, np.uint32)
    c_header.words(seed, stream, layer, block0, n, got.ctypes.data)
    assert np.array_equal(got, rng.uint32(seed, stream, layer, 4 * n, offset=4 * block0))
    z = np.empty(4 * n, np.float32)
    c_header.normals_f32(seed, stream, layer, block0, n, z.ctypes.data)
    ref = rng.normal(seed, stream, layer, 4 * n, np.float32, offset=4 * block0)
    assert np.array_equal(z.view(np.uint32), ref.view(np.uint32))  # bitwise, signed zeros too
    z64 = np.empty(2 * n, np.float64)
    c_header.normals_f64(seed, stream, layer, block0, n, z64.ctypes.data)
    ref64 = rng.normal(seed, stream, layer, 2 * n, np.float64, offset=2 * block0)
    np.testing.assert_allclose(z64, ref64, rtol=1e-13, atol=1e-13)  # libm: to rounding


@pytest.fixture(scope="module")
def kernels():
    try:
        return cuda_sources.HostKernels()
    except cuda_sources.CompileError as exc:
        pytest.skip(f"no host build of the kernels: {exc}")


def _fill(kernels, name, shape, stream, layer, *scalars, blocks=3, failed=None):
    seeds = np.array(SEEDS[: shape[0]], np.uint64)
    out = np.full(shape, 7, {"f32": np.float32, "f64": np.float64, "t32": np.uint32}[name[-3:]])
    n = out[0].size
    kernels.launch(name, len(seeds) * blocks, 32,
                   (out, np.int64(n), seeds, np.int32(blocks), np.uint32(stream), None,
                    np.int64(layer), *scalars, failed))
    return out


def test_fill_kernels_give_the_cpu_stream_bitwise(kernels):
    # few blocks per seed: every thread loops over several Philox blocks
    words = _fill(kernels, "fill_uint32", (4, 1001), 5, 3)
    for i, s in enumerate(SEEDS):
        assert np.array_equal(words[i], rng.uint32(s, 5, 3, 1001))
    z = _fill(kernels, "fill_normal_f32", (4, 4099), rng.INPUT, 0, np.float32(1.0))
    z64 = _fill(kernels, "fill_normal_f64", (4, 4099), rng.INPUT, 0, np.float64(1.0))
    for i, s in enumerate(SEEDS):
        assert np.array_equal(z[i].view(np.uint32), rng.normal(s, 1, 0, 4099).view(np.uint32))
        np.testing.assert_allclose(z64[i], rng.normal(s, 1, 0, 4099, np.float64), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weights", ["gaussian", "uniform"])
def test_weight_kernels_give_init_weights(kernels, dtype, weights):
    """The weights the GPU backend draws are fastrank.init.weights: bitwise for float32
    (only exact operations and the package's own log, sin, cos), to rounding for float64."""
    net = Network(width=(37, 20), depth=2, input_dim=29, activation="relu", init=weights,
                  dtype=dtype)
    for layer in (1, 2):
        d_out, d_in = init.layer_shape(net, layer)
        mul, sub = init.weight_affine(net, d_in)
        scalars = (mul,) if weights == "gaussian" else (mul, sub)
        kind = "normal" if weights == "gaussian" else "uniform"
        sfx = "f32" if dtype == "float32" else "f64"
        got = _fill(kernels, f"fill_{kind}_{sfx}", (4, d_out, d_in), rng.WEIGHTS, layer, *scalars)
        for i, s in enumerate(SEEDS):
            ref = init.weights(net, s, layer)
            if dtype == "float32" or weights == "uniform":
                assert np.array_equal(got[i], ref)
            else:
                np.testing.assert_allclose(got[i], ref, rtol=1e-13)


def test_fill_skips_failed_seeds(kernels):
    failed = np.array([-1, 4, -1, 0], np.int64)
    z = _fill(kernels, "fill_normal_f32", (4, 100), 0, 1, np.float32(1.0), failed=failed)
    assert np.all(z[[1, 3]] == 7) and not np.any(z[[0, 2]] == 7)


@pytest.mark.parametrize("k", [1, 2, 3, 17, 32, 33, 64])
def test_jacobi_kernel_matches_lapack(kernels, k):
    gen = np.random.default_rng(k)
    rank = max(1, k // 2)
    x = gen.standard_normal((5, k, rank)) * np.logspace(0, -6, rank)
    g = np.ascontiguousarray(x @ x.transpose(0, 2, 1))  # PSD, half of them rank-deficient
    g[0] = np.diag(np.arange(k, 0, -1.0))  # already diagonal
    w = np.empty((5, k))
    kernels.launch("jacobi_eigvalsh", 5, 64, (g, np.int32(k), np.int32(60), w))
    ref = np.linalg.eigvalsh(g)
    np.testing.assert_allclose(np.sort(w, axis=1), ref, rtol=0, atol=1e-13 * ref.max())


# ---------------------------------------------------------------------------------------
# The orchestration on the host stand-in vs the CPU backend
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu(kernels):  # the stand-in needs the host build of the kernels (skips without g++)
    return CPUBackend()


def _compare(cpu, net, seeds=(0, 1, 5), schedule=None, method="auto", rtol=1e-6, **device):
    """Trajectories of the CPU backend and of the GPU backend on the host stand-in agree:
    same layers, failures (layer and reason), spectra within rtol of the largest singular
    value, log-norms and Gram-tier measures within rtol."""
    schedule = schedule or Schedule(every=5, log=0)
    graphs = device.pop("graphs", False)  # recorded and replayed launches on the host
    gpu = GPUBackend(dev=HostDevice(block=32, jacobi_block=32, graphs=graphs),
                     graphs=graphs or None, **device)
    ours = simulate_many(net, list(seeds), schedule, method=method, backend=gpu)
    theirs = simulate_many(net, list(seeds), schedule, method=method, backend=cpu)
    for a, b in zip(theirs, ours, strict=True):
        assert np.array_equal(a.layer, b.layer)
        assert (a.failure is None) == (b.failure is None)
        if a.failure is not None:
            assert (a.failure.layer, a.failure.reason) == (b.failure.layer, b.failure.reason)
        if not len(a.layer):
            continue
        full = a.tier == 1
        scale = a.spectrum[full][:, :1]
        np.testing.assert_allclose(b.spectrum[full] / scale, a.spectrum[full] / scale,
                                   rtol=0, atol=rtol)
        np.testing.assert_allclose(b.log_norm, a.log_norm, rtol=rtol, atol=rtol)
        for m in ("soft_rank", "stable_rank"):
            np.testing.assert_allclose(b.measures[m], a.measures[m], rtol=rtol)
        if not (net.dtype == "float64" and method == "gram"):  # that rank is Gram noise
            np.testing.assert_array_equal(b.numerical_rank, a.numerical_rank)
    return ours, gpu


@pytest.mark.parametrize("activation, norm, order", list(itertools.product(
    ["linear", "relu", "tanh"], ["none", "bn", "bn-rms", "ln"], ["norm-act", "act-norm"])))
def test_orchestration_matches_the_cpu_backend(cpu, activation, norm, order):
    _compare(cpu, Network(width=12, depth=15, batch=10, activation=activation, norm=norm,
                          order=order))


@pytest.mark.parametrize("net, schedule, method", [
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn", gamma=0.3), None, "auto"),
    (Network(width=12, depth=12, batch=10, activation="tanh", norm="ln", gamma=0.5,
             order="act-norm"), None, "auto"),
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn", dtype="float64"), None,
     "auto"),
    (Network(width=12, depth=12, batch=10, activation="relu", dtype="float64"), None, "gram"),
    (Network(width=12, depth=12, batch=10, init="uniform"), None, "auto"),
    (Network(width=12, depth=12, batch=10, init="uniform", dtype="float64"), None, "auto"),
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn", init="orthogonal"),
     None, "auto"),
    (Network(width=12, depth=12, batch=14, activation="relu", norm="bn", input="orthogonal"),
     None, "auto"),
    (Network(width=(12, 9, 15, 7, 11, 13), depth=6, batch=10, activation="relu", norm="ln"),
     Schedule(every=1, log=0), "auto"),
    (Network(width=13, depth=30, batch=9, activation="relu", norm="bn"),
     Schedule(every=7, log=0, cheap_every=3), "auto"),
    (Network(width=12, depth=10, batch=10, activation="relu", norm="bn"), None, "svd"),
    (Network(width=70, depth=4, batch=80, activation="relu", norm="bn"),  # k > 64: cuSOLVER path
     Schedule(every=2, log=0), "auto"),
    (Network(width=80, depth=4, batch=67, activation="tanh", norm="bn-rms"),  # odd k = 67
     Schedule(every=2, log=0), "auto"),
    (Network(width=33, depth=4, batch=65, activation="tanh", norm="ln"),  # odd k = 33 (Jacobi)
     Schedule(every=2, log=0), "auto"),
], ids=lambda x: x.label() if isinstance(x, Network) else str(x))
def test_orchestration_matches_the_cpu_backend_on_every_path(cpu, net, schedule, method):
    _compare(cpu, net, schedule=schedule or Schedule(every=4, log=0), method=method)


def test_gram_tier_of_wide_networks_uses_lanczos_as_the_cpu(cpu):
    """k > 256: the Gram tier's top eigenvalue by Lanczos (on the device: cupyx eigsh)."""
    _compare(cpu, Network(width=300, depth=2, batch=270, activation="relu", norm="bn"),
             seeds=(0,), schedule=Schedule(every=2, log=0, cheap_every=1))


def test_failed_seeds_stop_at_the_cpu_backend_layer(cpu):
    """Vanilla ReLU at width 2 loses every unit within a few layers: the same seeds fail
    at the same layer, for the same reason, as on the CPU."""
    ours, _ = _compare(cpu, Network(width=2, depth=300, activation="relu"), seeds=range(8),
                       schedule=Schedule(every=50, log=0))
    assert sum(t.failure is not None for t in ours) >= 4


@pytest.mark.parametrize("graph_layers, every, cheap_every", [(2, 7, 3), (4, 13, None),
                                                              (8, 10, None)])
def test_graphs_replay_exactly_what_layer_by_layer_runs(cpu, graph_layers, every, cheap_every):
    """With graphs, runs of layers are recorded once and replayed (the layer counter on
    the device, H and Z alternating, odd remainders run eagerly so the graphs' parity
    flips); the results are bitwise those of the eager loop."""
    net = Network(width=13, depth=40, batch=9, activation="relu")
    schedule = Schedule(every=every, log=0, cheap_every=cheap_every)
    graphs, gpu = _compare(cpu, net, schedule=schedule, graphs=True, graph_layers=graph_layers)
    captures = []
    original = gpu.dev.capture
    gpu.dev.capture = lambda fn: captures.append(fn) or original(fn)
    again = simulate_many(net, [0, 1, 5], schedule, backend=gpu)
    assert captures, "no graph was captured"
    eager = simulate_many(net, [0, 1, 5], schedule,
                          backend=GPUBackend(dev=HostDevice(block=32, jacobi_block=32)))
    for a, b, c in zip(graphs, again, eager, strict=True):
        for x in (a, b):
            assert np.array_equal(x.spectrum, c.spectrum, equal_nan=True)
            assert np.array_equal(x.log_norm, c.log_norm)


def test_one_results_file_layout_and_numbers_as_on_the_cpu(tmp_path, kernels):
    sweep = Sweep(grid={"width": [8], "depth": [20], "activation": ["linear", "relu"],
                        "norm": ["none", "bn"]}, seeds=(0, 1),
                  schedule=Schedule(every=5, log=3, cheap_every=2))
    a = run_sweep(sweep, tmp_path / "cpu.h5", backend="cpu")
    b = run_sweep(sweep, tmp_path / "gpu.h5",
                  backend=GPUBackend(dev=HostDevice(block=32, jacobi_block=32)))
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert json.loads(fb.attrs["provenance"])["backend"] == "gpu"
        assert json.loads(fa.attrs["provenance"])["backend"] == "cpu"
        names = []
        fa.visit(names.append)
        seen = []
        fb.visit(seen.append)
        assert names == seen
        for name in names:
            x, y = fa[name], fb[name]
            if isinstance(x, h5py.Dataset):
                assert x.shape == y.shape and x.dtype == y.dtype, name
                if name.endswith("/spectrum"):  # tiny singular values are Gram noise
                    top = x[()][:, :1]
                    np.testing.assert_allclose(y[()] / top, x[()] / top, atol=1e-6, err_msg=name)
                elif name.endswith("/condition_number"):  # s_max / (Gram noise) where collapsed
                    ok = x[()] < 1e6
                    np.testing.assert_allclose(y[()][ok], x[()][ok], rtol=1e-5, err_msg=name)
                elif x.dtype.kind == "f":
                    np.testing.assert_allclose(y[()], x[()], rtol=1e-5, atol=1e-9, err_msg=name)
                elif x.dtype.kind in "iub":
                    np.testing.assert_array_equal(y[()], x[()], err_msg=name)
            if name.startswith("runs/"):
                assert dict(x.attrs).keys() == dict(y.attrs).keys()


# ---------------------------------------------------------------------------------------
# Without a device
# ---------------------------------------------------------------------------------------


def _has_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_nothing_imports_cupy_unless_the_gpu_is_used(kernels):
    code = ("import sys, fastrank, fastrank.cli, fastrank.backends.gpu, fastrank.cuda_sources; "
            "fastrank.backends.gpu.GPUBackend(dev=fastrank.backends.gpu.HostDevice()); "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_a_device_the_backend_says_why_in_one_line():
    if _has_device():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(GPUUnavailable) as info:
        GPUBackend()
    assert "\n" not in str(info.value) and str(info.value)


def test_sweep_gpu_without_a_device_exits_2_with_one_line(tmp_path, monkeypatch):
    if _has_device():
        pytest.skip("this machine has a CUDA device")
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
# The GPU benchmarks (bench/gpu.py), at toy sizes on the stand-in
# ---------------------------------------------------------------------------------------


def test_gpu_benchmarks_without_a_device_are_skipped_with_the_reason():
    from fastrank.bench import gpu as bench_gpu

    if _has_device():
        pytest.skip("this machine has a CUDA device")
    doc = bench_gpu.run(quick=True, repeats=1)
    assert doc["status"] == "skipped" and doc["reason"]
    assert "skipped" in bench_gpu.markdown(doc)


def test_gpu_benchmarks_run_end_to_end_on_the_stand_in(kernels):
    from fastrank.bench import gpu as bench_gpu

    def make_backend(tf32=False, graphs=None):
        return GPUBackend(dev=HostDevice(block=32, jacobi_block=32, graphs=bool(graphs)),
                          graphs=graphs, graph_layers=4)

    sizes = {"large": {"widths": [16], "depth": 4}, "small": {"width": 8, "seeds": 3, "depth": 12}}
    doc = bench_gpu.run(quick=True, repeats=1, sizes=sizes, make_backend=make_backend)
    assert doc["status"] == "ok" and len(doc["large"]) == 2
    assert all(r["ratio_to_floor"] > 0 for r in doc["large"])
    assert doc["small"]["measured_layers"] == 13 and doc["small"]["ratio_to_floor"] > 0
    json.dumps(doc)
    assert "| BN+ReLU d=N=16" in bench_gpu.markdown(doc)
