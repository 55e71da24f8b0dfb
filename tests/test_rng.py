"""Tests of the Philox4x32-10 counter-based streams (fastrank.rng and its kernels)."""

import numba
import numpy as np
import pytest
from naive import (  # tests/ is on sys.path (pytest rootdir-less import)
    normals_ref,
    philox4x32_10_ref,
    uniforms_ref,
    words_ref,
)
from threads import on_one_and_two_threads

from fastrank import rng
from fastrank.kernels.cpu import philox

# Known-answer vectors of Philox4x32 with 10 rounds, from the kat_vectors file of the
# Random123 distribution (D. E. Shaw Research), as reproduced in
# DEShawResearch/fs123 core123/ut/ut_philox.cpp (test_kat_philox4x32):
# (counter c0..c3, key k0 k1) -> output x0..x3.
KAT_PHILOX4X32_10 = [
    (
        (0x00000000, 0x00000000, 0x00000000, 0x00000000),
        (0x00000000, 0x00000000),
        (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8),
    ),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# (seed, stream, layer, offset): seeds above 2**32 (high key word in use), the top
# layer and stream, offsets that are not multiples of the block size.
STREAM_CASES = [
    (0, rng.WEIGHTS, 0, 0),
    (12345, rng.INPUT, 3, 5),
    (2**32 + 7, rng.WEIGHTS, 17, 3),
    (2**64 - 1, 2**32 - 1, 2**32 - 1, 2),
    # These cross block 2**32 (counter word c1 becomes 1) for the 4-per-block kinds
    # and for the 2-per-block (float64) kinds respectively.
    (0xDEADBEEFCAFEF00D, 5, 2**32 - 1, 4 * 2**32 - 6),
    (2**63 + 1, 2, 1, 2 * 2**32 - 3),
]


def _kernel_args(seed, stream, layer, offset):
    return np.uint64(seed), np.uint32(stream), np.uint32(layer), np.int64(offset)


# --------------------------------------------------------------------------- KAT


@pytest.mark.parametrize("ctr,key,expected", KAT_PHILOX4X32_10)
def test_kat_numba(ctr, key, expected):
    got = philox.philox4x32_10(*(np.uint32(v) for v in ctr), *(np.uint32(v) for v in key))
    assert tuple(int(v) for v in got) == expected
    # (Returned to Python the words are ints; inside numba code they are uint32.)
    sig = philox.philox4x32_10.nopython_signatures[-1]
    assert sig.return_type == numba.types.UniTuple(numba.types.uint32, 4)


@pytest.mark.parametrize("ctr,key,expected", KAT_PHILOX4X32_10)
def test_kat_reference(ctr, key, expected):
    assert philox4x32_10_ref(ctr, key) == expected


def test_stream_layout_is_the_documented_counter():
    # Word w of a stream is word w % 4 of philox(ctr=(b lo, b hi, layer, stream), key=seed).
    seed, stream, layer = 0x0123456789ABCDEF, 9, 11
    block = 2**32 + 3
    got = rng.uint32(seed, stream, layer, 4, offset=4 * block)
    expected = philox4x32_10_ref(
        (block & 0xFFFFFFFF, block >> 32, layer, stream), (0x89ABCDEF, 0x01234567)
    )
    assert tuple(int(v) for v in got) == expected


# --------------------------------------------------------------------------- words


@pytest.mark.parametrize("seed,stream,layer,offset", STREAM_CASES)
@pytest.mark.parametrize("n", [1, 3, 4, 37])
def test_uint32_matches_reference(seed, stream, layer, offset, n):
    got = rng.uint32(seed, stream, layer, n, offset=offset)
    assert got.dtype == np.uint32 and got.shape == (n,)
    assert [int(v) for v in got] == words_ref(seed, stream, layer, n, offset)
    # The raw kernel gives the same.
    out = np.empty(n, np.uint32)
    philox.fill_uint32(out, *_kernel_args(seed, stream, layer, offset))
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("seed,stream,layer,offset", STREAM_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_matches_reference_exactly(seed, stream, layer, offset, dtype):
    # Uniforms are exact scalings of integers, so they must agree bitwise.
    got = rng.uniform(seed, stream, layer, 41, dtype=dtype, offset=offset)
    assert got.dtype == dtype
    ref = uniforms_ref(seed, stream, layer, 41, dtype, offset)
    np.testing.assert_array_equal(got.astype(np.float64), ref)


# --------------------------------------------------------------------------- normals


@pytest.mark.parametrize("seed,stream,layer,offset", STREAM_CASES)
def test_normal_float32_close_to_reference(seed, stream, layer, offset):
    n = 203
    got = rng.normal(seed, stream, layer, n, dtype=np.float32, offset=offset)
    assert got.dtype == np.float32
    ref = normals_ref(seed, stream, layer, n, np.float32, offset)
    # The reference uses the same float32 uniforms (they are exact), so the only
    # difference is float32 rounding in log/sqrt/cos/sin:
    #  * r = sqrt(-2 log u1): logf and sqrtf are accurate to ~1 ulp, so r has a
    #    relative error of a few 2**-24 ~ 6e-8;
    #  * t = 2pi * u2 in float32 is off by at most ~2 ulp of 2pi, ~ 5e-7 absolute, and
    #    cosf/sinf add ~6e-8, so cos/sin are off by < 1e-6 absolute;
    #  * |z| <= r <= sqrt(-2 log 2**-25) ~ 5.9, so |z - z_ref| < 5.9e-6 + 3e-7 |z|.
    # atol = rtol = 1e-5 therefore covers the worst case with margin, while any real
    # mistake (wrong word, wrong pairing, sin/cos swapped) gives O(1) differences.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,stream,layer,offset", STREAM_CASES)
def test_normal_float64_close_to_reference(seed, stream, layer, offset):
    n = 101
    got = rng.normal(seed, stream, layer, n, dtype=np.float64, offset=offset)
    assert got.dtype == np.float64
    ref = normals_ref(seed, stream, layer, n, np.float64, offset)
    # Same uniforms bitwise; float64 libm calls differ by ~1 ulp (1e-16 relative), times
    # |z| <= sqrt(-2 log 2**-54) ~ 8.7: errors ~1e-14, far below 1e-12.
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_normal_shape_is_flat_c_order():
    a = rng.normal(7, rng.WEIGHTS, 2, (3, 5, 7), offset=11)
    flat = rng.normal(7, rng.WEIGHTS, 2, 3 * 5 * 7, offset=11)
    assert a.shape == (3, 5, 7) and a.flags.c_contiguous
    np.testing.assert_array_equal(a.ravel(), flat)
    assert rng.normal(7, 0, 0, ()).shape == ()
    assert rng.normal(7, 0, 0, (0, 4)).shape == (0, 4)
    assert rng.uniform(7, 0, 0, 0, dtype=np.float64).shape == (0,)
    assert rng.uint32(7, 0, 0, 0).shape == (0,)


# --------------------------------------------------------------------------- splits / threads


def _all_kinds(seed, stream, layer, n, offset):
    return [
        rng.uint32(seed, stream, layer, n, offset=offset),
        rng.uniform(seed, stream, layer, n, dtype=np.float32, offset=offset),
        rng.uniform(seed, stream, layer, n, dtype=np.float64, offset=offset),
        rng.normal(seed, stream, layer, n, dtype=np.float32, offset=offset),
        rng.normal(seed, stream, layer, n, dtype=np.float64, offset=offset),
    ]


@pytest.mark.parametrize(
    "pieces", [[1], [3, 1, 4, 1, 5, 9, 2, 6], [255, 2, 513, 1], [1000, 0, 2000]]
)
def test_offset_length_splits_match_one_long_fill(pieces):
    seed, stream, layer, start = 2**40 + 99, rng.INPUT, 4, 13
    total = 5000
    whole = _all_kinds(seed, stream, layer, total, start)
    parts = [[] for _ in whole]
    pos = 0
    sizes = list(pieces)
    while pos < total:
        for s in sizes:
            s = min(s, total - pos)
            for acc, arr in zip(
                parts, _all_kinds(seed, stream, layer, s, start + pos), strict=True
            ):
                acc.append(arr)
            pos += s
            if pos >= total:
                break
    for w, p in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(np.concatenate(p), w)  # bitwise


def test_thread_count_independent():
    n = 1_000_003  # not a multiple of the block or chunk size
    one, two = on_one_and_two_threads(lambda: _all_kinds(3, rng.WEIGHTS, 8, n, 7))
    for a, b in zip(one, two, strict=True):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- distinctness


def test_different_ids_give_different_numbers():
    base = (2**33 + 5, rng.WEIGHTS, 10)
    variants = [
        base,
        (base[0] + 1, base[1], base[2]),  # low key word
        (base[0] + 2**32, base[1], base[2]),  # high key word
        (base[0], rng.INPUT, base[2]),  # stream
        (base[0], base[1], base[2] + 1),  # layer
        (base[0], base[2], base[1]),  # layer and stream swapped
    ]
    seqs = [rng.uint32(*v, 64) for v in variants]
    for i in range(len(seqs)):
        for j in range(i + 1, len(seqs)):
            # 64 random words agreeing by chance in more than a couple of places has
            # probability ~ 64**3 / 2**96: a failure means the ids are not all used.
            assert np.count_nonzero(seqs[i] == seqs[j]) <= 2, (variants[i], variants[j])
    # Within one stream, successive blocks differ too.
    w = rng.uint32(*base, 4096)
    assert len(np.unique(w)) > 4090


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_statistics(dtype):
    n = 10**6
    z = rng.normal(1234, rng.WEIGHTS, 0, n, dtype=dtype).astype(np.float64)
    assert np.all(np.isfinite(z))
    # Tolerances are 5 standard errors of the estimators under N(0, 1):
    #   mean:     SE = sigma / sqrt(n) = 1e-3                    -> |mean| < 5e-3
    #   variance: Var(s^2) = 2 sigma^4 / (n - 1), SE ~ sqrt(2/n) = 1.41e-3
    #                                                            -> |var - 1| < 7.1e-3
    # The numbers are deterministic, so this is not flaky; a 5-sigma bound would
    # reject a correct generator only with probability ~6e-7 over seed choices.
    se_mean = 1.0 / np.sqrt(n)
    se_var = np.sqrt(2.0 / (n - 1))
    assert abs(z.mean()) < 5 * se_mean
    assert abs(z.var(ddof=1) - 1.0) < 5 * se_var
    # Box-Muller pairs should be uncorrelated: corr SE = 1/sqrt(n/2).
    pairs = z.reshape(-1, 2)
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 5 / np.sqrt(n / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_statistics_and_range(dtype):
    n = 10**6
    u = rng.uniform(99, rng.INPUT, 5, n, dtype=dtype)
    assert u.dtype == dtype
    assert u.min() >= 0.0 and u.max() < 1.0
    u = u.astype(np.float64)
    # U(0, 1): mean 1/2, variance 1/12; SE(mean) = sqrt(1/12 / n) = 2.9e-4,
    # SE(var) = sqrt((E(U-1/2)^4 - 1/144) / n) = sqrt((1/80 - 1/144) / n) = 7.5e-5.
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var(ddof=1) - 1 / 12) < 5 * np.sqrt((1 / 80 - 1 / 144) / n)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
        (dict(stream=-1), "stream"),
        (dict(stream=2**32), "stream"),
        (dict(layer=2**32), "layer"),
        (dict(layer=-3), "layer"),
        (dict(shape=(3, -1)), "shape"),
        (dict(shape=-2), "shape"),
        (dict(offset=-1), "offset"),
        (dict(offset=2**62), "offset"),
        (dict(dtype=np.int32), "dtype"),
        (dict(dtype=np.float16), "dtype"),
        (dict(dtype="complex128"), "dtype"),
    ],
)
@pytest.mark.parametrize("fn", [rng.normal, rng.uniform])
def test_float_argument_validation(fn, kwargs, match):
    args = dict(seed=1, stream=rng.WEIGHTS, layer=0, shape=(4,), dtype=np.float32, offset=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(**args)


def test_uint32_argument_validation():
    with pytest.raises(ValueError, match="n must be"):
        rng.uint32(1, 0, 0, -1)
    with pytest.raises(ValueError, match="seed"):
        rng.uint32(2**64, 0, 0, 4)
    with pytest.raises(ValueError, match="offset"):
        rng.uint32(1, 0, 0, 4, offset=-4)
    with pytest.raises(TypeError, match="seed"):
        rng.uint32(1.5, 0, 0, 4)


def test_extreme_ids_accepted():
    # Edge values of every id, including numpy integer types.
    a = rng.uint32(np.uint64(2**64 - 1), np.uint32(2**32 - 1), np.int64(2**32 - 1), 5)
    b = rng.uint32(2**64 - 1, 2**32 - 1, 2**32 - 1, 5)
    np.testing.assert_array_equal(a, b)
    assert rng.WEIGHTS == 0 and rng.INPUT == 1


def test_box_muller_float32_edge_words():
    # Extreme words: the smallest u1 is 2**-25 (never 0, so log is finite) and the
    # largest, (2**24 - 1 + 0.5) * 2**-24, rounds to exactly 1.0 in float32 (r = 0).
    big = np.uint64(0xFFFFFFFF)
    zero = np.uint64(0)
    out = np.empty(4, np.float32)
    words = np.array([0xFFFFFFFF, 0], np.uint32)
    philox.box_muller_f32(words, np.zeros(2, np.uint32), out, np.empty(6, np.uint32))
    assert out[0] == 0.0 and out[1] == 0.0
    r = np.sqrt(-2.0 * np.log(2.0**-25))  # ~5.887, the largest possible |z|
    u2 = 2.0**-25
    np.testing.assert_allclose(
        out[2:], [r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], rtol=1e-6
    )
    # float64: the largest 53-bit u1 also rounds to 1.0, the smallest is 2**-54.
    z0, z1 = philox._box_muller_f64(big, big, zero, zero)
    assert z0 == 0.0 and z1 == 0.0
    z0, _ = philox._box_muller_f64(zero, zero, zero, zero)
    np.testing.assert_allclose(z0, np.sqrt(-2.0 * np.log(2.0**-54)), rtol=1e-14)


@pytest.mark.parametrize("offset", [0, 1, 3, 1023, 1024, 1500])
@pytest.mark.parametrize("n", [1, 5, 1024, 3000])
def test_serial_normals_from_any_offset_are_the_streams(offset, n):
    """normals_f32_at (one thread's share of a layer's weights) gives elements
    offset .. offset + n - 1 of the stream, across chunk edges (1024 normals a chunk),
    as the parallel fill draws them (a fill too long to be drawn on one thread), whatever
    its scratch held before (the kernels reuse one scratch for every layer)."""
    whole = rng.normal(7, 0, 3, (philox.SERIAL_NORMALS_MAX + offset + n,), np.float32)
    scratch = np.random.default_rng(offset).integers(0, 2**32, philox.NORMAL_SCRATCH,
                                                     dtype=np.uint32)
    for _ in range(2):
        part = np.full(n, np.nan, np.float32)
        philox.normals_f32_at(part, np.uint64(7), np.uint32(0), np.uint32(3), offset, scratch)
        np.testing.assert_array_equal(part, whole[offset : offset + n])


def test_short_and_long_normal_fills_give_the_same_numbers():
    """Fills up to philox.SERIAL_NORMALS_MAX are drawn on the calling thread, longer ones
    across threads: the same numbers either side of the switch, from any offset."""
    at = philox.SERIAL_NORMALS_MAX
    for offset in (0, 3, 1025):
        short = rng.normal(11, 1, 2, (at,), np.float32, offset=offset)
        long = rng.normal(11, 1, 2, (at + 1,), np.float32, offset=offset)
        np.testing.assert_array_equal(short, long[:at])
