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

The library is the one CuPy already loaded (found in /proc/self/maps), so the process
holds one cuBLAS; elsewhere cuda-pathfinder's or the system's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np

#: cudaDataType and cublasComputeType_t values (cuda/library_types.h, cublas_api.h).
_CUDA_R_32F, _CUDA_R_64F = 0, 1
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70
_GEMM_DEFAULT = -1
#: Workspace NVIDIA recommends for Hopper (4 MiB suffices for older GPUs).
WORKSPACE_BYTES = 32 << 20


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""


def _library_path() -> str:
    """The path of the libcublas the process has mapped, else one that can be loaded."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libcublas.so"):
                    return path
    except OSError:
        pass
    try:
        from cuda import pathfinder

        return pathfinder.load_nvidia_dynamic_lib("cublas").abs_path
    except Exception:
        found = ctypes.util.find_library("cublas")
        if found is None:
            raise CublasError("libcublas not found: install CuPy with its CUDA libraries") \
                from None
        return found


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
    while that stream captures a CUDA graph. Create it on the device it serves;
    ``workspace`` is a device buffer kept alive by this object."""

    def __init__(self, stream_ptr: int, workspace, tf32: bool):
        self.library = _library_path()
        self._lib = ctypes.CDLL(self.library)
        _bind(self._lib)
        self._handle = ctypes.c_void_p()
        self._check(self._lib.cublasCreate_v2(ctypes.byref(self._handle)), "cublasCreate")
        self._workspace = workspace
        self._check(self._lib.cublasSetStream_v2(self._handle, ctypes.c_void_p(stream_ptr)),
                    "cublasSetStream")
        self._check(self._lib.cublasSetWorkspace_v2(
            self._handle, ctypes.c_void_p(workspace.data.ptr), workspace.nbytes),
            "cublasSetWorkspace")
        self._check(self._lib.cublasSetMathMode(self._handle, 0), "cublasSetMathMode")
        self._check(self._lib.cublasSetPointerMode_v2(self._handle, 0), "cublasSetPointerMode")
        self._compute32 = _COMPUTE_32F_FAST_TF32 if tf32 else _COMPUTE_32F
        self._one = {np.float32: np.ones(1, np.float32), np.float64: np.ones(1, np.float64)}
        self._zero = {np.float32: np.zeros(1, np.float32), np.float64: np.zeros(1, np.float64)}

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
            self._handle, 0, 0, n, m, k, self._one[t].ctypes.data,
            b.data.ptr, data, n, k * n,
            a.data.ptr, data, k, m * k,
            self._zero[t].ctypes.data,
            out.data.ptr, data, n, m * n,
            s, compute, _GEMM_DEFAULT), "cublasGemmStridedBatchedEx")

    def close(self) -> None:
        if self._handle:
            self._lib.cublasDestroy_v2(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass
