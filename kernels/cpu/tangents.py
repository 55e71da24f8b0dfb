"""A layer's Jacobian applied to the tangents of a float32 network, compiled: the
arithmetic of fastrank.tangents.push and renormalise in float32, with nothing allocated
per feature. The whole-depth kernel (depth.py) runs it in the thread that runs the seed
(``rows``); the CPU backend's per-layer path runs the same pass with the features shared
among numba's threads (``rows_parallel``: a feature's numbers do not depend on the thread
that takes it, though the two builds may order its float32 sums differently).

A seed's K tangents ``t`` (K x d_in x N) go through the layer's weights by K SGEMMs,
taken by the caller, into ``b`` (K x d_out x N). The layer's own pre-activation ``x``
(d_out x N: W H, or H + gamma W H) is the forward's Z, copied before the forward's
normalisation overwrote it, so W H is not taken a second time; the pass uses ``x`` as
scratch. The rest runs a feature (a row of every d x N) at a time where the norm allows,
so that the K rows stay in cache from the residual to the norm: the activation's
derivative (ReLU's mask, 1 - tanh^2) and the normalisation's (batch norm's couples the
samples), the squared norm of each tangent's row into ``sq`` (d_out x K). renormalise
then takes the pushed tangents to unit norm in place: each scaled, or (K >= 2, every
qr_every layers) re-orthonormalised (modified Gram-Schmidt: numpy's QR up to the signs
of Q's columns and R's diagonal, to rounding).

Tangents are float32, the network's own precision: its weights, H and Z are float32, so
its Jacobian is known to float32's rounding and no better. The statistics of the
pre-activation are float64; a tangent's sums over a feature's N samples (its means and
squared norm there) and Gram-Schmidt's dot products over _BLOCK entries are float32,
float64 from there on (a few float32 units of error, that of the values summed); the
logs of the norms are float64 totals. Each layer changes a tangent by float32 rounding,
about 1e-7 relative, which the renormalisation keeps from growing with depth.
"""

import numpy as np
from numba import njit, prange

from fastrank.codes import ACT_LINEAR, ACT_RELU, ACT_TANH, NORM_BN, NORM_BN_RMS, NORM_LN
from fastrank.kernels.cpu.layer import column_stats_into

# Sums may be reassociated (vectorised) and multiply-adds fused: rounding at the
# precision of each accumulator.
_JIT = {"cache": True, "fastmath": {"reassoc", "contract"}, "error_model": "numpy"}

#: Features per task of rows_parallel (and per scratch allocation of rows).
_FEATURES = 32

#: Entries of a tangent that Gram-Schmidt's dot products sum in float32 before float64.
_BLOCK = 1024


@njit(inline="always", **_JIT)
def _activate(x, i, act, work, s):
    """Row i of x <- act(x) in place and row s of ``work`` <- the activation's derivative
    there (ReLU's mask, 1 - tanh^2). Rows are indexed, not sliced, in the loops here: a
    view per row and tangent costs more than its arithmetic at small widths."""
    if act == ACT_RELU:
        for j in range(x.shape[1]):
            work[s, j] = 1.0 if x[i, j] > 0.0 else 0.0
            x[i, j] = max(x[i, j], 0.0)
    elif act == ACT_TANH:
        for j in range(x.shape[1]):
            y = np.tanh(x[i, j])
            x[i, j] = y
            work[s, j] = 1.0 - y * y


@njit(inline="always", **_JIT)
def _slope(y, i, act, scale, work, s):
    """Row s of ``work`` <- ``scale`` times the derivative of the activation at row i of
    y (1 for linear)."""
    if act == ACT_RELU:
        for j in range(y.shape[1]):
            work[s, j] = scale if y[i, j] > 0.0 else 0.0
    elif act == ACT_TANH:
        for j in range(y.shape[1]):
            z = np.tanh(y[i, j])
            work[s, j] = scale * (1.0 - z * z)
    else:
        for j in range(y.shape[1]):
            work[s, j] = scale


