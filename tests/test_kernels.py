"""The fused normalisation + activation kernel and the CPU layer against float64
numpy references written independently in tests/naive.py."""

import itertools

import numpy as np
import pytest
from naive import act_ref, layer_ref, norm_ref
from threads import on_one_and_two_threads

from fastrank import Network, codes, weights
from fastrank.backends.cpu import CPUBackend, uses_depth_kernel
from fastrank.init import input_matrix
from fastrank.kernels.cpu import layer as kernels

NORMS = ("none", "bn", "bn-rms", "ln")
ACTS = ("linear", "relu", "tanh")


def _z(shape=(12, 9), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)


@pytest.mark.parametrize("norm, act, act_first",
                         list(itertools.product(NORMS, ACTS, (False, True))))
def test_normalize_activate_float64(norm, act, act_first):
    z = _z()
    expected = (norm_ref(act_ref(z, act), norm, 1e-5) if act_first
                else act_ref(norm_ref(z, norm, 1e-5), act))
    got = z.copy()
    sumsq = kernels.normalize_activate(
        got, codes.NORMS[norm], codes.ACTIVATIONS[act], act_first, 1e-5
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert sumsq == pytest.approx(np.sum(expected**2), rel=1e-12)


@pytest.mark.parametrize("norm, act, act_first",
                         list(itertools.product(NORMS, ACTS, (False, True))))
def test_parallel_build_equals_serial_bitwise(norm, act, act_first):
    z = _z((300, 70), np.float32)
    a, b = z.copy(), z.copy()
    args = (codes.NORMS[norm], codes.ACTIVATIONS[act], act_first, 1e-5)
    assert kernels.normalize_activate(a, *args) == kernels.normalize_activate_parallel(b, *args)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("norm, act", list(itertools.product(NORMS, ACTS)))
def test_normalize_activate_float32(norm, act):
    z = _z(dtype=np.float32)
    expected = act_ref(norm_ref(z.astype(np.float64), norm, 1e-5), act)
    got = z.copy()
    kernels.normalize_activate(got, codes.NORMS[norm], codes.ACTIVATIONS[act], False, 1e-5)
    assert got.dtype == np.float32
    # Statistics are accumulated in float64, so only the final rounding to float32
    # (relative 6e-8) and float32 tanh (a few ulp) separate the result from the reference.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_batch_norm_matches_torch_batchnorm1d_in_training_mode():
    torch = pytest.importorskip("torch")
    z = _z((16, 10), np.float32)
    bn = torch.nn.BatchNorm1d(16, affine=False, eps=1e-5).train()
    with torch.no_grad():
        expected = bn(torch.from_numpy(z.T.copy())).numpy().T  # torch wants (batch, features)
    got = z.copy()
    kernels.normalize_activate(got, codes.NORM_BN, codes.ACT_LINEAR, False, 1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_scale_and_sum_of_squares():
    z = _z(dtype=np.float32)
    expected = z.astype(np.float64) * 0.25
    kernels.scale(z, 0.25)
    np.testing.assert_array_equal(z, expected.astype(np.float32))
    assert kernels.sum_of_squares(z) == pytest.approx(np.sum(expected**2), rel=1e-12)
    z[0, 0] = np.inf
    assert not np.isfinite(kernels.sum_of_squares(z))


@pytest.mark.parametrize(
    "network",
    [
        Network(width=10, batch=7, depth=3, activation=a, norm=n, order=o, dtype="float64")
        for a, n, o in itertools.product(ACTS, NORMS, ("norm-act", "act-norm"))
    ]
    + [
        Network(width=10, batch=7, depth=3, norm="bn-rms", gamma=0.3, dtype="float64"),
        Network(width=(6, 9, 4), input_dim=5, batch=7, depth=3, activation="relu", dtype="float64"),
    ],
    ids=lambda n: f"{n.activation}-{n.norm}-{n.order}-g{n.gamma}-{n.width}",
)
def test_cpu_layer_equals_reference(network):
    h = input_matrix(network, 3)
    for layer in range(1, network.depth + 1):
        expected = layer_ref(weights(network, 3, layer), h, network)
        h_next, sumsq, _ = CPUBackend()._forward(network, 3, layer, h.copy())
        np.testing.assert_allclose(h_next, expected, rtol=1e-10, atol=1e-12)
        assert sumsq == pytest.approx(np.sum(expected**2), rel=1e-10)
        h = h_next


SMALL_NETS = [
    Network(width=16, batch=12, depth=6, activation=a, norm=n, order=o)
    for a, n, o in itertools.product(ACTS, NORMS, ("norm-act", "act-norm"))
] + [Network(width=16, batch=12, depth=6, norm="bn-rms", gamma=0.4)]


@pytest.mark.parametrize("network", SMALL_NETS, ids=lambda n: f"{n.label()}-{n.order}")
def test_whole_depth_kernel_layer_by_layer_against_reference(network):
    """Advance the compiled kernel one layer at a time and check every layer against the
    float64 reference applied to the kernel's own previous H (so errors do not compound)."""
    assert uses_depth_kernel(network)
    seeds = [4, 11]
    backend = CPUBackend()
    batch = backend.start(network, seeds)
    for layer in range(1, network.depth + 1):
        before = batch.h.copy()
        log_before = batch.log_norm.copy()
        backend.advance(batch, layer)
        for i, seed in enumerate(seeds):
            expected = layer_ref(weights(network, seed, layer), before[i], network)
            norm = np.linalg.norm(expected)
            log_norm = log_before[i] + np.log(norm) if network.rescaled else np.log(norm)
            if network.rescaled:
                expected = expected / norm
            # float32 GEMM of 16 terms and float32 storage: ~1e-6 relative to the scale.
            np.testing.assert_allclose(batch.h[i], expected, rtol=0,
                                       atol=2e-5 * np.abs(expected).max())
            assert batch.log_norm[i] == pytest.approx(log_norm, abs=1e-5)


def test_whole_depth_kernel_is_independent_of_the_thread_count():
    net = Network(width=24, depth=300, activation="relu", norm="bn")

    def run():
        batch = CPUBackend().start(net, range(5))
        CPUBackend().advance(batch, net.depth)
        return batch.h.copy(), batch.log_norm.copy()

    results = on_one_and_two_threads(run)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_whole_depth_kernel_and_blas_path_agree(monkeypatch):
    from fastrank import Schedule, simulate_many, tuning

    net = Network(width=16, depth=20, activation="relu", norm="bn")
    kernel = simulate_many(net, [0, 1], Schedule(every=1, log=None))
    monkeypatch.setattr(tuning, "SMALL_WIDTH_MAX", 0)
    assert not uses_depth_kernel(net)
    blas = simulate_many(net, [0, 1], Schedule(every=1, log=None))
    for a, b in zip(kernel, blas, strict=True):
        # Same weights, different float32 summation order: agreement to float32 rounding
        # amplified over 20 layers of BN (well-conditioned): 1e-4 relative.
        np.testing.assert_allclose(a.spectrum, b.spectrum, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.log_norm, b.log_norm, rtol=1e-5)


@pytest.mark.parametrize("kind", [dict(activation="relu", norm="bn"),
                                  dict(activation="tanh", norm="ln", order="act-norm")])
def test_above_128_the_two_paths_give_the_same_bits(monkeypatch, kind):
    """Between SMALL_WIDTH_MAX and SEEDED_WIDTH_MAX the path depends on the seeds per
    thread, which can change between a sweep and its resume: both paths must then give
    the same bits (they do: same BLAS GEMM per seed, same fused pass)."""
    from fastrank import Schedule, simulate_many, tuning

    net = Network(width=160, depth=8, batch=96, **kind)
    monkeypatch.setattr(tuning, "SMALL_WIDTH_MAX", 1024)
    assert uses_depth_kernel(net)
    kernel = simulate_many(net, [0, 1], Schedule(every=4, log=None), backend=CPUBackend())
    monkeypatch.setattr(tuning, "SMALL_WIDTH_MAX", 128)
    monkeypatch.setattr(tuning, "SEEDED_WIDTH_MAX", 0)
    # with fewer seeds than threads, such a width goes layer by layer (the wide kernel
    # starts above SEEDED_WIDTH_MAX, which is lowered here only to reach this path)
    from fastrank.backends import cpu

    monkeypatch.setattr(cpu, "uses_wide_kernel", lambda net: False)
    assert not uses_depth_kernel(net, 2)
    blas = simulate_many(net, [0, 1], Schedule(every=4, log=None), backend=CPUBackend())
    for a, b in zip(kernel, blas, strict=True):
        assert np.array_equal(a.spectrum, b.spectrum) and np.array_equal(a.log_norm, b.log_norm)


WIDE_NETS = [
    Network(width=40, batch=24, depth=12, activation="relu", norm="bn"),
    Network(width=40, batch=24, depth=12, activation="linear", norm="none"),  # rescaled
    Network(width=40, batch=24, depth=12, activation="tanh", norm="bn-rms", order="act-norm"),
    Network(width=40, batch=24, depth=12, activation="relu", norm="bn", gamma=0.5),
    Network(width=8, batch=8, depth=3000, activation="tanh", gain=0.5),  # underflows
]


@pytest.mark.parametrize("network", WIDE_NETS, ids=lambda n: f"{n.label()}-{n.order}-g{n.gamma}")
def test_wide_kernel_agrees_with_the_layer_by_layer_path(monkeypatch, network):
    """The wide kernel (rows shared among threads; forced here on small widths) gives
    the BLAS path's numbers to float32 rounding, the same failures, and per seed the
    same bits whatever else is in the batch."""
    from fastrank import Schedule, simulate_many, tuning
    from fastrank.backends import cpu

    monkeypatch.setattr(tuning, "SMALL_WIDTH_MAX", 0)
    monkeypatch.setattr(tuning, "SEEDED_WIDTH_MAX", 0)
    assert cpu.uses_wide_kernel(network)
    schedule = Schedule(every=max(1, network.depth // 6), log=None)
    wide = simulate_many(network, [0, 1, 2], schedule)
    alone = simulate_many(network, [2], schedule)[0]
    assert np.array_equal(alone.spectrum, wide[2].spectrum)
    assert np.array_equal(alone.log_norm, wide[2].log_norm)
    monkeypatch.setattr(cpu, "uses_wide_kernel", lambda net: False)
    blas = simulate_many(network, [0, 1, 2], schedule)
    for a, b in zip(wide, blas, strict=True):
        assert (a.failure is None) == (b.failure is None)
        if a.failure is not None:
            assert a.failure.layer == b.failure.layer and a.failure.reason == b.failure.reason
        np.testing.assert_array_equal(a.layer, b.layer)
        # the same weights and fused pass; the GEMM's float32 sums may round apart
        np.testing.assert_allclose(a.spectrum, b.spectrum, rtol=1e-4,
                                   atol=1e-4 * np.nanmax(b.spectrum))
        np.testing.assert_allclose(a.log_norm, b.log_norm, rtol=1e-5, atol=1e-5)
    if network.gain == 0.5:
        assert all(t.failure is not None for t in wide)


def _symmetric_cases(k, rng):
    """Symmetric float64 matrices that stress an eigensolver: a Wishart matrix, the Gram
    matrix of a collapsed BN + ReLU product, a graded spectrum (1 .. 1e-12), low rank,
    repeated and clustered eigenvalues, indefinite, diagonal, zero, and extreme scales."""
    a = rng.standard_normal((k, k))
    yield "wishart", a @ a.T
    h = a.copy()
    for _ in range(60):
        h = np.maximum(rng.standard_normal((k, k)) @ h, 0)
        h -= h.mean(axis=1, keepdims=True)
        h /= max(np.linalg.norm(h), 1e-300)
    yield "collapsed", h @ h.T
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    yield "graded", (q * np.logspace(0, -12, k)) @ q.T
    low = rng.standard_normal((k, min(3, k)))
    yield "rank3", low @ low.T
    yield "repeated", np.kron(np.eye((k + 1) // 2), np.ones((2, 2)))[:k, :k]
    yield "clustered", (q * (1 + 1e-10 * np.arange(k))) @ q.T
    yield "indefinite", a + a.T
    yield "diagonal", np.diag(rng.standard_normal(k))
    yield "zero", np.zeros((k, k))
    yield "huge", (a @ a.T) * 1e150
    yield "tiny", (a @ a.T) * 1e-150


@pytest.mark.parametrize("k", [1, 2, 3, 5, 16, 32, 33, 64, 100])
def test_compiled_eigenvalues_match_lapack(k):
    """kernels/cpu/eigen.py (scaled, reduced, QL) against LAPACK (numpy.linalg.eigvalsh)
    in float64: each
    eigenvalue within 8 k eps max|lambda| (a backward-stable solver's bound is a small
    multiple of k eps ||G||; a wrong step or shift is off by far more)."""
    from fastrank.kernels.cpu import eigen

    rng = np.random.default_rng(k)
    for name, g in _symmetric_cases(k, rng):
        ref = np.linalg.eigvalsh(g)
        d, e2 = np.zeros(k), np.zeros(max(k - 1, 0))
        big = eigen.reduce_scaled(g.copy(), d, e2)
        none = d[:0]
        ok = eigen.tridiagonal_eigenvalues_quad(d, e2, none, none, none, none, none, none)
        assert ok == (True,) * 4, name
        got = np.sort(d) * big
        scale = max(np.abs(ref).max(), np.finfo(float).tiny)
        assert np.abs(got - ref).max() <= 8 * k * np.finfo(float).eps * scale, name


def test_tridiagonal_eigenvalues_quad_and_split_blocks():
    """Four tridiagonals solved side by side, of different sizes and one with zero
    off-diagonal entries (which split it into blocks, each solved alone), give each
    one's eigenvalues (against LAPACK on the dense matrix), and the same bits as each
    solved alone (empty other matrices)."""
    from fastrank.kernels.cpu import eigen

    rng = np.random.default_rng(3)
    mats = [(rng.standard_normal(k), rng.standard_normal(k - 1)) for k in (12, 7, 1, 30)]
    mats[0][1][[0, 5, 6, 10]] = 0.0
    quad = [(d.copy(), e * e) for d, e in mats]
    assert eigen.tridiagonal_eigenvalues_quad(*(x for m in quad for x in m)) == (True,) * 4
    for (d, e), (got, _) in zip(mats, quad, strict=True):
        dense = np.diag(d) + np.diag(e, 1) + np.diag(e, -1)
        ref = np.linalg.eigvalsh(dense)
        tol = 8 * len(d) * np.finfo(float).eps * np.abs(ref).max()
        np.testing.assert_allclose(np.sort(got), ref, rtol=0, atol=tol)
        alone, e2, none = d.copy(), e * e, d[:0]
        ok = eigen.tridiagonal_eigenvalues_quad(none, none, alone, e2, none, none, none, none)
        assert ok == (True,) * 4
        assert np.array_equal(alone, got)


def test_gram_singular_values_against_float64_svd():
    """The compiled spectra of float32 matrices (both sides smaller, and wider than the
    compiled eigensolver's limit, where LAPACK takes over) are the float64 SVD's
    singular values to float64 Gram accuracy: sqrt(k eps) of the largest."""
    from fastrank.kernels.cpu import spectrum

    rng = np.random.default_rng(5)
    for shape in [(24, 40), (40, 24), (64, 64), (spectrum.COMPILED_EIGEN_MAX + 8,) * 2]:
        h = rng.standard_normal(shape).astype(np.float32)
        out = np.empty(min(shape))
        spectrum.gram_singular_values_one(h, out)
        ref = np.linalg.svd(h.astype(np.float64), compute_uv=False)
        assert np.all(np.diff(out) <= 0)
        tol = np.sqrt(min(shape) * np.finfo(float).eps) * ref[0]
        np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
