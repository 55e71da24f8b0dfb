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
#: Spectra finished together, their QL sweeps side by side
#: (eigen.tridiagonal_eigenvalues_quad).
LANES = 4


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
        work, big = np.empty((4, LANES, k)), np.zeros(LANES)
        big[0] = begin_spectrum(h, work, 0)
        finish_spectra(work, big, 1, out[np.newaxis], np.zeros(LANES, np.int64))
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
def begin_spectrum(h, work, slot):
    """The first half of a spectrum that is finished with others (finish_spectra): the
    Gram matrix of ``h`` reduced to tridiagonal form in ``work[:, slot]`` (work is
    (4, LANES, k) float64: diagonal, squared off-diagonal, and copies of both for a
    LAPACK fallback). Returns the Gram matrix's scale (eigen.reduce_scaled). The
    whole-depth kernel begins the spectra of LANES measured layers and finishes them
    together: their QL sweeps then run side by side."""
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
def _lane(work, slot, big, used):
    """Slot's tridiagonal (d, e2) for QL: empty when unused or nothing to solve."""
    k = work.shape[2]
    m = k if used and big > 0.0 and np.isfinite(big) else 0
    return work[0, slot, :m], work[1, slot, : max(m - 1, 0)]


@njit(cache=True)
def finish_spectra(work, big, n, out, at):
    """Singular values of the spectra begun in slots 0..n-1 (begin_spectrum; scales
    ``big``; n <= LANES) into the rows ``out[at[slot]]``, their QL sweeps side by
    side."""
    d0, e0 = _lane(work, 0, big[0], n > 0)
    d1, e1 = _lane(work, 1, big[1], n > 1)
    d2, e2 = _lane(work, 2, big[2], n > 2)
    d3, e3 = _lane(work, 3, big[3], n > 3)
    ok = eigen.tridiagonal_eigenvalues_quad(d0, e0, d1, e1, d2, e2, d3, e3)
    for slot in range(n):
        _singular_values(work, slot, big[slot], ok[slot], out[at[slot]])


@njit(cache=True, parallel=True)
def gram_singular_values(h, out):
    """``out[i]`` <- the singular values of ``h[i]`` (m x d x n), one matrix per thread
    (see gram_singular_values_one)."""
    for i in prange(h.shape[0]):
        gram_singular_values_one(h[i], out[i])
