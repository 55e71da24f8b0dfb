"""The GPU backend: many seeds of one network at once on a CUDA device, through CuPy.

* program.py - the CUDA program of kernels/cuda and its compilation (NVRTC, CuPy);
* cublas.py - a cuBLAS handle bound to the backend's stream, so GEMMs can be captured;
* device.py - the Device interface and CupyDevice, the real one;
* backend.py - GPUBackend: the depth loop, CUDA graphs and spectra over a Device;
* testing.py - the CPU stand-in (the kernels built for the host, HostDevice) for tests.

Importing this package does not import CuPy; building a GPUBackend does.
"""

from fastrank.gpu.backend import GPUBackend
from fastrank.gpu.device import GPUUnavailable

__all__ = ["GPUBackend", "GPUUnavailable"]
