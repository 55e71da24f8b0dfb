"""GPU backend: the depth loop of many seeds of one network on a CUDA device, with CuPy.

Per layer, for the whole stack of seeds at once (S matrices d x N in one array):

1. the weights of every seed, drawn on the device from the same Philox stream as the
   CPU (kernels/cuda/rng.cu; float32 Gaussian and uniform weights are bitwise the CPU's);
2. one strided-batched cuBLAS GEMM ``Z[s] = W[s] @ H[s]`` (TF32 only when asked);
3. one fused pass per row (a warp each: batch norm, bn-rms, none) or per column (layer
   norm): residual update, normalisation and activation in the network's order, float64
   sum of squares;
4. ``account``: the bookkeeping of :meth:`Batch.account` (log-norm, rescaling factor,
   failure at this layer) on the device, which also moves the device's layer counter on
   (its last block), and ``scale`` for rescaled networks.

Nothing in a layer waits for the host, so for constant-width networks a run of layers is
captured once as a CUDA graph and replayed (the layer counter lives on the device, and
the two buffers H and Z alternate, so an even number of layers maps the graph's state
back onto itself). The host learns the log-norms and failures once per ``advance``.

Measured layers (:meth:`GPUBackend.measure_stretch`): method gram, the float64 Gram
matrix of the smaller side of every seed by one batched DGEMM, eigenvalues by fastrank's
Householder-bisection kernel; method svd, singular values of H in float64 by fastrank's
bidiagonalisation-bisection kernel (both for k <= 128, one launch for the stack, one
block per seed; cuSOLVER for larger k, one call per seed, its ``info`` checked); then the
row on the device
(measures.cu: singular values, log-norm, every measure); a solver that did not converge
stops its seed there. A stretch of measured layers goes to the host as one copy on a
second stream while the next stretch runs.

Tangents (``tangents`` > 0, fastrank.tangents): every seed's K directions live on the
device as one float64 stack (S, K, d, N), started on the host (fastrank.tangents.start,
per seed) and uploaded. After each layer's GEMM, while H is still the layer's input,
fastrank.tangents.push and renormalise run on the whole stack through CuPy (numpy's
functions dispatch to it: batched products by cuBLAS, the QR by cuSOLVER), so the GPU's
tangents are the CPU's arithmetic in another summation order. Their log growth (S, K)
rides with the stretch's measured rows to the host. Tangent runs go layer by layer: no
CUDA graphs (cuSOLVER cannot be captured) and no networks whole on the chip.

The orchestration talks to a :class:`~fastrank.gpu.device.Device`: the real one is
CupyDevice; fastrank.gpu.testing's stand-in runs the same code paths on a CPU.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from fastrank import codes, init, measures, rng, tangents
from fastrank.backends.base import Backend, Batch, Stretch
from fastrank.gpu.device import CaptureUnsupported, CupyDevice, Device
from fastrank.gpu.plan import plan_batch
from fastrank.spec import Network
from fastrank.tangents import Tangents
from fastrank.tangents import start as start_tangents

#: Most blocks one seed gets in the element-wise kernels (grid-stride loops beyond).
MAX_BLOCKS_PER_SEED = 4096
#: Widest constant width whose layers are captured as CUDA graphs by default (beyond it
#: a layer's GEMM dwarfs its launch overhead).
GRAPH_WIDTH_MAX = 1024
#: Threads per network of the kernel that runs networks whole on the chip (network.cu).
FUSED_BLOCK = 256


def fused_shared(d: int, n: int) -> int:
    """Dynamic shared memory of network_f32 for width d and batch n: H and Z (d rows of
    n | 1 floats), then from a 16-byte boundary the tile of weights."""
    return 4 * ((2 * d * (n | 1) + 3) // 4 * 4 + codes.NET_WTILE)


def _round32(n: int, cap: int) -> int:
    return max(32, min(cap, 32 * math.ceil(n / 32)))



# ---------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------


class _State:
    """A batch's arrays on the device (kept in Batch.h)."""

    def __init__(self, dev: Device, network: Network, seeds: np.ndarray):
        xp = dev.xp
        s = len(seeds)
        self.dtype = np.dtype(network.dtype)
        self.seeds = dev.asarray(seeds.astype(np.uint64))
        self.log_norm = xp.zeros(s, np.float64)
        self.failed = xp.full(s, -1, np.int64)
        self.reason = xp.zeros(s, np.int64)
        self.factor = xp.ones(s, np.float64)
        self.layer = xp.zeros(1, np.int64)  # the device's layer counter
        self.done = xp.zeros(1, np.uint32)  # account's count of finished blocks
        self.dims = (network.in_dim, *network.widths)  # rows of H_0..H_depth, built once
        k = max(network.batch, *set(self.dims))
        self.part = xp.zeros(s * k, np.float64)  # per-row / per-column sums of squares
        self.host_layer = 0
        self.partials = 0  # partial sums per seed in part (rows d or columns N)
        self.h = None  # (S, d, N): the current representation
        self.pool: dict = {}  # shape -> buffers H and Z alternate between
        self.weights: dict = {}  # shape -> weight stack
        self.graphs: dict = {}  # (layers, id of H) -> (replay, H after)
        self.eager_layers = 0
        self.cache: tuple | None = None  # (key, host array): spectra of the current layer
        self.tangents: Tangents | None = None  # every seed's: t (S, K, d, N), log (S, K)
        self.qr_every = 1

    def buffer(self, dev: Device, shape: tuple) -> object:
        """A buffer of ``shape`` that is not the current H."""
        pool = self.pool.setdefault(shape, [])
        for b in pool:
            if b is not self.h:
                return b
        b = dev.empty(shape, self.dtype)
        pool.append(b)
        return b


