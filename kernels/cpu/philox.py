"""Philox4x32-10 counter-based random numbers (numba kernels).

Longer than most modules (~470 lines) because it is one algorithm with its contract:
the counter layout and the exact arithmetic of every derived number (which the CUDA
header philox.cuh repeats bit for bit) are documented here, next to the fills.

Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11;
the Random123 library) maps a 128-bit counter and a 64-bit key to 128 random bits
with no state: the output for one counter is independent of every other counter,
so any element of any stream can be computed on its own, in any order, on any
number of threads, on the CPU or on a GPU, and always comes out the same.

Counter layout (used everywhere in fastrank)
-------------------------------------------
For a seed ``0 <= seed < 2**64``, a stream id and a layer index
(``0 <= stream, layer < 2**32``)::

    key     = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)
    counter = (block & 0xffffffff, block >> 32, layer, stream)      # all uint32

``block`` numbers the 4-word Philox output blocks of the (seed, stream, layer)
stream.  Output word ``w`` of the stream is word ``w % 4`` of block ``w // 4``.

Derived numbers (element ``i`` of each kind of stream)
-----------------------------------------------------
* uint32: element ``i`` is word ``i``.
* float32 uniform, in [0, 1): ``u = (x >> 8) * 2**-24``, one per word (4 per block).
* float64 uniform, in [0, 1): from a pair of words ``(xa, xb)`` =
  (x0, x1) or (x2, x3) of a block, ``m = (xa >> 5) * 2**26 + (xb >> 6)`` (53 bits)
  and ``u = m * 2**-53``; 2 per block (element ``2b`` from (x0, x1), ``2b+1`` from
  (x2, x3)).
* float32 normal, Box-Muller, 4 per block ``b``: from (x0, x1)::

      u1 = (float32(x0 >> 8) + 0.5f) * 2**-24      u2 likewise from x1
      r  = sqrt(-2 * log(u1))
      z[4b] = r * cos(2pi * u2),   z[4b+1] = r * sin(2pi * u2)

  and (x2, x3) likewise give ``z[4b+2], z[4b+3]``.  Every operation is float32, and
  log, cos and sin are fastrank's own (box_muller_f32): log from the exponent and a
  series in s = (m - 1)/(m + 1), cos/sin from the top two bits of u2 (the quadrant)
  and Taylor polynomials on [0, pi/2), using only +, -, *, / and sqrt.  Those are
  correctly rounded in IEEE arithmetic, so the numbers are bitwise the same whether
  a loop runs scalar or SIMD, and in CUDA compiled without FMA contraction; and the
  loops vectorise (3-4x numpy's Generator per thread).  Accuracy: a few float32 ulp.
  ``k + 0.5`` is exact in float32 only for ``k < 2**23``; above that it rounds to
  nearest even, so u1 can be exactly 1.0 (then r = 0) but is never 0 (the smallest
  is 2**-25), so the log is always finite.
* float64 normal, Box-Muller, 2 per block: ``u1 = (float64(m01) + 0.5) * 2**-53``
  with ``m01`` the 53-bit integer from (x0, x1) as for uniforms, ``u2`` likewise
  from (x2, x3); ``z[2b] = r cos(2pi u2)``, ``z[2b+1] = r sin(2pi u2)``, all float64.
  As in float32, ``m + 0.5`` rounds for ``m >= 2**52``: u lies in [2**-54, 1.0].

Reproducibility: the uint32 words (and so the float uniforms, which are exact
scalings) and the float32 normals are bitwise identical on every platform, thread
count and offset/length split.  float64 normals use libm's log/cos/sin: bitwise
identical across thread counts and splits on one machine, equal to rounding across
libm implementations (CPU vs CUDA).

Argument types: pass ``seed`` as ``np.uint64``, ``stream`` and ``layer`` as
``np.uint32`` and ``offset`` as ``np.int64`` (``fastrank.rng`` does this) so that
numba compiles one specialisation and never mixes signed and unsigned 64-bit
integers (numba types uint64 op int64 as float64).
"""

