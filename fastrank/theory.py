"""Predictions to set beside simulations: Lyapunov exponents of products of Gaussian
matrices, the log-norm growth and rank-collapse rate of vanilla linear networks, the
log-norm growth of vanilla ReLU networks, the sqrt(d) rate of the batch-norm rank
bound, and the growth of gradients at initialisation (the exponents of the layers'
Jacobians, docs/gradients.md). Pure numpy/scipy closed forms; nothing here simulates
(fastrank.mean_field evaluates the mean field where no closed form is known).

Conventions (those of fastrank, checked against simulations in tests/test_theory.py):

- ``d`` is the width of every layer (square weights), ``gain`` the weight variance in
  units of 1/d: entries of W_l are iid N(0, gain/d) (sigma^2 = gain where the entries
  are written N(0, sigma^2/d)).
- Layer l maps H_{l-1} (d x N) to H_l = W_l H_{l-1}; ``log_norm`` is log ||H_l||_F of
  the un-rescaled network, natural log. ``layer`` counts weight matrices applied.

Assumptions behind each prediction are stated in its docstring. In short: iid Gaussian
weights (uniform weights only approximately, orthogonal weights have their own,
trivial, exponents), constant width, no normalisation, no residual branch (gamma =
inf), and the asymptotic regime in depth: predictions are slopes in the layer index,
valid after a transient of a few times d / (d - i) layers, and their intercepts are
not predicted (they depend on the input batch) but fitted.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln, polygamma


def _width(d) -> int:
    if isinstance(d, bool) or int(d) != d or d < 1:
        raise ValueError(f"width d must be a positive integer, got {d!r}")
    return int(d)


def _gain(gain) -> float:
    gain = float(gain)
    if not gain > 0 or math.isinf(gain):
        raise ValueError(f"gain must be a positive finite number, got {gain!r}")
    return gain


# Lyapunov exponents --------------------------------------------------------------------


def lyapunov_exponents(d: int, gain: float = 1.0) -> np.ndarray:
    """All d Lyapunov exponents of a product of d x d Gaussian matrices with iid
    N(0, gain/d) entries, descending:

        lambda_i = 1/2 [ log(2 gain / d) + psi((d - i + 1) / 2) ],  i = 1..d

    (Newman 1986, with sigma^2 = gain). Exact for every d >= 1: the QR
    decomposition of a Gaussian product has independent chi-distributed diagonals,
    R_ii^2 ~ (gain/d) chi^2_{d-i+1}, and lambda_i = E log R_ii.
    """
    d, gain = _width(d), _gain(gain)
    i = np.arange(1, d + 1)
    return 0.5 * (np.log(2.0 * gain / d) + digamma((d - i + 1) / 2.0))


def top_exponent(d: int, gain: float = 1.0) -> float:
    """lambda_1 = 1/2 [log(2 gain/d) + psi(d/2)]: the growth of log ||H_l|| per layer.

    Below 1/2 log(gain) for every finite d (by -1/(2d) + O(1/d^2)), so a linear network
    with the 'variance preserving' gain 1 still shrinks its signal, slowly.
    """
    d, gain = _width(d), _gain(gain)
    return float(0.5 * (math.log(2.0 * gain / d) + digamma(d / 2.0)))


def lyapunov_gap(d: int, gain: float = 1.0) -> float:
    """lambda_1 - lambda_2 = 1/2 [psi(d/2) - psi((d-1)/2)] ~ 1/(2d): independent of gain."""
    d = _width(d)
    _gain(gain)
    if d < 2:
        raise ValueError("the gap lambda_1 - lambda_2 needs d >= 2")
    return float(0.5 * (digamma(d / 2.0) - digamma((d - 1) / 2.0)))


# Vanilla linear networks ---------------------------------------------------------------


def log_norm_growth(d: int, gain: float = 1.0, init: str = "gaussian") -> float:
    """Predicted slope of ``log_norm`` (log ||H_l||_F) per layer of a vanilla linear
    network: lambda_1 for Gaussian weights, 1/2 log(gain) for orthogonal ones (every
    exponent of a product of scaled orthogonal matrices is 1/2 log gain).

    Assumes: linear activation, no normalisation, constant width d, iid weights. For a
    single input vector the log-norm is exactly a random walk with this drift from the
    first layer on; for a batch it is so once the batch has collapsed onto the top
    direction (before that, the Frobenius norm of a full-rank batch grows at the
    average rate of its directions, slightly faster at first).
    """
    if init == "orthogonal":
        return 0.5 * math.log(_gain(gain))
    if init != "gaussian":
        raise ValueError(f"no exact exponent for init {init!r}: gaussian or orthogonal")
    return top_exponent(d, gain)


def log_norm_step_variance(d: int) -> float:
    """Variance per layer of the increments of log ||H_l|| in a Gaussian linear network:
    Var(1/2 log chi^2_d) = psi'(d/2) / 4 (independent of gain). Exact for one input
    vector, asymptotic for a collapsed batch; the increments are independent, so over L
    layers the log-norm's standard deviation is sqrt(L psi'(d/2) / 4).
    """
    d = _width(d)
    return float(polygamma(1, d / 2.0) / 4.0)


def collapse_rate(d: int, gain: float = 1.0, init: str = "gaussian") -> float:
    """Predicted decay rate of log(soft_rank - 1) per layer: 2 (lambda_1 - lambda_2).

    Once s_2 << s_1, soft_rank = (sum s^2)^2 / sum s^4 = 1 + 2 s_2^2/s_1^2 + ..., and
    log(s_2/s_1) falls by lambda_1 - lambda_2 per layer, so
    log(soft_rank - 1) ~ c - 2 (lambda_1 - lambda_2) l. Independent of gain; 0 for
    orthogonal weights (no collapse). The intercept c depends on the input and on the
    transient, and is fitted. Valid until soft_rank - 1 reaches the arithmetic's floor
    (about (sqrt(d) eps)^2: 1e-13 in float32, where s_2 is rounding noise).
    """
    if init == "orthogonal":
        _gain(gain)
        return 0.0
    if init != "gaussian":
        raise ValueError(f"no exact collapse rate for init {init!r}: gaussian or orthogonal")
    return 2.0 * lyapunov_gap(d, gain)


def collapse_step_variance(d: int) -> float:
    """Asymptotic variance per layer of the increments of log(soft_rank - 1) of a
    Gaussian linear network: 2 log(s_2/s_1) moves by log R_22 - log R_11 per layer, two
    independent half-log-chi^2 terms, so the variance is psi'(d/2) + psi'((d-1)/2)."""
    d = _width(d)
    if d < 2:
        raise ValueError("the collapse needs d >= 2")
    return float(polygamma(1, d / 2.0) + polygamma(1, (d - 1) / 2.0))


# Vanilla ReLU networks -----------------------------------------------------------------


def relu_log_norm_growth(d: int, gain: float = 2.0) -> float:
    """Predicted slope of log ||H_l|| per layer of a vanilla ReLU network with iid
    N(0, gain/d) weights, once the batch has collapsed (every column one direction):

        1/2 [ log(2 gain / d) + E psi(K/2) ],  K ~ Binomial(d, 1/2), K >= 1,

    since ||relu(W x)||^2 = (gain/d) chi^2_K for any unit x, K the number of positive
    pre-activations. Assumes the representation never vanishes (probability 2^-d per
    layer, when K = 0 the run stops: fastrank records it as failed). At the default
    gain 2 the slope is slightly negative, ~ -1/(2d) - 1/d^2.
    """
    d, gain = _width(d), _gain(gain)
    k = np.arange(1, d + 1)
    log_pmf = gammaln(d + 1) - gammaln(k + 1) - gammaln(d - k + 1) - d * math.log(2.0)
    pmf = np.exp(log_pmf)
    pmf /= pmf.sum()  # condition on K >= 1
    return float(0.5 * (math.log(2.0 * gain / d) + np.sum(pmf * digamma(k / 2.0))))


def relu_log_norm_step_variance(d: int) -> float:
    """Variance per layer of the log-norm increments of a collapsed vanilla ReLU network,
    1/2 log chi^2_K with K ~ Binomial(d, 1/2) given K >= 1:
    E[psi'(K/2)]/4 + Var[psi(K/2)]/4 (independent of gain)."""
    d = _width(d)
    k = np.arange(1, d + 1)
    log_pmf = gammaln(d + 1) - gammaln(k + 1) - gammaln(d - k + 1) - d * math.log(2.0)
    pmf = np.exp(log_pmf)
    pmf /= pmf.sum()
    mean_psi = np.sum(pmf * digamma(k / 2.0))
    var_psi = np.sum(pmf * (digamma(k / 2.0) - mean_psi) ** 2)
    return float((np.sum(pmf * polygamma(1, k / 2.0)) + var_psi) / 4.0)


# Batch normalisation -------------------------------------------------------------------


def bn_rank_rate(d) -> np.ndarray | float:
    """The rate of the BN rank bound (Theorem 2 of the paper): sqrt(d).

    The theorem says the depth-averaged soft rank of the linear BN chain is
    Omega(sqrt(d)) almost surely; it gives the rate, not the constant. Plotted against d
    on log axes, the BN soft rank should have slope 1/2 (:func:`power_law_fit`)."""
    return np.sqrt(np.asarray(d, dtype=float)) if np.ndim(d) else math.sqrt(d)


def rank_tau_lower_bound(mean_soft_rank: float, tau: float) -> float:
    """(1 - tau)^2 times the depth-averaged soft rank: the paper's lower bound on the
    depth-averaged rank_tau (number of eigenvalues of H H^T above tau times their mean)."""
    if not 0 < tau < 1:
        raise ValueError(f"tau must lie strictly between 0 and 1, got {tau!r}")
    return (1.0 - tau) ** 2 * float(mean_soft_rank)


# Gradients at initialisation: the exponents of the layers' Jacobians ------------------


def bn_linear_gradient_rate(batch: int, centred: bool = True) -> float:
    """Predicted log growth per layer of a tangent (or a back-propagated gradient) of a
    linear network with batch norm: 1/2 log((n - 1) / (n - 2)), n = N - 1 for bn
    (centred), n = N for bn-rms; (N - 2)/(N - 3) is the squared growth for bn.

    Mean field, the limit of Yang et al. (ICLR 2019): width d -> infinity at fixed batch
    N, iid Gaussian weights (any gain: batch norm cancels it), the representation at
    its symmetric fixed point (every row of H uniform on the sphere of radius sqrt(N) in
    the n-dimensional space batch norm leaves), a tangent independent of it. A row of
    the pre-activations is then z ~ N(0, G), G = N/n times the projection on that
    space; batch norm's Jacobian for the row is Q / sigma, Q the projection that also
    removes the row's own direction (rank n - 1), sigma^2 = ||z||^2 / N; the row of W T
    is Gaussian and independent of z. So the squared growth per row is
    E[N / ||z||^2] E||Q g||^2 / E||g||^2 = n/(n - 2) * (n - 1)/n (E 1/chi^2_n = 1/(n - 2);
    chi^2_{n-1} over chi^2_n of the same isotropic g). Needs n >= 3 (N >= 4 for bn).
    Derived here (docs/gradients.md); it explodes for every finite batch and tends to 0
    as N grows, as Yang et al. find for activations close to linear.

    At finite width the measured leading exponent is smaller: the representation's
    Gram fluctuates about the fixed point, and the mean of log ||J T|| is below the log
    of its mean; both are O(1/d) (docs/gradients.md gives their size), and the fixed
    point needs the representation's rank (about sqrt(d) for linear BN, the paper's
    Theorem 2) to exceed N.
    """
    n = int(batch) - 1 if centred else int(batch)
    if isinstance(batch, bool) or int(batch) != batch or n < 3:
        raise ValueError(f"the linear BN rate needs a batch of at least {4 if centred else 3}"
                         f", got {batch!r}")
    return 0.5 * math.log((n - 1) / (n - 2))


def bn_relu_gradient_rate() -> float:
    """Predicted log growth per layer of a tangent (or gradient) of a ReLU network with
    batch norm (bn, before or after the activation): 1/2 log(pi / (pi - 1)) ~ 0.192.

    Yang et al. (ICLR 2019) give pi/(pi - 1) as the squared gradient growth of BN-ReLU
    networks in the limit of wide layers and large batches. The same mean-field count as
    bn_linear_gradient_rate, with N large: W T and W H independent rows, batch norm's
    Jacobian 1/sigma with sigma^2 = gain (pi - 1)/(2 pi) (the variance over the batch of
    ReLU of a standard normal, times the weights' gain), ReLU's mask keeping half of the
    squared norm, W the gain: gain / 2 / sigma^2 = pi/(pi - 1). The finite batch adds
    O(1/N) (fastrank.mean_field; docs/gradients.md gives its size).
    """
    return 0.5 * math.log(math.pi / (math.pi - 1.0))


def jacobian_exponents(network, count: int) -> tuple[np.ndarray, str] | None:
    """The predicted ``count`` leading exponents of ``network``'s layer Jacobians, where
    fastrank.theory has a prediction, with its name: (exponents (count,), NaN where only
    the leading one is predicted; name), or None.

    - vanilla linear, Gaussian weights: lambda_1, lambda_2, ... of Gaussian products
      (lyapunov_exponents), each N times over (the Jacobian acts on each sample alone);
    - vanilla linear, orthogonal weights: every exponent 1/2 log(gain) (0 at gain 1);
    - batch norm, linear, Gaussian weights: bn_linear_gradient_rate(N) (leading only);
    - batch norm (bn), ReLU, Gaussian weights: bn_relu_gradient_rate() (leading only).

    Constant width, no residual branch in every case.
    """
    d = network.width if isinstance(network.width, int) else None
    if d is None or not math.isinf(network.gamma):
        return None
    out = np.full(count, np.nan)
    linear = network.activation == "linear"
    if network.norm == "none" and linear and network.init == "orthogonal":
        return np.full(count, 0.5 * math.log(_gain(network.weight_gain))), "1/2 log gain"
    if network.init != "gaussian":
        return None
    if network.norm == "none" and linear:
        lam = np.repeat(lyapunov_exponents(d, network.weight_gain), network.batch)
        return lam[:count], "$\\lambda_i$ (Gaussian products)"
    if network.norm in ("bn", "bn-rms") and linear and network.batch >= 4:
        out[0] = bn_linear_gradient_rate(network.batch, network.norm == "bn")
        return out, "BN mean field $\\frac{1}{2}\\log\\frac{N-2}{N-3}$" if network.norm == "bn" \
            else "BN mean field $\\frac{1}{2}\\log\\frac{N-1}{N-2}$"
    if network.norm == "bn" and network.activation == "relu":
        out[0] = bn_relu_gradient_rate()
        return out, "BN-ReLU mean field $\\frac{1}{2}\\log\\frac{\\pi}{\\pi-1}$"
    return None


# Fits used to compare measurements with the predictions --------------------------------


def slope_fit(x, y) -> tuple[float, float, float]:
    """Least-squares line y = a + b x: (slope b, intercept a, standard error of b from
    the residuals; nan with fewer than 3 points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("a line fit needs at least two distinct x values")
    b, a = np.polyfit(x, y, 1)
    if x.size < 3:
        return float(b), float(a), float("nan")
    resid = y - (a + b * x)
    se = math.sqrt(np.sum(resid**2) / (x.size - 2) / np.sum((x - x.mean()) ** 2))
    return float(b), float(a), se


def power_law_fit(x, y) -> tuple[float, float, float]:
    """Fit y = C x^p on log-log axes: (exponent p, prefactor C, standard error of p)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power law fit needs positive x and y")
    p, log_c, se = slope_fit(np.log(x), np.log(y))
    return p, math.exp(log_c), se


def extrapolate(x, y, se, degree: int = 1) -> tuple[float, float]:
    """Weighted least-squares polynomial of ``degree`` through (x, y +- se): (its value at
    x = 0, standard error), e.g. rates at widths d against 1/d to the wide limit."""
    design = np.vander(np.asarray(x, dtype=float), degree + 1, increasing=True)
    weights = np.diag(1.0 / np.asarray(se, dtype=float) ** 2)
    if design.shape[0] <= degree:
        raise ValueError(f"a degree-{degree} extrapolation needs {degree + 1} points or more")
    cov = np.linalg.inv(design.T @ weights @ design)
    coef = cov @ design.T @ weights @ np.asarray(y, dtype=float)
    return float(coef[0]), float(math.sqrt(cov[0, 0]))


def tangent_rate(runs, after: int) -> tuple[float, float]:
    """The leading tangent's log growth per layer over several runs of one network: the
    slope of tangent_log_norm[:, 0] over the rows at or after layer ``after``, fitted per
    run: (mean over runs, standard error from their scatter; nan with one run)."""
    slopes = []
    for run in runs:
        layer = np.asarray(run.layer)
        late = layer >= after
        slopes.append(slope_fit(layer[late], np.asarray(run.tangent_log_norm)[late, 0])[0])
    se = np.std(slopes, ddof=1) / math.sqrt(len(slopes)) if len(slopes) > 1 else math.nan
    return float(np.mean(slopes)), float(se)


def collapse_window(soft_rank, upper: float = 1e-2, lower: float = 1e-9) -> np.ndarray:
    """Mask of the rows in the asymptotic collapse regime: upper > soft_rank - 1 > lower,
    up to the first row that leaves it from below (the float32 noise floor starts at
    ~1e-13; rows after the curve first reaches ``lower`` are excluded)."""
    excess = np.asarray(soft_rank, dtype=float) - 1.0
    below = np.flatnonzero(excess <= lower)
    end = below[0] if below.size else excess.size
    mask = (excess < upper) & (excess > lower)
    mask[end:] = False
    return mask


def pooled_collapse_rate(runs, upper: float = 1e-2, lower: float = 1e-9) -> tuple[float, int]:
    """Measured decay rate of log(soft_rank - 1) over several runs: (rate, layers used).

    ``runs``: (layer, soft_rank) arrays per seed. In each run the window opens at the
    first row with soft_rank - 1 < ``upper`` (the asymptotic regime) and closes at the
    first later row below ``lower`` (before the float32 noise floor, ~1e-13), or at the
    last row. The rate is the pooled ratio sum(drop of log(soft_rank - 1)) / sum(window
    lengths). Both ends are stopping times of a random walk with independent increments,
    so by Wald's identity the pooled ratio is consistent, with standard error
    sqrt(collapse_step_variance(d) / layers used); the mean of per-run ratios would not
    be (closing at a first passage biases each ratio upwards, by ~15 % at d = 8..32).
    Runs that never enter the window, or reach soft_rank - 1 <= 0, are skipped.
    """
    drop, length = 0.0, 0
    for layer, soft in runs:
        layer = np.asarray(layer)
        excess = np.asarray(soft, dtype=float) - 1.0
        inside = np.flatnonzero(excess < upper)
        if not inside.size:
            continue
        i = inside[0]
        below = np.flatnonzero(excess[i:] < lower)
        j = i + below[0] if below.size else excess.size - 1
        if j <= i or excess[j] <= 0 or excess[i] <= 0:
            continue
        drop += math.log(excess[i]) - math.log(excess[j])
        length += int(layer[j] - layer[i])
    if length == 0:
        raise ValueError("no run has rows inside the collapse window")
    return drop / length, length


def pooled_growth(runs) -> tuple[float, int]:
    """Measured slope of the log-norm over several runs: (slope, layers used).

    ``runs``: (layer, log_norm, start) per seed; each run contributes its log-norm's
    change from its first row at or after ``start`` to its last row. Pooled as
    sum(changes) / sum(lengths), consistent when ``start`` is a stopping time (e.g. the
    layer where the run's soft rank fell below 1.01), standard error
    sqrt(log_norm_step_variance(d) / layers used).
    """
    change, length = 0.0, 0
    for layer, log_norm, start in runs:
        layer = np.asarray(layer)
        i = int(np.searchsorted(layer, start))
        if i >= layer.size - 1:
            continue
        change += float(log_norm[-1] - log_norm[i])
        length += int(layer[-1] - layer[i])
    if length == 0:
        raise ValueError("no run has rows after its start layer")
    return change / length, length


def first_layer_below(layer, values, threshold: float) -> int | None:
    """The first layer whose value is below ``threshold`` (None if none is)."""
    idx = np.flatnonzero(np.asarray(values, dtype=float) < threshold)
    return int(np.asarray(layer)[idx[0]]) if idx.size else None
