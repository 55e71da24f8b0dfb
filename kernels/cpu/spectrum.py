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
    if k <= COMPILED_EIGEN_MAX:
        work = np.empty((4, 2, k))
        finish_pair(work, begin_pair(h, work, 0), 0.0, out, out[:0])
        return
    _descending_roots(np.linalg.eigvalsh(_gram(h)), 1.0, out)


@njit(cache=True)
def _descending_roots(ev, scale, out):
    """``out`` <- sqrt(scale * ev), largest first, for ascending eigenvalues ``ev`` of a
    Gram matrix; negative rounding clipped to 0."""
    k = out.shape[0]
    for j in range(k):
        v = ev[k - 1 - j] * scale
        out[j] = np.sqrt(v) if v > 0.0 else 0.0


@njit(cache=True)
def begin_pair(h, work, slot):
    """The first half of a spectrum that is finished two at a time (finish_pair): the
    Gram matrix of ``h`` reduced to tridiagonal form in ``work[:, slot]`` (work is
    (4, 2, k) float64: diagonal, squared off-diagonal, and copies of both for a LAPACK
    fallback). Returns the Gram matrix's scale (eigen.reduce_scaled). The whole-depth
    kernel begins one spectrum at a measured layer and finishes it with the next one's:
    their QL sweeps then run side by side."""
    k = work.shape[2]
    big = eigen.reduce_scaled(_gram(h), work[0, slot], work[1, slot, : k - 1])
    work[2, slot] = work[0, slot]
    work[3, slot] = work[1, slot]
    return big


@njit(cache=True)
def _singular_values(work, slot, big, ok, out):
    """``out`` <- singular values, descending, from slot's eigenvalues (QL converged:
    ``ok``) or, should QL have failed, LAPACK's on the saved tridiagonal matrix."""
    k = out.shape[0]
    if big == 0.0 or not np.isfinite(big):
        out[:] = 0.0 if big == 0.0 else np.nan
        return
    if ok:
        ev = np.sort(work[0, slot])
    else:
        t = np.diag(work[2, slot])
        for i in range(k - 1):
            t[i, i + 1] = t[i + 1, i] = np.sqrt(work[3, slot, i])
        ev = np.linalg.eigvalsh(t)
    _descending_roots(ev, big, out)


@njit(cache=True)
def finish_pair(work, big0, big1, out0, out1):
    """Singular values of the spectra begun in slots 0 and 1 (begin_pair) into ``out0``
    and ``out1``, their QL sweeps side by side; an empty ``out1`` finishes slot 0
    alone."""
    k = work.shape[2]
    live0 = big0 > 0.0 and np.isfinite(big0)
    live1 = out1.shape[0] > 0 and big1 > 0.0 and np.isfinite(big1)
    d0, e0 = work[0, 0, : k if live0 else 0], work[1, 0, : k - 1 if live0 else 0]
    d1, e1 = work[0, 1, : k if live1 else 0], work[1, 1, : k - 1 if live1 else 0]
    ok0, ok1 = eigen.tridiagonal_eigenvalues_pair(d0, e0, d1, e1)
    _singular_values(work, 0, big0, ok0, out0)
    if out1.shape[0] > 0:
        _singular_values(work, 1, big1, ok1, out1)


@njit(cache=True, parallel=True)
def gram_singular_values(h, out):
    """``out[i]`` <- the singular values of ``h[i]`` (m x d x n), one matrix per thread
    (see gram_singular_values_one)."""
    for i in prange(h.shape[0]):
        gram_singular_values_one(h[i], out[i])