import math

import numpy as np
from numba import njit, prange, types
from numba.core.errors import TypingError
from numba.extending import overload

__all__ = [
    "philox4x32_10",
    "normals_f32_at",
    "fill_uint32",
    "fill_uniform",
    "fill_normal",
]

# All integer arithmetic is done in uint64 holding 32-bit values, with explicitly
# typed constants so that numba never falls back to signed or float arithmetic.
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_U5 = np.uint64(5)
_U6 = np.uint64(6)
_U8 = np.uint64(8)
_U26 = np.uint64(26)
_U32 = np.uint64(32)

_F32_HALF = np.float32(0.5)
_F32_M2 = np.float32(-2.0)
_F32_2POW_M24 = np.float32(2.0**-24)
_F32_TWO_PI = np.float32(2.0 * math.pi)
_F64_2POW_M53 = 2.0**-53
_F64_TWO_PI = 2.0 * math.pi


@njit(cache=True, inline="always")
def _philox_words(c0, c1, c2, c3, k0, k1):
    """Ten Philox4x32 rounds on uint64 values that hold 32-bit words."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> _U32) ^ c1 ^ k0
        n2 = (p0 >> _U32) ^ c3 ^ k1
        c1 = p1 & _MASK32
        c3 = p0 & _MASK32
        c0 = n0
        c2 = n2
        # The key is bumped after every round; the bump after the last round is
        # unused, which does not change the result.
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


@njit(cache=True)
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds: counter (c0..c3), key (k0, k1) -> 4 uint32 words."""
    x0, x1, x2, x3 = _philox_words(
        np.uint64(c0) & _MASK32,
        np.uint64(c1) & _MASK32,
        np.uint64(c2) & _MASK32,
        np.uint64(c3) & _MASK32,
        np.uint64(k0) & _MASK32,
        np.uint64(k1) & _MASK32,
    )
    return np.uint32(x0), np.uint32(x1), np.uint32(x2), np.uint32(x3)


@njit(cache=True, inline="always")
def _block(block, stream, layer, k0, k1):
    """The 4 words (as uint64) of output block ``block`` (int64 >= 0) of a stream."""
    b = np.uint64(block)
    return _philox_words(b & _MASK32, b >> _U32, layer, stream, k0, k1)


@njit(cache=True, inline="always")
def _key_and_ids(seed, stream, layer):
    s = np.uint64(seed)
    return (
        s & _MASK32,
        (s >> _U32) & _MASK32,
        np.uint64(stream) & _MASK32,
        np.uint64(layer) & _MASK32,
    )


# ---------------------------------------------------------------------------
# Word -> number conversions (shared by the fills)
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _m53(xa, xb):
    """53-bit integer (as uint64) from the top 27 bits of xa and top 26 bits of xb."""
    return ((xa >> _U5) << _U26) | (xb >> _U6)


@njit(cache=True, inline="always")
def _box_muller_f64(x0, x1, x2, x3):
    u1 = (np.float64(_m53(x0, x1)) + 0.5) * _F64_2POW_M53
    u2 = (np.float64(_m53(x2, x3)) + 0.5) * _F64_2POW_M53
    r = math.sqrt(-2.0 * math.log(u1))
    t = _F64_TWO_PI * u2
    return r * math.cos(t), r * math.sin(t)


# ---------------------------------------------------------------------------
# Fills.  Each prange iteration computes one Philox block and writes every output
# of it that falls inside out[0:n]; element i depends only on offset + i, so the
# result does not depend on the thread count or on how a range is split.
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _span(offset, n, per):
    """The units (blocks, or chunks of ``per`` outputs) that out[0:n] at ``offset``
    touches: offset as int64, the first unit and how many."""
    off = np.int64(offset)
    first = off // per
    return off, first, (off + n - 1) // per - first + 1


