"""Compute backends, all implementing fastrank.backends.base.Backend, and
:func:`get_backend`, the one place that lists them: the CPU backend is in
fastrank.backends.cpu; the GPU backend is in the package fastrank.gpu (GPUBackend in
fastrank/gpu/backend.py, with the device, CUDA programs and cuBLAS calls it runs on),
imported only when a GPU is asked for."""

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
