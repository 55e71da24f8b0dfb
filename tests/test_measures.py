"""Rank measures from a spectrum against direct numpy computations on H itself."""

import numpy as np
import pytest

from fastrank import measures, tuning
from fastrank.backends.cpu import host_spectra, host_spectrum


def _matrices():
    rng = np.random.default_rng(7)
    full = rng.standard_normal((24, 40)).astype(np.float32)
    low = (rng.standard_normal((24, 5)) @ rng.standard_normal((5, 40))).astype(np.float32)
    decaying = (rng.standard_normal((30, 30)) * np.logspace(0, -9, 30)).astype(np.float32)
    rank_one = np.outer(rng.standard_normal(16), rng.standard_normal(16)).astype(np.float32)
    return {"full": full, "low": low, "decaying": decaying, "rank_one": rank_one}


@pytest.fixture(params=list(_matrices()))
def h(request):
    return _matrices()[request.param]


def test_spectra_gram_and_svd_agree(h):
    gram, svd = host_spectrum(h, "gram"), host_spectrum(h, "svd")
    assert gram.shape == svd.shape == (min(h.shape),)
    # A symmetric eigensolver's eigenvalues carry an absolute error of a small multiple
    # of eps64 * ||G|| = eps64 * s_max^2 (backward stability); allow 10 * size of that.
    bound = 10 * max(h.shape) * np.finfo(np.float64).eps * svd[0] ** 2
    assert np.all(np.abs(gram**2 - svd**2) <= bound)
    # Hence every value above ~1e-6 s_max is accurate to 1e-4 relative or better.
    big = svd > 1e-6 * svd[0]
    np.testing.assert_allclose(gram[big], svd[big], rtol=1e-4)


@pytest.mark.parametrize("small_eigen_max", [512, 0])  # compiled stack / one at a time
@pytest.mark.parametrize("shape", [(6, 24, 40), (5, 40, 24), (3, 30, 30)])
def test_a_stack_of_spectra_against_numpy(shape, small_eigen_max, monkeypatch):
    """host_spectra of a stack: each matrix's singular values as numpy's float64
    eigensolver gives them for its Gram matrix, and as host_spectrum gives them alone."""
    monkeypatch.setattr(tuning, "SMALL_EIGEN_MAX", small_eigen_max)
    rng = np.random.default_rng(3)
    hs = rng.standard_normal(shape).astype(np.float32)
    hs[1] *= np.logspace(0, -6, shape[2]).astype(np.float32)  # a decaying spectrum
    got = host_spectra(hs, "gram")
    assert got.shape == (shape[0], min(shape[1:]))
    for i, h in enumerate(hs.astype(np.float64)):
        g = h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h
        ref = np.sqrt(np.clip(np.linalg.eigvalsh(g)[::-1], 0, None))
        bound = 10 * max(h.shape) * np.finfo(np.float64).eps * ref[0] ** 2
        assert np.all(np.abs(got[i] ** 2 - ref**2) <= bound)
        assert np.array_equal(host_spectrum(hs[i], "gram"), got[i])
    np.testing.assert_allclose(host_spectra(hs, "svd"),
                               np.linalg.svd(hs.astype(np.float64), compute_uv=False))


