"""fastrank's CUDA sources (kernels/cuda, installed as ``fastrank.kernels.cuda``) and the
three ways they are compiled:

* :func:`program` - the one CUDA C++ program: every ``.cu`` file with its local
  ``#include "x.cuh"`` lines replaced by the headers' text (each once), so it compiles
  from a string anywhere, with no include path;
* :func:`raw_module` - on a GPU, ``cupy.RawModule`` of that program (compiled by NVRTC
  for the current device, cached in memory here and on disk by CuPy);
* :func:`compile_ptx` - NVRTC called through ctypes, to PTX for a named architecture:
  the check that every source compiles, which needs no GPU (the NVRTC shared library of
  the ``nvidia-cuda-nvrtc`` wheels, or of a CUDA toolkit, is enough);
* :func:`host_library` - the same program built for the CPU with g++ and
  ``host_emulation.cuh``, whose :class:`HostKernels` runs every kernel on the host: the
  CPU stand-in on which the GPU backend's orchestration is tested without a GPU.

Nothing here imports CuPy at module load.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

#: Kernel sources, in the order they are put together.
SOURCES = ("rng.cu", "layer.cu", "spectrum.cu")
#: Every kernel of the program (its ``extern "C"`` name); True for the kernels that
#: synchronise their block (the host stand-in runs them with one thread per CUDA thread).
KERNELS = {
    "fill_normal_f32": False,
    "fill_normal_f64": False,
    "fill_uniform_f32": False,
    "fill_uniform_f64": False,
    "fill_uint32": False,
    "rows_pass_f32": True,
    "rows_pass_f64": True,
    "cols_pass_f32": False,
    "cols_pass_f64": False,
    "account": True,
    "scale_f32": False,
    "scale_f64": False,
    "step_layer": False,
    "jacobi_eigvalsh": True,
}
#: NVRTC options: C++17 (hex float literals), and no FMA contraction anywhere (the
#: Philox normals use explicit round-to-nearest intrinsics anyway).
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false")
#: The largest matrix the Jacobi kernel takes (FR_JACOBI_MAX in spectrum.cu).
JACOBI_MAX = 64

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


class CompileError(RuntimeError):
    """A CUDA source did not compile (the message holds the compiler's log)."""


def source(name: str) -> str:
    """The text of one file of kernels/cuda."""
    return resources.files("fastrank.kernels.cuda").joinpath(name).read_text(encoding="utf-8")


def source_names() -> list[str]:
    """Every .cu and .cuh file shipped in kernels/cuda."""
    return sorted(
        p.name for p in resources.files("fastrank.kernels.cuda").iterdir()
        if p.name.endswith((".cu", ".cuh"))
    )


def _expand(name: str, seen: set) -> str:
    def include(match):
        header = match.group(1)
        if header in seen:
            return f"// (#include \"{header}\": already above)"
        seen.add(header)
        return f"// ---- {header} ----\n{_expand(header, seen)}\n// ---- end of {header} ----"

    return _INCLUDE.sub(include, source(name))


def assemble(*names: str) -> str:
    """The given sources, local includes expanded (each header once), as one text."""
    seen: set = set()
    return "\n".join(f"// ==== {n} ====\n{_expand(n, seen)}" for n in names)


@functools.cache
def program() -> str:
    """The whole CUDA program: every kernel of :data:`KERNELS` in one translation unit."""
    return assemble(*SOURCES)


# ---------------------------------------------------------------------------------------
# On a GPU: CuPy
# ---------------------------------------------------------------------------------------


@functools.cache
def raw_module(device_id: int):
    """``cupy.RawModule`` of :func:`program` for device ``device_id`` (compiled once per
    process; CuPy also caches the binary on disk, keyed by source and options)."""
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=program(), options=NVRTC_OPTIONS)
        module.compile()
    return module


# ---------------------------------------------------------------------------------------
# Without a GPU: NVRTC through ctypes
# ---------------------------------------------------------------------------------------


def _nvrtc_candidates() -> list[str]:
    found = []
    if os.environ.get("FASTRANK_NVRTC"):
        found.append(os.environ["FASTRANK_NVRTC"])
    roots = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
    patterns = ("nvidia/*/lib/libnvrtc.so*", "nvidia/*/bin/nvrtc64_*.dll")
    for root in dict.fromkeys(roots):
        for pattern in patterns:
            found += sorted(glob.glob(os.path.join(root, pattern)), reverse=True)
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            found += sorted(glob.glob(os.path.join(os.environ[var], "lib64", "libnvrtc.so*")))
    found += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"), reverse=True)
    import ctypes.util

    lib = ctypes.util.find_library("nvrtc")
    if lib:
        found.append(lib)
    return [f for f in dict.fromkeys(found) if "builtins" not in os.path.basename(f)]


@functools.cache
def nvrtc() -> tuple[ctypes.CDLL, str]:
    """The NVRTC library (and where it was found); raises OSError with every place tried."""
    tried = []
    for path in _nvrtc_candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            tried.append(f"{path} ({exc})")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib, path
    raise OSError("no NVRTC library found (pip install nvidia-cuda-nvrtc, or set FASTRANK_NVRTC"
                  " to libnvrtc.so)" + (f"; tried: {'; '.join(tried)}" if tried else ""))