@dataclass
class DeviceBatch(Batch):
    """A batch on the device: ``h`` is its :class:`_State`, ``tangents`` (when carried)
    one fastrank.tangents.Tangents for all seeds on the device, t (S, K, d, N) and log
    (S, K); ``dev`` the device."""

    dev: Device | None = None

    def tangent_logs(self) -> np.ndarray | None:
        """The seeds' log growth (S, K) on the host (one copy)."""
        if self.tangents is None:
            return None
        with self.dev.context():
            return np.array(self.dev.to_host(self.tangents.log))


class GPUBackend(Backend):
    """Batches of networks on a CUDA device (or on a :class:`Device` given as ``dev``).

    ``device``: CUDA device index; ``max_batch``: most seeds per batch (default: as
    many as the device's free memory holds, :func:`plan_batch`); ``tf32``: let cuBLAS
    round float32 GEMM inputs to TF32 (default off; env FASTRANK_TF32=1); ``graphs``:
    capture runs of layers as CUDA graphs (default: constant widths up to
    GRAPH_WIDTH_MAX); ``fused``: run float32 networks of constant width and batch up to
    128 with Gaussian or uniform weights whole on the chip, all the layers of an
    ``advance`` in one launch (kernels/cuda/network.cu), where the device's shared
    memory holds them (off by default until timed on a device); ``graph_layers``:
    layers per graph (even).
    Raises :class:`GPUUnavailable` (one line) when no device can be used.
    """

    name = "gpu"

    def __init__(self, device: int = 0, *, max_batch: int | None = None,
                 tf32: bool | None = None, graphs: bool | None = None,
                 graph_layers: int = 8, fused: bool = False,
                 dev: Device | None = None):
        if max_batch is not None and (isinstance(max_batch, bool) or int(max_batch) != max_batch
                                      or max_batch < 1):
            raise ValueError(f"max_batch {max_batch!r}: must be an integer >= 1")
        self.batch_cap = None if max_batch is None else int(max_batch)
        self.dev = dev if dev is not None else CupyDevice(device, tf32=tf32)
        self.graphs = graphs
        if graph_layers < 2 or graph_layers % 2:
            raise ValueError(f"graph_layers {graph_layers}: must be even and >= 2")
        self.graph_layers = graph_layers
        self.fused = fused
        self._graphs_failed = False

    # -- the Backend interface -----------------------------------------------------------

    def max_batch(self, network: Network, tangents: int = 0) -> int:
        """Seeds per batch: what the device's free memory holds now (:func:`plan_batch`,
        with ``tangents`` directions per seed), at most ``max_batch``."""
        return plan_batch(network, self.dev.free_memory(), self.batch_cap, tangents)

    def start(self, network: Network, seeds, *, tangents: int = 0, qr_every: int = 1) -> Batch:
        seeds = np.asarray(seeds, dtype=np.uint64)
        s = len(seeds)
        dev = self.dev
        with dev.context():
            st = _State(dev, network, seeds)
            if tangents:
                started = [start_tangents(network, int(x), tangents) for x in seeds]
                st.tangents = Tangents(dev.asarray(np.stack([t.t for t in started])),
                                       dev.xp.zeros((s, tangents), np.float64))
                st.qr_every = qr_every
            shape = (s, network.in_dim, network.batch)
            if network.input == "gaussian":
                h = dev.empty(shape, st.dtype)
                self._fill(h, st, "normal", rng.INPUT, layer_ptr=None, layer_value=0,
                           mul=1.0, sub=0.0)
            else:  # orthogonal or a file: exactly the CPU's matrices
                h = dev.asarray(np.ascontiguousarray(
                    np.stack([init.input_matrix(network, int(x)) for x in seeds])))
            st.h = h
            st.pool[shape] = [h]
            self._norm_pass(st, network, h, None, identity=True)
            self._account(st, network, h, layer=False)
            batch = DeviceBatch(network, seeds, st, 0, np.zeros(s), np.full(s, -1, np.int64),
                                np.zeros(s, np.int64), st.tangents, qr_every, dev)
            self._pull(batch)
        return batch

    def advance(self, batch: Batch, stop: int) -> None:
        with self.dev.context():
            self._advance(batch, stop)
            self._pull(batch)

    def _advance(self, batch: Batch, stop: int) -> None:
        """Every seed on to layer ``stop``, nothing waited for (seeds the device knows
        stopped are skipped by every kernel; when the host knows them all stopped, only
        the counters move)."""
        st: _State = batch.h
        net = batch.network
        remaining = stop - batch.layer
        if batch.alive():
            whole = st.tangents is None  # tangents go layer by layer (their QR: cuSOLVER)
            if whole and self._use_fused(net):
                self._advance_fused(st, net, remaining)
                remaining = 0
            elif whole and self._use_graphs(net):
                remaining = self._advance_graphs(st, net, remaining)
            for _ in range(remaining):
                self._layer(st, net)
                st.eager_layers += 1
        else:
            st.host_layer += remaining
            st.layer[...] = st.host_layer
        batch.layer = stop

    def measure_stretch(self, batch: Batch, points, method: str, taus):
        """The stretch on the device: per point, advance, the spectra of every seed, the
        row (measures.cu) and the tangents' log growth (NaN where a seed has stopped);
        then one copy of the whole stretch (spectra, log-norms, measures, tangents' logs,
        and the seeds' state after it) to the host, on a second stream; nothing waited
        for until the returned function is called."""
        st: _State = batch.h
        net = batch.network
        dev = self.dev
        s, n, t = len(batch.seeds), net.batch, len(taus)
        p = len(points)
        k = min(max(net.features(int(x)) for x in points), n)
        kt = 0 if st.tangents is None else st.tangents.log.shape[1]
        with dev.context():
            pack = dev.empty(p * s * (k + 1 + len(measures.SCALARS) + t + kt) + 3 * s,
                             np.float64)
            spectra, log_norms, scalars, counts, logs, state = _unpack(pack, p, s, k, t, kt)
            taus_dev = dev.asarray(np.asarray(taus, np.float64))
            eps = np.float64(np.finfo(st.dtype).eps)
            grid = math.ceil(s / dev.block)
            for j, point in enumerate(int(x) for x in points):
                if point > batch.layer:
                    self._advance(batch, point)
                self._rows(st, method, spectra[j], log_norms[j])
                d = net.features(point)
                dev.launch("measure_rows", grid, dev.block, (
                    spectra[j], np.int32(s), np.int32(min(d, n)), np.int32(k), np.int32(d),
                    np.int32(n), eps, taus_dev, np.int32(t), log_norms[j], scalars[j],
                    counts[j]))
                if kt:
                    logs[j] = dev.xp.where(dev.xp.isnan(log_norms[j])[:, None], np.nan,
                                           st.tangents.log)
            state[0], state[1], state[2] = st.log_norm, st.failed, st.reason
            wait = dev.copy_to_host_async(pack)

        def collect() -> Stretch:
            host = _unpack(wait(), p, s, k, t, kt)
            spectra, log_norms, scalars, counts, logs, state = (np.array(a) for a in host)
            table = {name: scalars[..., c] for c, name in enumerate(measures.SCALARS)}
            table["numerical_rank"] = table["numerical_rank"].astype(np.int64)
            table["rank_tau"] = counts.astype(np.int64)
            _take_state(batch, state)
            return Stretch(spectra, log_norms, table, batch.failed_layer.copy(),
                           batch.reason.copy(), logs if kt else None)

        return collect

    def spectrum(self, batch: Batch, i: int, method: str) -> np.ndarray:
        return self.spectra(batch, [i], method)[0]

    def spectra(self, batch: Batch, idx: list[int], method: str) -> np.ndarray:
        """Spectra at the batch's layer (a one-point stretch: a seed whose eigensolve does
        not converge stops here, its spectrum NaN)."""
        values = self._cached(batch, ("spectrum", method), lambda: self.measure_stretch(
            batch, [batch.layer], method, ())().spectra[0])
        return values[idx]

    def gram_stats(self, batch: Batch, i: int) -> tuple[float, float, float]:
        stats = self._cached(batch, ("gram",), lambda: self._gram_stats(batch))
        trace, frob2, top = stats[i]
        return float(trace), float(frob2), float(top)

    def describe(self) -> dict:
        return {"backend": self.name, **self.dev.describe(),
                "cuda_graphs": "auto" if self.graphs is None else str(bool(self.graphs))}

    def close(self) -> None:
        """Releases the device's library handles (at exit otherwise); the backend may be
        used again after."""
        self.dev.close()

    # -- one layer -----------------------------------------------------------------------

    def _layer(self, st: _State, net: Network) -> None:
        """Layer host_layer + 1 of every live seed, on the device, without a host sync."""
        dev = self.dev
        layer = st.host_layer + 1
        s = len(st.failed)
        d_out, d_in = st.dims[layer], st.dims[layer - 1]
        w = st.weights.get((d_out, d_in))
        if w is None:
            w = st.weights[(d_out, d_in)] = dev.empty((s, d_out, d_in), st.dtype)
        self._weights(st, net, w, d_in)
        z = st.buffer(dev, (s, d_out, net.batch))
        dev.gemm(w, st.h, z)
        if st.tangents is not None:  # at this layer's H, before it goes
            self._push_tangents(st, net, w, layer)
        self._norm_pass(st, net, z, st.h if net.residual else None)
        self._account(st, net, z)
        st.h = z
        st.host_layer = layer

    def _push_tangents(self, st: _State, net: Network, w, layer: int) -> None:
        """Every seed's tangents through layer ``layer``'s Jacobian at the current H with
        the weights ``w`` (fastrank.tangents.push, then renormalise, on the stack). The
        batched products run over stopped seeds too (their H and weights as they were
        left, perhaps non-finite): their tangents are never read again, and their logs
        stop moving."""
        carried = st.tangents
        xp = self.dev.xp
        step = Tangents(carried.t, xp.zeros_like(carried.log))
        with np.errstate(all="ignore"):  # a stopped seed's numbers (CuPy never warns)
            tangents.renormalise(step, tangents.push(net, w, st.h, carried.t), layer,
                                 st.qr_every)
        carried.t = step.t
        carried.log += xp.where((st.failed < 0)[:, None], step.log, 0.0)

    def _weights(self, st: _State, net: Network, w, d_in: int) -> None:
        if net.init != "orthogonal":
            mul, sub = init.weight_affine(net, d_in)
            kind = "normal" if net.init == "gaussian" else "uniform"
            self._fill(w, st, kind, rng.WEIGHTS, st.layer, 1, mul, sub)
        else:  # orthogonal: QR of float64 normals, R's diagonal made positive (as the CPU)
            xp = self.dev.xp
            d_out = w.shape[1]
            tall = xp.empty((len(st.failed), max(d_out, d_in), min(d_out, d_in)), np.float64)
            self._fill(tall, st, "normal", rng.WEIGHTS, st.layer, 1, 1.0, 0.0)
            for i in range(len(st.failed)):
                q, r = self.dev.qr(tall[i])
                q = q * xp.sign(xp.diagonal(r))
                w[i] = (np.sqrt(net.weight_gain) * (q if d_out >= d_in else q.T)).astype(st.dtype)

    def _fill(self, out, st: _State, kind: str, stream: int, layer_ptr, layer_value: int,
              mul, sub) -> None:
        dev = self.dev
        f32 = out.dtype == np.float32
        s = out.shape[0]
        n = out.size // s
        per_block = 4 if f32 else 2
        blocks = min(MAX_BLOCKS_PER_SEED, max(1, math.ceil(n / per_block / dev.block)))
        t = np.float32 if f32 else np.float64
        name = f"fill_{kind}_{'f32' if f32 else 'f64'}"
        args = [out, np.int64(n), st.seeds, np.int32(blocks), np.uint32(stream), layer_ptr,
                np.int64(layer_value), t(mul)]
        if kind == "uniform":
            args.append(t(sub))
        args.append(st.failed)
        dev.launch(name, s * blocks, dev.block, args)

    def _norm_pass(self, st: _State, net: Network, z, h, identity: bool = False) -> None:
        """Residual, normalisation and activation of z in place (identity: only the sums
        of squares, for the input), per-row or per-column sums of squares into st.part."""
        dev = self.dev
        s, d, n = z.shape
        f32 = z.dtype == np.float32
        sfx = "f32" if f32 else "f64"
        t = np.float32 if f32 else np.float64
        norm = codes.NORM_NONE if identity else codes.NORMS[net.norm]
        act = codes.ACT_LINEAR if identity else codes.ACTIVATIONS[net.activation]
        act_first = 0 if identity else int(net.order == "act-norm")
        residual = int(h is not None)
        gamma = t(net.gamma if residual else 0.0)
        eps = np.float64(net.eps)
        if norm == codes.NORM_LN:
            block = _round32(n, dev.block)
            per_seed = math.ceil(n / block)
            dev.launch(f"cols_pass_{sfx}", s * per_seed, block,
                       (z, h, gamma, np.int32(residual), np.int32(d), np.int32(n),
                        np.int32(per_seed), np.int32(act), np.int32(act_first), eps, st.part,
                        st.failed))
            st.partials = n
        else:
            dev.launch(f"rows_pass_{sfx}", math.ceil(s * d * 32 / dev.block), dev.block,
                       (z, h, gamma, np.int32(residual), np.int32(s * d), np.int32(d),
                        np.int32(n), np.int32(norm), np.int32(act), np.int32(act_first), eps,
                        st.part, st.failed))
            st.partials = d

    def _account(self, st: _State, net: Network, z, layer: bool = True) -> None:
        """Book a layer (the device's counter moved on to it), or with ``layer`` False the
        input, layer 0."""
        dev = self.dev
        s = z.shape[0]
        k = st.partials
        counter = (st.layer, np.int64(1), st.done) if layer else (None, np.int64(0), None)
        dev.launch("account", s, _round32(k, dev.block),
                   (st.part, np.int32(k), *counter, np.int32(net.rescaled),
                    st.log_norm, st.failed, st.reason, st.factor))
        if net.rescaled:
            n = z.size // s
            blocks = min(MAX_BLOCKS_PER_SEED, max(1, math.ceil(n / dev.block)))
            dev.launch(f"scale_{'f32' if z.dtype == np.float32 else 'f64'}", s * blocks,
                       dev.block, (z, np.int64(n), np.int32(blocks), st.factor, st.failed))

    def _pull(self, batch: Batch) -> None:
        """The host's copy of the log-norms and failures (one copy, one synchronisation)."""
        st: _State = batch.h
        xp = self.dev.xp
        _take_state(batch, self.dev.to_host(xp.stack((
            st.log_norm, st.failed.astype(np.float64), st.reason.astype(np.float64)))))

    # -- whole networks on the chip ------------------------------------------------------

    def _use_fused(self, net: Network) -> bool:
        if not self.fused:
            return False
        constant = isinstance(net.width, int) and net.in_dim == net.width
        return (constant and net.dtype == "float32" and net.init != "orthogonal"
                and net.width <= codes.NET_MAX and net.batch <= codes.NET_MAX
                and fused_shared(net.width, net.batch) <= self.dev.shared_max)

    def _advance_fused(self, st: _State, net: Network, layers: int) -> None:
        """``layers`` layers of every live seed in one launch of network_f32, H in place;
        nothing waited for."""
        if layers <= 0:
            return
        dev = self.dev
        s, d, n = st.h.shape
        mul, sub = init.weight_affine(net, d)
        residual = net.residual
        slots = dev.asarray(np.full(layers, -1, np.int32))  # H leaves only at the end
        dev.launch("network_f32", s, FUSED_BLOCK, (
            st.h, np.int32(d), np.int32(n), np.int32(layers), np.int64(st.host_layer + 1),
            slots, None, st.seeds, np.uint32(rng.WEIGHTS), np.int32(net.init == "uniform"),
            np.float32(mul), np.float32(sub), np.int32(codes.NORMS[net.norm]),
            np.int32(codes.ACTIVATIONS[net.activation]), np.int32(net.order == "act-norm"),
            np.int32(residual), np.float32(net.gamma if residual else 0.0),
            np.float64(net.eps), np.int32(net.rescaled), st.log_norm, st.failed, st.reason,
            st.factor), shared=fused_shared(d, n))
        st.host_layer += layers
        st.layer[...] = st.host_layer

    # -- CUDA graphs ---------------------------------------------------------------------

    def _use_graphs(self, net: Network) -> bool:
        if self._graphs_failed or not self.dev.supports_graphs or self.graphs is False:
            return False
        constant = isinstance(net.width, int) and net.in_dim == net.width
        if not constant or net.init == "orthogonal":
            return False
        return bool(self.graphs) or net.width <= GRAPH_WIDTH_MAX

    def _advance_graphs(self, st: _State, net: Network, remaining: int) -> int:
        """Run as many layers as whole graphs allow; returns the layers left to run."""
        g = self.graph_layers
        while remaining >= g + (2 if st.eager_layers < 2 else 0):
            if st.eager_layers < 2:  # warm-up: both buffers exist, libraries initialised
                for _ in range(2):
                    self._layer(st, net)
                    st.eager_layers += 1
                remaining -= 2
                continue
            key = (g, id(st.h))
            if key not in st.graphs:
                h0, layer0 = st.h, st.host_layer
                try:
                    replay = self.dev.capture(lambda: [self._layer(st, net) for _ in range(g)])
                except CaptureUnsupported as exc:  # run on without graphs rather than fail
                    warnings.warn(f"CUDA graph capture refused, running layer by layer: {exc}",
                                  RuntimeWarning, stacklevel=2)
                    self._graphs_failed = True
                    replay = None
                finally:
                    h_after = st.h
                    st.h, st.host_layer = h0, layer0  # capturing ran nothing
                if replay is None:
                    return remaining
                st.graphs[key] = (replay, h_after)
            replay, h_after = st.graphs[key]
            replay()
            st.h = h_after
            st.host_layer += g
            remaining -= g
        return remaining

    # -- measurements --------------------------------------------------------------------

    def _cached(self, batch: Batch, kind: tuple, compute):
        """Per-seed results of ``kind`` at the batch's layer, computed for every seed at
        the first request (one batched computation, one copy to the host)."""
        st: _State = batch.h
        key = (batch.layer, *kind)
        if st.cache is None or st.cache[0] != key:
            with self.dev.context():
                st.cache = (key, compute())
        return st.cache[1]

    def _grams(self, st: _State):
        """The float64 Gram matrices of the smaller side of every seed's H (one batched
        product)."""
        xp = self.dev.xp
        h64 = st.h.astype(np.float64)
        ht = h64.transpose(0, 2, 1)
        return xp.matmul(h64, ht) if h64.shape[1] <= h64.shape[2] else xp.matmul(ht, h64)

    def _eigvalsh_stack(self, g):
        """Eigenvalues (ascending) of a stack of symmetric float64 matrices and a status
        per matrix (codes.OK, NON_FINITE, EIGEN_UNCONVERGED), on the device: k <= EIGEN_MAX
        by one launch of householder_eigvalsh (on a copy: it destroys its input),
        nothing waited for; larger k by cuSOLVER, a call per matrix, its info checked."""
        dev = self.dev
        s, k, _ = g.shape
        if k <= codes.EIGEN_MAX:
            work = dev.xp.array(g, dtype=np.float64, order="C")
            w = dev.empty((s, k), np.float64)
            status = dev.empty(s, np.int32)
            dev.launch("householder_eigvalsh", s, _round32(k, dev.eigen_block),
                       (work, np.int32(k), w, status))
            return w, status
        return self._each(g, dev.eigvalsh)

    def _each(self, stack, solve):
        """``solve`` (a cuSOLVER call) on each matrix of ``stack``, stacked, with a status
        per matrix: EIGEN_UNCONVERGED (and NaN values) where it reported no convergence."""
        dev = self.dev
        rows, status = [], np.zeros(len(stack), np.int32)
        for i in range(len(stack)):
            try:
                rows.append(solve(stack[i]))
            except np.linalg.LinAlgError:
                status[i] = codes.EIGEN_UNCONVERGED
                rows.append(dev.xp.full(min(stack.shape[1:]), np.nan))
        return dev.xp.stack(rows), dev.asarray(status)

    def _svdvals_stack(self, h):
        """Singular values (descending, float64) of every seed's H and a status per seed:
        for k = min(d, N) <= EIGEN_MAX by one launch of bidiagonal_svdvals (on a float64
        copy of H, or of its transpose: k rows, the kernel destroys it), nothing waited
        for; larger k by cuSOLVER, a call per seed, its info checked."""
        dev = self.dev
        s, d, n = h.shape
        if min(d, n) > codes.EIGEN_MAX:
            return self._each(h.astype(np.float64), dev.svdvals)
        a = dev.xp.array(h if d <= n else h.transpose(0, 2, 1), dtype=np.float64, order="C")
        k, m = a.shape[1:]
        w = dev.empty((s, k), np.float64)
        status = dev.empty(s, np.int32)
        dev.launch("bidiagonal_svdvals", s, dev.eigen_block,
                   (a, np.int32(k), np.int32(m), w, status))
        return w, status

    def _rows(self, st: _State, method: str, out, log_out) -> None:
        """The spectra of every seed's current H into ``out`` (seeds, k) and their
        log-norms into ``log_out`` (NaN for a seed that stopped; a seed whose solver did
        not converge stops at this layer: spectrum_rows)."""
        if method == "svd":
            values, status = self._svdvals_stack(st.h)
            squared = 0
        else:
            values, status = self._eigvalsh_stack(self._grams(st))
            squared = 1
        self._spectrum_rows(st, values, status, squared, out, log_out)

    def _spectrum_rows(self, st: _State, values, status, squared: int, out, log_out) -> None:
        """spectrum_rows on every seed: the solver's ``values`` (eigenvalues ascending when
        ``squared``, else singular values) into the rows ``out`` (seeds, kmax) and the
        log-norms into ``log_out``; a live seed whose ``status`` is not OK stops at this
        layer."""
        dev = self.dev
        s, kmax = out.shape
        dev.launch("spectrum_rows", math.ceil(s / dev.block), dev.block, (
            values, status, np.int32(s), np.int32(values.shape[1]), np.int32(squared),
            np.int64(st.host_layer), out, np.int32(kmax), st.log_norm, log_out, st.failed,
            st.reason))

    def _gram_stats(self, batch: Batch) -> np.ndarray:
        """(trace, ||G||_F^2, top eigenvalue) of every seed's Gram matrix, NaN for a seed
        that stopped (here too if its eigensolve does not converge)."""
        st: _State = batch.h
        xp = self.dev.xp
        s = len(batch.seeds)
        g = self._grams(st)
        k = g.shape[1]
        if k <= codes.DENSE_TOP_EIGEN_MAX:
            w, status = self._eigvalsh_stack(g)
            top = w.max(axis=1)
            self._spectrum_rows(st, w, status, 1, self.dev.empty((s, k), np.float64),
                                self.dev.empty(s, np.float64))  # only the failures count
            self._pull(batch)
        else:
            top = xp.asarray([self.dev.top_eigenvalue(g[i]) if batch.failed_layer[i] < 0
                              else np.nan for i in range(s)])
        stats = self.dev.to_host(xp.stack([xp.trace(g, axis1=1, axis2=2),
                                           (g * g).sum(axis=(1, 2)), top], axis=1))
        stats[batch.failed_layer >= 0] = np.nan
        return stats


def _take_state(batch: Batch, state: np.ndarray) -> None:
    """The host's copy of the seeds' log-norms, failure layers and reasons from the rows
    of ``state`` (3, S) float64 (layers and reasons are small integers, exact there)."""
    batch.log_norm[:], batch.failed_layer[:], batch.reason[:] = state


def _unpack(pack, p: int, s: int, k: int, t: int, kt: int) -> tuple:
    """The parts of a stretch's one buffer (device or host): spectra (p, s, k), log-norms
    (p, s), scalars (p, s, 6), rank_tau counts (p, s, t), the tangents' log growth (p, s,
    kt), and the seeds' state after the stretch (3, s): log-norm, failure layer, reason."""
    sizes = (p * s * k, p * s, p * s * len(measures.SCALARS), p * s * t, p * s * kt, 3 * s)
    shapes = ((p, s, k), (p, s), (p, s, len(measures.SCALARS)), (p, s, t), (p, s, kt),
              (3, s))
    ends = np.cumsum(sizes)
    return tuple(pack[e - n:e].reshape(shape)
                 for e, n, shape in zip(ends.tolist(), sizes, shapes, strict=True))
