"""Eigenvalues of small symmetric float64 matrices, compiled: the spectra of the narrow
networks' Gram matrices. A Householder reduction to tridiagonal form, then root-free
implicit QL (the Pal-Walker-Kahan variant, as LAPACK's dsterf) on the squared
off-diagonal.

Why not LAPACK (numba's eigvalsh, dsyevd): at k of a few dozen its time goes to a copy,
a workspace query and allocation and one small level-2 BLAS call per column, and then
to QL steps that each wait on three divisions. Here the reduction is flat loops over
contiguous rows, and a QL step takes one division (_ql_step): 1.5-1.7x faster at
k = 32 and 64, Gram included (docs/architecture.md). Accuracy is that of any
backward-stable symmetric eigensolver -- each eigenvalue within a small multiple of
k eps ||G|| of the exact one -- checked against LAPACK in float64 by
tests/test_kernels.py.
"""

import numpy as np
from numba import njit

#: Sweeps allowed per eigenvalue before QL gives up (as LAPACK); the caller then falls
#: back to LAPACK.
MAX_SWEEPS = 30

_EPS2 = float(np.finfo(np.float64).eps) ** 2
_TINY = float(np.finfo(np.float64).tiny)
#: Below this r p, a QL step divides twice rather than risk 1 / (r p) overflowing.
_SMALL = 1e-280
_ONE = np.uint64(1)  # keeps an unsigned index unsigned (+ 1 would make it float)

_JIT = {"cache": True, "fastmath": {"contract"}, "error_model": "numpy"}
#: The reduction's sums may be vectorised (reassociated); QL's steps keep their order.
_JIT_SUMS = {**_JIT, "fastmath": {"contract", "reassoc"}}


@njit(**_JIT_SUMS)
def _reflector(x, v):
    """The Householder reflector I - tau v v^T (v[0] = 1) that maps ``x`` onto beta
    times the first unit vector: (tau, beta); tau = 0 when x is that already."""
    alpha = x[0]
    sigma = 0.0
    for t in range(1, x.shape[0]):
        sigma += x[t] * x[t]
    if sigma == 0.0:
        return 0.0, alpha
    norm = np.sqrt(alpha * alpha + sigma)
    beta = -norm if alpha >= 0.0 else norm
    inv = 1.0 / (alpha - beta)
    v[0] = 1.0
    for t in range(1, x.shape[0]):
        v[t] = x[t] * inv
    return (beta - alpha) / beta, beta


@njit(inline="always", **_JIT_SUMS)
def _block_times(a, lo, c0, v_all, tau, p_all):
    """p_all[lo:] <- tau B v for the block B = a[lo:, lo:], each row from column c0
    (v is zero before lo), four rows per pass over v."""
    k = a.shape[0]
    n, t = k - c0, lo
    v = v_all[c0:]
    while t + 4 <= k:
        r0, r1, r2, r3 = a[t, c0:], a[t + 1, c0:], a[t + 2, c0:], a[t + 3, c0:]
        s0 = s1 = s2 = s3 = 0.0
        for i in range(n):
            vi = v[i]
            s0 += r0[i] * vi
            s1 += r1[i] * vi
            s2 += r2[i] * vi
            s3 += r3[i] * vi
        p_all[t], p_all[t + 1], p_all[t + 2], p_all[t + 3] = tau * s0, tau * s1, tau * s2, tau * s3
        t += 4
    while t < k:
        row = a[t, c0:]
        acc = 0.0
        for i in range(n):
            acc += row[i] * v[i]
        p_all[t] = tau * acc
        t += 1


@njit(inline="always", **_JIT_SUMS)
def _block_update(a, lo, c0, v_all, w_all):
    """B <- B - v w^T - w v^T for the block B = a[lo:, lo:], each row from column c0
    (v and w are zero before lo), four rows per pass over v and w."""
    k = a.shape[0]
    n, t = k - c0, lo
    v, w = v_all[c0:], w_all[c0:]
    while t + 4 <= k:
        r0, r1, r2, r3 = a[t, c0:], a[t + 1, c0:], a[t + 2, c0:], a[t + 3, c0:]
        v0, v1, v2, v3 = v_all[t], v_all[t + 1], v_all[t + 2], v_all[t + 3]
        w0, w1, w2, w3 = w_all[t], w_all[t + 1], w_all[t + 2], w_all[t + 3]
        for i in range(n):
            wi, vi = w[i], v[i]
            r0[i] -= v0 * wi + w0 * vi
            r1[i] -= v1 * wi + w1 * vi
            r2[i] -= v2 * wi + w2 * vi
            r3[i] -= v3 * wi + w3 * vi
        t += 4
    while t < k:
        row, vt, wt = a[t, c0:], v_all[t], w_all[t]
        for i in range(n):
            row[i] -= vt * w[i] + wt * v[i]
        t += 1


