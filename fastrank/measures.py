"""Rank measures of a representation H (d x N), all derived from its singular values.

Definitions follow PAPER.md. Every function takes the spectrum ``s`` (singular values,
descending, float64, ``min(d, N)`` of them) and the shape of H, so a stored spectrum is
enough to recompute any measure later; nothing here touches the device.
"""

from __future__ import annotations

import numpy as np

#: Scalar measures stored for every measured layer, in file order.
SCALARS = (
    "soft_rank",
    "numerical_rank",
    "effective_rank",
    "stable_rank",
    "orthogonality_gap",
    "condition_number",
)


def numerical_rank_tolerance(s: np.ndarray, shape: tuple[int, int], dtype) -> float:
    """numpy.linalg.matrix_rank's default: ``s_max * max(d, N) * eps(dtype)``."""
    return float(s[0]) * max(shape) * float(np.finfo(np.dtype(dtype)).eps) if s.size else 0.0


def soft_rank(s: np.ndarray) -> float:
    """The paper's r(H) = ||H||_F^4 / ||H^T H||_F^2 = (sum s^2)^2 / sum s^4."""
    s2 = np.square(s / s[0]) if s[0] > 0 else s  # scale-free, avoids overflow of s^4
    return float(np.sum(s2) ** 2 / np.sum(s2 * s2)) if s[0] > 0 else 0.0


def numerical_rank(s: np.ndarray, shape: tuple[int, int], dtype) -> int:
    return int(np.count_nonzero(s > numerical_rank_tolerance(s, shape, dtype)))


def rank_tau(s: np.ndarray, shape: tuple[int, int], taus) -> np.ndarray:
    """Number of eigenvalues of H H^T above tau times their mean (the mean over all d)."""
    eig = np.square(s)
    mean = eig.sum() / shape[0]
    return np.array([np.count_nonzero(eig > t * mean) for t in taus], dtype=np.int64)


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli: exp of the entropy of the normalised singular values."""
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(s: np.ndarray) -> float:
    """sum s^2 / s_max^2."""
    return float(np.sum(np.square(s / s[0]))) if s[0] > 0 else 0.0


def orthogonality_gap(s: np.ndarray, shape: tuple[int, int]) -> float:
    """|| H^T H / ||H||_F^2 - I_N / N ||_F from the spectrum.

    H^T H has eigenvalues s_i^2 and N - len(s) zeros; the identity shares its eigenbasis.
    """
    n = shape[1]
    total = np.sum(np.square(s))
    if total <= 0:
        return float("nan")
    e = np.square(s) / total
    gap2 = np.sum(np.square(e - 1.0 / n)) + (n - s.size) / n**2
    return float(np.sqrt(max(gap2, 0.0)))


def condition_number(s: np.ndarray) -> float:
    """s_max / s_min over the min(d, N) singular values (inf when s_min is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def gram_measures(trace: float, frob2: float, top: float, n: int, n_taus: int) -> dict:
    """The Gram tier from G = H^T H (or H H^T): trace, ||G||_F^2 and its top eigenvalue.

    soft rank = tr(G)^2 / ||G||_F^2, stable rank = tr(G) / lambda_max, orthogonality gap
    = sqrt(||G||_F^2 / tr(G)^2 - 1/N); measures that need the spectrum are NaN (-1 for
    the integer ones).
    """
    ok = trace > 0 and frob2 > 0
    return {
        "soft_rank": trace**2 / frob2 if ok else 0.0,
        "numerical_rank": -1,
        "effective_rank": float("nan"),
        "stable_rank": trace / top if ok and top > 0 else 0.0,
        "orthogonality_gap": float(np.sqrt(max(frob2 / trace**2 - 1.0 / n, 0.0))) if ok else float("nan"),
        "condition_number": float("nan"),
        "rank_tau": np.full(n_taus, -1, dtype=np.int64),
    }


def all_measures(s: np.ndarray, shape: tuple[int, int], dtype, taus) -> dict:
    """Every stored measure of one spectrum: the SCALARS by name plus ``rank_tau``."""
    s = np.asarray(s, dtype=np.float64)
    return {
        "soft_rank": soft_rank(s),
        "numerical_rank": numerical_rank(s, shape, dtype),
        "effective_rank": effective_rank(s),
        "stable_rank": stable_rank(s),
        "orthogonality_gap": orthogonality_gap(s, shape),
        "condition_number": condition_number(s),
        "rank_tau": rank_tau(s, shape, taus),
    }
