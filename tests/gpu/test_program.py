"""The CUDA program compiles, and its random stream is the CPU's, without a GPU (CI):

* every source compiles to PTX with NVRTC (the ``nvidia-cuda-nvrtc`` wheel of the test
  extra), also with the exact options CuPy compiles with (it adds ``-ftz=true``), and to
  SASS with nvcc where a CUDA toolkit is installed;
* the Philox/Box-Muller header compiled as plain C gives the numba stream bitwise.

The kernels themselves run in test_backend.py, on the host stand-in and on a device.
"""

import ctypes
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastrank import rng
from fastrank.gpu import program

# ---------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------


def _kernel_names(text: str) -> set:
    return set(re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', text))


def test_the_kernel_table_lists_every_kernel_of_the_sources():
    assert _kernel_names(program.program()) == set(program.KERNELS)
    for name in program.source_names():
        assert "cupy" not in program.source(name)


@pytest.mark.parametrize("arch", ["compute_75", "compute_80", "compute_90"])
@pytest.mark.parametrize("extra", [(), program.CUPY_ADDS])
def test_the_program_compiles_to_ptx_with_nvrtc(nvrtc, arch, extra):
    ptx = program.compile_ptx(program.program(), arch,
                                   program.NVRTC_OPTIONS + extra)
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries == set(program.KERNELS)
    assert f".target sm_{arch.split('_')[1]}" in ptx


def test_cupy_flushes_float32_subnormals_and_we_know_it(nvrtc):
    """CuPy appends ``-ftz=true`` to every NVRTC compile: on the device, float32 arithmetic
    flushes subnormals to zero (docs/gpu.md says where that can matter). The PTX built
    with CuPy's options shows it; ours alone does not flush."""
    ours = program.compile_ptx(program.program(), "compute_90")
    cupys = program.compile_ptx(program.program(), "compute_90",
                                program.NVRTC_OPTIONS + program.CUPY_ADDS)
    flushing = re.compile(r"\b(?:add|mul|sub|div|sqrt|fma)\.\w*\.?ftz\.f32")
    assert flushing.search(cupys) and not flushing.search(ours)


@pytest.mark.parametrize("name", program.SOURCES)
def test_each_source_compiles_on_its_own(nvrtc, name):
    ptx = program.compile_ptx(program.translation_unit(name), "compute_75")
    assert set(re.findall(r"\.entry\s+(\w+)", ptx)) == _kernel_names(program.assemble(name))


@pytest.mark.parametrize("header", ["philox.cuh", "common.cuh"])
def test_headers_compile_alone(nvrtc, header):
    code = program.translation_unit(header) + '\nextern "C" __global__ void probe() {}\n'
    assert ".entry probe" in program.compile_ptx(code, "compute_75")


def test_a_compile_error_comes_with_nvrtc_log(nvrtc):
    with pytest.raises(program.CompileError, match="undefined_thing"):
        program.compile_ptx('extern "C" __global__ void k() { undefined_thing(); }')


PROBE = """
import sys
from fastrank.gpu import program
try:
    program.compile_ptx('extern "C" __global__ void k() {}')
except OSError as exc:
    sys.exit(f"OSError: {exc}")
print("compiled")
"""


@pytest.fixture(scope="module")
def other_builtins(nvrtc, tmp_path_factory):
    """A folder holding a link to the NVRTC library found (but not its builtins), and a
    folder holding another library with the builtins' name (as another package's CUDA
    wheels may put on the search path, or load first)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("nvrtc")
    name = "libnvrtc-builtins.so.{}.{}".format(*program.nvrtc_version())
    (d / "link").mkdir()
    (d / "link" / "libnvrtc.so").symlink_to(os.path.realpath(program.nvrtc()[1]))
    (d / "other dir").mkdir()
    (d / "probe.c").write_text("int fr_probe(void) { return 0; }\n")
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{name}", "-o",
                    str(d / "other dir" / name), str(d / "probe.c")], check=True)
    return d, d / "other dir" / name


def _probe(env: dict, preload: str = "") -> subprocess.CompletedProcess:
    code = (f"import ctypes; ctypes.CDLL({preload!r})\n" if preload else "") + PROBE
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_nvrtc_compiles_with_the_builtins_beside_it(other_builtins):
    """Through a link in a folder without builtins, and another library of the builtins'
    name on LD_LIBRARY_PATH: NVRTC found that one ('failed to open' / 'is corrupted',
    NVRTC_ERROR_BUILTIN_OPERATION_FAILURE) until its own was loaded by absolute path."""
    d, other = other_builtins
    proc = _probe({"FASTRANK_NVRTC": str(d / "link" / "libnvrtc.so"),
                   "LD_LIBRARY_PATH": str(other.parent)})
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr


def test_nvrtc_refuses_another_builtins_loaded_first(other_builtins):
    _, other = other_builtins
    proc = _probe({}, preload=str(other))
    assert proc.returncode == 1
    assert f"another {other.name} is loaded already ({other})" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_builds_are_cached_by_every_text_they_depend_on(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRANK_CACHE", str(tmp_path))
    builds = []

    def build(path):
        builds.append(path)
        path.write_text("built")

    first = program.cached("k", ("source", "-O2"), build, ".bin")
    assert program.cached("k", ("source", "-O2"), build, ".bin") == first and len(builds) == 1
    others = {program.cached("k", key, build, ".bin") for key in
              [("source", "-O3"), ("source 2", "-O2"), ("source", "-O2", "sm_80")]}
    assert first not in others and len(others) == 3 and len(builds) == 4

    def broken(path):
        path.write_text("half")
        raise program.CompileError("no")

    with pytest.raises(program.CompileError):
        program.cached("k", ("bad",), broken, ".bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in {first, *others})


class _FakeCupy:
    """What raw_module uses of CuPy: a device of compute capability 9.0, a runtime of
    ``major``, and RawModule recording how it was made."""

    def __init__(self, major):
        from types import SimpleNamespace

        class Device:
            compute_capability = "90"

            def __init__(self, i):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class RawModule:
            def __init__(self, **how):
                self.how = how

            def compile(self):
                self.how["compiled"] = True

        runtime = SimpleNamespace(runtimeGetVersion=lambda: major * 1000)
        self.cuda = SimpleNamespace(Device=Device, runtime=runtime)
        self.RawModule = RawModule


@pytest.mark.slow
def test_the_device_program_is_compiled_once_then_read_from_the_disk(nvrtc, tmp_path,
                                                                    monkeypatch):
    """The cubin for the device's architecture, with CuPy's options, is compiled by the
    first process and loaded from the disk by the next (here: a second process, which
    cannot compile); another architecture or option compiles anew. Where the NVRTC found
    is of another CUDA major version than CuPy's runtime, CuPy compiles the source."""
    monkeypatch.setenv("FASTRANK_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(program.nvrtc_version()[0]))
    program.raw_module.cache_clear()
    module = program.raw_module(0)
    path = program.cubin_path("sm_90")
    assert module.how == {"path": str(path)} and path.read_bytes()[:4] == b"\x7fELF"
    later = subprocess.run(
        [sys.executable, "-c", "from fastrank.gpu import program; program.compile_cubin = None; "
         "print(program.cubin_path('sm_90'))"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "FASTRANK_CACHE": str(tmp_path)})
    assert later.returncode == 0 and later.stdout.strip() == str(path), later.stderr

    def compiles(*args):
        raise AssertionError("compiled")

    monkeypatch.setattr(program, "compile_cubin", compiles)
    for arch, adds in [("sm_80", program.CUPY_ADDS), ("sm_90", ())]:
        monkeypatch.setattr(program, "CUPY_ADDS", adds)
        with pytest.raises(AssertionError, match="compiled"):
            program.cubin_path(arch)
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(program.nvrtc_version()[0] - 1))
    program.raw_module.cache_clear()
    assert program.raw_module(0).how == {"code": program.program(),
                                         "options": program.NVRTC_OPTIONS, "compiled": True}
    program.raw_module.cache_clear()


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
@pytest.mark.slow
def test_the_program_compiles_to_sass_with_nvcc(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed: the SASS (ptxas) check needs a CUDA toolkit")
    src = tmp_path / "fastrank.cu"
    src.write_text(program.program())
    proc = subprocess.run([nvcc, "-cubin", f"-arch={arch}", *program.NVRTC_OPTIONS,
                           "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", proc.stderr)
    assert spills and set(spills) == {"0"}, proc.stderr
    # the eigensolver's shared memory fits the 48 KiB every device has without opt-in
    smem = re.search(r"entry function 'householder_eigvalsh'.*?(\d+) bytes smem", proc.stderr,
                     re.S)
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
    (d / "philox.cuh").write_text(program.source("philox.cuh"))
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
