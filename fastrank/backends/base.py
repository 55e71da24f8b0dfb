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
    not advanced.
    """

    network: Network
    seeds: np.ndarray  # uint64 (S,)
    h: object
    layer: int
    log_norm: np.ndarray  # float64 (S,)
    failed_layer: np.ndarray  # int64 (S,)
    reason: np.ndarray  # int64 (S,)
    #: (layer, (S, k) float64): Gram spectra the backend computed on its way to ``layer``
    #: (Backend.advance with ``measure``), handed out by its ``spectra`` at that layer
    measured: tuple | None = None

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


class Backend(ABC):
    """Per-device operations on batches of networks."""

    name: str

    @abstractmethod
    def start(self, network: Network, seeds) -> Batch:
        """The batch at layer 0: each seed's input H_0, booked (rescaled, log-norm)."""

    @abstractmethod
    def advance(self, batch: Batch, stop: int, measure: str | None = None) -> None:
        """Run every live seed of ``batch`` on to layer ``stop``. ``measure`` (a spectrum
        method) says that :meth:`spectra` of that method will be asked for at ``stop``:
        a backend may compute them on the way (the CPU's whole-depth kernel does)."""

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

    def max_batch(self, network: Network) -> int:
        """Most seeds of ``network`` to hold at once (the runner splits bigger groups)."""
        return 1 << 16

    @abstractmethod
    def describe(self) -> dict:
        """Provenance: device, library versions, threads."""
