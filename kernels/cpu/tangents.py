"""A layer's Jacobian applied to a seed's tangents inside the whole-depth kernel (depth.py),
by the thread that runs the seed: the arithmetic of fastrank.tangents.push and
renormalise, compiled, in float64, with nothing allocated per layer.

A thread keeps its K tangents in the rows 1..K of ``t`` ((K + 1) x d*N, float64, each
row a d x N matrix in C order); row 0 holds the layer's input H in float64, so that the
pre-activation x = W H is taken beside the tangents' W T and goes through the same
loops, as push computes both (from the float32 weights and H, in float64). ``b`` of the
same shape takes the products, then the pushed tangents; renormalise takes them back
into ``t``: each row scaled to unit norm, or (K >= 2, every qr_every layers)
re-orthonormalised (modified Gram-Schmidt: numpy's QR up to the signs of Q's columns and
R's diagonal, to rounding).
"""

import numpy as np
from numba import njit

from fastrank.codes import ACT_LINEAR, ACT_RELU, ACT_TANH, NORM_BN, NORM_BN_RMS, NORM_LN
from fastrank.kernels.cpu.layer import column_stats_into

# Sums may be reassociated (vectorised) and multiply-adds fused: float64 rounding, far
# below what the tangents' float32 H determines.
_JIT = {"cache": True, "fastmath": {"reassoc", "contract"}, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _residual(t, b, k, lo, hi, gamma):
    """The residual chain on the entries lo..hi-1 of every row: x <- h + gamma W h and
    each tangent's dx <- t + gamma W t."""
    for m in range(k + 1):
        x, h = b[m, lo:hi], t[m, lo:hi]
        for j in range(x.size):
            x[j] = h[j] + gamma * x[j]


@njit(inline="always", **_JIT)
def _activate(b, k, lo, hi, act, slope):
    """The activation before the norm, on the entries lo..hi-1: x (row 0 of ``b``) <-
    act(x), each tangent's (rows 1..k) times the activation's derivative at x (ReLU's
    mask, 1 - tanh^2), kept in ``slope``. Loops run over slices from 0, so that they
    vectorise."""
    x = b[0, lo:hi]
    if act == ACT_LINEAR:
        return
    if act == ACT_RELU:
        for j in range(x.size):
            slope[j] = 1.0 if x[j] > 0.0 else 0.0
            x[j] = max(x[j], 0.0)
    else:
        for j in range(x.size):
            y = np.tanh(x[j])
            x[j] = y
            slope[j] = 1.0 - y * y
    for m in range(1, k + 1):
        dx = b[m, lo:hi]
        for j in range(x.size):
            dx[j] *= slope[j]


@njit(inline="always", **_JIT)
def _slope(y, act, slope):
    """slope <- the derivative of the activation after the norm at y (1 for linear)."""
    for j in range(y.size):
        if act == ACT_RELU:
            slope[j] = 1.0 if y[j] > 0.0 else 0.0
        elif act == ACT_TANH:
            z = np.tanh(y[j])
            slope[j] = 1.0 - z * z
        else:
            slope[j] = 1.0


@njit(inline="always", **_JIT)
def _finish(b, k, lo, hi, act, slope, sums):
    """The activation after the norm, on the entries lo..hi-1: each tangent times its
    derivative at y (row 0), and the squares of the results added to ``sums`` (K,)."""
    _slope(b[0, lo:hi], act, slope)
    for m in range(1, k + 1):
        dx = b[m, lo:hi]
        total = 0.0
        for j in range(dx.size):
            dx[j] *= slope[j]
            total += dx[j] * dx[j]
        sums[m - 1] += total


@njit(inline="always", **_JIT)
def _normalise_row(b, k, lo, hi, centre, eps, act, slope, sums):
    """Batch norm over the samples of one feature (the entries lo..hi-1 of each row),
    then the activation: x <- y = (x - mean x) / s and each tangent's dx <- act'(y)
    (dx - mean dx - y mean(y dx)) / s (bn-rms, ``centre`` False, without the means of
    centring), the squares of the results added to ``sums`` (K,). Divisions by s are
    multiplications by 1 / s (a division did not vectorise)."""
    x = b[0, lo:hi]
    n = x.size
    mean = 0.0
    if centre:
        for j in range(n):
            mean += x[j]
        mean /= n
    var = 0.0
    for j in range(n):
        c = x[j] - mean
        var += c * c
    inv = 1.0 / np.sqrt(var / n + eps)
    for j in range(n):
        x[j] = (x[j] - mean) * inv
    _slope(x, act, slope)
    for m in range(1, k + 1):
        dx = b[m, lo:hi]
        dmean = 0.0
        ydx = 0.0
        for j in range(n):
            dmean += dx[j]
            ydx += x[j] * dx[j]
        dmean = dmean / n if centre else 0.0
        ydx /= n
        total = 0.0
        for j in range(n):
            dx[j] = (dx[j] - dmean - x[j] * ydx) * inv * slope[j]
            total += dx[j] * dx[j]
        sums[m - 1] += total


@njit(**_JIT)
def _normalise_columns(b, k, d, n, eps, cols):
    """Layer norm over the features of each sample (the columns of each row's d x N):
    as _normalise_row, the statistics per column, in rows 1.. of ``cols`` ((3 + 2k) x N
    scratch)."""
    mean, inv = cols[1], cols[2]
    x = b[0].reshape((d, n))
    column_stats_into(x, eps, mean, inv)
    for i in range(d):
        for j in range(n):
            x[i, j] = (x[i, j] - mean[j]) * inv[j]
    for m in range(1, k + 1):
        dx = b[m].reshape((d, n))
        dmean, ydx = cols[2 * m + 1], cols[2 * m + 2]
        dmean[:] = 0.0
        ydx[:] = 0.0
        for i in range(d):
            for j in range(n):
                dmean[j] += dx[i, j]
                ydx[j] += x[i, j] * dx[i, j]
        dmean /= d
        ydx /= d
        for i in range(d):
            for j in range(n):
                dx[i, j] = (dx[i, j] - dmean[j] - x[i, j] * ydx[j]) * inv[j]


@njit(**_JIT)
def push(w, h, w64, t, b, sums, gamma, norm, act, act_first, eps, cols):
    """The layer's Jacobian at input ``h`` (d x N float32) with weights ``w`` (d x d
    float32) applied to the tangents in rows 1.. of ``t``, into the same rows of ``b``
    (fastrank.tangents.push), and their squared norms into ``sums`` (K,). ``w64`` (d x d)
    and row 0 of ``t`` and ``b`` are scratch; ``cols`` too, (3 + 2K) x N (the
    activation's derivative, layer norm's statistics). A feature (a row of each d x N)
    at a time where the norm allows, so that its values stay in cache from the product
    to the norm."""
    d, n = h.shape
    k = t.shape[0] - 1
    h64 = t[0].reshape((d, n))
    for i in range(d):
        for j in range(d):
            w64[i, j] = w[i, j]
        for j in range(n):
            h64[i, j] = h[i, j]
    for m in range(k + 1):
        np.dot(w64, t[m].reshape((d, n)), b[m].reshape((d, n)))  # BLAS dgemm
    residual = np.isfinite(gamma)
    pre = act if act_first else ACT_LINEAR  # the activation before the norm
    post = ACT_LINEAR if act_first else act  # and after it
    slope = cols[0]
    sums[:] = 0.0
    for i in range(d):
        lo, hi = i * n, (i + 1) * n
        if residual:
            _residual(t, b, k, lo, hi, gamma)
        _activate(b, k, lo, hi, pre, slope)
        if norm == NORM_BN or norm == NORM_BN_RMS:
            _normalise_row(b, k, lo, hi, norm == NORM_BN, eps, post, slope, sums)
        elif norm != NORM_LN:
            _finish(b, k, lo, hi, post, slope, sums)
    if norm == NORM_LN:  # its statistics span every feature
        _normalise_columns(b, k, d, n, eps, cols)
        for i in range(d):
            _finish(b, k, i * n, (i + 1) * n, post, slope, sums)


@njit(**_JIT)
def renormalise(t, b, sums, log, qr):
    """Take the pushed tangents (rows 1.. of ``b``, their squared norms ``sums``) back
    into rows 1.. of ``t``, their logs added to ``log`` (K,)
    (fastrank.tangents.renormalise): each scaled to unit norm and the log of its norm
    added, and with ``qr`` first made orthogonal to those before it (modified
    Gram-Schmidt: the norms are then R's diagonal, as QR gives it up to signs). A
    direction the layer annihilated adds -inf and stays zero. With ``qr``, ``b``'s rows
    are overwritten."""
    k = t.shape[0] - 1
    for m in range(1, k + 1):
        x, q = b[m], t[m]
        total = sums[m - 1]
        if qr and m > 1:  # its norm after the projections
            total = 0.0
            for j in range(x.size):
                total += x[j] * x[j]
        norm = np.sqrt(total)
        log[m - 1] += np.log(norm)
        inv = 1.0 / norm if norm > 0.0 else 1.0
        for j in range(x.size):
            q[j] = x[j] * inv
        if not qr:
            continue
        for later in range(m + 1, k + 1):
            y = b[later]
            r = 0.0
            for j in range(y.size):
                r += q[j] * y[j]
            for j in range(y.size):
                y[j] -= r * q[j]
