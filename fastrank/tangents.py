"""Forward-mode tangents: directions in the space of a network's input batch, pushed
through each layer's Jacobian beside H, in constant memory in depth.

A layer maps H (d_in x N) to act/norm(W H) (with the residual branch H + gamma W H where
the network has one). Its Jacobian with respect to H, applied to a tangent T of the same
shape, is the chain of the derivatives of each step at the layer's own H: T -> W T (and
T + gamma W T), then the activation's derivative (ReLU's mask, 1 - tanh^2), and the
normalisation's, for batch norm the exact derivative of the batch statistics, which
couples the samples: with y = (x - mean x) / s per row, dy = (dx - mean dx - y mean(y
dx)) / s (bn-rms without the mean terms of centring; layer norm the same per column).

K tangents start as an orthonormal set drawn from the Philox stream TANGENTS of the
run's seed (so a run's tangents are reproducible as its weights are). After every layer
each tangent is scaled back to unit norm and the log of its norm added to a float64
total, so thousands of layers neither overflow nor underflow; every ``qr_every`` layers
(K >= 2) the set is re-orthonormalised by QR and the logs of |diag R| are added instead
(Benettin's method): the totals divided by the depth converge to the K leading Lyapunov
exponents of the product of the layers' Jacobians. The first total is always the log of
the first tangent's own growth, log ||J_L ... J_1 T_1||.

What this says about gradients at initialisation: the backward pass of a loss applies the
transposed Jacobians, J_1^T ... J_L^T, to the loss's gradient. A product and its
transpose have the same singular values, so the gradient's norm grows (or shrinks) with
depth at the same exponents: the first exponent is the rate at which the largest
gradients explode (> 0) or vanish (< 0) per layer, and the spread of the K exponents
how quickly the gradient collapses onto few directions. For networks without
normalisation the Jacobian acts on each sample alone (W, times ReLU's mask), so its
exponents come N at a time, one block per sample; batch norm couples them.

Homogeneous unnormalised networks rescale H every layer (propagate); that changes no
Jacobian but a scalar factor the tangents' own rescaling absorbs, and the masks of ReLU
do not see it.

push and renormalise compute in the tangents' own dtype (start's ``dtype``, float64
unless asked). The CPU carries a network's tangents in the network's dtype: a float64
network's through these functions, a float32 network's through kernels/cpu/tangents.py,
the same arithmetic compiled in float32 (the network's weights, H and pre-activations
are float32, so its Jacobian is known to float32's rounding and no better). The logs of
the norms are float64 totals either way, and the renormalisation every layer keeps the
tangents' values O(1) whatever the depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastrank import rng
from fastrank.spec import Network


@dataclass
class Tangents:
    """The tangents of one run: ``t`` (K, d, N), float64 or float32, each of unit norm;
    ``log`` (K,) float64: the log growth of each direction so far (the exponents'
    totals), the part since the last QR included."""

    t: np.ndarray
    log: np.ndarray


def start(network: Network, seed: int, count: int, dtype=np.float64) -> Tangents:
    """``count`` orthonormal tangents (d_in x N each) from the stream TANGENTS of
    ``seed`` (Gaussian, then QR, in float64), their log growth 0; ``t`` in ``dtype``."""
    if count < 1:
        raise ValueError(f"tangents: {count} directions (at least 1)")
    shape = (count, network.in_dim, network.batch)
    if count > shape[1] * shape[2]:
        raise ValueError(f"tangents: {count} directions in a space of {shape[1] * shape[2]}")
    t = rng.normal(int(seed), rng.TANGENTS, 0, shape, np.float64)
    q, _ = np.linalg.qr(t.reshape(count, -1).T)
    return Tangents(np.ascontiguousarray(q.T.reshape(shape), dtype), np.zeros(count))


def push(network: Network, w, h, t, z=None):
    """The layer's Jacobian at input ``h`` (..., d_in, N) with weights ``w`` (..., d_out,
    d_in) applied to each tangent of ``t`` (..., K, d_in, N): (..., K, d_out, N), in t's
    dtype (w and h taken to it). ``z`` (..., d_out, N), where given, is the layer's
    pre-activation as its forward pass took it (W H, or H + gamma W H), so that W H is
    not taken a second time. Leading axes stack seeds; numpy or CuPy arrays (their
    functions are reached through numpy's dispatch)."""
    w, h = (a.astype(t.dtype, copy=False) for a in (w, h))
    if z is None:
        z = w @ h
        if network.residual:
            z = h + network.gamma * z
    x, dx = z.astype(t.dtype, copy=False)[..., None, :, :], w[..., None, :, :] @ t
    if network.residual:
        dx = t + network.gamma * dx
    return through(network, x, dx)[1]


def through(network: Network, x, dx):
    """The rest of the layer after its product: the pre-activation ``x`` (..., 1, d, N)
    through the norm and the activation in the network's order, and its tangents ``dx``
    (..., K, d, N) through their derivatives at x: (y, dy)."""
    if network.order == "act-norm":
        x, dx = _activate(x, dx, network.activation)
        return _normalise(x, dx, network.norm, network.eps)
    x, dx = _normalise(x, dx, network.norm, network.eps)
    return _activate(x, dx, network.activation)


def renormalise(tangents: Tangents, t, layer: int, qr_every: int) -> None:
    """Take the pushed tangents ``t`` (..., K, d, N) into ``tangents``: QR (K >= 2, at
    layers that are multiples of ``qr_every``) or each scaled to unit norm, the logs
    added. A direction the layer annihilates (ReLU's mask can, at small widths) adds
    -inf: its exponent is -inf from then on, and a lone tangent stays zero."""
    k = t.shape[-3]
    flat = t.reshape(*t.shape[:-2], -1)
    with np.errstate(divide="ignore"):
        if k >= 2 and layer % qr_every == 0:
            q, r = np.linalg.qr(np.swapaxes(flat, -1, -2))
            tangents.log += np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1)).astype(
                np.float64, copy=False))
            tangents.t = np.swapaxes(q, -1, -2).reshape(t.shape).copy()
            return
        norms = np.linalg.norm(flat, axis=-1)
        tangents.log += np.log(norms.astype(np.float64, copy=False))
    tangents.t = t / np.where(norms > 0, norms, 1.0)[..., None, None]


def _activate(x, dx, activation: str):
    """The activation of x and its derivative applied to dx."""
    if activation == "relu":
        return np.maximum(x, 0.0), np.where(x > 0.0, dx, 0.0)
    if activation == "tanh":
        y = np.tanh(x)
        return y, (1.0 - y * y) * dx
    return x, dx


def _normalise(x, dx, norm: str, eps: float):
    """The normalisation of x (..., 1, d, N) (each feature over the samples for bn and
    bn-rms, each sample over the features for ln) and its derivative applied to each
    tangent of dx (..., K, d, N)."""
    if norm == "none":
        return x, dx
    axis = -2 if norm == "ln" else -1
    centre = norm != "bn-rms"
    c = x - x.mean(axis=axis, keepdims=True) if centre else x
    s = np.sqrt((c * c).mean(axis=axis, keepdims=True) + eps)
    y = c / s
    dc = dx - dx.mean(axis=axis, keepdims=True) if centre else dx
    dy = (dc - y * (y * dx).mean(axis=axis, keepdims=True)) / s
    return y, dy
