"""The GPU's memory plan: what a batch of seeds of a network holds on the device at its
peak, and so how many seeds a batch may take from the device's free memory (the backend
splits bigger groups; the pre-flight refuses a network one seed of which does not fit)."""

from __future__ import annotations

import math

import numpy as np

from fastrank import measures, tuning
from fastrank.gpu.cublas import WORKSPACE_BYTES
from fastrank.spec import Network

#: Thresholds of rank_tau the memory plan allows for in a measured stretch's buffer.
PLANNED_TAUS = 16

#: Headroom of the memory plan over its inventory: CuPy's pool rounds every allocation
#: up (to 512 bytes) and a freed block fits only what is no larger.
PLAN_MARGIN = 1.125

#: Float64 (K, d, N) stacks a seed's K tangents take at their peak: the carried one and up
#: to six temporaries of fastrank.tangents.push and renormalise alive at once (push's
#: batch-norm derivative peaks at five beside its input; a QR layer holds the pushed
#: stack, the solver's copy of it, Q and Q made contiguous).
TANGENT_STACKS = 7
#: Float64 (d, N) arrays of push beside them: H in float64, W H and its normalised forms,
#: the statistics' temporaries.
TANGENT_ROWS = 8


def batch_bytes(network: Network, seeds: int, tangents: int = 0) -> int:
    """Device memory a batch of ``seeds`` seeds of ``network`` holds at its peak: per
    seed, the bookkeeping (seeds, log-norm, failure, reason, factor, the host copy's
    packing), the sums of squares, the buffers H and Z alternate between (one per width,
    two where consecutive layers share it), the weight stack of every (out, in) shape,
    orthogonal weights' float64 normals, and what a measured layer adds (a gathered copy
    of H, its float64 copy, the Gram matrix, its square or the eigensolver's copy of it,
    the eigenvalues and solver status); the buffers of two measured stretches (one being
    copied to the host while the next one fills: at most tuning.STRETCH_BYTES of spectra
    each, with their log-norms, measures and up to PLANNED_TAUS counts, and at least one
    layer's); once, one seed's SVD, QR or Lanczos work, the pool's rounding of the small
    arrays and the cuBLAS workspace (made at the first GEMM). With ``tangents`` K > 0,
    per seed also TANGENT_STACKS stacks of K tangents and TANGENT_ROWS (d, N) arrays in
    float64, float64 weights (a copy of float32 ones) and the logs, and K more floats in
    each measured row. Times PLAN_MARGIN."""
    item = np.dtype(network.dtype).itemsize
    n = network.batch
    dims = (network.in_dim, *network.widths)
    d = max(dims)
    k = max(min(x, n) for x in dims)
    doubled = {a for a, b in zip(dims, dims[1:], strict=False) if a == b}
    buffers = sum(x * n * item * (2 if x in doubled else 1) for x in set(dims))
    shapes = set(zip(dims[1:], dims, strict=False))
    weights = sum(o * i * item for o, i in shapes)
    ortho = 8 * max(o * i for o, i in shapes) if network.init == "orthogonal" else 0
    measure = (item + 8) * d * n + 2 * 8 * k * k + 8 * k + 4
    per_seed = 11 * 8 + 8 * max(n, d) + buffers + weights + ortho + measure
    if tangents:
        copy = 8 * max(o * i for o, i in shapes) if item < 8 else 0
        per_seed += 8 * d * n * (TANGENT_STACKS * tangents + TANGENT_ROWS) + copy + 16 * tangents
    once = 8 * (3 * d * max(d, n) + 4 * k * k + 32 * k) + 64 * 512 + WORKSPACE_BYTES
    # a stretch: its spectra capped as propagate caps them, plus the input's layer
    row = k + 1 + len(measures.SCALARS) + PLANNED_TAUS + tangents  # a seed's floats a layer
    spectra = min(tuning.STRETCH_BYTES, 8 * k * seeds * (network.depth + 1))
    stretch = spectra * row // k + 2 * 8 * row * seeds + 24 * seeds
    return math.ceil(PLAN_MARGIN * (seeds * per_seed + once + 2 * stretch))


def plan_batch(network: Network, free: int | None, cap: int | None = None,
               tangents: int = 0) -> int:
    """Most seeds of ``network`` (with ``tangents`` directions each) per batch: those
    whose :func:`batch_bytes` fit in ``free`` bytes (None: unknown, no bound), at most
    ``cap``, at least one."""
    most = cap or 1 << 16
    if free is None or batch_bytes(network, most, tangents) <= free:
        return most
    lo, hi = 1, most  # batch_bytes grows with the seeds: the last that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if batch_bytes(network, mid, tangents) <= free else (lo, mid - 1)
    return lo
