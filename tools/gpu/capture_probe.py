"""What CuPy lets a capturing stream do, one line each (run on a GPU machine): CuPy's own
cuBLAS wrapper, cupy.matmul, an allocation, a copy to the host, and fastrank's
capture-safe GEMM. Informs docs/gpu.md and the stand-in's rules (fastrank.gpu.testing)."""

import cupy
import numpy as np
from cupy_backends.cuda.libs import cublas

from fastrank.gpu.device import CupyDevice

dev = CupyDevice()
with dev.context():
    a = cupy.ones((2, 64, 64), cupy.float32)
    out = cupy.empty_like(a)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)


def cupy_wrapper():
    h = cupy.cuda.device.get_cublas_handle()
    cublas.gemmStridedBatchedEx(h, 0, 0, 64, 64, 64, one.ctypes.data, a.data.ptr, 0, 64, 4096,
                                a.data.ptr, 0, 64, 4096, zero.ctypes.data, out.data.ptr, 0, 64,
                                4096, 2, 68, -1)


for name, fn in [("cupy cuBLAS wrapper", cupy_wrapper),
                 ("cupy.matmul(out=)", lambda: cupy.matmul(a, a, out=out)),
                 ("cupy.empty", lambda: cupy.empty(1000, cupy.float32)),
                 ("cupy.asnumpy", lambda: cupy.asnumpy(a, stream=dev.stream)),
                 ("fastrank StreamGemm", lambda: dev.gemm(a, a, out))]:
    try:
        with dev.device, dev.stream:
            replay = dev.capture(fn)
        replay()
        dev.synchronize()
        print(f"PROBE {name}: captured and replayed")
    except Exception as exc:
        print(f"PROBE {name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
              f" (cause: {type(exc.__cause__).__name__}: {exc.__cause__})")
