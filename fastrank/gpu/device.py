"""What the GPU backend needs from a device, and the real one: a CUDA device through CuPy.

:class:`Device` is the interface (array module, kernel launcher, GEMM, eigensolvers,
graph capture); :class:`CupyDevice` implements it with the program of kernels/cuda
compiled by NVRTC, GEMMs through the capture-safe handle of fastrank.gpu.cublas,
eigensolvers by cuSOLVER, and one non-blocking stream for all work, which is also the
capture stream of the CUDA graphs (a second one copies measured rows to the host).
fastrank.gpu.testing holds the CPU stand-in. CuPy is imported only when a CupyDevice is
built.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from fastrank import codes
from fastrank.errors import one_line
from fastrank.gpu import program
from fastrank.version import GPU_INSTALL_HINT


class GPUUnavailable(RuntimeError):
    """No usable CUDA device (or no CuPy): the message says why, in one line."""


class CaptureUnsupported(RuntimeError):
    """Work that cannot be recorded into a CUDA graph was issued while capturing."""


class DeviceOutOfMemory(MemoryError):
    """The device could not allocate what the backend asked for (one line)."""


class Device:
    """What the orchestration needs from a device. Subclasses set ``xp`` (a numpy-like
    array module) and implement the methods below. ``graphs_captured`` and
    ``graph_replays`` count what :meth:`capture` recorded and replayed."""

    xp = np
    name = "device"
    block = 256  # threads per block, a multiple of 32
    eigen_block = 128  # threads per matrix of the eigensolver kernel
    supports_graphs = False
    #: Most dynamic shared memory a block may have (bytes, with the opt-in beyond 48 KiB).
    shared_max = 48 * 1024

    def __init__(self):
        self.graphs_captured = 0
        self.graph_replays = 0

    def context(self):
        """Context manager within which all work of the backend runs."""
        return contextlib.nullcontext()

    def empty(self, shape: tuple, dtype):
        """An uninitialised device array (never inside a capture)."""
        return self.xp.empty(shape, dtype)

    def free_memory(self) -> int | None:
        """Bytes the backend may still allocate on the device; None where unknown."""
        return None

    def launch(self, name: str, grid: int, block: int, args, shared: int = 0) -> None:
        """Kernel ``name`` on ``grid`` blocks of ``block`` threads, with ``shared`` bytes
        of dynamic shared memory per block (at most :attr:`shared_max`)."""
        raise NotImplementedError

    def gemm(self, a, b, out) -> None:
        """out[s] = a[s] @ b[s] for stacks of C-contiguous matrices of one float dtype."""
        raise NotImplementedError

    def eigvalsh(self, g):
        """Eigenvalues (ascending) of a symmetric matrix, or of each of a stack (k, n, n)."""
        return self.xp.linalg.eigvalsh(g)

    def svdvals(self, a):
        return self.xp.linalg.svd(a, compute_uv=False)

    def qr(self, a):
        return self.xp.linalg.qr(a)

    def top_eigenvalue(self, g) -> float:
        """Largest eigenvalue of one large symmetric matrix (Lanczos)."""
        raise NotImplementedError

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def copy_to_host_async(self, a):
        """Start copying ``a`` to the host once the work issued so far has made it,
        without waiting; returns a function that waits for the copy and returns the
        host array. (Here at once; a CUDA device copies on a second stream.)"""
        host = self.to_host(a)
        return lambda: host

    def synchronize(self) -> None:
        """Wait for all work issued so far (for timing)."""

    def asarray(self, a):
        return self.xp.asarray(a)

    def capture(self, fn):
        """Record ``fn``'s device work as a graph and return a callable that replays it
        (``fn`` itself is not executed), or None where graphs are not supported. Raises
        CaptureUnsupported when ``fn`` issues work a graph cannot hold."""
        return None

    def describe(self) -> dict:
        return {"device": self.name}

    def close(self) -> None:
        """Releases what the device holds beyond memory (library handles), at a point
        where nothing captures; the device may be used again after."""


class CupyDevice(Device):
    """A CUDA device through CuPy (see the module docstring)."""

    supports_graphs = True

    def __init__(self, device: int = 0, tf32: bool | None = None):
        super().__init__()
        try:
            import cupy
        except ModuleNotFoundError as exc:
            if exc.name != "cupy":
                raise GPUUnavailable(f"CuPy does not load: {one_line(exc, typed=True)}") from None
            raise GPUUnavailable(f"CuPy is not installed: {GPU_INSTALL_HINT}") from None
        except Exception as exc:  # a broken install
            raise GPUUnavailable(f"CuPy does not load: {one_line(exc, typed=True)}") from None
        self.cupy = cupy
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, driver too old, no device node
            raise GPUUnavailable(f"no usable CUDA device: {one_line(exc, typed=True)}") from None
        if count == 0:
            raise GPUUnavailable("no CUDA device found")
        if not 0 <= device < count:
            raise GPUUnavailable(f"no CUDA device {device}: this machine has {count} "
                                 f"(0..{count - 1})")
        if tf32 is None:
            tf32 = os.environ.get("FASTRANK_TF32", "0") not in ("", "0")
        self.device_id = device
        self.tf32 = bool(tf32)
        self.xp = cupy
        self.device = cupy.cuda.Device(device)
        try:
            with self.device:
                from cupy_backends.cuda.libs import cublas, cusolver  # noqa: F401
        except Exception as exc:
            raise GPUUnavailable(f"CUDA libraries missing ({one_line(exc, typed=True)}); "
                                 "install CuPy with them: pip install 'cupy-cuda13x[ctk]' "
                                 "(or 12x)") from None
        try:
            with self.device:
                from fastrank.gpu.cublas import WORKSPACE_BYTES, StreamGemm

                props = cupy.cuda.runtime.getDeviceProperties(device)
                self.stream = cupy.cuda.Stream(non_blocking=True)
                self._copier = None  # the stream of copies to the host, made when first used
                module = program.raw_module(device)
                self._kernels = {k: module.get_function(k) for k in program.KERNELS}
                self._gemm = StreamGemm(  # its handle and workspace: at the first GEMM
                    self.stream.ptr, lambda: cupy.empty(WORKSPACE_BYTES, cupy.uint8), self.tf32)
        except Exception as exc:
            raise GPUUnavailable(
                f"CUDA device {device} unusable: {one_line(exc, typed=True)}") from None
        name = props["name"]
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.capability = f"{props['major']}.{props['minor']}"
        self.memory = int(props["totalGlobalMem"])
        self.shared_max = int(props["sharedMemPerBlockOptin"])

    @contextlib.contextmanager
    def context(self):
        with self.device, self.stream:
            try:
                yield
            except self.cupy.cuda.memory.OutOfMemoryError as exc:
                raise DeviceOutOfMemory(
                    f"device {self.device_id} ran out of memory ({one_line(exc)})") from exc

    def free_memory(self) -> int:
        """The driver's free memory plus what CuPy's pool holds unused (it hands that out
        again before asking the driver)."""
        with self.device:
            free = self.cupy.cuda.runtime.memGetInfo()[0]
            return int(free + self.cupy.get_default_memory_pool().free_bytes())

    def launch(self, name, grid, block, args, shared=0):
        args = tuple(np.uint64(0) if a is None else a for a in args)  # null pointer
        kernel = self._kernels[name]
        if shared > 48 * 1024 and kernel.max_dynamic_shared_size_bytes < shared:  # opt in
            kernel.max_dynamic_shared_size_bytes = shared
        kernel((int(grid),), (int(block),), args, shared_mem=int(shared))

    def gemm(self, a, b, out):
        if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("gemm: C-contiguous stacks only")
        if not self._gemm.ready and self.stream.is_capturing():
            raise CaptureUnsupported("the cuBLAS handle is made at the first GEMM, which "
                                     "must come before any capture")
        self._gemm(a, b, out)

    def close(self) -> None:
        self.synchronize()
        self._gemm.close()

    def eigvalsh(self, g):
        """CuPy's eigvalsh with cuSOLVER's ``info`` checked (CuPy ignores it unless told):
        numpy.linalg.LinAlgError where a matrix did not converge, as numpy's."""
        import cupyx

        with cupyx.errstate(linalg="raise"):
            return self.cupy.linalg.eigvalsh(g)

    def svdvals(self, a):
        """Singular values by cuSOLVER, its ``info`` checked (LinAlgError as numpy's)."""
        import cupyx

        with cupyx.errstate(linalg="raise"):
            return self.cupy.linalg.svd(a, compute_uv=False)

    def top_eigenvalue(self, g) -> float:
        from cupyx.scipy.sparse.linalg import eigsh

        start = self.cupy.asarray(
            np.random.default_rng(codes.LANCZOS_SEED).standard_normal(g.shape[0]))
        top = eigsh(g, k=1, which="LA", v0=start, tol=1e-10, return_eigenvectors=False)
        return float(self.to_host(top).max())

    def to_host(self, a) -> np.ndarray:
        return self.cupy.asnumpy(a, stream=self.stream)

    def copy_to_host_async(self, a):
        """The copy runs on a second stream, after an event recorded on the work stream,
        into pinned host memory, so the work stream goes on meanwhile; ``a`` is held until
        the copy is waited for."""
        import cupyx

        cupy = self.cupy
        if self._copier is None:
            self._copier = cupy.cuda.Stream(non_blocking=True)
        self._copier.wait_event(self.stream.record())
        out = cupyx.empty_pinned(a.shape, a.dtype)
        cupy.cuda.runtime.memcpyAsync(out.ctypes.data, a.data.ptr, a.nbytes,
                                      cupy.cuda.runtime.memcpyDeviceToHost, self._copier.ptr)
        done = self._copier.record()

        def wait(source=a):  # the device array lives until the copy is done
            done.synchronize()
            return out

        return wait

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, fn):
        stream = self.stream
        stream.begin_capture()
        try:
            fn()
        except Exception as exc:
            with contextlib.suppress(Exception):  # the capture is void either way
                stream.end_capture()
            if refused_in_capture(exc, self.cupy.cuda.runtime.CUDARuntimeError):
                raise CaptureUnsupported(one_line(exc, typed=True)) from exc
            raise
        graph = stream.end_capture()
        self.graphs_captured += 1

        def replay():
            graph.launch(stream)
            self.graph_replays += 1

        return replay

    def describe(self) -> dict:
        rt = self.cupy.cuda.runtime
        return {
            "device": self.name,
            "device_index": self.device_id,
            "compute_capability": self.capability,
            "device_memory_gib": round(self.memory / 2**30, 1),
            "cupy": self.cupy.__version__,
            "cuda_runtime": _cuda_version(rt.runtimeGetVersion()),
            "cuda_driver": _cuda_version(rt.driverGetVersion()),
            "tf32": int(self.tf32),
        }


#: cudaError_t of work a stream capture cannot hold: cudaErrorStreamCaptureUnsupported
#: (900) to cudaErrorStreamCaptureWrongThread (908), cudaErrorCapturedEvent among them.
CAPTURE_ERRORS = range(900, 909)


def refused_in_capture(exc: BaseException, runtime_error: type | tuple = ()) -> bool:
    """Whether ``exc``, raised while a stream captured, is the capture's refusal: CuPy's
    library wrappers raise NotImplementedError, the runtime ``runtime_error`` (CuPy's
    CUDARuntimeError) with a status of CAPTURE_ERRORS. By type and status only, never by
    the message: anything else is an error of its own and is raised as it is."""
    if isinstance(exc, NotImplementedError):
        return True
    return isinstance(exc, runtime_error) and getattr(exc, "status", None) in CAPTURE_ERRORS


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"
