"""A cuBLAS handle of the backend's own, bound once to its stream, so its GEMMs can be
captured into CUDA graphs.

CuPy's cuBLAS wrappers set the handle's stream before every call, and that setter
refuses to run while a stream captures (``NotImplementedError: calling cuBLAS API during
stream capture is currently unsupported``, CuPy 14). Calling the library's C entry
points through ctypes on a handle configured once, outside any capture, avoids the
per-call setter; cuBLAS itself supports capture when the handle has a user workspace
(otherwise it may allocate inside the capture).

Configuration order matters: ``cublasSetStream`` resets the workspace to cuBLAS's own,
so the stream is set first and the workspace second. Pointer mode host (alpha and beta
are read when the call is issued, so a captured graph bakes 1 and 0), default math mode
(TF32 only through the compute type, when asked).

The library is the one CuPy uses (the file that defines the ``cublasCreate_v2`` CuPy's
own cuBLAS module resolves), so the process holds one cuBLAS, not torch's or another
package's mapped before it.

The handle is made at the first GEMM (and with it the 32 MiB workspace), and destroyed
only by :meth:`StreamGemm.close`, at a point where nothing captures (the backend's close,
else at exit): never from ``__del__``, since ``cublasDestroy`` synchronises the device,
which invalidates a capture another stream may be recording at that moment.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os

import numpy as np

from fastrank.gpu.program import mapped_files

#: cudaDataType and cublasComputeType_t values (cuda/library_types.h, cublas_api.h).
_CUDA_R_32F, _CUDA_R_64F = 0, 1
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70
_GEMM_DEFAULT = -1
#: Workspace NVIDIA recommends for Hopper (4 MiB suffices for older GPUs).
WORKSPACE_BYTES = 32 << 20
#: Handles made and not yet destroyed: id of their StreamGemm -> (library, handle).
_OPEN: dict = {}


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def defining_library(user: str, symbol: str) -> str | None:
    """The path of the file that defines ``symbol`` as the shared object ``user`` (loaded
    already, or loadable) resolves it through its own dependencies; None where it does
    not."""
    try:
        address = ctypes.cast(getattr(ctypes.CDLL(user), symbol), ctypes.c_void_p).value
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def library_path(cupy_cublas: str | None = None, cuda_major: int | None = None,
                 maps: str | None = None) -> str:
    """The libcublas to call: the one CuPy's cuBLAS module ``cupy_cublas`` (its file)
    resolves; else the mapped ``libcublas.so.<cuda_major>`` (the major version of CuPy's
    CUDA; ``maps``: /proc/self/maps' text, for tests); else cuda-pathfinder's; else the
    system's."""
    if cupy_cublas:
        found = defining_library(cupy_cublas, "cublasCreate_v2")
        if found:
            return found
    if cuda_major is not None:
        wanted = f"libcublas.so.{cuda_major}"
        for path in mapped_files(maps):
            if os.path.basename(path) == wanted or os.path.basename(path).startswith(wanted + "."):
                return path
    try:
        from cuda import pathfinder

        return pathfinder.load_nvidia_dynamic_lib("cublas").abs_path
    except Exception:
        found = ctypes.util.find_library("cublas")
        if found is None:
            raise CublasError("libcublas not found: install CuPy with its CUDA libraries") \
                from None
        return found


def _cupys_library() -> str:
    import cupy
    from cupy_backends.cuda.libs import cublas

    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    return library_path(getattr(cublas, "__file__", None), major)


def _bind(lib: ctypes.CDLL) -> None:
    vp, ci, cll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    signatures = {
        "cublasCreate_v2": [ctypes.POINTER(vp)],
        "cublasDestroy_v2": [vp],
        "cublasSetStream_v2": [vp, vp],
        "cublasSetWorkspace_v2": [vp, vp, ctypes.c_size_t],
        "cublasSetMathMode": [vp, ci],
        "cublasSetPointerMode_v2": [vp, ci],
        "cublasGemmStridedBatchedEx": [vp, ci, ci, ci, ci, ci, vp, vp, ci, ci, cll, vp, ci,
                                       ci, cll, vp, vp, ci, ci, cll, ci, ci, ci],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ci


class StreamGemm:
    """Strided-batched GEMMs on one stream through a private cuBLAS handle; safe to call
    while that stream captures a CUDA graph, once the handle exists (the first call makes
    it: make that call outside any capture). Create it on the device it serves;
    ``workspace()`` gives the device buffer then kept alive by this object; ``library``:
    the loaded cuBLAS (default: CuPy's, :func:`library_path`)."""

    def __init__(self, stream_ptr: int, workspace, tf32: bool, library=None):
        self._stream_ptr = stream_ptr
        self._make_workspace = workspace
        self._lib = library
        self._handle = None
        self._workspace = None
        self._compute32 = _COMPUTE_32F_FAST_TF32 if tf32 else _COMPUTE_32F
        self._one = {np.float32: np.ones(1, np.float32), np.float64: np.ones(1, np.float64)}
        self._zero = {np.float32: np.zeros(1, np.float32), np.float64: np.zeros(1, np.float64)}

    @property
    def ready(self) -> bool:
        """Whether the handle exists."""
        return self._handle is not None

    def handle(self) -> ctypes.c_void_p:
        """The handle, made and configured at the first call."""
        if self._handle is not None:
            return self._handle
        if self._lib is None:
            self._lib = ctypes.CDLL(_cupys_library())
        _bind(self._lib)
        handle = ctypes.c_void_p()
        self._check(self._lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        _OPEN[id(self)] = (self._lib, handle)
        self._handle = handle
        self._workspace = self._make_workspace()
        self._check(self._lib.cublasSetStream_v2(handle, ctypes.c_void_p(self._stream_ptr)),
                    "cublasSetStream")
        self._check(self._lib.cublasSetWorkspace_v2(
            handle, ctypes.c_void_p(self._workspace.data.ptr), self._workspace.nbytes),
            "cublasSetWorkspace")
        self._check(self._lib.cublasSetMathMode(handle, 0), "cublasSetMathMode")
        self._check(self._lib.cublasSetPointerMode_v2(handle, 0), "cublasSetPointerMode")
        return handle

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CublasError(f"{what} failed: cuBLAS status {status}")

    def __call__(self, a, b, out) -> None:
        """out[s] = a[s] @ b[s] for C-contiguous device stacks of float32 or float64."""
        s, m, k = a.shape
        n = b.shape[2]
        if a.dtype == np.float32:
            t, data, compute = np.float32, _CUDA_R_32F, self._compute32
        else:
            t, data, compute = np.float64, _CUDA_R_64F, _COMPUTE_64F
        # Row-major out = a @ b is column-major out^T = b^T a^T: cuBLAS's A is b, B is a.
        self._check(self._lib.cublasGemmStridedBatchedEx(
            self.handle(), 0, 0, n, m, k, self._one[t].ctypes.data,
            b.data.ptr, data, n, k * n,
            a.data.ptr, data, k, m * k,
            self._zero[t].ctypes.data,
            out.data.ptr, data, n, m * n,
            s, compute, _GEMM_DEFAULT), "cublasGemmStridedBatchedEx")

    def close(self) -> None:
        """Destroys the handle (a device synchronisation: call it where nothing captures)."""
        if self._handle is not None:
            _OPEN.pop(id(self), None)
            self._lib.cublasDestroy_v2(self._handle)
            self._handle = self._workspace = None


@atexit.register
def _close_all() -> None:
    """Destroys the handles no close reached, at exit, when nothing captures any more."""
    while _OPEN:
        lib, handle = _OPEN.popitem()[1]
        lib.cublasDestroy_v2(handle)
