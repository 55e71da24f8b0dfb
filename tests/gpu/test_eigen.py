"""fastrank's batched symmetric eigensolver kernel (kernels/cuda/eigen.cu: Householder,
then bisection by Sturm counts, one block per matrix) against LAPACK in float64, on the
host stand-in and on a device; and NVRTC/ptxas compiling eigen.cu (with the singular
value kernel, tests/gpu/test_svd_kernel.py) for the GPUs it targets."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from fastrank import codes
from fastrank.gpu import program

KERNEL = "householder_eigvalsh"
#: Within this much of the largest |eigenvalue| of LAPACK's (a few k eps ||A||).
RTOL = 1e-12


def solve(device, mats, block=None):
    """Eigenvalues (ascending) and status of a stack of symmetric matrices, one launch."""
    dev = device.dev
    s, k, _ = mats.shape
    a = dev.asarray(np.array(mats, np.float64))  # a copy: the kernel destroys it
    w = dev.empty((s, k), np.float64)
    status = dev.empty(s, np.int32)
    dev.launch(KERNEL, s, block or dev.eigen_block, (a, np.int32(k), w, status))
    return dev.to_host(w), dev.to_host(status)


def check(device, mats, block=None):
    got, status = solve(device, mats, block)
    assert (status == codes.OK).all(), status
    ref = np.linalg.eigvalsh(mats)
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), np.finfo(float).tiny)
    err = np.abs(got - ref) / scale
    assert err.max() <= RTOL, (mats.shape, err.max())
    return err.max()


def with_spectrum(rng, values):
    q, _ = np.linalg.qr(rng.standard_normal((len(values), len(values))))
    return (q * values) @ q.T


def gram_of_rank(rng, k, n, rank, noise):
    """The Gram matrix H H^T of a k x n H of the given rank plus ``noise`` (near-collapse)."""
    h = rng.standard_normal((k, rank)) @ rng.standard_normal((rank, n))
    h += noise * rng.standard_normal((k, n))
    return h @ h.T


@pytest.mark.parametrize("k", [1, 2, 3, 7, 31, 32, 33, 64, 100, 128])
def test_random_grams_and_symmetric_matrices_match_lapack(device, k):
    """A batch of several matrices of one k in one launch: Gram matrices (positive
    semidefinite) and indefinite symmetric ones, lower triangle read (as LAPACK)."""
    rng = np.random.default_rng(k)
    h = rng.standard_normal((3, k, k + 5))
    sym = rng.standard_normal((2, k, k))
    sym = np.tril(sym) + np.tril(sym, -1).transpose(0, 2, 1)
    check(device, np.concatenate([h @ h.transpose(0, 2, 1), sym]))


@pytest.mark.parametrize("k", [7, 33, 64])
def test_the_upper_triangle_is_not_read(device, k):
    rng = np.random.default_rng(1)
    g = gram_of_rank(rng, k, k, k, 0.0)
    junk = g + np.triu(rng.standard_normal((k, k)), 1)
    got, _ = solve(device, junk[None])
    assert np.abs(got[0] - np.linalg.eigvalsh(g)).max() <= RTOL * np.abs(g).sum(axis=1).max()


@pytest.mark.parametrize("k", [2, 33, 128])
def test_degenerate_spectra(device, k):
    """Repeated eigenvalues, rank 1, a diagonal and a zero matrix, nearly collapsed
    Grams (one direction 1e8 times the rest), and a matrix scaled to 1e150 (squares
    would overflow unscaled) and 1e-150."""
    rng = np.random.default_rng(k + 1)
    repeated = with_spectrum(rng, np.repeat([3.0, -1.0, 0.0, 2.0], -(-k // 4))[:k])
    u = rng.standard_normal(k)
    mats = [repeated, np.outer(u, u), np.diag(np.arange(k, 0, -1.0)), np.zeros((k, k)),
            gram_of_rank(rng, k, 2 * k, 1, 1e-8), gram_of_rank(rng, k, k, 2, 1e-12),
            1e150 * repeated, 1e-150 * repeated]
    check(device, np.stack(mats))


def test_block_sizes_and_grid(device):
    """Any block size that is a multiple of 32, smaller or larger than k: a thread owns
    columns c, c + blockDim, ...; and matrix s of a launch is block s."""
    rng = np.random.default_rng(7)
    h = rng.standard_normal((4, 40, 50))
    g = h @ h.transpose(0, 2, 1)
    for block in (32, 64):
        check(device, g, block)
    got, _ = solve(device, g)
    for s in range(4):
        assert np.abs(got[s] - np.linalg.eigvalsh(g[s])).max() <= RTOL * got[s].max()


def test_non_finite_matrices_fail_with_their_reason(device):
    """A NaN or infinite entry: the matrix's status is NON_FINITE and its eigenvalues
    NaN (never a value); the other matrices of the launch are unaffected."""
    k = 9
    rng = np.random.default_rng(3)
    g = np.stack([gram_of_rank(rng, k, k, k, 0.0) for _ in range(3)])
    g[0, 4, 2] = np.nan
    g[2, 8, 8] = np.inf
    got, status = solve(device, g)
    assert status.tolist() == [codes.NON_FINITE, codes.OK, codes.NON_FINITE]
    assert np.isnan(got[[0, 2]]).all()
    assert np.abs(got[1] - np.linalg.eigvalsh(g[1])).max() <= RTOL * got[1].max()


# ---------------------------------------------------------------------------------------
# Compilation for the targets
# ---------------------------------------------------------------------------------------


def _eigen_unit() -> str:
    return program.translation_unit("eigen.cu")


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_the_kernel(nvrtc, arch):
    ptx = program.compile_ptx(_eigen_unit(), arch, program.NVRTC_OPTIONS + program.CUPY_ADDS)
    assert sorted(re.findall(r"\.entry\s+(\w+)", ptx)) == ["bidiagonal_svdvals", KERNEL]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ptxas_no_spills_and_static_shared_memory_only(tmp_path, arch):
    """No register spills, and shared memory well within the 48 KiB a block gets
    without opt-in (the matrix itself stays in global memory)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed: the ptxas check needs a CUDA toolkit")
    src = tmp_path / "eigen.cu"
    src.write_text(_eigen_unit())
    proc = subprocess.run([nvcc, "-cubin", f"-arch={arch}", *program.NVRTC_OPTIONS,
                           "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"(\d+) bytes spill", proc.stderr) == ["0"] * 4, proc.stderr
    smem = re.findall(r"(\d+) bytes smem", proc.stderr)  # both kernels of eigen.cu
    assert len(smem) == 2 and max(map(int, smem)) <= 8 * 1024, proc.stderr


# ---------------------------------------------------------------------------------------
# In the GPU backend
# ---------------------------------------------------------------------------------------


def test_the_unconverged_status_is_no_other_status():
    assert codes.EIGEN_UNCONVERGED not in (codes.OK, codes.NON_FINITE, codes.VANISHED)


def _measured_batch(device, width, unconverged=()):
    """A backend on ``device`` whose launches are recorded (the matrices listed in
    ``unconverged`` reported so by the eigensolver, their eigenvalues spoiled), and a
    batch of 4 seeds of a width-``width`` network advanced 2 layers."""
    from fastrank.spec import Network

    backend = device.backend(graphs=False)
    dev, launches, launch = backend.dev, [], backend.dev.launch

    def recorded(name, grid, block, args):
        launch(name, grid, block, args)
        launches.append((name, grid))
        if name == KERNEL and unconverged:
            with dev.context():
                w, status = args[2], args[3]
                for i in unconverged:
                    w[i] = 0.0
                    status[i] = codes.EIGEN_UNCONVERGED

    dev.launch = recorded
    net = Network(width=width, depth=2, batch=width + 7)
    batch = backend.start(net, np.arange(4))
    backend.advance(batch, 2)
    return backend, batch, launches


@pytest.mark.parametrize("width", [24, 128])
def test_the_backends_gram_spectra_come_from_one_launch(device, width):
    from fastrank.backends.cpu import host_spectra

    backend, batch, launches = _measured_batch(device, width)
    spec = backend.spectra(batch, [0, 1, 2, 3], "gram")
    assert [x for x in launches if x[0] == KERNEL] == [(KERNEL, 4)]
    ref = host_spectra(backend.dev.to_host(batch.h.h), "gram")
    assert np.abs(spec - ref).max() <= 1e-10 * ref[:, 0].max()


def test_an_unconverged_matrix_stops_its_seed_never_returned(device):
    """A matrix the kernel reports unconverged stops its seed at this layer with the
    reason (its eigenvalues, spoiled here, are never handed out); the others measure."""
    from fastrank.backends.cpu import host_spectra

    backend, batch, _ = _measured_batch(device, 24, unconverged=(1, 3))
    spec = backend.spectra(batch, [0, 1, 2, 3], "gram")
    ref = host_spectra(backend.dev.to_host(batch.h.h), "gram")
    assert np.isnan(spec[[1, 3]]).all()
    assert np.abs(spec[[0, 2]] - ref[[0, 2]]).max() <= 1e-10 * ref[:, 0].max()
    assert batch.failed_layer.tolist() == [-1, 2, -1, 2]
    assert batch.reason.tolist() == [0, codes.EIGEN_UNCONVERGED, 0, codes.EIGEN_UNCONVERGED]
