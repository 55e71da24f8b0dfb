"""numba kernels for the CPU backend."""
