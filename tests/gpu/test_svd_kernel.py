"""fastrank's batched singular value kernel (kernels/cuda/eigen.cu: bidiagonal_svdvals,
Golub-Kahan bidiagonalisation then bisection on the Golub-Kahan tridiagonal, one block per
matrix) against LAPACK's SVD in float64, on the host stand-in and on a device; and the
GPU backend's float64 spectra through it, one launch for the stack."""

import numpy as np
import pytest

from fastrank import codes
from fastrank.spec import Network

KERNEL = "bidiagonal_svdvals"
#: Within this much of the largest singular value of LAPACK's (a few k eps ||A||).
RTOL = 1e-12


def svdvals(device, mats):
    """Singular values (descending) and status of a stack of k x m matrices (k <= m)."""
    dev = device.dev
    s, k, m = mats.shape
    with dev.context():
        a = dev.asarray(np.array(mats, np.float64))  # a copy: the kernel destroys it
        w, status = dev.empty((s, k), np.float64), dev.empty(s, np.int32)
        dev.launch(KERNEL, s, dev.eigen_block, (a, np.int32(k), np.int32(m), w, status))
        return dev.to_host(w), dev.to_host(status)


def check(device, mats):
    got, status = svdvals(device, mats)
    assert (status == codes.OK).all(), status
    ref = np.linalg.svd(mats, compute_uv=False)
    scale = np.maximum(ref[:, :1], np.finfo(float).tiny)
    err = np.abs(got - ref) / scale
    assert err.max() <= RTOL, (mats.shape, err.max())
    assert (got >= 0).all()


@pytest.mark.parametrize("k, m", [(1, 1), (1, 9), (2, 2), (3, 5), (7, 40), (31, 31),
                                  (33, 64), (64, 64), (64, 300), (100, 130), (128, 128)])
@pytest.mark.slow
def test_random_matrices_match_lapack(device, k, m):
    rng = np.random.default_rng(k * 1000 + m)
    check(device, rng.standard_normal((3, k, m)))


@pytest.mark.parametrize("k, m", [(16, 16), (40, 70), (128, 129)])
@pytest.mark.slow
def test_hard_spectra_match_lapack(device, k, m):
    """Rank-deficient and nearly collapsed matrices, repeated singular values (an
    orthogonal block), a zero column, scales far from 1, a rank-one matrix."""
    rng = np.random.default_rng(k)
    rank = max(1, k // 3)
    mats = [rng.standard_normal((k, rank)) @ rng.standard_normal((rank, m)),
            rng.standard_normal((k, 1)) @ rng.standard_normal((1, m))
            + 1e-9 * rng.standard_normal((k, m)),
            np.linalg.qr(rng.standard_normal((m, k)))[0].T * 3.0,
            rng.standard_normal((k, m)) * 1e150,
            rng.standard_normal((k, m)) * 1e-150,
            np.logspace(0, -14, k)[:, None] * np.linalg.qr(rng.standard_normal((m, k)))[0].T]
    mats[0][:, 0] = 0.0
    check(device, np.stack(mats))


def test_zero_and_non_finite_matrices(device):
    mats = np.zeros((3, 4, 6))
    mats[1, 2, 3] = np.inf
    mats[2, 0, 0] = np.nan
    got, status = svdvals(device, mats)
    assert status.tolist() == [codes.OK, codes.NON_FINITE, codes.NON_FINITE]
    assert (got[0] == 0).all() and np.isnan(got[1:]).all()


@pytest.mark.parametrize("d, n", [(24, 40), (40, 24), (128, 200)])
@pytest.mark.slow
def test_float64_spectra_come_from_one_launch(device, d, n):
    """A float64 network's svd spectra (its default) for every seed by one launch,
    whichever side is smaller, equal to LAPACK's of the same H."""
    backend = device.backend(graphs=False)
    dev, launches, launch = backend.dev, [], backend.dev.launch

    def recorded(name, grid, block, args, shared=0):
        launches.append(name)
        launch(name, grid, block, args, shared)

    dev.launch = recorded
    net = Network(width=d, depth=2, batch=n, dtype="float64", activation="tanh")
    batch = backend.start(net, np.arange(5))
    backend.advance(batch, 2)
    spec = backend.spectra(batch, list(range(5)), "svd")
    assert launches.count(KERNEL) == 1
    ref = np.linalg.svd(dev.to_host(batch.h.h), compute_uv=False)
    assert np.abs(spec - ref).max() <= RTOL * ref[:, 0].max()