def nvrtc_version() -> tuple[int, int]:
    lib, _ = nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _check(lib, status: int, what: str):
    if status != 0:
        raise CompileError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def compile_ptx(code: str, arch: str = "compute_75", options=NVRTC_OPTIONS,
                name: str = "fastrank.cu") -> str:
    """PTX of ``code`` for ``arch`` (e.g. compute_75, compute_90) by NVRTC; raises
    CompileError with NVRTC's log when it does not compile."""
    lib, _ = nvrtc()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), name.encode(),
                                       0, None, None), "nvrtcCreateProgram")
    try:
        opts = [o.encode() for o in (*options, f"--gpu-architecture={arch}")]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        status = lib.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if status != 0:
            raise CompileError(f"NVRTC ({arch}): {lib.nvrtcGetErrorString(status).decode()}\n"
                               f"{log.value.decode(errors='replace')}")
        _check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


# ---------------------------------------------------------------------------------------
# Without a GPU: the kernels built for the host
# ---------------------------------------------------------------------------------------

HOST_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off",
              "-fno-fast-math")


def host_source() -> str:
    """The host translation unit: the emulation layer, the program, and ``fr_launch``,
    which runs a kernel by name with CUDA-style arguments (an array of pointers to the
    argument values, as cuLaunchKernel takes them)."""
    thunks = "\n".join(
        f'    if (!std::strcmp(name, "{k}")) '
        f"thunk = [](void** a) {{ fr_emu_invoke({k}, a); }};" for k in KERNELS
    )
    return (
        f"// generated by fastrank.cuda_sources.host_source\n"
        f"{assemble('host_emulation.cuh')}\n{program()}\n"
        'extern "C" int fr_launch(const char* name, long long grid, int block, void** args,'
        " int serial)\n{\n    void (*thunk)(void**) = nullptr;\n"
        f"{thunks}\n    if (!thunk) return -2;\n"
        "    return fr_emu_run(thunk, grid, block, args, serial);\n}\n"
    )


def host_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


@functools.cache
def host_library() -> Path:
    """The host build of the kernels (a shared library), built once per source text in
    a cache folder; raises CompileError where no C++20 compiler works."""
    cxx = host_compiler()
    if cxx is None:
        raise CompileError("no C++ compiler (g++) to build the host stand-in of the kernels")
    text = host_source()
    digest = hashlib.sha256((text + " ".join(HOST_FLAGS) + cxx).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FASTRANK_CACHE", Path(tempfile.gettempdir()) / "fastrank-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"kernels-host-{digest}.so"
    if not lib.exists():
        src = cache / f"kernels-host-{digest}.cpp"
        src.write_text(text)
        tmp = cache / f"kernels-host-{digest}.{os.getpid()}.so"
        proc = subprocess.run([cxx, *HOST_FLAGS, "-o", str(tmp), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"{cxx} failed on {src}:\n{proc.stderr[-4000:]}")
        os.replace(tmp, lib)
    return lib


class HostKernels:
    """Launches the kernels of the host build: ``launch(name, grid, block, args)`` with
    CUDA semantics (1-D grid of ``grid`` blocks of ``block`` threads). ``args``: numpy
    arrays (passed as pointers to their data), numpy scalars (by value, in their own C
    type) and None (a null pointer), as the kernel's signature wants them."""

    _CTYPES = {
        np.dtype(np.int32): ctypes.c_int32,
        np.dtype(np.int64): ctypes.c_int64,
        np.dtype(np.uint32): ctypes.c_uint32,
        np.dtype(np.uint64): ctypes.c_uint64,
        np.dtype(np.float32): ctypes.c_float,
        np.dtype(np.float64): ctypes.c_double,
    }

    def __init__(self):
        self.lib = ctypes.CDLL(str(host_library()))
        self.lib.fr_launch.argtypes = [ctypes.c_char_p, ctypes.c_longlong, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        self.lib.fr_launch.restype = ctypes.c_int

    def _value(self, arg):
        if arg is None:
            return ctypes.c_void_p(None)
        if isinstance(arg, np.ndarray):
            if not arg.flags.c_contiguous:
                raise ValueError("kernel arrays must be C-contiguous")
            return ctypes.c_void_p(arg.ctypes.data)
        if isinstance(arg, np.generic) and arg.dtype in self._CTYPES:
            return self._CTYPES[arg.dtype](arg.item())
        raise TypeError(f"kernel argument {arg!r}: pass a numpy array, a numpy scalar or None")

    def launch(self, name: str, grid: int, block: int, args) -> None:
        if name not in KERNELS:
            raise KeyError(f"no kernel {name!r}")
        if grid <= 0:
            return
        if block % 32 or not 32 <= block <= 1024:
            raise ValueError(f"block size {block}: must be a multiple of 32 in 32..1024")
        values = [self._value(a) for a in args]
        argv = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        status = self.lib.fr_launch(name.encode(), int(grid), int(block), argv,
                                    0 if KERNELS[name] else 1)
        if status != 0:
            raise RuntimeError(f"host launch of {name} failed (status {status})")
