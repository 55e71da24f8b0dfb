"""Singular values of a stack of small matrices in one compiled call, one matrix per
thread, from the float64 Gram matrix of the smaller side and LAPACK's symmetric
eigensolver (numba calls dsyevd through SciPy).

At the widths where a sweep measures thousands of layers (d of a few dozen), a Python
call per matrix cost more than the eigensolver itself; here the seeds of one network
are measured together, in parallel, without returning to the interpreter. The caller
keeps BLAS at one thread (each thread already has a matrix of its own).
"""

import numpy as np
from numba import njit, prange


@njit(cache=True)
def gram_singular_values_one(h, out):
    """``out`` <- the singular values of one matrix ``h`` (d x n), descending, float64:
    square roots of the eigenvalues of the float64 Gram matrix of the smaller side (the
    products of float32 entries are exact in float64), negative rounding clipped to 0."""
    d, n = h.shape
    k = min(d, n)
    a = h.astype(np.float64)
    g = a @ a.T if d <= n else a.T @ a
    ev = np.linalg.eigvalsh(g)  # ascending
    for j in range(k):
        v = ev[k - 1 - j]
        out[j] = np.sqrt(v) if v > 0.0 else 0.0


@njit(cache=True, parallel=True)
def gram_singular_values(h, out):
    """``out[i]`` <- the singular values of ``h[i]`` (m x d x n), one matrix per thread
    (see gram_singular_values_one)."""
    for i in prange(h.shape[0]):
        gram_singular_values_one(h[i], out[i])
