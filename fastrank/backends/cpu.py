"""CPU backend: compiled kernels that run whole stretches of depth for float32 Gaussian
networks of constant width -- one seed per thread when narrow (kernels/cpu/depth.py),
a network's rows shared among the threads when wide (kernels/cpu/wide.py) -- and for
every other network a layer at a time: weights from the numba Philox stream, GEMM
through numpy's BLAS and the fused normalisation + activation pass. Tangents
(fastrank.tangents) are pushed through each layer's Jacobian with the weights and the
pre-activation of that layer: in the whole-depth kernel by the thread that runs the
seed (up to tuning.SMALL_WIDTH_MAX), elsewhere layer by layer (the wide kernel's
networks too). A float32 network's tangents are float32 and go through the compiled
pass of kernels/cpu/tangents.py, a float64 network's through fastrank.tangents."""

from __future__ import annotations

import platform

import numpy as np

from fastrank import blas, codes, init, rng, tangents, tuning
from fastrank.backends.base import Backend, Batch
from fastrank.kernels.cpu import depth, spectrum, start_threads, wide
from fastrank.kernels.cpu import layer as kernels
from fastrank.kernels.cpu import tangents as tangent_kernels
from fastrank.spec import Network
from fastrank.tangents import start as start_tangents


def _compiled(network: Network) -> bool:
    """Whether the compiled kernels can run ``network``: float32, Gaussian weights, one
    width throughout (the input's too)."""
    return (network.dtype == "float32" and network.init == "gaussian"
            and isinstance(network.width, int) and network.in_dim == network.width)


def uses_depth_kernel(network: Network, seeds: int = 1) -> bool:
    """Networks for kernels/cpu/depth.py (one seed per thread): narrow ones
    (tuning.SMALL_WIDTH_MAX), or up to tuning.SEEDED_WIDTH_MAX wide when every numba
    thread has a seed of its own."""
    if not _compiled(network):
        return False
    if network.width <= tuning.SMALL_WIDTH_MAX:
        return True
    import numba

    return network.width <= tuning.SEEDED_WIDTH_MAX and seeds >= numba.get_num_threads()


def uses_wide_kernel(network: Network) -> bool:
    """Networks for kernels/cpu/wide.py (a network at a time, its rows shared among the
    threads): wider than tuning.SEEDED_WIDTH_MAX, but not layer norm (its statistics
    span every row). By width alone, never by the seeds in a batch: a run then takes
    the same path in a sweep and in its resume (splitting the GEMM by rows can change
    its last bits, so the two kernels do not give the same bits at one width)."""
    return (_compiled(network) and network.norm != "ln"
            and network.width > tuning.SEEDED_WIDTH_MAX)


def depth_kernel_takes(network: Network, seeds: int, tangents: bool) -> bool:
    """Whether ``seeds`` seeds of ``network`` run in the whole-depth kernel, their
    tangents with them. With tangents only up to tuning.SMALL_WIDTH_MAX, where the width
    alone picks the kernel: above it the seeds per thread do, which a resume can change,
    and the kernel's tangents equal the per-layer path's to rounding, not bit for bit
    (its H is the same bits)."""
    return uses_depth_kernel(network, seeds) and (
        not tangents or network.width <= tuning.SMALL_WIDTH_MAX)


def _in_depth_kernel(batch: Batch) -> bool:
    """depth_kernel_takes for a batch."""
    return depth_kernel_takes(batch.network, len(batch.seeds), batch.tangents is not None)


def _kernel_layer(network: Network) -> tuple:
    """A network's layer as the compiled kernels (depth.py, wide.py) take it: the weight
    stream, the weights' scale, gamma, the norm and activation codes, whether the
    activation comes first, eps, and whether H is rescaled each layer."""
    w_scale, _ = init.weight_affine(network, network.width)
    return (np.uint32(rng.WEIGHTS), w_scale, network.gamma, codes.NORMS[network.norm],
            codes.ACTIVATIONS[network.activation], network.order == "act-norm", network.eps,
            network.rescaled)


