"""Rank measures of a representation H (d x N), all derived from its singular values.

Definitions follow the paper (Daneshmand et al., NeurIPS 2020) and docs/format.md. Every
function takes the spectrum ``s`` (singular values, descending, float64, ``min(d, N)``
of them) and the shape of H, so a stored spectrum is enough to recompute any measure
later; nothing here touches the device.

Each function also takes a stack of spectra, shape (n, k), one per row, and returns one
value per row: a batch of seeds is measured in one compiled pass
(fastrank.kernels.cpu.measures; a thousand seeds on a GPU, or thousands of measured
layers at small widths, would otherwise cost a thousand Python calls). Every row is
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
    return np.ascontiguousarray(s.reshape(-1, s.shape[-1])), s.ndim == 1


def _table(s, shape: tuple[int, int], dtype=np.float64, taus=()):
    """The compiled pass over a stack: (scalars (n, 6) in SCALARS order, rank_tau counts
    (n, len(taus))), and whether ``s`` was one spectrum."""
    from fastrank.kernels.cpu.measures import measure_rows

    rows, single = _rows(s)
    scalars = np.empty((rows.shape[0], len(SCALARS)))
    counts = np.empty((rows.shape[0], len(taus)), np.int64)
    measure_rows(rows, int(shape[0]), int(shape[1]), float(np.finfo(np.dtype(dtype)).eps),
                 np.asarray(taus, dtype=np.float64), scalars, counts)
    return scalars, counts, single


def _measure(name: str, s, shape=None, dtype=np.float64):
    """One scalar measure of a spectrum, or of each row of a stack."""
    k = np.shape(s)[-1]
    scalars, _, single = _table(s, shape or (k, k), dtype)
    column = scalars[:, SCALARS.index(name)]
    if name == "numerical_rank":
        column = column.astype(np.int64)
        return int(column[0]) if single else column
    return float(column[0]) if single else column


def soft_rank(s):
    """The paper's r(H) = ||H||_F^4 / ||H^T H||_F^2 = (sum s^2)^2 / sum s^4 (computed from
    s / s_max, which cannot overflow); 0 for a zero matrix."""
    return _measure("soft_rank", s)


def numerical_rank(s, shape: tuple[int, int], dtype):
    """Singular values above ``s_max * max(d, N) * eps(dtype)`` (numpy.linalg.matrix_rank's
    default tolerance)."""
    return _measure("numerical_rank", s, shape, dtype)


def rank_tau(s, shape: tuple[int, int], taus) -> np.ndarray:
    """Number of eigenvalues of H H^T above tau times their mean (the mean over all d):
    (len(taus),) for one spectrum, (n, len(taus)) for a stack."""
    _, counts, single = _table(s, shape, np.float64, taus)
    return counts[0] if single else counts


def effective_rank(s):
    """Roy & Vetterli: exp of the entropy of the normalised singular values s / sum s."""
    return _measure("effective_rank", s)


def stable_rank(s):
    """sum s^2 / s_max^2."""
    return _measure("stable_rank", s)


def orthogonality_gap(s, shape: tuple[int, int]):
    """|| H^T H / ||H||_F^2 - I_N / N ||_F from the spectrum (NaN for a zero matrix).

    H^T H has eigenvalues s_i^2 and N - len(s) zeros; the identity shares its eigenbasis.
    """
    return _measure("orthogonality_gap", s, shape)


def condition_number(s):
    """s_max / s_min over the min(d, N) singular values (inf when s_min is 0)."""
    return _measure("condition_number", s)


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
        "orthogonality_gap": (float(np.sqrt(max(frob2 / trace**2 - 1.0 / n, 0.0))) if ok
                              else float("nan")),
        "condition_number": float("nan"),
        "rank_tau": np.full(n_taus, -1, dtype=np.int64),
    }


def all_measures(s: np.ndarray, shape: tuple[int, int], dtype, taus) -> dict:
    """Every stored measure of one spectrum (or of each row of a stack), in one compiled
    pass: the SCALARS by name plus ``rank_tau``."""
    scalars, counts, single = _table(s, shape, dtype, taus)
    if single:
        out = {name: float(scalars[0, j]) for j, name in enumerate(SCALARS)}
        out["numerical_rank"] = int(scalars[0, SCALARS.index("numerical_rank")])
        out["rank_tau"] = counts[0]
        return out
    out = {name: scalars[:, j] for j, name in enumerate(SCALARS)}
    out["numerical_rank"] = out["numerical_rank"].astype(np.int64)
    out["rank_tau"] = counts
    return out