@njit(**_JIT_SUMS)
def tridiagonalize(a, diag, off2):
    """Reduce the symmetric ``a`` (k x k, float64, both triangles, C order; destroyed)
    by Householder reflections to the tridiagonal matrix with diagonal ``diag`` (k) and
    squared off-diagonal ``off2`` (k - 1), as QL takes it.

    Reflector j updates the trailing block B = a[j+1:, j+1:] as B - v w^T - w v^T, with
    w = p - (tau/2)(p.v) v and p = tau B v. The block is kept in full (both triangles),
    so that every loop runs along a contiguous row; rows go four at a time (one load of
    v and w for four rows), and every row loop starts at a column c0 that is a multiple
    of 8 -- a whole number of AVX-512 vectors, where a loop of a few dozen from any
    column spends much of its time in scalar remainders. The columns c0..j of the
    block's rows are never read again; zeros in v and w leave them as they are."""
    k = a.shape[0]
    v_all, w_all = np.zeros(k), np.zeros(k)
    for j in range(k - 2):
        diag[j] = a[j, j]
        lo = j + 1
        tau, beta = _reflector(a[j, lo:], v_all[lo:])
        off2[j] = beta * beta
        if tau == 0.0:
            continue
        c0 = lo - lo % 8
        v_all[c0:lo] = 0.0
        w_all[c0:lo] = 0.0
        _block_times(a, lo, c0, v_all, tau, w_all)  # p = tau B v, in w
        v, w = v_all[c0:], w_all[c0:]
        dot = 0.0
        for i in range(k - c0):
            dot += w[i] * v[i]
        half = -0.5 * tau * dot
        for i in range(k - c0):
            w[i] += half * v[i]
        _block_update(a, lo, c0, v_all, w_all)
    if k >= 2:
        diag[k - 2] = a[k - 2, k - 2]
        off2[k - 2] = a[k - 2, k - 1] * a[k - 2, k - 1]
    if k >= 1:
        diag[k - 1] = a[k - 1, k - 1]


@njit(**_JIT)
def _next_sweep(d, e2, lo, sweeps):
    """Plan lane's next QL sweep on the tridiagonal (d, e2), eigenvalues before ``lo``
    converged: (lo, hi, shift, sweeps) of the next unreduced block lo..hi, hi = -1
    when every eigenvalue has converged, -2 when one took more than MAX_SWEEPS."""
    n = d.shape[0]
    last = np.uint64(n - 1)
    while lo < n:
        u = np.uint64(lo)  # unsigned: no wrapping of negative indices (see the QL loop)
        while u < last and e2[u] > _EPS2 * abs(d[u]) * abs(d[u + _ONE]) and e2[u] > _TINY:
            u += _ONE
        hi = np.int64(u)
        if hi > lo:
            if sweeps == MAX_SWEEPS:
                return lo, -2, 0.0, sweeps
            root = np.sqrt(e2[lo])  # shift: the eigenvalue of the leading 2 x 2 nearer d[lo]
            g = (d[lo + 1] - d[lo]) / (2.0 * root)
            r = np.hypot(g, 1.0)
            return lo, hi, d[lo] - root / (g + (r if g >= 0.0 else -r)), sweeps + 1
        lo += 1  # d[lo] has converged
        sweeps = 0
    return lo, -1, 0.0, 0


@njit(inline="always", **_JIT)
def _ql_step(alpha, bb, shift, c, s, gamma, p):
    """Step i of a root-free QL sweep on a tridiagonal (d, e2), from alpha = d[i], bb =
    e2[i] and the sweep's carried (c, s, gamma, p): returns the new carried values, then
    e2[i + 1] (to store on every step but the sweep's first) and d[i + 1]. Scalars
    only: an inlined array argument costs reference counts that numba does not always
    prune.

    With r = p + e2[i], the step is c' = p / r, s' = e2[i] / r, gamma' = X / r and
    p' = gamma'^2 / c' = X^2 / (r p), X = p (d[i] - shift) - e2[i] gamma: all from the
    one reciprocal 1 / (r p). Divisions are what the steps wait on; the textbook form
    takes three. A tiny or zero r p takes that form."""
    r = p + bb
    up = s * r
    rp = r * p
    if rp > _SMALL:
        w = 1.0 / rp
        x = p * (alpha - shift) - bb * gamma
        inv_r = p * w
        g_next = x * inv_r
        return p * inv_r, bb * inv_r, g_next, x * x * w, up, gamma + (alpha - g_next)
    c_next = p / r
    s_next = bb / r
    g_next = c_next * (alpha - shift) - s_next * gamma
    p_next = g_next * g_next / c_next if c_next != 0.0 else c * bb
    return c_next, s_next, g_next, p_next, up, gamma + (alpha - g_next)


@njit(**_JIT)
def _sweep_start(d, shift, hi, live):
    """The carried (c, s, gamma, p) at the start of a sweep ending at ``hi``."""
    gamma = d[hi] - shift if live else 0.0
    return 1.0, 0.0, gamma, gamma * gamma


