"""kernels/cuda/network.cu's network_f32 (small float32 networks, a stretch of layers in
one launch, one block per network) on the host stand-in: its weights bitwise the fill
kernels', its product bitwise the in-order chain of float32 FMAs, each layer against the GPU
backend's layer path and the CPU kernels from the same H within a bound derived below,
a stretch bitwise the same layers launched one by one, the failure codes, and NVRTC.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrank import codes, init, rng
from fastrank.backends.cpu import CPUBackend
from fastrank.gpu import GPUBackend, program
from fastrank.gpu.backend import fused_shared
from fastrank.spec import Network

U = 2.0**-24  # float32 unit roundoff (half an ulp of 1)


@pytest.fixture(scope="module")
def kernels():
    from fastrank.gpu.testing import HostKernels

    try:
        return HostKernels()
    except program.CompileError as exc:
        pytest.skip(f"no host build of the CUDA kernels: {exc}")


class Books:
    """A stack's bookkeeping, as GPUBackend keeps it on the device."""

    def __init__(self, s: int, failed=None, log_norm=None):
        self.log_norm = np.zeros(s) if log_norm is None else np.array(log_norm, np.float64)
        self.failed = np.full(s, -1, np.int64) if failed is None else np.array(failed, np.int64)
        self.reason = np.zeros(s, np.int64)
        self.factor = np.ones(s)


def run(kernels, net: Network, h, seeds, first: int, layers: int, books: Books,
        slots=None, block: int = 64, rescale=None, affine=None):
    """network_f32 on ``h`` (S, d, N; changed in place) for ``layers`` layers from layer
    ``first``; returns the measured slots (one per layer unless ``slots`` says)."""
    s, d, n = h.shape
    slots = np.arange(layers, dtype=np.int32) if slots is None else np.asarray(slots, np.int32)
    measured = np.full((max(1, slots.max() + 1), s, d, n), np.nan, np.float32)
    mul, sub = init.weight_affine(net, d) if affine is None else affine
    assert fused_shared(d, n) <= 232448  # the most any device gives a block
    kernels.launch("network_f32", s, block, (
        h, np.int32(d), np.int32(n), np.int32(layers), np.int64(first), slots, measured,
        np.asarray(seeds, np.uint64), np.uint32(rng.WEIGHTS), np.int32(net.init == "uniform"),
        np.float32(mul), np.float32(sub), np.int32(codes.NORMS[net.norm]),
        np.int32(codes.ACTIVATIONS[net.activation]), np.int32(net.order == "act-norm"),
        np.int32(net.residual), np.float32(net.gamma if net.residual else 0.0),
        np.float64(net.eps), np.int32(net.rescaled if rescale is None else rescale),
        books.log_norm, books.failed, books.reason, books.factor))
    return measured


def weights(kernels, net: Network, seeds, layer: int) -> np.ndarray:
    """Layer ``layer``'s weights by rng.cu's fill kernels (what GPUBackend multiplies)."""
    d = net.width
    w = np.empty((len(seeds), d, d), np.float32)
    mul, sub = init.weight_affine(net, d)
    kind = "uniform" if net.init == "uniform" else "normal"
    args = [w, np.int64(d * d), np.asarray(seeds, np.uint64), np.int32(1),
            np.uint32(rng.WEIGHTS), None, np.int64(layer), np.float32(mul)]
    kernels.launch(f"fill_{kind}_f32", len(seeds), 32,
                   args + ([np.float32(sub)] if kind == "uniform" else []) + [None])
    return w


@pytest.mark.parametrize("d, init_", [(128, "gaussian"), (33, "uniform")])
def test_the_weights_are_the_fill_kernels_bitwise(kernels, d, init_):
    """H = I, no norm, linear, no rescaling: the layer's output is its W, which must be
    the fill kernel's bit for bit (d = 128: four tiles of 32 rows; d = 33: one of 33)."""
    net = Network(width=d, batch=d, depth=4, activation="linear", init=init_)
    seeds = [7, 2**40 + 3]
    h = np.stack([np.eye(d, dtype=np.float32)] * 2)
    run(kernels, net, h, seeds, first=3, layers=1, books=Books(2), rescale=0)
    ref = weights(kernels, net, seeds, 3)
    assert np.array_equal(h.view(np.uint32), ref.view(np.uint32))


