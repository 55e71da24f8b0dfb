"""Slow, obviously-right reference implementations that the tests compare against.

Everything here is written for clarity, not speed: plain Python integers and numpy,
no numba.  Keep each reference a direct transcription of its definition.
"""

import math

import numpy as np

# ---------------------------------------------------------------------------
# Philox4x32-10 and the fastrank random streams (see fastrank.kernels.cpu.philox)
# ---------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF


def philox4x32_10_ref(ctr, key):
    """Philox4x32-10 of counter ``ctr`` (4 ints) and key ``key`` (2 ints) -> 4 ints.

    Each round: the 64-bit products ``M0 * c0`` and ``M1 * c2`` are split in high and
    low halves; the new counter is ``(hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``.  The
    key is advanced by the Weyl constants between rounds.
    """
    m0, m1 = 0xD2511F53, 0xCD9E8D57
    w0, w1 = 0x9E3779B9, 0xBB67AE85
    c0, c1, c2, c3 = (int(v) & _MASK32 for v in ctr)
    k0, k1 = (int(v) & _MASK32 for v in key)
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        p0 = m0 * c0
        p1 = m1 * c2
        hi0, lo0 = p0 >> 32, p0 & _MASK32
        hi1, lo1 = p1 >> 32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def stream_block_ref(seed, stream, layer, block):
    """The 4 words of Philox block ``block`` of the (seed, stream, layer) stream."""
    key = (seed & _MASK32, (seed >> 32) & _MASK32)
    ctr = (block & _MASK32, block >> 32, layer, stream)
    return philox4x32_10_ref(ctr, key)


def words_ref(seed, stream, layer, n, offset=0):
    """Words offset .. offset + n - 1 of a stream, as a list of Python ints."""
    return [stream_block_ref(seed, stream, layer, w // 4)[w % 4] for w in range(offset, offset + n)]


def _u53(xa, xb):
    return ((xa >> 5) << 26) | (xb >> 6)


def uniforms_ref(seed, stream, layer, n, dtype, offset=0):
    """Uniforms in [0, 1) offset .. offset + n - 1 of a stream (exact, as float64 array)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.array([(x >> 8) * 2.0**-24 for x in words_ref(seed, stream, layer, n, offset)])
    out = []
    for i in range(offset, offset + n):
        x = stream_block_ref(seed, stream, layer, i // 2)
        xa, xb = (x[0], x[1]) if i % 2 == 0 else (x[2], x[3])
        out.append(_u53(xa, xb) * 2.0**-53)
    return np.array(out)


def normals_ref(seed, stream, layer, n, dtype, offset=0):
    """Normals offset .. offset + n - 1 of a stream: Box-Muller in float64.

    The uniforms are built from the reference words exactly as the definition says,
    including the rounding of ``k + 0.5`` in the stream's own precision (float32 for
    float32 streams: the definition of the float32 stream; for k >= 2**23 the sum is
    not representable and rounds to nearest even), then ``r = sqrt(-2 log u1)``,
    ``z = r cos(2 pi u2)`` / ``r sin(2 pi u2)`` are evaluated in float64.  So the only
    difference from the kernels is the rounding of the transcendental arithmetic.

    float32: block b -> normals 4b..4b+3 from word pairs (x0, x1) and (x2, x3).
    float64: block b -> normals 2b, 2b+1 from one 53-bit pair of uniforms.
    """
    dtype = np.dtype(dtype)
    out = np.empty(n, dtype=np.float64)
    for i in range(offset, offset + n):
        if dtype == np.float32:
            x = stream_block_ref(seed, stream, layer, i // 4)
            xa, xb = (x[0], x[1]) if i % 4 < 2 else (x[2], x[3])
            u1 = float((np.float32(xa >> 8) + np.float32(0.5)) * np.float32(2.0**-24))
            u2 = float((np.float32(xb >> 8) + np.float32(0.5)) * np.float32(2.0**-24))
            use_sin = i % 2 == 1
        elif dtype == np.float64:
            x = stream_block_ref(seed, stream, layer, i // 2)
            u1 = (float(_u53(x[0], x[1])) + 0.5) * 2.0**-53
            u2 = (float(_u53(x[2], x[3])) + 0.5) * 2.0**-53
            use_sin = i % 2 == 1
        else:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        r = math.sqrt(-2.0 * math.log(u1))
        t = 2.0 * math.pi * u2
        out[i - offset] = r * (math.sin(t) if use_sin else math.cos(t))
    return out


# Network references (float64, plain numpy) ------------------------------------------


def norm_ref(z, norm, eps):
    """Normalisations as their papers/frameworks define them, rows = features."""
    if norm == "bn":  # torch.nn.BatchNorm1d(affine=False) in training mode
        return (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + eps)
    if norm == "bn-rms":  # the paper's diag(H H^T)^(-1/2) H, up to sqrt(N) and eps
        return z / np.sqrt(np.mean(z**2, axis=1, keepdims=True) + eps)
    if norm == "ln":  # torch.nn.LayerNorm over features, per sample
        return (z - z.mean(axis=0, keepdims=True)) / np.sqrt(z.var(axis=0, keepdims=True) + eps)
    return z


def act_ref(z, act):
    return {"linear": z, "relu": np.maximum(z, 0.0), "tanh": np.tanh(z)}[act]


def layer_ref(w, h, network):
    """One layer in float64: act(norm(W H)), norm(act(W H)), or the gamma residual."""
    w, h = np.asarray(w, np.float64), np.asarray(h, np.float64)
    z = w @ h
    if np.isfinite(network.gamma):
        z = h + network.gamma * z
    if network.order == "act-norm":
        return norm_ref(act_ref(z, network.activation), network.norm, network.eps)
    return act_ref(norm_ref(z, network.norm, network.eps), network.activation)


def network_ref(network, seed, weights, h0):
    """Every H_l (l = 0..depth) in float64 with the log-norm of the un-rescaled network.

    ``weights(l)`` gives W_l. Homogeneous unnormalised networks are rescaled to unit norm
    after every layer (their rank measures are scale invariant); log-norms add up.
    """
    h = np.asarray(h0, np.float64)
    log_norm = 0.0
    out = []
    for layer in range(network.depth + 1):
        if layer:
            h = layer_ref(weights(layer), h, network)
        norm = np.linalg.norm(h)
        if network.norm == "none" and network.activation in ("linear", "relu"):
            log_norm += np.log(norm)
            h = h / norm
        else:
            log_norm = np.log(norm)
        out.append((h, log_norm))
    return out
