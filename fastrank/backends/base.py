"""The interface every compute backend implements, and the one place that picks one.

A backend owns the arrays of a run (host or device memory) and does the per-layer
work; the depth loop in propagate.py only calls these methods and sees float64
scalars and host spectra, so the same loop drives the CPU and the GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from fastrank.spec import Network


class Backend(ABC):
    """Per-layer operations of one device."""

    name: str

    @abstractmethod
    def input(self, network: Network, seed: int):
        """H_0 (in_dim x batch) on the device, in the network's dtype."""

    @abstractmethod
    def forward(self, network: Network, seed: int, layer: int, h) -> tuple[object, float]:
        """H_layer from H_{layer-1}: weights, GEMM, residual, norm and activation.

        Returns the new H and its float64 sum of squares (NaN/inf if it is not finite).
        """

    @abstractmethod
    def scale(self, h, factor: float) -> None:
        """In place: H <- factor * H."""

    @abstractmethod
    def spectrum(self, h, method: str) -> np.ndarray:
        """Singular values of H, descending, float64, on the host; method gram or svd."""

    @abstractmethod
    def describe(self) -> dict:
        """Provenance: device, library versions, threads."""


def get_backend(name: str = "cpu", **options) -> Backend:
    """The backend called ``name``; the GPU module is imported only when asked for."""
    if name == "cpu":
        from fastrank.backends.cpu import CPUBackend

        return CPUBackend(**options)
    if name == "gpu":
        from fastrank.backends.gpu import GPUBackend

        return GPUBackend(**options)
    raise ValueError(f"unknown backend {name!r}: choose cpu or gpu")
