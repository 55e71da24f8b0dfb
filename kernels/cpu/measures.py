"""Every rank measure of a stack of spectra in one compiled pass (fastrank.measures is
the interface and documents the definitions).

A sweep at small widths measures thousands of layers per second; a dozen numpy calls
per measured layer cost more than the network's propagation there. Each row is reduced
on its own, in a fixed order, so a row's values do not depend on the rows beside it.
"""

import numpy as np
from numba import njit

#: Column of each scalar in ``scalars`` (the order of fastrank.measures.SCALARS).
SOFT, NUMERICAL, EFFECTIVE, STABLE, GAP, CONDITION = range(6)


@njit(cache=True, error_model="numpy")
def measure_rows(rows, d, n, eps, taus, scalars, counts):
    """For each spectrum ``rows[r]`` (descending, float64) of a d x n matrix: the six
    scalars into ``scalars[r]`` and, per tau, the eigenvalues of H H^T above tau times
    their mean over d into ``counts[r]``; ``eps`` is the machine epsilon of the network's
    dtype (numerical rank tolerance s_max * max(d, n) * eps)."""
    k = rows.shape[1]
    for r in range(rows.shape[0]):
        s = rows[r]
        top, last = s[0], s[k - 1]
        ratio2 = 0.0  # sum (s / s_max)^2
        ratio4 = 0.0  # sum (s / s_max)^4
        total = 0.0  # sum s
        total2 = 0.0  # sum s^2
        tol = top * max(d, n) * eps
        above = 0
        for j in range(k):
            if top > 0:
                x = (s[j] / top) ** 2
                ratio2 += x
                ratio4 += x * x
            total += s[j]
            total2 += s[j] * s[j]
            if s[j] > tol:
                above += 1
        entropy = 0.0
        gap2 = (n - k) / n**2
        for j in range(k):
            p = s[j] / total
            if p > 0:
                entropy -= p * np.log(p)
            e = s[j] * s[j] / total2 - 1.0 / n
            gap2 += e * e
        scalars[r, SOFT] = ratio2 * ratio2 / ratio4 if top > 0 else 0.0
        scalars[r, NUMERICAL] = above
        scalars[r, EFFECTIVE] = np.exp(entropy) if total > 0 else 0.0
        scalars[r, STABLE] = ratio2 if top > 0 else 0.0
        scalars[r, GAP] = np.sqrt(max(gap2, 0.0)) if total2 > 0 else np.nan
        scalars[r, CONDITION] = top / last if last > 0 else np.inf
        mean = total2 / d
        for t in range(taus.shape[0]):
            c = 0
            for j in range(k):
                if s[j] * s[j] > taus[t] * mean:
                    c += 1
            counts[r, t] = c
