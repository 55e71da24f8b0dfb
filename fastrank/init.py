"""A network's random ingredients, regenerated from (seed, layer) alone: the weight
matrix of any layer and the input batch H_0 (data inputs are read by fastrank.inputs).

Weights of layer l (1-based) come from stream ``rng.WEIGHTS`` at counter layer l, the
input from stream ``rng.INPUT`` at layer 0, element index = flat C index. So any
layer can be rebuilt without replaying the others, on any thread count or device.
"""

from __future__ import annotations

import numpy as np

from fastrank import blas, rng
from fastrank.errors import SpecError
from fastrank.inputs import input_batch
from fastrank.spec import Network


def layer_shape(network: Network, layer: int) -> tuple[int, int]:
    """(d_out, d_in) of the weight matrix of ``layer`` (1..depth)."""
    if not 1 <= layer <= network.depth:
        raise SpecError(f"invalid layer {layer}: must lie in 1..{network.depth}")
    return network.features(layer), network.features(layer - 1)


def weights(network: Network, seed: int, layer: int, out: np.ndarray | None = None) -> np.ndarray:
    """The weight matrix W of one layer of one run, regenerated from (seed, layer) alone.

    Every backend draws its weights from the same counter-based random stream, so the
    matrix a run used at any layer can be rebuilt here without replaying the layers
    before it, on any thread count or device: to inspect a layer, or to check a kernel
    against a plain NumPy product.

    gaussian: N(0, gain/d_in); uniform: U(-a, a) with a = sqrt(3 gain/d_in), the same
    variance; orthogonal: sqrt(gain) times a (semi-)orthogonal matrix (torch's rule,
    with gain in variance units). The gain is ``network.weight_gain``.

    Parameters
    ----------
    network : Network
        The architecture: its widths, ``init``, gain and dtype.
    seed : int
        The run's seed (0 <= seed < 2**64).
    layer : int
        The layer, 1..depth (layer 1 maps the input H_0).
    out : numpy.ndarray, optional
        A C-contiguous (d_out, d_in) array of the network's dtype to write the weights
        into and return, instead of a new one (Gaussian and uniform weights only; an
        orthogonal matrix is always new).

    Returns
    -------
    numpy.ndarray
        (d_out, d_in) in the network's dtype, d_out the layer's width and d_in the one
        before it (the input dimension for layer 1).

    Raises
    ------
    SpecError
        When ``layer`` lies outside 1..depth.

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=(64, 32), depth=2, activation="relu")
    >>> w = fastrank.weights(net, seed=0, layer=2)
    >>> w.shape, w.dtype
    ((32, 64), dtype('float32'))
    >>> round(float(w.var() * 64), 1)  # variance gain / d_in, He's gain 2 for ReLU
    2.0
    >>> bool((fastrank.weights(net, seed=0, layer=2) == w).all())  # the same every time
    True
    """
    d_out, d_in = layer_shape(network, layer)
    dtype = np.dtype(network.dtype)
    if network.init == "orthogonal":
        q = _orthogonal(seed, rng.WEIGHTS, layer, d_out, d_in)
        return (np.sqrt(network.weight_gain) * q).astype(dtype)
    draw = rng.normal if network.init == "gaussian" else rng.uniform
    w = draw(seed, rng.WEIGHTS, layer, (d_out, d_in), dtype, out=out)
    mul, sub = weight_affine(network, d_in)
    w *= mul
    if network.init == "uniform":
        w -= sub
    return w


def weight_affine(network: Network, d_in: int) -> tuple:
    """(mul, sub) in the network's dtype that turn the stream's standard normals
    (Gaussian init) or [0, 1) uniforms (uniform init) into weights: w = x * mul - sub.
    The one place of these scalings: every backend and kernel applies exactly these."""
    t = np.dtype(network.dtype).type
    gain = network.weight_gain
    with np.errstate(over="ignore"):  # an absurd gain overflows to inf: booked as a failure
        if network.init == "uniform":
            a = np.sqrt(3.0 * gain / d_in)
            return t(2 * a), t(a)
        return t(np.sqrt(gain / d_in)), t(0)


def input_matrix(network: Network, seed: int) -> np.ndarray:
    """H_0 (in_dim x batch), C order, in the network's dtype."""
    d, n = network.in_dim, network.batch
    dtype = np.dtype(network.dtype)
    if network.input == "gaussian":
        return rng.normal(seed, rng.INPUT, 0, (d, n), dtype)
    if network.input == "orthogonal":
        q = _orthogonal(seed, rng.INPUT, 0, d, n)
        return np.ascontiguousarray(np.sqrt(max(d, n)) * q, dtype)
    return np.ascontiguousarray(input_batch(network).T, dtype=dtype)


def _orthogonal(seed: int, stream: int, layer: int, rows: int, cols: int) -> np.ndarray:
    """Rows x cols matrix with orthonormal rows or columns (whichever fit), Haar
    distributed: QR of a float64 Gaussian with the signs of R's diagonal fixed."""
    tall = (max(rows, cols), min(rows, cols))
    a = rng.normal(seed, stream, layer, tall, np.float64)
    with blas.usual():  # LAPACK's blocked QR: its bits depend on BLAS's thread count
        q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T