def test_measures_against_direct_formulas(h):
    d, n = h.shape
    s = host_spectrum(h, "gram")
    m = measures.all_measures(s, h.shape, np.float32, taus=(0.1, 0.5))
    h64 = h.astype(np.float64)
    fro2 = np.sum(h64**2)
    assert m["soft_rank"] == pytest.approx(fro2**2 / np.sum((h64.T @ h64) ** 2), rel=1e-9)
    assert m["numerical_rank"] == np.linalg.matrix_rank(h)  # numpy's rule in float32
    assert m["stable_rank"] == pytest.approx(fro2 / np.linalg.norm(h64, 2) ** 2, rel=1e-9)
    gap = np.linalg.norm(h64.T @ h64 / fro2 - np.eye(n) / n)
    assert m["orthogonality_gap"] == pytest.approx(gap, rel=1e-7, abs=1e-12)
    eig = np.linalg.eigvalsh(h64 @ h64.T)
    expected_tau = [np.sum(eig > t * eig.mean()) for t in (0.1, 0.5)]
    assert m["rank_tau"].tolist() == expected_tau
    sv = np.linalg.svd(h64, compute_uv=False)
    p = sv / sv.sum()
    p = p[p > 0]
    assert m["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-6)


def test_known_values():
    s = np.ones(10)
    assert measures.soft_rank(s) == pytest.approx(10)
    assert measures.effective_rank(s) == pytest.approx(10)
    assert measures.orthogonality_gap(s, (10, 10)) == pytest.approx(0, abs=1e-12)
    one = np.array([3.0, 0, 0])
    assert measures.soft_rank(one) == 1 and measures.stable_rank(one) == 1
    assert measures.condition_number(one) == np.inf
    assert measures.numerical_rank(one, (3, 3), np.float32) == 1


def test_numerical_rank_follows_the_dtype():
    s = np.array([1.0, 1e-9])
    assert measures.numerical_rank(s, (2, 2), np.float32) == 1
    assert measures.numerical_rank(s, (2, 2), np.float64) == 2


def test_a_stack_of_spectra_gives_each_row_its_own_values():
    """One call for a batch of seeds: each row's measures equal those of its spectrum
    measured alone, bitwise, whatever rows stand beside it (zeros and ties included)."""
    rng = np.random.default_rng(11)
    stack = np.sort(rng.random((40, 12)) * np.logspace(0, -8, 12), axis=1)[:, ::-1].copy()
    stack[3, 5:] = 0.0  # rank-deficient
    stack[7] = 0.0  # vanished
    stack[9] = 1.0  # all equal
    taus = (0.1, 0.5)
    together = measures.all_measures(stack, (12, 30), np.float32, taus)
    subset = measures.all_measures(stack[5:12], (12, 30), np.float32, taus)
    for j, row in enumerate(stack):
        alone = measures.all_measures(row, (12, 30), np.float32, taus)
        for name, value in alone.items():
            assert np.array_equal(together[name][j], value, equal_nan=True), (name, j)
            if 5 <= j < 12:
                assert np.array_equal(subset[name][j - 5], value, equal_nan=True), (name, j)
    assert together["soft_rank"][7] == 0 and together["condition_number"][7] == np.inf
    assert together["soft_rank"][9] == pytest.approx(12) and together["numerical_rank"][3] == 5


def test_rank_tau_counts_eigenvalues_above_tau_times_their_mean_over_all_d():
    """H H^T of a (6, 4) H with singular values 3, 2, 1, 0.5 has eigenvalues 9, 4, 1,
    0.25 and two zeros: mean 14.25 / 6 = 2.375 (over all d = 6, not the 4 nonzero ones).
    "Above" is strict: 4 equal eigenvalues are not above 1.0 times their mean."""
    s = np.array([3.0, 2.0, 1.0, 0.5])
    taus = (0.1, 0.5, 1.0, 2.0)  # thresholds 0.2375, 1.1875, 2.375, 4.75
    single = measures.rank_tau(s, (6, 4), taus)
    assert single.shape == (4,) and single.dtype == np.int64
    assert single.tolist() == [4, 2, 2, 1]
    eig = np.concatenate([s**2, np.zeros(2)])
    assert single.tolist() == [int(np.sum(eig > t * eig.mean())) for t in taus]
    assert measures.rank_tau(np.ones(4), (4, 4), (1.0, 0.999)).tolist() == [0, 4]
    stack = np.stack([s, np.ones(4), np.zeros(4)])
    stacked = measures.rank_tau(stack, (6, 4), taus)
    assert stacked.shape == (3, 4)
    assert stacked.tolist() == [[4, 2, 2, 1], [4, 4, 4, 0], [0, 0, 0, 0]]
    for row, counts in zip(stack, stacked, strict=True):
        np.testing.assert_array_equal(measures.rank_tau(row, (6, 4), taus), counts)