def _pre_norm(net: Network, w, h) -> np.ndarray:
    """A layer's values before normalisation, in float64: residual, then the activation
    when it comes first."""
    z = np.matmul(w.astype(np.float64), h.astype(np.float64))
    if net.residual:
        z = h + net.gamma * z
    if net.order == "act-norm" and net.activation != "linear":
        z = np.maximum(z, 0) if net.activation == "relu" else np.tanh(z)
    return z


def layer_bound(net: Network, w, h, out) -> tuple:
    """Bounds on |network_f32 - another correct float32 layer| from the same H, per seed:
    (H's entries, the log-norm).

    Each side's product obeys |fl(z) - z| <= gamma_d (|W||H|)_ij, gamma_d = d u / (1 - d u)
    (any order of the d terms, FMA or not: Higham, Accuracy and Stability, 3.1), so two
    differ by dz <= 2 gamma_d (|W||H|)_ij: d ulps of (|W||H|)_ij; times gamma when
    residual. The activation is 1-Lipschitz. Normalising a line of k values, x = (z -
    mean) m with m = 1/sqrt(var + eps), moves x by m dz through z, m dz through the mean,
    and |x| dm / m <= sqrt(k) m dz through m (var moves by at most 2 sqrt(var) dz, and
    |x| <= sqrt(k)): m dz (2 + sqrt(k)) to first order (k = N for bn/bn-rms, d for ln;
    the rescaling by m = 1/||x|| likewise with k = d N; none and not rescaled: m = 1,
    k = 0); plus 4 ulps of the layer's largest value for the roundings of the norm and of
    tanhf (glibc's and numpy's differ by up to 2 ulps each).
    The log-norm 0.5 log sum x^2 moves by at most max dx sqrt(d N) / ||x||."""
    s, d, n = out.shape
    gamma_d = d * U / (1 - d * U)
    dz = 2 * gamma_d * np.matmul(np.abs(w).astype(np.float64), np.abs(h).astype(np.float64))
    dz = dz.max(axis=(1, 2)) * (net.gamma if net.residual else 1.0)
    pre = _pre_norm(net, w, h)
    if net.norm in ("bn", "bn-rms"):
        c = pre - pre.mean(axis=2, keepdims=True) if net.norm == "bn" else pre
        m = (1 / np.sqrt((c * c).mean(axis=2) + net.eps)).max(axis=1)
        k = n
    elif net.norm == "ln":
        c = pre - pre.mean(axis=1, keepdims=True)
        m = (1 / np.sqrt((c * c).mean(axis=1) + net.eps)).max(axis=1)
        k = d
    elif net.rescaled:
        m, k = 1 / np.sqrt((pre * pre).sum(axis=(1, 2))), d * n
    else:
        m, k = np.ones(s), 0
    top = np.abs(out).max(axis=(1, 2)).astype(np.float64)
    bound = m * dz * (2 + np.sqrt(k)) + 8 * U * top
    norm = np.sqrt((out.astype(np.float64) ** 2).sum(axis=(1, 2)))
    return bound, bound * np.sqrt(d * n) / norm + 1e-12


