"""Compute backends: one module per device, all implementing fastrank.backends.base.Backend,
and :func:`get_backend`, the one place that lists them."""

from __future__ import annotations

from fastrank.backends.base import Backend


def get_backend(name: str = "cpu", **options) -> Backend:
    """The backend called ``name``; the GPU module is imported only when asked for."""
    if name == "cpu":
        from fastrank.backends.cpu import CPUBackend

        return CPUBackend(**options)
    if name == "gpu":
        from fastrank.gpu import GPUBackend

        return GPUBackend(**options)
    raise ValueError(f"unknown backend {name!r}: choose cpu or gpu")
