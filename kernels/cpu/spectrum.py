"""Singular values of a stack of small matrices in one compiled call, one matrix per
thread, from the float64 Gram matrix of the smaller side (BLAS dgemm) and the compiled
symmetric eigensolver of eigen.py (LAPACK's dsyevd, through numba, should it fail).

At the widths where a sweep measures thousands of layers (d of a few dozen), a Python
call per matrix cost more than the eigensolver itself; here the seeds of one network
are measured together, in parallel, without returning to the interpreter. The caller
keeps BLAS at one thread (each thread already has a matrix of its own).
"""

import numpy as np
from numba import njit, prange

from fastrank.kernels.cpu import eigen

#: Largest Gram matrix whose eigenvalues eigen.py computes; LAPACK above. Measured at
#: one thread (random float32 squares, singular values): 1.3-1.7x faster than LAPACK
#: from k = 8 to 128, even at 256 and 0.8x at 512 (LAPACK's blocked reduction).
COMPILED_EIGEN_MAX = 128

@njit(cache=True)
def _gram(h):
    """The float64 Gram matrix of the smaller side of ``h`` (d x n): the products of
    float32 entries are exact in float64."""
    a = h.astype(np.float64)
    return a @ a.T if h.shape[0] <= h.shape[1] else a.T @ a


@njit(cache=True)
def gram_singular_values_one(h, out):
    """``out`` <- the singular values of one matrix ``h`` (d x n), descending, float64:
    square roots of the eigenvalues of the float64 Gram matrix of the smaller side (the
    products of float32 entries are exact in float64), negative rounding clipped to 0."""
    k = min(h.shape)
    ev = np.empty(k)  # ascending
    if k > COMPILED_EIGEN_MAX or not eigen.symmetric_eigenvalues(_gram(h), ev):
        ev = np.linalg.eigvalsh(_gram(h))
    for j in range(k):
        v = ev[k - 1 - j]
        out[j] = np.sqrt(v) if v > 0.0 else 0.0


@njit(cache=True, parallel=True)
def gram_singular_values(h, out):
    """``out[i]`` <- the singular values of ``h[i]`` (m x d x n), one matrix per thread
    (see gram_singular_values_one)."""
    for i in prange(h.shape[0]):
        gram_singular_values_one(h[i], out[i])
