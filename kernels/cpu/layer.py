"""Fused per-layer pass on H (features x batch, C order): normalisation and activation
in place, in the order the network asks for, returning the float64 sum of squares of
the result (for the rescaling, the log-norm and the non-finite check) in the same pass.

Norms and activations are chosen by integer code (fastrank.codes) so that one compiled
function serves every network of a dtype. Reductions accumulate in
float64 and may be vectorised (reassociated): results agree with a sequential sum to
float64 rounding, far below the float32 storage.
"""

import numpy as np
from numba import njit, prange

from fastrank.codes import ACT_LINEAR, ACT_RELU, ACT_TANH, NORM_BN, NORM_BN_RMS, NORM_LN

# Sums may be reassociated (vectorised) and multiply-adds fused; no assumption about
# NaN/inf is made, so non-finite values still propagate to the caller's check.
FAST = {"reassoc", "contract"}



_JIT = {"cache": True, "fastmath": FAST, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _activate(x, act):
    if act == ACT_RELU:
        return x if x > 0 else x * 0
    if act == ACT_TANH:
        return np.tanh(x)
    return x


@njit(**_JIT)
def _column_stats(h, eps):
    """Layer norm's per-sample (column) mean and 1/sqrt(var + eps) over the features."""
    n = h.shape[1]
    mean, inv = np.empty(n), np.empty(n)
    column_stats_into(h, eps, mean, inv)
    return mean, inv


@njit(**_JIT)
def column_stats_into(h, eps, mean, inv):
    """_column_stats into the given float64 arrays (no allocation)."""
    d, n = h.shape
    mean[:] = 0.0
    inv[:] = 0.0
    for i in range(d):
        for j in range(n):
            mean[j] += h[i, j]
    mean /= d
    for i in range(d):
        for j in range(n):
            c = h[i, j] - mean[j]
            inv[j] += c * c
    for j in range(n):
        inv[j] = 1.0 / np.sqrt(inv[j] / d + eps)


@njit(inline="always", **_JIT)
def _affine_activate(row, shift, scale_, act):
    """row <- act((row - shift) * scale_), each value rounded to the row's dtype before the
    activation; returns the float64 sum of squares of the result. One loop per
    activation, so that each is a straight vectorisable loop."""
    total = 0.0
    if act == ACT_RELU:
        for j in range(row.shape[0]):
            row[j] = (row[j] - shift) * scale_
            y = row[j] if row[j] > 0 else row[j] * 0
            row[j] = y
            total += np.float64(y) * np.float64(y)
    elif act == ACT_TANH:
        for j in range(row.shape[0]):
            row[j] = (row[j] - shift) * scale_
            y = np.tanh(row[j])
            row[j] = y
            total += np.float64(y) * np.float64(y)
    else:
        for j in range(row.shape[0]):
            row[j] = (row[j] - shift) * scale_
            y = row[j]
            total += np.float64(y) * np.float64(y)
    return total


@njit(inline="always", **_JIT)
def _batch_norm_stats(row, norm, eps):
    """Batch norm's (shift, scale) of a row: x -> (x - shift) * scale."""
    # one pass for both moments, about a sample of the row (its first value): the
    # variance then cancels only (mean - x0)^2 / var, a few units, in float64
    n = row.shape[0]
    x0 = np.float64(row[0]) if norm == NORM_BN else 0.0
    s1 = 0.0
    s2 = 0.0
    for j in range(n):
        c = row[j] - x0
        s1 += c
        s2 += c * c
    m1 = s1 / n if norm == NORM_BN else 0.0
    var = max(s2 / n - m1 * m1, 0.0)
    return x0 + m1, 1.0 / np.sqrt(var + eps)


def _row_pass(h, i, norm, act, act_first, eps, mean, inv):
    """The fused pass on row (feature) i of H, in place; its float64 sum of squares.
    Batch norm is (x - mean) / sqrt(var + eps) over the batch (biased variance, as
    torch's BatchNorm1d in training mode), or x / sqrt(mean(x^2) + eps) uncentred.
    ``mean``, ``inv``: layer norm's per-sample statistics (unused by the other norms,
    whose statistics are the row's own: rows can be passed by different threads)."""
    row = h[i]
    if act_first and norm != NORM_LN and act != ACT_LINEAR:
        _affine_activate(row, 0.0, 1.0, act)
    post = act if not act_first else ACT_LINEAR  # the activation after the norm
    if norm == NORM_BN or norm == NORM_BN_RMS:
        shift, scale_ = _batch_norm_stats(row, norm, eps)
        return _affine_activate(row, shift, scale_, post)
    if norm == NORM_LN:
        total = 0.0
        for j in range(row.shape[0]):
            row[j] = (row[j] - mean[j]) * inv[j]
            y = _activate(row[j], post)
            row[j] = y
            total += np.float64(y) * np.float64(y)
        return total
    return _affine_activate(row, 0.0, 1.0, post)


# Two builds: a call for the row-parallel loops (inlined into _normalize_activate, the
# serial build launched a parallel region of its own inside the depth kernel's, which
# numba's workqueue layer aborts on) and inlined into rows_in_place's loop (a call per
# row of 64 cost 8% of a layer).
row_pass = njit(**_JIT)(_row_pass)
_row_pass_inlined = njit(inline="always", **_JIT)(_row_pass)


def _normalize_activate(h, norm, act, act_first, eps):
    """In place: h <- act(norm(h)) (or norm(act(h)) when act_first); returns the float64
    sum of squares. Row by row (rows are features); per-row sums are added in row order,
    so the result does not depend on the thread count."""
    d, n = h.shape
    mean = np.zeros(n)
    inv = np.ones(n)
    if norm == NORM_LN:  # layer norm needs every row before any row can be normalised
        if act_first and act != ACT_LINEAR:
            for i in prange(d):
                for j in range(n):
                    h[i, j] = _activate(h[i, j], act)
        mean, inv = _column_stats(h, eps)
    sums = np.empty(d)
    for i in prange(d):
        sums[i] = row_pass(h, i, norm, act, act_first, eps, mean, inv)
    total = 0.0
    for i in range(d):
        total += sums[i]
    return total


@njit(**_JIT)
def pass_rows(h, lo, hi, norm, act, act_first, eps, sums):
    """The fused pass on rows lo..hi-1 of H (any norm but layer norm, whose statistics
    span all rows), each row's sum of squares into ``sums``: one thread's share of a
    layer whose rows are split among threads (wide.py)."""
    unused = np.zeros(0)
    for i in range(lo, hi):
        sums[i] = row_pass(h, i, norm, act, act_first, eps, unused, unused)


#: One source, two builds: serial for small matrices (and for layer norm in the
#: whole-depth kernel, already one network per thread), parallel over rows for wide
#: layers.
normalize_activate = njit(**_JIT)(_normalize_activate)
normalize_activate_parallel = njit(parallel=True, **_JIT)(_normalize_activate)


@njit(**_JIT)
def rows_in_place(h, norm, act, act_first, eps, work):
    """normalize_activate for one thread that owns H (the whole-depth kernel): rows
    one after another, nothing allocated (``work``: 3 x d float64 of scratch), the same
    numbers; layer norm, whose statistics span all rows, goes the general way. Batch
    norm takes every row's statistics first, then normalises the rows, so that no row
    waits on its own sums, square root and division."""
    if norm == NORM_LN:
        return normalize_activate(h, norm, act, act_first, eps)
    sums = work[0]
    if norm == NORM_BN or norm == NORM_BN_RMS:
        shift, scale_ = work[1], work[2]
        for i in range(h.shape[0]):
            if act_first and act != ACT_LINEAR:
                _affine_activate(h[i], 0.0, 1.0, act)
            shift[i], scale_[i] = _batch_norm_stats(h[i], norm, eps)
        post = act if not act_first else ACT_LINEAR
        for i in range(h.shape[0]):
            sums[i] = _affine_activate(h[i], shift[i], scale_[i], post)
    else:
        unused = sums[:0]
        for i in range(h.shape[0]):
            sums[i] = _row_pass_inlined(h, i, norm, act, act_first, eps, unused, unused)
    total = 0.0
    for i in range(h.shape[0]):  # in row order, as _normalize_activate adds them
        total += sums[i]
    return total


@njit(**_JIT)
def sum_of_squares(h):
    """Sum of squares of every entry, accumulated in float64 (NaN/inf propagate)."""
    total = 0.0
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            x = np.float64(h[i, j])
            total += x * x
    return total


@njit(**_JIT)
def scale(h, factor):
    """In place: h <- factor * h, the product taken in float64 and rounded once."""
    d, n = h.shape
    for i in range(d):
        for j in range(n):
            h[i, j] = h[i, j] * factor