@njit(cache=True, inline="always")
def _store4(out, base, v0, v1, v2, v3):
    """out[base + k] = v_k for the k that fall inside out (a block at an edge)."""
    n = out.shape[0]
    if base >= 0 and base + 4 <= n:
        out[base] = v0
        out[base + 1] = v1
        out[base + 2] = v2
        out[base + 3] = v3
    else:
        for k, v in ((0, v0), (1, v1), (2, v2), (3, v3)):
            if 0 <= base + k < n:
                out[base + k] = v


@njit(cache=True, inline="always")
def _store_chunk(out, base, buf):
    """out[base + t] = buf[t] for the t that fall inside out."""
    lo = max(np.int64(0), -base)
    hi = min(np.int64(buf.shape[0]), out.shape[0] - base)
    for t in range(lo, hi):
        out[base + t] = buf[t]


@njit(cache=True, parallel=True)
def fill_uint32(out, seed, stream, layer, offset):
    """out[i] = word (offset + i) of the (seed, stream, layer) stream; out is 1-D uint32."""
    n = out.shape[0]
    if n == 0:
        return
    k0, k1, st, ly = _key_and_ids(seed, stream, layer)
    off, first, nblocks = _span(offset, n, 4)
    for j in prange(nblocks):
        b = first + j
        x0, x1, x2, x3 = _block(b, st, ly, k0, k1)
        base = b * 4 - off  # index in out of the block's word 0
        _store4(out, base, np.uint32(x0), np.uint32(x1), np.uint32(x2), np.uint32(x3))


@njit(cache=True, parallel=True)
def _fill_uniform_f32(out, seed, stream, layer, offset):
    n = out.shape[0]
    if n == 0:
        return
    k0, k1, st, ly = _key_and_ids(seed, stream, layer)
    off, first, nblocks = _span(offset, n, 4)
    for j in prange(nblocks):
        b = first + j
        x0, x1, x2, x3 = _block(b, st, ly, k0, k1)
        v0 = np.float32(x0 >> _U8) * _F32_2POW_M24
        v1 = np.float32(x1 >> _U8) * _F32_2POW_M24
        v2 = np.float32(x2 >> _U8) * _F32_2POW_M24
        v3 = np.float32(x3 >> _U8) * _F32_2POW_M24
        base = b * 4 - off
        _store4(out, base, v0, v1, v2, v3)


@njit(cache=True, parallel=True)
def _fill_uniform_f64(out, seed, stream, layer, offset):
    n = out.shape[0]
    if n == 0:
        return
    k0, k1, st, ly = _key_and_ids(seed, stream, layer)
    off, first, nblocks = _span(offset, n, 2)
    for j in prange(nblocks):
        b = first + j
        x0, x1, x2, x3 = _block(b, st, ly, k0, k1)
        v0 = np.float64(_m53(x0, x1)) * _F64_2POW_M53
        v1 = np.float64(_m53(x2, x3)) * _F64_2POW_M53
        base = b * 2 - off
        if 0 <= base < n:
            out[base] = v0
        if 0 <= base + 1 < n:
            out[base + 1] = v1


# The normals go through libm transcendentals (log, cos, sin).  LLVM may vectorize a
# loop and, where a vector math library such as Intel SVML is in use, a vectorized
# log can differ in the last ulp from the scalar one used for a loop's remainder.  So
# that element i never depends on where a loop happens to start or end, the normal
# fills work in chunks aligned to absolute block numbers: every chunk always computes
# all of its _NCHUNK blocks with the same fixed-trip-count loop into a scratch buffer
# and then copies the part that lies inside out.  (The integer and uniform fills use
# only exact operations, so they need no such care.)
_NCHUNK = 256
#: uint32 scratch words of one chunk of float32 normals (normal_chunk_f32): its Philox
#: words (4 * _NCHUNK), dealt out into radius and angle words, and Box-Muller's three
#: intermediates (2 * _NCHUNK each).
CHUNK_SCRATCH = 14 * _NCHUNK
#: uint32 scratch words of normals_f32_at: a chunk's, and an edge chunk's normals. The
#: compiled kernels that draw a layer's weights on each thread keep one per thread, so
#: that a layer's draw allocates nothing.
NORMAL_SCRATCH = CHUNK_SCRATCH + 4 * _NCHUNK

