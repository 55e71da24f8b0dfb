"""Fused per-layer pass on H (features x batch, C order): normalisation and activation
in place, in the order the network asks for, returning the float64 sum of squares of
the result (for the rescaling, the log-norm and the non-finite check) in the same pass.

Norms and activations are chosen by integer code (see NORM_CODES, ACTIVATION_CODES) so
that one compiled function serves every network of a dtype. Reductions accumulate in
float64 and may be vectorised (reassociated): results agree with a sequential sum to
float64 rounding, far below the float32 storage.
"""

import numpy as np
from numba import njit

# Sums may be reassociated (vectorised) and multiply-adds fused; no assumption about
# NaN/inf is made, so non-finite values still propagate to the caller's check.
FAST = {"reassoc", "contract"}

NORM_CODES = {"none": 0, "bn": 1, "bn-rms": 2, "ln": 3}
ACTIVATION_CODES = {"linear": 0, "relu": 1, "tanh": 2}


@njit(cache=True, inline="always", fastmath=FAST)
def _activate(x, act):
    if act == 1:
        return x if x > 0 else x * 0
    if act == 2:
        return np.tanh(x)
    return x


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _activate_all(h, act):
    if act == 0:
        return
    d, n = h.shape
    for i in range(d):
        for j in range(n):
            h[i, j] = _activate(h[i, j], act)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _normalize_rows(h, centre, eps):
    """Batch norm over each feature row: (x - mean) / sqrt(var + eps), or the RMS version."""
    d, n = h.shape
    for i in range(d):
        mean = 0.0
        if centre:
            for j in range(n):
                mean += h[i, j]
            mean /= n
        var = 0.0
        for j in range(n):
            c = h[i, j] - mean
            var += c * c
        inv = 1.0 / np.sqrt(var / n + eps)
        for j in range(n):
            h[i, j] = (h[i, j] - mean) * inv


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _normalize_columns(h, eps):
    """Layer norm over the features of each sample (column): centred, biased variance."""
    d, n = h.shape
    mean = np.zeros(n)
    var = np.zeros(n)
    for i in range(d):
        for j in range(n):
            mean[j] += h[i, j]
    mean /= d
    for i in range(d):
        for j in range(n):
            c = h[i, j] - mean[j]
            var[j] += c * c
    inv = 1.0 / np.sqrt(var / d + eps)
    for i in range(d):
        for j in range(n):
            h[i, j] = (h[i, j] - mean[j]) * inv[j]


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _normalize(h, norm, eps):
    if norm == 1:
        _normalize_rows(h, True, eps)
    elif norm == 2:
        _normalize_rows(h, False, eps)
    elif norm == 3:
        _normalize_columns(h, eps)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def sum_of_squares(h):
    """Sum of squares of every entry, accumulated in float64 (NaN/inf propagate)."""
    total = 0.0
    d, n = h.shape
    for i in range(d):
        for j in range(n):
            x = np.float64(h[i, j])
            total += x * x
    return total


@njit(cache=True, fastmath=FAST, error_model="numpy")
def normalize_activate(h, norm, act, act_first, eps):
    """In place: h <- act(norm(h)) (or norm(act(h)) when act_first); returns sum of squares."""
    if act_first:
        _activate_all(h, act)
        _normalize(h, norm, eps)
    else:
        _normalize(h, norm, eps)
        _activate_all(h, act)
    return sum_of_squares(h)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def scale(h, factor):
    """In place: h <- factor * h, the product taken in float64 and rounded once."""
    d, n = h.shape
    for i in range(d):
        for j in range(n):
            h[i, j] = h[i, j] * factor
