"""The interface every compute backend implements (fastrank.backends.get_backend picks one).

A backend advances a Batch (several seeds of one network) between measured layers and
computes spectra; the depth loop in propagate.py sees only float64 host scalars and
host spectra, so the same loop drives the CPU and the GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fastrank import codes
from fastrank.spec import Network


@dataclass
class Batch:
    """Several seeds of one network at the same layer.

    ``h[i]`` is seed i's representation (d x N) in the backend's memory. ``log_norm``
    is log ||H|| of the un-rescaled network, ``failed_layer`` -1 or the layer at which
    the seed stopped and ``reason`` its code (fastrank.codes.REASONS); a stopped seed is
    not advanced. ``tangents``: each seed's fastrank.tangents.Tangents, re-orthonormalised
    every ``qr_every`` layers (None: the sweep carries none).
    """

    network: Network
    seeds: np.ndarray  # uint64 (S,)
    h: object
    layer: int
    log_norm: np.ndarray  # float64 (S,)
    failed_layer: np.ndarray  # int64 (S,)
    reason: np.ndarray  # int64 (S,)
    tangents: list | None = None
    qr_every: int = 1

    def account(self, i: int, layer: int, sumsq: float) -> float | None:
        """Book seed i's sum of squares at ``layer``: update the log-norm and return the
        rescaling factor (1 for normalised networks), or None after marking a failure."""
        why = codes.failure(float(sumsq))
        if why != codes.OK:
            self.failed_layer[i] = layer
            self.reason[i] = why
            return None
        if self.network.rescaled:
            self.log_norm[i] += 0.5 * np.log(sumsq)
            return 1.0 / np.sqrt(sumsq)
        self.log_norm[i] = 0.5 * np.log(sumsq)
        return 1.0

    def alive(self) -> list[int]:
        return [i for i in range(len(self.seeds)) if self.failed_layer[i] < 0]

    def tangent_logs(self) -> np.ndarray | None:
        """Each seed's tangents' log growth so far, (S, K) (None without tangents)."""
        if self.tangents is None:
            return None
        return np.stack([t.log for t in self.tangents])


@dataclass
class Stretch:
    """The measurements of a stretch of measured layers of a batch (what
    :meth:`Backend.measure_stretch` hands back): ``spectra`` (points, seeds, k) and
    ``log_norms`` (points, seeds) as :meth:`Backend.measure_points` gives them;
    ``measures``: each measure's (points, seeds) values (rank_tau (points, seeds,
    taus)), or None where the host computes them from the spectra; the batch's failure
    layers and reasons as of the stretch's end; ``tangent_logs`` (points, seeds, K), the
    tangents' log growth, NaN where a seed had stopped (None without tangents)."""

    spectra: np.ndarray
    log_norms: np.ndarray
    measures: dict | None
    failed_layer: np.ndarray
    reason: np.ndarray
    tangent_logs: np.ndarray | None = None


class Backend(ABC):
    """Per-device operations on batches of networks."""

    name: str

    @abstractmethod
    def start(self, network: Network, seeds, *, tangents: int = 0, qr_every: int = 1) -> Batch:
        """The batch at layer 0: each seed's input H_0, booked (rescaled, log-norm), and
        with ``tangents`` > 0 that many tangent directions per seed (fastrank.tangents),
        re-orthonormalised every ``qr_every`` layers."""

    @abstractmethod
    def advance(self, batch: Batch, stop: int) -> None:
        """Run every live seed of ``batch`` on to layer ``stop``."""

    def measure_points(self, batch: Batch, points, method: str) -> tuple:
        """Advance through the layers ``points`` (ascending, from ``batch.layer`` on) and
        return the spectra there, (points, seeds, k) float64 NaN-padded to the most
        singular values k, the log-norms, (points, seeds), and the tangents' log growth,
        (points, seeds, K) or None without tangents, NaN where a seed had stopped. Here a
        point at a time (:meth:`advance`, :meth:`spectra`); a backend may run the whole
        stretch in one call (the CPU's whole-depth kernel does)."""
        net, n = batch.network, len(batch.seeds)
        k = min(max(net.features(int(p)) for p in points), net.batch)
        spectra = np.full((len(points), n, k), np.nan)
        log_norms = np.full((len(points), n), np.nan)
        logs = batch.tangent_logs()
        tangent_logs = None if logs is None else np.full((len(points), *logs.shape), np.nan)
        for j, point in enumerate(points):
            if point > batch.layer:
                self.advance(batch, int(point))
            live = batch.alive()
            if live:
                got = self.spectra(batch, live, method)
                spectra[j, live, : got.shape[1]] = got
                log_norms[j, live] = batch.log_norm[live]
                if tangent_logs is not None:
                    tangent_logs[j, live] = batch.tangent_logs()[live]
        return spectra, log_norms, tangent_logs

    def measure_stretch(self, batch: Batch, points, method: str, taus):
        """Start measuring the stretch ``points`` (as :meth:`measure_points`, the
        measures with thresholds ``taus`` too where the backend computes them); returns a
        function that waits for it and returns its :class:`Stretch`. A backend that works
        asynchronously runs the next stretch while this one's rows travel to the host;
        here the stretch is measured before returning."""
        spectra, log_norms, tangent_logs = self.measure_points(batch, points, method)
        done = Stretch(spectra, log_norms, None, batch.failed_layer.copy(),
                       batch.reason.copy(), tangent_logs)
        return lambda: done

    @abstractmethod
    def spectrum(self, batch: Batch, i: int, method: str) -> np.ndarray:
        """Singular values of seed i's H, descending, float64, on the host (gram or svd)."""

    def spectra(self, batch: Batch, idx: list[int], method: str) -> np.ndarray:
        """The spectra of seeds ``idx`` as one (len(idx), k) array (backends that compute
        all seeds at once return them without a call per seed)."""
        return np.stack([self.spectrum(batch, i, method) for i in idx])

    @abstractmethod
    def gram_stats(self, batch: Batch, i: int) -> tuple[float, float, float]:
        """Seed i's Gram matrix G (smaller side) summarised: trace, ||G||_F^2, lambda_max."""

    def threads(self) -> tuple[int, int]:
        """(numba threads, BLAS threads) the CPU work runs on, recorded per run: they can
        change the last bits of BLAS products. (-1, -1): they do not matter here."""
        return -1, -1

    def thread_invariant(self, network: Network, seeds: int, tangents: int = 0) -> bool:
        """Whether runs of ``network``, ``seeds`` of them at a time (with ``tangents``
        tangent directions), give the same bits on any number of numba threads, so that a
        sweep resumed on another thread count matches an uninterrupted one. True here: the
        host's threads compute nothing the numbers depend on."""
        return True

    def max_batch(self, network: Network, tangents: int = 0) -> int:
        """Most seeds of ``network`` (with ``tangents`` directions each) to hold at once
        (the runner splits bigger groups)."""
        return 1 << 16

    def close(self) -> None:  # noqa: B027 - a backend holding nothing has nothing to do
        """Release what the backend holds between sweeps (a device's library handles);
        it may be used again after."""

    @abstractmethod
    def describe(self) -> dict:
        """Provenance: device, library versions, threads."""