@njit(inline="always", **_JIT)
def _residual_and_pre(t, b, i, gamma, pre, work, s):
    """Row i of each tangent's product: dx <- t + gamma W t where gamma is finite, then
    times the derivative (row s of ``work``) of the activation before the norm
    (``pre``)."""
    for m in range(b.shape[0]):
        if np.isfinite(gamma):
            g = np.float32(gamma)
            for j in range(b.shape[2]):
                b[m, i, j] = t[m, i, j] + g * b[m, i, j]
        if pre != ACT_LINEAR:
            for j in range(b.shape[2]):
                b[m, i, j] *= work[s, j]


@njit(inline="always", **_JIT)
def _stats(x, i, centre, eps):
    """Batch norm's mean (0 uncentred) and 1 / s of row i, in float64 (two passes)."""
    n = x.shape[1]
    mean = 0.0
    if centre:
        for j in range(n):
            mean += x[i, j]
        mean /= n
    var = 0.0
    for j in range(n):
        c = x[i, j] - mean
        var += c * c
    return mean, 1.0 / np.sqrt(var / n + eps)


@njit(inline="always", **_JIT)
def _feature(i, x, t, b, sq, gamma, norm, pre, post, eps, work, coef):
    """Feature i of every tangent, for the norms whose statistics are the row's own
    (none, bn, bn-rms): x <- y = (x - mean x) / s (after the activation ``pre``) and
    each tangent's dx <- post'(y) (dx - mean dx - y mean(y dx)) / s (bn-rms without the
    means of centring, none without the norm), the squares of each result summed into
    sq[i]. Every tangent's means are taken before any is used, so that their sums
    overlap. ``work`` (2 x N) and ``coef`` (2 x K): float32 scratch."""
    n = x.shape[1]
    if pre != ACT_LINEAR:
        _activate(x, i, pre, work, 1)
    _residual_and_pre(t, b, i, gamma, pre, work, 1)
    batch = norm == NORM_BN or norm == NORM_BN_RMS
    mean, inv = _stats(x, i, norm == NORM_BN, eps) if batch else (0.0, 1.0)
    if batch:
        for j in range(n):
            x[i, j] = (x[i, j] - mean) * inv
    _slope(x, i, post, np.float32(inv), work, 0)  # post'(y) / s
    coef[:, :] = 0.0
    if batch:
        for m in range(b.shape[0]):
            dmean, ydx = np.float32(0.0), np.float32(0.0)
            for j in range(n):
                dmean += b[m, i, j]
                ydx += x[i, j] * b[m, i, j]
            coef[0, m] = dmean / np.float32(n) if norm == NORM_BN else np.float32(0.0)
            coef[1, m] = ydx / np.float32(n)
    for m in range(b.shape[0]):
        shift, along = coef[0, m], coef[1, m]
        total = np.float32(0.0)
        for j in range(n):
            v = (b[m, i, j] - shift - x[i, j] * along) * work[0, j]
            b[m, i, j] = v
            total += v * v
        sq[i, m] = total


@njit(**_JIT)
def _columns(x, t, b, sq, gamma, pre, post, eps):
    """Layer norm over the features of each sample (the columns of every d x N): as
    _feature, its statistics per column, so each tangent whole at a time."""
    d, n = x.shape
    work = np.empty((2, n), np.float32)
    cols = np.empty((4, n))  # the columns' mean, 1 / s, and a tangent's mean dx, mean(y dx)
    mean, inv, dmean, ydx = cols[0], cols[1], cols[2], cols[3]
    for i in range(d):
        if pre != ACT_LINEAR:
            _activate(x, i, pre, work, 0)
        _residual_and_pre(t, b, i, gamma, pre, work, 0)
    column_stats_into(x, eps, mean, inv)
    for i in range(d):
        for j in range(n):
            x[i, j] = (x[i, j] - mean[j]) * inv[j]
    for m in range(b.shape[0]):
        dx = b[m]
        dmean[:] = 0.0
        ydx[:] = 0.0
        for i in range(d):
            for j in range(n):
                dmean[j] += dx[i, j]
                ydx[j] += np.float64(x[i, j]) * dx[i, j]
        dmean /= d
        ydx /= d
        for i in range(d):
            for j in range(n):
                dx[i, j] = (dx[i, j] - dmean[j] - x[i, j] * ydx[j]) * inv[j]
    for i in range(d):
        _slope(x, i, post, np.float32(1.0), work, 1)
        for m in range(b.shape[0]):
            total = np.float32(0.0)
            for j in range(n):
                v = b[m, i, j] * work[1, j]
                b[m, i, j] = v
                total += v * v
            sq[i, m] = total