class CPUBackend(Backend):
    name = "cpu"

    def __init__(self):
        blas.libraries()  # SciPy's BLAS loads now, before numba's first kernel loads it
        start_threads()
        self._buffers: dict = {}

    def start(self, network: Network, seeds, *, tangents: int = 0, qr_every: int = 1) -> Batch:
        seeds = np.asarray(seeds, dtype=np.uint64)
        hs = [init.input_matrix(network, int(s)) for s in seeds]
        with blas.one_thread():  # the tangents' QR: OpenBLAS's threads would spin on after
            started = [start_tangents(network, int(s), tangents, network.dtype)
                       for s in seeds] if tangents else None
        batch = Batch(network, seeds, hs, 0, np.zeros(len(seeds)),
                      np.full(len(seeds), -1, np.int64), np.zeros(len(seeds), np.int64),
                      started, qr_every)
        for i, h in enumerate(hs):
            factor = batch.account(i, 0, kernels.sum_of_squares(h))
            if factor is not None and factor != 1.0:
                kernels.scale(h, factor)
        if _in_depth_kernel(batch):
            batch.h = np.stack(hs)
        return batch

    def advance(self, batch: Batch, stop: int) -> None:
        net = batch.network
        if _in_depth_kernel(batch):
            self._depth_kernel(batch, np.array([stop], np.int64), 0)
        elif uses_wide_kernel(net) and batch.tangents is None:
            self._wide_kernel(batch, stop)
        else:
            spare: dict = {}  # per seed, the buffer the next layer writes into
            spare_t: dict = {}  # and its tangents'
            carried = batch.tangents is not None
            with blas.usual():  # each layer's GEMM on BLAS's threads
                for layer in range(batch.layer + 1, stop + 1):
                    for i in batch.alive():
                        h, pre = batch.h[i], None
                        if carried:  # the layer's pre-activation, for the tangents
                            pre = self._buffer("pre-activation",
                                               (init.layer_shape(net, layer)[0], h.shape[1]),
                                               h.dtype)
                        z, sumsq, w = self._forward(net, int(batch.seeds[i]), layer, h,
                                                    spare.get(i), pre)
                        if carried:
                            spare_t[i] = self._push_tangents(net, w, h, pre, batch.tangents[i],
                                                             layer, batch.qr_every,
                                                             spare_t.get(i))
                        factor = batch.account(i, layer, sumsq)
                        if factor is not None and factor != 1.0:
                            kernels.scale(z, factor)
                        spare[i], batch.h[i] = h, z
        batch.layer = stop

    def measure_points(self, batch: Batch, points, method: str) -> tuple:
        if method == "gram" and _in_depth_kernel(batch):
            # the whole stretch in one call, each seed's Gram spectra by the thread that
            # runs it: no Python, and no second parallel region, per measured layer
            return self._depth_kernel(batch, np.asarray(points, np.int64),
                                      min(batch.h.shape[1:]))
        return super().measure_points(batch, points, method)

    def _depth_kernel(self, batch: Batch, stops: np.ndarray, k: int):
        """Run the whole-depth kernel through ``stops``: (spectra (stops, seeds, k) or
        empty when k is 0, log-norms (stops, seeds), the tangents' log growth (stops,
        seeds, K) or None without tangents), NaN where a seed had stopped. The batch's
        Tangents take the kernel's tangents and logs back."""
        n = len(batch.seeds)
        spectra = np.full((len(stops), n, k) if k else (0, 0, 0), np.nan)
        log_norms = np.full((len(stops), n), np.nan)
        carried = batch.tangents
        if carried:
            t, logs = np.stack([c.t for c in carried]), np.stack([c.log for c in carried])
        else:
            t, logs = np.empty((n, 0, *batch.h.shape[1:]), np.float32), np.empty((n, 0))
        tangent_logs = np.full((len(stops), *logs.shape), np.nan)
        with blas.one_thread():  # one GEMM per thread
            depth.advance(
                batch.h, batch.seeds, batch.layer, stops, *_kernel_layer(batch.network),
                batch.log_norm, batch.failed_layer, batch.reason, spectra, log_norms,
                t, logs, batch.qr_every, tangent_logs,
            )
        if carried:
            for c, ti, li in zip(carried, t, logs, strict=True):
                c.t, c.log = ti, li
        batch.layer = int(stops[-1])
        return spectra, log_norms, tangent_logs if carried else None

    def _wide_kernel(self, batch: Batch, stop: int) -> None:
        """Run every live seed, one after another, on to ``stop`` with the wide kernel."""
        import numba

        net = batch.network
        d, n = net.width, net.batch
        spare = self._buffer("spare", (d, n))
        w = self._buffer("weights", (d, d))
        with blas.one_thread():  # one GEMM per thread, each on its block of rows
            for i in batch.alive():
                wide.advance(
                    batch.h[i], spare, w, batch.seeds, i, batch.layer, stop,
                    *_kernel_layer(net),
                    batch.log_norm, batch.failed_layer, batch.reason, numba.get_num_threads(),
                )

    def _buffer(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """A work array kept between calls (fresh multi-MB arrays cost page faults at
        large widths)."""
        key = (name, shape, np.dtype(dtype))
        if key not in self._buffers:
            self._buffers[key] = np.empty(shape, dtype)
        return self._buffers[key]

    def _forward(self, network: Network, seed: int, layer: int, h: np.ndarray,
                 out: np.ndarray | None = None, pre: np.ndarray | None = None):
        """One layer through BLAS: H <- act(norm(W H)) (or the residual/act-norm forms),
        written into ``out`` when it has the right shape; weights go into a kept buffer
        (fresh multi-MB arrays per layer would cost page faults at large widths). The
        pre-activation Z (W H, or H + gamma W H), before the norm and the activation, is
        copied into ``pre`` where given (for the tangents). Returns the new H, its sum of
        squares and the weights (valid until the next call)."""
        shape = init.layer_shape(network, layer)
        w = None if network.init == "orthogonal" else self._buffer("weights", shape, network.dtype)
        w = init.weights(network, seed, layer, out=w)
        if out is None or out.shape != (shape[0], h.shape[1]):
            out = np.empty((shape[0], h.shape[1]), h.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # booked as a failure instead
            z = np.matmul(w, h, out=out)
            if network.residual:
                z *= z.dtype.type(network.gamma)
                z += h
        if pre is not None:
            np.copyto(pre, z)
        fused = kernels.normalize_activate_parallel if z.size >= tuning.PARALLEL_MIN_SIZE else (
            kernels.normalize_activate)
        sumsq = fused(
            z,
            codes.NORMS[network.norm],
            codes.ACTIVATIONS[network.activation],
            network.order == "act-norm",
            network.eps,
        )
        return z, sumsq, w

    def _push_tangents(self, network: Network, w: np.ndarray, h: np.ndarray, pre: np.ndarray,
                       carried, layer: int, qr_every: int, out: np.ndarray | None):
        """Push one seed's Tangents through the layer of weights ``w``, input ``h`` and
        pre-activation ``pre`` (_forward's), and renormalise them. float64 tangents by
        fastrank.tangents; float32 ones by K SGEMMs into ``out`` (when it has the right
        shape) on BLAS's threads and the compiled pass on numba's (the same arithmetic
        as the whole-depth kernel's). Returns the array the tangents were in, for the
        next layer's ``out``."""
        old = carried.t
        if old.dtype == np.float64:
            tangents.renormalise(carried, tangents.push(network, w, h, old, z=pre), layer,
                                 qr_every)
            return None
        k, n = old.shape[0], old.shape[2]
        if out is None or out.shape != (k, w.shape[0], n):
            out = np.empty((k, w.shape[0], n), np.float32)
        for m in range(k):
            np.matmul(w, old[m], out=out[m])
        sq = np.empty((w.shape[0], k))
        tangent_kernels.rows_parallel(pre, old, out, sq, network.gamma,
                                      codes.NORMS[network.norm],
                                      codes.ACTIVATIONS[network.activation],
                                      network.order == "act-norm", network.eps)
        tangent_kernels.renormalise(out, sq, carried.log, k >= 2 and layer % qr_every == 0)
        carried.t = out
        return old

    def spectrum(self, batch: Batch, i: int, method: str) -> np.ndarray:
        return self.spectra(batch, [i], method)[0]

    def spectra(self, batch: Batch, idx: list[int], method: str) -> np.ndarray:
        if isinstance(batch.h, np.ndarray):  # the whole-depth kernel's stack
            return host_spectra(batch.h[idx], method)
        return host_spectra(np.stack([batch.h[i] for i in idx]), method)

    def gram_stats(self, batch: Batch, i: int) -> tuple[float, float, float]:
        h = batch.h[i]
        if not uses_wide_kernel(batch.network):
            return host_gram_stats(h)
        import numba

        # on numba's threads, like the layers, and every BLAS at one thread: numpy's
        # BLAS threads, once woken here, would spin through the next layer
        a = h if h.shape[0] <= h.shape[1] else np.ascontiguousarray(h.T)
        g = self._buffer("gram", (a.shape[0], a.shape[0]))
        with blas.one_thread():  # Lanczos's matrix-vector products are small: one thread
            wide.rows_product(a, a.T, g, numba.get_num_threads())
            return gram_statistics(g)

    def threads(self) -> tuple[int, int]:
        import numba

        return numba.get_num_threads(), blas.usual_threads()

    def thread_invariant(self, network: Network, seeds: int, tangents: int = 0) -> bool:
        """Only in the whole-depth kernel (one seed per thread): layer by layer and in the
        wide kernel, products and parallel reductions are split among the threads, which
        can change their last bits."""
        return depth_kernel_takes(network, seeds, tangents > 0)

    def describe(self) -> dict:
        import numba

        return {
            "backend": self.name,
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "numba_threads": numba.get_num_threads(),
            "numpy": np.__version__,
            "numba": numba.__version__,
        }


def _blas_threads_for(k: int):
    """One BLAS thread for the eigensolvers of matrices up to tuning.SMALL_EIGEN_MAX (a
    second thread gains little there and costs several times over on a busy machine);
    the usual count above."""
    return blas.one_thread() if k <= tuning.SMALL_EIGEN_MAX else blas.usual()


def host_spectrum(h: np.ndarray, method: str) -> np.ndarray:
    """Singular values of one host matrix, descending, float64 (see host_spectra)."""
    return host_spectra(h[None], method)[0]


def host_spectra(hs: np.ndarray, method: str) -> np.ndarray:
    """Singular values of each matrix of a stack (m x d x N), descending, float64.

    gram: eigenvalues of the float64 Gram matrix of the smaller side (exact product of
    float32 entries; accurate down to ~1e-8 s_max, far below float32's rank tolerance);
    svd: LAPACK on a float64 copy, for float64 networks and for checking. Small Gram
    matrices go through one compiled call, a matrix per numba thread; larger ones one
    at a time with the BLAS library's threads.
    """
    m, d, n = hs.shape
    k = min(d, n)
    with _blas_threads_for(k):
        if method == "svd":
            return np.linalg.svd(hs.astype(np.float64), compute_uv=False)
        out = np.empty((m, k))
        if k <= tuning.SMALL_EIGEN_MAX:
            spectrum.gram_singular_values(hs, out)
            return out
        for i in range(m):
            h64 = hs[i].astype(np.float64)
            gram = h64 @ h64.T if d <= n else h64.T @ h64
            out[i] = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))
    return out