#: Most float32 normals a fill draws on the calling thread (~1.5 ns each): below it,
#: waking numba's passively waiting threads costs more than the draw.
SERIAL_NORMALS_MAX = 1 << 16


# float32 Box-Muller with its own log and sin/cos: only +, -, *, / and sqrt on each
# element, so LLVM vectorises the loops (libm calls would keep them scalar) and every
# element comes out bitwise the same in scalar, SIMD and CUDA code (no FMA contraction).
_LN2_HI = np.float32(0.693145751953125)  # ln 2 split so that e * _LN2_HI is exact
_LN2_LO = np.float32(1.428606765330187e-06)
_SQRT2 = np.float32(1.4142135623730951)
_HALF_PI = np.float32(math.pi / 2)
_F32_2POW_M22 = np.float32(2.0**-22)
_F32_ONE = np.float32(1.0)
_F32_TWO = np.float32(2.0)
_MANT = np.uint32(0x7FFFFF)
_ONE_BITS = np.uint32(0x3F800000)
_LOW22 = np.uint32(0x3FFFFF)
_U22 = np.uint32(22)
_U23 = np.uint32(23)
_U8_32 = np.uint32(8)
_ONE_32 = np.uint32(1)
_TWO_32 = np.uint32(2)
# Taylor coefficients: ln((1+s)/(1-s)) = 2 (s + s^3/3 + ...), |s| <= 0.1716 (error < 1e-9);
# sin and cos on [0, pi/2) to degree 11 and 12 (error < 6e-8).
_L3, _L5, _L7, _L9 = (np.float32(1 / k) for k in (3, 5, 7, 9))
_S3, _S5, _S7, _S9, _S11 = (np.float32((-1) ** j / math.factorial(2 * j + 1)) for j in range(1, 6))
_C2, _C4, _C6, _C8, _C10, _C12 = (np.float32((-1) ** j / math.factorial(2 * j))
                                  for j in range(1, 7))


@njit(cache=True, error_model="numpy")  # no zero-division branch: the loops vectorise
def box_muller_f32(xa, xb, out, scratch):
    """out[2t], out[2t+1] = r cos(theta), r sin(theta) for the word pairs (xa[t], xb[t]):
    u1 = (float32(xa >> 8) + 0.5) * 2**-24, r = sqrt(-2 ln u1), theta = 2 pi u2 with u2
    from xb likewise; float32 throughout, in separate loops over the whole arrays, whose
    intermediates live in ``scratch`` (uint32, at least 3 * xa.size words)."""
    n = xa.shape[0]
    u1 = scratch[:n].view(np.float32)
    for t in range(n):
        u1[t] = (np.float32(np.int32(xa[t] >> _U8_32)) + _F32_HALF) * _F32_2POW_M24
    bits = u1.view(np.uint32)
    mant = scratch[n : 2 * n]
    expo = scratch[2 * n : 3 * n].view(np.float32)
    for t in range(n):
        mant[t] = (bits[t] & _MANT) | _ONE_BITS
        expo[t] = np.float32(np.int32(bits[t] >> _U23) - 127)
    m = mant.view(np.float32)  # u1 = m * 2**expo, m in [1, 2)
    for t in range(n):
        mt = m[t]
        et = expo[t]
        big = mt > _SQRT2
        mt = mt * _F32_HALF if big else mt
        et = et + _F32_ONE if big else et
        s = (mt - _F32_ONE) / (mt + _F32_ONE)
        s2 = s * s
        poly = _F32_ONE + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9)))
        ln = et * _LN2_HI + (_F32_TWO * s * poly + et * _LN2_LO)
        r = math.sqrt(_F32_M2 * ln)
        k = xb[t] >> _U8_32
        q = k >> _U22
        a = (np.float32(np.int32(k & _LOW22)) + _F32_HALF) * _F32_2POW_M22 * _HALF_PI
        a2 = a * a
        sn = a * (_F32_ONE + a2 * (_S3 + a2 * (_S5 + a2 * (_S7 + a2 * (_S9 + a2 * _S11)))))
        cs = _F32_ONE + a2 * (_C2 + a2 * (_C4 + a2 * (_C6 + a2 * (_C8 + a2 * (_C10 + a2 * _C12)))))
        # rotate by q quarter turns: (cos, sin) of (a + q pi/2)
        odd = (q & _ONE_32) == _ONE_32
        c = sn if odd else cs
        sv = cs if odd else sn
        c = -c if ((q + _ONE_32) & _TWO_32) == _TWO_32 else c  # quadrants 1 and 2
        sv = -sv if (q & _TWO_32) == _TWO_32 else sv  # quadrants 2 and 3
        out[2 * t] = r * c
        out[2 * t + 1] = r * sv


