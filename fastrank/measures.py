"""Rank measures of a representation H (d x N), all derived from its singular values.

Definitions follow PAPER.md. Every function takes the spectrum ``s`` (singular values,
descending, float64, ``min(d, N)`` of them) and the shape of H, so a stored spectrum is
enough to recompute any measure later; nothing here touches the device.

Each function also takes a stack of spectra, shape (n, k), one per row, and returns one
value per row: a batch of seeds is measured in one numpy call each (a thousand seeds on
a GPU would otherwise cost a thousand Python calls per measured layer). Every row is
reduced on its own, so a row's value does not depend on the rows beside it.
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


def _rows(s) -> tuple[np.ndarray, bool]:
    """``s`` as a float64 stack (n, k), and whether it was one spectrum."""
    s = np.asarray(s, dtype=np.float64)
    return s.reshape(-1, s.shape[-1]), s.ndim == 1


def _out(values: np.ndarray, single: bool, kind=float):
    return kind(values[0]) if single else values


def numerical_rank_tolerance(s, shape: tuple[int, int], dtype):
    """numpy.linalg.matrix_rank's default: ``s_max * max(d, N) * eps(dtype)``."""
    rows, single = _rows(s)
    return _out(rows[:, 0] * max(shape) * float(np.finfo(np.dtype(dtype)).eps), single)


def soft_rank(s):
    """The paper's r(H) = ||H||_F^4 / ||H^T H||_F^2 = (sum s^2)^2 / sum s^4."""
    rows, single = _rows(s)
    top = rows[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.square(rows / top)  # scale-free, avoids overflow of s^4
        r = np.sum(s2, axis=1) ** 2 / np.sum(s2 * s2, axis=1)
    return _out(np.where(top[:, 0] > 0, r, 0.0), single)


def numerical_rank(s, shape: tuple[int, int], dtype):
    rows, single = _rows(s)
    tol = numerical_rank_tolerance(rows, shape, dtype)
    return _out(np.count_nonzero(rows > tol[:, None], axis=1).astype(np.int64), single, int)


def rank_tau(s, shape: tuple[int, int], taus) -> np.ndarray:
    """Number of eigenvalues of H H^T above tau times their mean (the mean over all d):
    (len(taus),) for one spectrum, (n, len(taus)) for a stack."""
    rows, single = _rows(s)
    eig = np.square(rows)
    mean = eig.sum(axis=1) / shape[0]
    counts = np.stack([np.count_nonzero(eig > t * mean[:, None], axis=1) for t in taus],
                      axis=1).astype(np.int64)
    return counts[0] if single else counts


def effective_rank(s):
    """Roy & Vetterli: exp of the entropy of the normalised singular values."""
    rows, single = _rows(s)
    total = rows.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = rows / total[:, None]
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return _out(np.where(total > 0, np.exp(entropy), 0.0), single)


def stable_rank(s):
    """sum s^2 / s_max^2."""
    rows, single = _rows(s)
    top = rows[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sum(np.square(rows / top), axis=1)
    return _out(np.where(top[:, 0] > 0, r, 0.0), single)


def orthogonality_gap(s, shape: tuple[int, int]):
    """|| H^T H / ||H||_F^2 - I_N / N ||_F from the spectrum.

    H^T H has eigenvalues s_i^2 and N - len(s) zeros; the identity shares its eigenbasis.
    """
    rows, single = _rows(s)
    n = shape[1]
    total = np.sum(np.square(rows), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.square(rows) / total[:, None]
        gap2 = np.sum(np.square(e - 1.0 / n), axis=1) + (n - rows.shape[1]) / n**2
    return _out(np.where(total > 0, np.sqrt(np.maximum(gap2, 0.0)), np.nan), single)


def condition_number(s):
    """s_max / s_min over the min(d, N) singular values (inf when s_min is 0)."""
    rows, single = _rows(s)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = rows[:, 0] / rows[:, -1]
    return _out(np.where(rows[:, -1] > 0, c, np.inf), single)


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
    """Every stored measure of one spectrum (or of each row of a stack): the SCALARS by
    name plus ``rank_tau``."""
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