def host_gram_stats(h: np.ndarray) -> tuple[float, float, float]:
    """trace, squared Frobenius norm and top eigenvalue of the Gram matrix of the smaller
    side: one GEMM in the network's dtype, reductions in float64, and the top eigenvalue
    by Lanczos (SciPy's eigsh, matrix-vector products through numpy) from a fixed start
    vector -- the all-ones vector would lie in the null space of a batch-normalised H.

    Every BLAS call here goes through numpy's BLAS, like the per-layer path's GEMM:
    alternating with SciPy's separate copy of OpenBLAS leaves one library's threads
    spinning while the other works, which costs several times a layer's work on few
    cores. The wide kernel's networks, whose layers run on numba's threads, compute the
    Gram matrix there too (CPUBackend.gram_stats).
    """
    with blas.usual():
        return gram_statistics(h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h)


def gram_statistics(g: np.ndarray) -> tuple[float, float, float]:
    """trace, squared Frobenius norm and top eigenvalue of a Gram matrix (host_gram_stats)."""
    trace, frob2 = float(np.trace(g, dtype=np.float64)), kernels.sum_of_squares(g)
    if g.shape[0] <= codes.DENSE_TOP_EIGEN_MAX:
        with blas.one_thread():
            return trace, frob2, float(np.linalg.eigvalsh(g.astype(np.float64))[-1])
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator(g.shape, matvec=g.dot, dtype=g.dtype)
    start = np.random.default_rng(codes.LANCZOS_SEED).standard_normal(g.shape[0]).astype(g.dtype)
    tol = 1e-6 if g.dtype == np.float32 else 1e-10
    top = eigsh(op, k=1, which="LA", v0=start, tol=tol, return_eigenvectors=False)
    return trace, frob2, float(top[0])