@njit(**_JIT)
def tridiagonal_eigenvalues_quad(d0, e0, d1, e1, d2, e2, d3, e3):
    """Eigenvalues of four symmetric tridiagonal matrices (diagonal d, squared
    off-diagonal e; all overwritten, the eigenvalues end in d, unsorted), side by side:
    a step of each in turn, so that each one's division overlaps the others'
    arithmetic (a step waits ~20 cycles on its division; the same bits). Implicit QL from
    the bottom of each unreduced block with the shift of its leading 2 x 2, root-free. An
    empty matrix is skipped. Returns (ok0, ok1, ok2, ok3): False for a matrix one of whose
    eigenvalues took more than MAX_SWEEPS sweeps.

    Row indices are unsigned (here and in _next_sweep's scan): numba wraps a signed
    index (negative from the end), a test and an add per access, and with four lanes'
    shapes held for it registers spilled.

    The four lanes are written out, not looped over or stepped by a helper taking the
    arrays: either puts lane state in memory or reference counts in the inner loop."""
    lo0 = lo1 = lo2 = lo3 = sw0 = sw1 = sw2 = sw3 = 0
    hi0 = hi1 = hi2 = hi3 = 0
    sh0 = sh1 = sh2 = sh3 = 0.0
    while hi0 >= 0 or hi1 >= 0 or hi2 >= 0 or hi3 >= 0:
        n0 = n1 = n2 = n3 = 0
        if hi0 >= 0:
            lo0, hi0, sh0, sw0 = _next_sweep(d0, e0, lo0, sw0)
            n0 = max(hi0 - lo0, 0)
        if hi1 >= 0:
            lo1, hi1, sh1, sw1 = _next_sweep(d1, e1, lo1, sw1)
            n1 = max(hi1 - lo1, 0)
        if hi2 >= 0:
            lo2, hi2, sh2, sw2 = _next_sweep(d2, e2, lo2, sw2)
            n2 = max(hi2 - lo2, 0)
        if hi3 >= 0:
            lo3, hi3, sh3, sw3 = _next_sweep(d3, e3, lo3, sw3)
            n3 = max(hi3 - lo3, 0)
        c0, s0, g0, p0 = _sweep_start(d0, sh0, hi0, n0 > 0)
        c1, s1, g1, p1 = _sweep_start(d1, sh1, hi1, n1 > 0)
        c2, s2, g2, p2 = _sweep_start(d2, sh2, hi2, n2 > 0)
        c3, s3, g3, p3 = _sweep_start(d3, sh3, hi3, n3 > 0)
        for t in range(max(max(n0, n1), max(n2, n3))):
            if t < n0:
                i = np.uint64(hi0 - 1 - t)
                c0, s0, g0, p0, up, d0[i + _ONE] = _ql_step(d0[i], e0[i], sh0, c0, s0, g0, p0)
                if t:
                    e0[i + _ONE] = up
            if t < n1:
                i = np.uint64(hi1 - 1 - t)
                c1, s1, g1, p1, up, d1[i + _ONE] = _ql_step(d1[i], e1[i], sh1, c1, s1, g1, p1)
                if t:
                    e1[i + _ONE] = up
            if t < n2:
                i = np.uint64(hi2 - 1 - t)
                c2, s2, g2, p2, up, d2[i + _ONE] = _ql_step(d2[i], e2[i], sh2, c2, s2, g2, p2)
                if t:
                    e2[i + _ONE] = up
            if t < n3:
                i = np.uint64(hi3 - 1 - t)
                c3, s3, g3, p3, up, d3[i + _ONE] = _ql_step(d3[i], e3[i], sh3, c3, s3, g3, p3)
                if t:
                    e3[i + _ONE] = up
        if n0 > 0:
            e0[lo0], d0[lo0] = s0 * p0, sh0 + g0
        if n1 > 0:
            e1[lo1], d1[lo1] = s1 * p1, sh1 + g1
        if n2 > 0:
            e2[lo2], d2[lo2] = s2 * p2, sh2 + g2
        if n3 > 0:
            e3[lo3], d3[lo3] = s3 * p3, sh3 + g3
    return hi0 == -1, hi1 == -1, hi2 == -1, hi3 == -1


@njit(**_JIT)
def reduce_scaled(a, d, e2):
    """Divide the symmetric ``a`` (destroyed) by its largest entry, so that squares
    neither overflow nor underflow, and reduce it to tridiagonal (d, e2); returns the
    divisor (0 for a zero matrix, inf or NaN for a non-finite one: then not reduced)."""
    k = a.shape[0]
    big = 0.0
    for i in range(k):
        for t in range(k):
            big = max(big, abs(a[i, t]))
    if big == 0.0 or not np.isfinite(big):
        return big
    inv = 1.0 / big
    for i in range(k):
        for t in range(k):
            a[i, t] *= inv
    tridiagonalize(a, d, e2)
    return big
