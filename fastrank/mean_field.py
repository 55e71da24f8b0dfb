"""The wide-network (mean-field) limit of the tangents' growth through batch norm, at a
finite batch, by Monte Carlo: what fastrank.theory's closed forms give only for linear
networks at any batch and for ReLU at large batches.

As the width d grows at a fixed batch N, a layer's rows become independent draws: row i
of the pre-activations W H and of the pushed tangents W T is a Gaussian pair (z_i, g_i)
in R^N x R^N whose covariance is the batch-by-batch Gram of (H, T) averaged over the
features. So a layer maps Grams to Grams, (G_HH, G_HT, G_TT) -> the same averages of
(y_i, t_i) with y_i the row through the norm and activation and t_i the row's tangent
through their derivatives (fastrank.tangents.through, the same arithmetic as the
simulations). Iterated, the Grams settle at the fixed point and tr G_TT grows by a
constant factor per layer: the tangents' (and the gradients') mean-field growth, the
quantity Yang et al. (ICLR 2019) compute for batch-normalised networks. Here the
expectations are averages over ``rows`` sampled rows, so the result carries a Monte
Carlo error (returned) and, of order 1/rows, the finite-width bias it is meant to remove:
take ``rows`` well above the widths it is compared with.
"""

from __future__ import annotations

import math

import numpy as np

from fastrank import tangents
from fastrank.spec import Network

#: Layers per block of the standard error: a layer's Grams carry the last one's sampling
#: noise, so successive growths are correlated; means of blocks of layers much less.
BLOCK = 5


def gradient_rate(network: Network, rows: int = 20000, layers: int = 60, burn_in: int = 20,
                  seed: int = 0) -> tuple[float, float]:
    """The mean-field log growth per layer of a tangent of ``network`` (batch norm,
    linear or ReLU or tanh, either order, no residual branch; its batch and eps; the
    width plays no part; its gain and eps do): (rate, its Monte Carlo standard error,
    from means over blocks of BLOCK layers), from ``layers`` layers of ``rows`` Gaussian
    rows, the first ``burn_in`` left out."""
    if network.norm not in ("bn", "bn-rms") or network.residual:
        raise ValueError("the mean-field rate is for batch norm (bn, bn-rms) without a "
                         "residual branch")
    if not 0 <= burn_in < layers:
        raise ValueError(f"burn_in {burn_in} must lie in [0, layers = {layers})")
    n = network.batch
    gen = np.random.default_rng(seed)
    gram = np.eye(2 * n)  # of (H, T); the tangent starts independent of H
    growth = []
    for _ in range(layers):
        factor = np.linalg.cholesky(network.weight_gain * gram + 1e-12 * np.eye(2 * n))
        pair = gen.standard_normal((rows, 2 * n)) @ factor.T
        z, g = pair[:, :n], pair[:, n:]
        y, t = tangents.through(network, z[None], g[None])  # rows as the features
        both = np.concatenate([y[0], t[0]], axis=1)
        new = both.T @ both / rows
        growth.append(0.5 * math.log(np.trace(new[n:, n:]) / np.trace(gram[n:, n:])))
        scale = np.ones(2 * n)
        scale[n:] = 1.0 / math.sqrt(np.trace(new[n:, n:]) / n)  # the tangent back to unit size
        gram = new * np.outer(scale, scale)
    blocks = np.array(growth[burn_in:])
    blocks = blocks[:blocks.size // BLOCK * BLOCK].reshape(-1, BLOCK).mean(axis=1)
    if blocks.size < 2:
        raise ValueError(f"layers - burn_in must span two blocks of {BLOCK} layers")
    return float(blocks.mean()), float(blocks.std(ddof=1) / math.sqrt(blocks.size))