@njit(cache=True)
def normal_chunk_f32(buf, chunk, st, ly, k0, k1, scratch):
    """buf[:] = the first buf.size (a multiple of 4, at most 4 * _NCHUNK) float32 normals
    of chunk ``chunk`` (blocks chunk * _NCHUNK ...): all Philox words first, then
    Box-Muller on them, in ``scratch`` (uint32, at least CHUNK_SCRATCH words). A short
    buffer draws only its own blocks (a small layer's weights cost what they hold, not a
    whole chunk)."""
    blocks = buf.shape[0] // 4
    words = scratch[: 4 * blocks]
    b0 = chunk * _NCHUNK
    for t in range(blocks):  # stored in block order: the loop vectorises
        x0, x1, x2, x3 = _block(b0 + t, st, ly, k0, k1)
        words[4 * t] = np.uint32(x0)
        words[4 * t + 1] = np.uint32(x1)
        words[4 * t + 2] = np.uint32(x2)
        words[4 * t + 3] = np.uint32(x3)
    # then dealt out: words x0, x2 of each block give radii, x1, x3 angles (in a loop of
    # their own, so that the loop above vectorises)
    xa = scratch[4 * blocks : 6 * blocks]
    xb = scratch[6 * blocks : 8 * blocks]
    for t in range(2 * blocks):
        xa[t] = words[2 * t]
        xb[t] = words[2 * t + 1]
    box_muller_f32(xa, xb, buf, scratch[8 * blocks :])


@njit(cache=True, parallel=True)
def _fill_normal_f32(out, seed, stream, layer, offset):
    n = out.shape[0]
    if n <= SERIAL_NORMALS_MAX:  # no parallel region: waking the threads costs more
        normals_f32_at(out, seed, stream, layer, offset, np.empty(NORMAL_SCRATCH, np.uint32))
        return
    per_chunk = 4 * _NCHUNK
    off, first, nchunks = _span(offset, n, per_chunk)
    for j in prange(nchunks):  # a thread per chunk, each drawn as normals_f32_at draws it
        lo = max(np.int64(0), (first + j) * per_chunk - off)  # the chunk's part of out
        hi = min(np.int64(n), (first + j + 1) * per_chunk - off)
        normals_f32_at(out[lo:hi], seed, stream, layer, off + lo,
                       np.empty(NORMAL_SCRATCH, np.uint32))


