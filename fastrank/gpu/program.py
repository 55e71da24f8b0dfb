"""fastrank's CUDA program (kernels/cuda, installed as ``fastrank.kernels.cuda``) and how it
is compiled:

* :func:`program` - the one CUDA C++ program: every ``.cu`` file with its local
  ``#include "x.cuh"`` lines replaced by the headers' text (each once), so it compiles
  from a string anywhere, with no include path;
* :func:`raw_module` - on a GPU, ``cupy.RawModule`` of that program, loaded from a cubin
  compiled by NVRTC for the device once and kept on disk (:func:`cached`, also the host
  build's cache);
* :func:`compile_ptx` - NVRTC called through ctypes, to PTX for a named architecture:
  the check that every source compiles, which needs no GPU (the NVRTC shared library of
  the ``nvidia-cuda-nvrtc`` wheels, or of a CUDA toolkit, is enough);

(fastrank.gpu.testing builds the same program for the CPU.)

Nothing here imports CuPy at module load.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import re
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path

from fastrank import codes

#: Kernel sources, in the order they are put together.
SOURCES = ("rng.cu", "layer.cu", "eigen.cu", "measures.cu", "network.cu")
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
    "householder_eigvalsh": True,
    "bidiagonal_svdvals": True,
    "spectrum_rows": False,
    "measure_rows": False,
    "network_f32": True,
}
#: NVRTC options: C++17 (hex float literals), and no FMA contraction anywhere (the
#: Philox normals use explicit round-to-nearest intrinsics anyway).
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false")
#: What CuPy's RawModule adds to those when it compiles (cupy/cuda/compiler.py): the
#: execution space, and ``-ftz=true``, appended to every compile: float32 subnormals
#: flush to zero on the device (see docs/gpu.md).
CUPY_ADDS = ("--device-as-default-execution-space", "-ftz=true")
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


def translation_unit(*names: str) -> str:
    """The shared codes' ``#define`` lines (fastrank.codes), then the given sources."""
    return codes.cuda_defines() + assemble(*names)


@functools.cache
def program() -> str:
    """The whole CUDA program: every kernel of :data:`KERNELS` in one translation unit."""
    return translation_unit(*SOURCES)


# ---------------------------------------------------------------------------------------
# On a GPU: CuPy
# ---------------------------------------------------------------------------------------


@functools.cache
def raw_module(device_id: int):
    """``cupy.RawModule`` of :func:`program` for device ``device_id``, loaded once per
    process from :func:`cubin_path` (compiled by the NVRTC of :func:`nvrtc` once per
    program text, options, architecture and NVRTC version, then read from the disk by
    every process). Where that NVRTC is missing or of another CUDA major version than
    CuPy's runtime, CuPy compiles it (and caches it in its own folder)."""
    import cupy

    device = cupy.cuda.Device(device_id)
    with device:
        try:
            same_major = nvrtc_version()[0] == cupy.cuda.runtime.runtimeGetVersion() // 1000
        except OSError:
            same_major = False
        if same_major:
            return cupy.RawModule(path=str(cubin_path(f"sm_{device.compute_capability}")))
        module = cupy.RawModule(code=program(), options=NVRTC_OPTIONS)
        module.compile()
    return module


def cubin_path(arch: str) -> Path:
    """The cubin of :func:`program` for ``arch`` (e.g. sm_90), compiled with the options
    CuPy compiles with (NVRTC_OPTIONS and CUPY_ADDS), in the disk cache."""
    code, options = program(), (*NVRTC_OPTIONS, *CUPY_ADDS)
    key = (code, *options, arch, "NVRTC {}.{}".format(*nvrtc_version()))
    return cached("kernels", key, lambda path: path.write_bytes(
        compile_cubin(code, arch, options)), ".cubin")


