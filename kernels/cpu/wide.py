"""Whole stretches of depth for one wide network, its rows shared among the threads.

Past the widths where each thread takes a network of its own (depth.py), a layer run
through numpy's BLAS alternates two thread pools: numba's for the weights and the
normalisation pass, OpenBLAS's for the GEMM, and on few cores each pool's spinning
threads slow the other's. Here every layer is one parallel region of numba's threads, each
taking a block of rows: those rows of the weights (the Philox stream from the block's
offset), their sgemm with one BLAS thread, and the residual, normalisation and
activation of those rows with their sums of squares (batch norm's statistics are per
row). The sums are added in row order, so the numbers do not depend on the threads.
"""

import numpy as np
from numba import njit, prange

from fastrank.kernels.cpu.depth import book
from fastrank.kernels.cpu.layer import pass_rows
from fastrank.kernels.cpu.philox import NORMAL_SCRATCH, normals_f32_at


@njit(cache=True, parallel=True)
def advance(h, spare, w, seeds, s, start, stop, stream, w_scale, gamma, norm, act,
            act_first, eps, rescale, log_norm, failed_layer, reason, blocks):
    """Advance network ``s`` of a batch (seed ``seeds[s]``), H = ``h`` (d x N float32,
    updated in place), from layer ``start`` to ``stop``, its rows in ``blocks`` blocks
    (one per numba thread); ``spare`` (d x N) and ``w`` (d x d) are work buffers.

    Weights, residual, norms, activations, rescaling, ``log_norm``, ``failed_layer`` and
    ``reason`` (indexed by ``s``) as in depth.advance; not layer norm.
    """
    d, n = h.shape
    blocks = max(1, min(blocks, d))
    rows = (d + blocks - 1) // blocks
    sums = np.empty(d)
    scratch = np.empty((blocks, NORMAL_SCRATCH), np.uint32)  # each block's normals
    cur, z = h, spare  # H and the next layer's buffer swap roles every layer
    in_h = True
    for layer in range(start + 1, stop + 1):
        for b in prange(blocks):
            lo = b * rows
            hi = min(d, lo + rows)
            if lo < hi:
                wb = w[lo:hi]
                flat = wb.reshape(-1)
                normals_f32_at(flat, seeds[s], stream, np.uint32(layer), lo * d, scratch[b])
                for k in range(flat.size):
                    flat[k] *= w_scale
                np.dot(wb, cur, z[lo:hi])  # BLAS sgemm on this block of rows
                if np.isfinite(gamma):
                    for i in range(lo, hi):
                        for j in range(n):
                            z[i, j] = cur[i, j] + np.float32(gamma) * z[i, j]
                pass_rows(z, lo, hi, norm, act, act_first, eps, sums)
        sumsq = 0.0
        for i in range(d):
            sumsq += sums[i]
        if not book(sumsq, layer, s, rescale, log_norm, failed_layer, reason):
            break
        if rescale:
            factor = 1.0 / np.sqrt(sumsq)
            for i in prange(d):
                for j in range(n):
                    z[i, j] = z[i, j] * factor
        cur, z = z, cur
        in_h = not in_h
    if not in_h:  # one copy per call, not one per layer
        h[:, :] = cur


@njit(cache=True, parallel=True)
def rows_product(a, b, out, blocks):
    """``out`` <- a b, the rows of ``a`` (and ``out``) in ``blocks`` blocks, one per numba
    thread, each a BLAS product with one BLAS thread: the Gram matrix of a wide layer
    for its Gram-tier statistics, on the threads that run the layers (through numpy's
    BLAS, OpenBLAS's threads would wake for it and then spin through the next layer)."""
    k = a.shape[0]
    blocks = max(1, min(blocks, k))
    rows = (k + blocks - 1) // blocks
    for i in prange(blocks):
        lo = i * rows
        hi = min(k, lo + rows)
        if lo < hi:
            np.dot(a[lo:hi], b, out[lo:hi])
