"""numba kernels for the CPU backend.

numba's OpenMP threads spin for a while after each parallel region, and so do BLAS
threads after a GEMM; alternating the two on few cores then costs up to 60x (measured
at d = 128 on 2 cores). Passive waiting avoids it; a user's own setting wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