# ---------------------------------------------------------------------------------------
# Builds kept on disk across processes
# ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where builds of the kernels are kept: $FASTRANK_CACHE, else fastrank/ in the user's
    cache folder ($XDG_CACHE_HOME or ~/.cache), else in the temporary folder where that
    cannot be written."""
    if os.environ.get("FASTRANK_CACHE"):
        return Path(os.environ["FASTRANK_CACHE"])
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastrank"
    try:
        user.mkdir(parents=True, exist_ok=True)
        if os.access(user, os.W_OK):
            return user
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"fastrank-cache-{os.getuid()}"


def cached(kind: str, key: tuple, build, suffix: str = "") -> Path:
    """The file ``build(path)`` writes, kept in :func:`cache_dir` under ``kind`` and a
    hash of ``key`` (every text the result depends on): built by the first process that
    asks for that key, read by every later one. Written under a private name, then
    renamed: a concurrent reader sees the whole file or none."""
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:20]
    folder = cache_dir()
    path = folder / f"{kind}-{digest}{suffix}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{kind}-{digest}.{os.getpid()}.tmp{suffix}"
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


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
    """The NVRTC library (and where it was found), with its builtins library loaded from
    the same folder (:func:`_load_builtins`); raises OSError with every place tried."""
    tried = []
    for path in _nvrtc_candidates():
        # by its real path, so that its $ORIGIN is the folder that holds its builtins
        real = os.path.realpath(path) if os.sep in path else path
        try:
            lib = ctypes.CDLL(real)
        except OSError as exc:
            tried.append(f"{path} ({exc})")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        try:
            _load_builtins(lib, real)
        except OSError as exc:
            tried.append(f"{path} ({exc})")
            continue
        return lib, path
    raise OSError("no usable NVRTC library found (pip install nvidia-cuda-nvrtc, or set "
                  "FASTRANK_NVRTC to libnvrtc.so)"
                  + (f"; tried: {'; '.join(tried)}" if tried else ""))


def mapped_files(text: str | None = None) -> list[str]:
    """The files mapped into this process, from ``/proc/self/maps`` (or ``text`` in its
    format); paths may hold spaces. [] where there is no such file."""
    if text is None:
        try:
            with open("/proc/self/maps") as maps:
                text = maps.read()
        except OSError:
            return []
    found = (line.split(maxsplit=5) for line in text.splitlines())
    return list(dict.fromkeys(f[5] for f in found if len(f) == 6 and f[5].startswith("/")))


def _load_builtins(lib: ctypes.CDLL, path: str) -> None:
    """Loads ``libnvrtc-builtins.so.X.Y`` of ``lib``'s version from ``lib``'s folder by
    absolute path. NVRTC opens it by name when it first compiles, and the dynamic loader
    then returns any library of that name already loaded (another package's, e.g. torch's
    CUDA wheels) before looking beside libnvrtc: the compile fails, or uses another
    version's builtins. Raises OSError when another file of that name is loaded already."""
    if os.sep not in path or not os.path.basename(path).startswith("libnvrtc.so"):
        return  # a name for the loader to find, or a Windows DLL
    major, minor = ctypes.c_int(), ctypes.c_int()
    if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        return
    name = f"libnvrtc-builtins.so.{major.value}.{minor.value}"
    own = os.path.join(os.path.dirname(path), name)
    if not os.path.exists(own):
        raise OSError(f"{name} is missing beside {path}: reinstall nvidia-cuda-nvrtc")

    others = [p for p in mapped_files() if os.path.basename(p) == name
              and os.path.realpath(p) != os.path.realpath(own)]
    if others:
        raise OSError(f"another {name} is loaded already ({others[0]}), which NVRTC would "
                      f"use instead of its own ({own})")
    ctypes.CDLL(own)


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
    return _compile(code, arch, options, name, "PTX").rstrip(b"\0").decode()


def compile_cubin(code: str, arch: str, options=NVRTC_OPTIONS,
                  name: str = "fastrank.cu") -> bytes:
    """The cubin (machine code) of ``code`` for a real ``arch`` (e.g. sm_90) by NVRTC."""
    return _compile(code, arch, options, name, "CUBIN")


def _compile(code: str, arch: str, options, name: str, output: str) -> bytes:
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
        get_size, get = getattr(lib, f"nvrtcGet{output}Size"), getattr(lib, f"nvrtcGet{output}")
        _check(lib, get_size(prog, ctypes.byref(size)), f"nvrtcGet{output}Size")
        out = ctypes.create_string_buffer(size.value)
        _check(lib, get(prog, out), f"nvrtcGet{output}")
        return out.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