@njit(cache=True)
def normals_f32_at(out, seed, stream, layer, offset, scratch):
    """out[:] = float32 normals ``offset ..`` of a stream, on the calling thread (for
    kernels that already share out their work among threads); the numbers of
    fill_normal. Each chunk is drawn only as far as ``out`` needs it (a small layer's
    weights cost what they hold, not a whole chunk). ``scratch``: uint32 of
    NORMAL_SCRATCH words, the caller's, so that a layer's draw allocates nothing."""
    n = out.shape[0]
    if n == 0:
        return
    k0, k1, st, ly = _key_and_ids(seed, stream, layer)
    per_chunk = 4 * _NCHUNK
    off, first, nchunks = _span(offset, n, per_chunk)
    buf = scratch[:per_chunk].view(np.float32)
    words = scratch[per_chunk:]
    for j in range(nchunks):
        c = first + j
        base = c * per_chunk - off  # index in out of the chunk's first normal
        if base >= 0 and base + per_chunk <= n:
            normal_chunk_f32(out[base : base + per_chunk], c, st, ly, k0, k1, words)
        else:  # an edge: draw up to the last normal needed, keep the part inside out
            upto = min(np.int64(per_chunk), n - base)
            normal_chunk_f32(buf[: 4 * ((upto + 3) // 4)], c, st, ly, k0, k1, words)
            _store_chunk(out, base, buf[:upto])


@njit(cache=True, parallel=True)
def _fill_normal_f64(out, seed, stream, layer, offset):
    n = out.shape[0]
    if n == 0:
        return
    k0, k1, st, ly = _key_and_ids(seed, stream, layer)
    per_chunk = 2 * _NCHUNK
    off, first, nchunks = _span(offset, n, per_chunk)
    for j in prange(nchunks):
        c = first + j
        buf = np.empty(per_chunk, np.float64)
        b0 = c * _NCHUNK
        for t in range(_NCHUNK):
            x0, x1, x2, x3 = _block(b0 + t, st, ly, k0, k1)
            z0, z1 = _box_muller_f64(x0, x1, x2, x3)
            buf[2 * t] = z0
            buf[2 * t + 1] = z1
        base = c * per_chunk - off
        _store_chunk(out, base, buf)


# Compile-time dispatch on the dtype of ``out``: numba picks the implementation while
# typing, so each public fill compiles only the kernel that matches its dtype.


def _fill_uniform_dispatch(out, seed, stream, layer, offset):  # pragma: no cover
    raise NotImplementedError("only callable from numba-compiled code")


def _fill_normal_dispatch(out, seed, stream, layer, offset):  # pragma: no cover
    raise NotImplementedError("only callable from numba-compiled code")


def _pick(out, f32_kernel, f64_kernel, what):
    if not isinstance(out, types.Array) or out.ndim != 1:
        raise TypingError(f"{what}: out must be a 1-D float32 or float64 array, got {out}")
    if out.dtype == types.float32:
        kernel = f32_kernel
    elif out.dtype == types.float64:
        kernel = f64_kernel
    else:
        raise TypingError(f"{what}: out must be float32 or float64, got {out.dtype}")

    def impl(out, seed, stream, layer, offset):
        kernel(out, seed, stream, layer, offset)

    return impl


@overload(_fill_uniform_dispatch)
def _ov_fill_uniform(out, seed, stream, layer, offset):
    return _pick(out, _fill_uniform_f32, _fill_uniform_f64, "fill_uniform")


@overload(_fill_normal_dispatch)
def _ov_fill_normal(out, seed, stream, layer, offset):
    return _pick(out, _fill_normal_f32, _fill_normal_f64, "fill_normal")


@njit(cache=True)
def fill_uniform(out, seed, stream, layer, offset):
    """out[i] = uniform number (offset + i) in [0, 1) of the stream; out is 1-D float32/64.

    float32: 24 bits per word, 4 per block; float64: 53 bits per word pair, 2 per block.
    """
    _fill_uniform_dispatch(out, seed, stream, layer, offset)


@njit(cache=True)
def fill_normal(out, seed, stream, layer, offset):
    """out[i] = standard normal number (offset + i) of the stream (Box-Muller).

    out is 1-D float32 (4 normals per block, float32 arithmetic) or float64 (2 normals
    per block, 53-bit uniforms, float64 arithmetic).
    """
    _fill_normal_dispatch(out, seed, stream, layer, offset)
