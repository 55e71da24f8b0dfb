"""CPU backend: weights from the numba Philox stream, GEMM through numpy's BLAS, and
the fused normalisation + activation pass in a numba kernel."""

from __future__ import annotations

import platform

import numpy as np

from fastrank import init
from fastrank.backends.base import Backend
from fastrank.kernels.cpu import layer as kernels
from fastrank.spec import Network


class CPUBackend(Backend):
    name = "cpu"

    def input(self, network: Network, seed: int) -> np.ndarray:
        return init.input_matrix(network, seed)

    def forward(self, network: Network, seed: int, layer: int, h: np.ndarray):
        w = init.weights(network, seed, layer)
        z = w @ h
        if network.residual:
            z *= z.dtype.type(network.gamma)
            z += h
        sumsq = kernels.normalize_activate(
            z,
            kernels.NORM_CODES[network.norm],
            kernels.ACTIVATION_CODES[network.activation],
            network.order == "act-norm",
            network.eps,
        )
        return z, sumsq

    def scale(self, h: np.ndarray, factor: float) -> None:
        kernels.scale(h, factor)

    def spectrum(self, h: np.ndarray, method: str) -> np.ndarray:
        return host_spectrum(h, method)

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


def host_spectrum(h: np.ndarray, method: str) -> np.ndarray:
    """Singular values of a host matrix, descending, float64.

    gram: eigenvalues of the float64 Gram matrix of the smaller side (exact product of
    float32 entries; accurate down to ~1e-8 s_max, far below float32's rank tolerance);
    svd: LAPACK on a float64 copy, for float64 networks and for checking.
    """
    h64 = np.asarray(h, dtype=np.float64)
    if method == "svd":
        return np.linalg.svd(h64, compute_uv=False)
    gram = h64 @ h64.T if h64.shape[0] <= h64.shape[1] else h64.T @ h64
    eig = np.linalg.eigvalsh(gram)[::-1]
    return np.sqrt(np.clip(eig, 0.0, None))