def fma32(a, b, c) -> np.ndarray:
    """float32 a b + c rounded once, as fmaf. The product is exact in float64 (48 bits);
    TwoSum gives the float64 sum's error, which makes it the round-to-odd of the exact
    value, from which rounding to float32 is correct (53 >= 24 + 2 bits)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = np.broadcast_to(c, p.shape).astype(np.float64)
    s = p + c
    v = s - p
    err = (p - (s - v)) + (c - v)  # s + err == p + c exactly
    bits = s.view(np.int64)
    bits = np.where((err != 0) & ((err > 0) != (s > 0)), bits - 1, bits)  # toward zero
    bits = np.where(err != 0, bits | 1, bits)  # odd when inexact
    return bits.view(np.float64).astype(np.float32)


def in_order_product(w, h) -> np.ndarray:
    """W H as network_f32 forms it: acc = fma(W[i,k], H[k,j], acc) for k = 0, 1, ...,
    from acc = 0."""
    z = np.zeros((*w.shape[:2], h.shape[2]), np.float32)
    for k in range(w.shape[2]):
        z = fma32(w[:, :, k, None], h[:, None, k, :], z)
    return z


def layer_kernels(kernels, net: Network, z, h, layer: int, books: Books) -> None:
    """The GPU path's work after its GEMM, on ``z`` in place: rows_pass_f32 or
    cols_pass_f32, account, scale_f32 (as GPUBackend launches them)."""
    s, d, n = z.shape
    residual = int(net.residual)
    common = (np.int32(codes.ACTIVATIONS[net.activation]), np.int32(net.order == "act-norm"),
              np.float64(net.eps))
    part = np.zeros(s * max(d, n))
    head = (z, h if residual else None, np.float32(net.gamma if residual else 0.0),
            np.int32(residual))
    if net.norm == "ln":
        kernels.launch("cols_pass_f32", s, 128, (*head, np.int32(d), np.int32(n), np.int32(1),
                                                 *common, part, books.failed))
    else:
        kernels.launch("rows_pass_f32", s * d, 32, (*head, np.int32(s * d), np.int32(d),
                                                    np.int32(n), np.int32(codes.NORMS[net.norm]),
                                                    *common, part, books.failed))
    kernels.launch("account", s, 32, (part, np.int32(n if net.norm == "ln" else d), None,
                                      np.int64(layer), None, np.int32(net.rescaled),
                                      books.log_norm, books.failed, books.reason, books.factor))
    if net.rescaled:
        kernels.launch("scale_f32", s, 32, (z, np.int64(d * n), np.int32(1), books.factor,
                                            books.failed))


def test_the_product_is_the_in_order_chain_of_fmas_bitwise(kernels):
    """Z[i, j] = fma(W[i,d-1], H[d-1,j], ... fma(W[i,1], H[1,j], W[i,0] H[0,j]) ...)."""
    net = Network(width=33, batch=20, depth=2, activation="linear")
    seeds = [11, 12]
    h = np.random.default_rng(0).standard_normal((2, 33, 20)).astype(np.float32)
    ref = in_order_product(weights(kernels, net, seeds, 1), h)
    run(kernels, net, h, seeds, first=1, layers=1, books=Books(2), rescale=0)
    assert np.array_equal(h, ref)


NETS = [
    Network(width=8, batch=8, depth=3, activation="linear"),  # rescaled
    Network(width=33, batch=20, depth=3, activation="relu", norm="bn"),
    Network(width=33, batch=17, depth=3, activation="tanh", norm="ln", order="act-norm",
            gamma=0.5),
    Network(width=64, batch=24, depth=3, activation="relu", norm="bn-rms", init="uniform"),
    Network(width=16, batch=40, depth=3, activation="tanh", order="act-norm"),
    Network(width=24, batch=12, depth=3, activation="linear", norm="bn", order="act-norm",
            gamma=2.0),
    Network(width=128, batch=128, depth=2, activation="relu", norm="ln"),
]


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n.width}x{n.batch}-{n.activation}-"
                         f"{n.norm}-{n.order}-{n.init}-g{n.gamma if n.residual else 0}")
def test_each_layer_agrees_with_the_gpu_layer_path_and_the_cpu(kernels, net):
    """From the GPU path's H at each layer: network_f32's layer, the GPU path's
    (fill, GEMM, rows/cols pass, account, scale on the stand-in) and the CPU's, within
    :func:`layer_bound`; the same failures."""
    from fastrank.gpu.testing import HostDevice

    seeds = np.array([3, 99], np.uint64)
    gpu, cpu = GPUBackend(dev=HostDevice(block=32), graphs=False), CPUBackend()
    g, c = gpu.start(net, seeds), cpu.start(net, seeds)
    for layer in range(1, net.depth + 1):
        st = g.h
        h = st.h.copy()
        before = st.failed.copy(), st.log_norm.copy()
        books = Books(2, *before)
        c.h = h.copy() if isinstance(c.h, np.ndarray) else list(h.copy())
        c.layer, c.log_norm[:] = layer - 1, g.log_norm
        cpu.advance(c, layer)
        gpu.advance(g, layer)
        ours = h.copy()
        run(kernels, net, ours, seeds, first=layer, layers=1, books=books,
            block=256 if layer == 1 else 64)
        assert np.array_equal(books.failed, g.failed_layer) and np.array_equal(books.reason,
                                                                                 g.reason)
        assert (books.failed < 0).all()
        w = weights(kernels, net, seeds, layer)
        bound, log_bound = layer_bound(net, w, h, ours)
        for ref, log_norm in ((st.h, st.log_norm), (np.stack(c.h), c.log_norm)):
            err = np.abs(ours.astype(np.float64) - ref).max(axis=(1, 2))
            assert (err <= bound).all(), (layer, err, bound)
            assert (np.abs(books.log_norm - log_norm) <= log_bound).all()
        if net.rescaled:
            assert np.allclose(books.factor, st.factor, rtol=1e-5)
        # the GPU path's kernels after the GEMM, on network_f32's own product: 1 ulp (the
        # float64 statistics are summed in another order, then rounded to float32)
        exact, exact_books = in_order_product(w, h), Books(2, *before)
        layer_kernels(kernels, net, exact, h, layer, exact_books)
        np.testing.assert_array_max_ulp(ours, exact, maxulp=1)
        for a, b in ((books.log_norm, exact_books.log_norm), (books.factor, exact_books.factor)):
            assert np.allclose(a, b, rtol=1e-15, atol=1e-15)


def test_a_stretch_is_its_layers_one_by_one_bitwise(kernels):
    """Four layers in one launch, two of them measured, equal bit for bit four launches of
    one layer each: every slot, the last H, log-norms and factors; a seed failed before
    is left alone."""
    net = Network(width=24, batch=16, depth=8, activation="relu", norm="bn-rms",
                  init="uniform", gamma=0.7)
    seeds = [5, 6, 7]
    h0 = np.random.default_rng(1).standard_normal((3, 24, 16)).astype(np.float32)
    whole, books = h0.copy(), Books(3, failed=[-1, 2, -1], log_norm=[0.5, 9.0, -1.0])
    measured = run(kernels, net, whole, seeds, first=3, layers=4, books=books,
                   slots=[-1, 0, -1, 1])
    steps, ref = h0.copy(), Books(3, failed=[-1, 2, -1], log_norm=[0.5, 9.0, -1.0])
    for i in range(4):
        one = run(kernels, net, steps, seeds, first=3 + i, layers=1, books=ref)
        if i in (1, 3):
            live = [0, 2]
            assert np.array_equal(measured[i // 2][live], one[0][live])
            assert np.isnan(measured[i // 2][1]).all()
    assert np.array_equal(whole[[0, 2]], steps[[0, 2]])
    assert np.array_equal(whole[1], h0[1])
    for a, b in ((books.log_norm, ref.log_norm), (books.factor, ref.factor),
                 (books.failed, ref.failed)):
        assert np.array_equal(a, b)
    assert books.log_norm[1] == 9.0


def test_failures_stop_a_network_at_its_layer_with_the_accounts_reason(kernels):
    """A representation of zeros vanishes, one holding inf turns non-finite, at the
    stretch's first layer, with the codes of fastrank.codes (as the account kernel); the
    third seed runs all the layers."""
    net = Network(width=8, batch=8, depth=6, activation="relu")
    h = np.random.default_rng(2).standard_normal((3, 8, 8)).astype(np.float32)
    h[0] = 0.0
    h[1, 2, 3] = np.inf
    books = Books(3)
    run(kernels, net, h, [1, 2, 3], first=4, layers=3, books=books)
    assert books.failed.tolist() == [4, 4, -1]
    assert books.reason.tolist() == [codes.VANISHED, codes.NON_FINITE, codes.OK]
    assert np.isfinite(books.log_norm[2]) and books.log_norm[2] != 0.0


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_the_kernel(nvrtc, arch):
    ptx = program.compile_ptx(program.translation_unit("network.cu"), arch,
                              options=program.NVRTC_OPTIONS)
    assert ".entry network_f32" in ptx and ".extern .shared" in ptx