def _rows(x, t, b, sq, gamma, norm, act, act_first, eps):
    """The layer's Jacobian after its product (fastrank.tangents.push): the pushed
    tangents in the first d rows of ``b`` (K x d' x N, float32, holding W T), their
    squared norms per feature in ``sq`` (d x K, float64). ``t`` (K x d' x N): the
    tangents (for the residual chain, ``gamma`` finite); ``x`` (d x N, float32): the
    layer's pre-activation, overwritten. Rows of ``b`` and ``t`` past d are left alone
    (depth.py keeps a spare one). The features, _FEATURES at a time, in prange."""
    d, n = x.shape
    pre = act if act_first else ACT_LINEAR  # the activation before the norm
    post = ACT_LINEAR if act_first else act  # and after it
    if norm == NORM_LN:  # its statistics span every feature
        _columns(x, t, b, sq, gamma, pre, post, eps)
        return
    for task in prange((d + _FEATURES - 1) // _FEATURES):
        work, coef = np.empty((2, n), np.float32), np.empty((2, b.shape[0]), np.float32)
        for i in range(task * _FEATURES, min(d, (task + 1) * _FEATURES)):
            _feature(i, x, t, b, sq, gamma, norm, pre, post, eps, work, coef)


# Two builds of one pass: in the whole-depth kernel's thread (a parallel region inside
# its own would abort numba's workqueue layer), and across numba's threads.
rows = njit(**_JIT)(_rows)
rows_parallel = njit(parallel=True, **_JIT)(_rows)


@njit(inline="always", **_JIT)
def _dot(x, y):
    """x . y of two rows: float32 over each _BLOCK of entries, float64 over the blocks."""
    total = 0.0
    for lo in range(0, x.size, _BLOCK):
        xs, ys = x[lo:lo + _BLOCK], y[lo:lo + _BLOCK]
        part = np.float32(0.0)
        for j in range(xs.size):
            part += xs[j] * ys[j]
        total += part
    return total


@njit(inline="always", **_JIT)
def _subtract(r, x, y):
    """y <- y - r x for two rows; returns y . y afterwards (summed as _dot)."""
    total = 0.0
    for lo in range(0, x.size, _BLOCK):
        xs, ys = x[lo:lo + _BLOCK], y[lo:lo + _BLOCK]
        part = np.float32(0.0)
        for j in range(xs.size):
            v = ys[j] - r * xs[j]
            ys[j] = v
            part += v * v
        total += part
    return total


@njit(**_JIT)
def renormalise(b, sq, log, qr):
    """Take the pushed tangents (the first d rows of each of ``b``, K x d' x N float32;
    ``sq``, their squared norms per feature, d x K) to unit norm in place, the logs of
    their norms added to ``log`` (K,) (fastrank.tangents.renormalise): each scaled, and
    with ``qr`` first made orthogonal to those before it (modified Gram-Schmidt: the
    norms are then R's diagonal, as QR gives it up to signs). A direction the layer
    annihilated adds -inf and stays zero."""
    k, d, size = b.shape[0], sq.shape[0], sq.shape[0] * b.shape[2]
    totals = np.zeros(k)  # squared norms (with qr after the projections)
    for m in range(k):
        for i in range(d):
            totals[m] += sq[i, m]
    for m in range(k):
        norm = np.sqrt(totals[m])
        log[m] += np.log(norm)
        inv = np.float32(1.0 / norm) if norm > 0.0 else np.float32(1.0)
        q = b[m, :d].reshape(size)
        for j in range(size):
            q[j] *= inv
        if qr:
            for later in range(m + 1, k):
                y = b[later, :d].reshape(size)
                totals[later] = _subtract(np.float32(_dot(q, y)), q, y)
