"""A network's random ingredients, regenerated from (seed, layer) alone: the weight
matrix of any layer and the input batch H_0.

Weights of layer l (1-based) come from stream ``rng.WEIGHTS`` at counter layer l, the
input from stream ``rng.INPUT`` at layer 0, element index = flat C index. So any
layer can be rebuilt without replaying the others, on any thread count or device.
"""

from __future__ import annotations

import functools

import numpy as np

from fastrank import rng
from fastrank.spec import Network, SpecError, input_path, named_input


def layer_shape(network: Network, layer: int) -> tuple[int, int]:
    """(d_out, d_in) of the weight matrix of ``layer`` (1..depth)."""
    if not 1 <= layer <= network.depth:
        raise SpecError(f"invalid layer {layer}: must lie in 1..{network.depth}")
    widths = network.widths
    d_in = network.in_dim if layer == 1 else widths[layer - 2]
    return widths[layer - 1], d_in


def weights(network: Network, seed: int, layer: int, out: np.ndarray | None = None) -> np.ndarray:
    """Weight matrix W_layer (d_out x d_in) in the network's dtype (written into ``out``
    when given, for Gaussian and uniform weights).

    gaussian: N(0, gain/d_in); uniform: U(-a, a) with a = sqrt(3 gain/d_in), the same
    variance; orthogonal: sqrt(gain) times a (semi-)orthogonal matrix (torch's rule,
    with gain in variance units).
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
        return np.ascontiguousarray(np.sqrt(max(d, n)) * _orthogonal(seed, rng.INPUT, 0, d, n), dtype)
    data = load_input_array(network.input)
    if data.shape[0] < n:
        raise SpecError(
            f"invalid batch {n}: input {network.input!r} holds only {data.shape[0]} samples"
        )
    return np.ascontiguousarray(data[:n].T, dtype=dtype)


def _orthogonal(seed: int, stream: int, layer: int, rows: int, cols: int) -> np.ndarray:
    """Rows x cols matrix with orthonormal rows or columns (whichever fit), Haar
    distributed: QR of a float64 Gaussian with the signs of R's diagonal fixed."""
    tall = (max(rows, cols), min(rows, cols))
    q, r = np.linalg.qr(rng.normal(seed, stream, layer, tall, np.float64))
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T


def input_array_shape(spec: str) -> tuple[int, int]:
    """(samples, features) of an input array file, read without loading the data (a
    scikit-learn data set is loaded, once per process, so that a missing scikit-learn is
    reported where the network is specified)."""
    return load_input_array(spec, header_only=True).shape


def load_input_array(spec: str, header_only: bool = False) -> np.ndarray:
    """The (samples, features) array of ``file.npy``, ``file.h5:dataset`` or ``sklearn:NAME``.

    Files are used as they are. A scikit-learn data set (``sklearn:digits``, ...) is
    standardised: every feature centred and scaled to unit variance over the whole data
    set (features constant over it, such as the digits' always-blank corner pixels, are
    set to 0), float64, samples in the order the package ships them. Centring removes the
    mean image, which would otherwise dominate the batch before the first layer (the
    first 64 digits: soft rank 2.0 raw, 11.3 standardised); standardised inputs are also
    how such data are fed to networks in practice.
    """
    name = named_input(spec)
    if name is not None:
        return _sklearn_dataset(name)
    path, dataset = input_path(spec)
    if not path.exists():
        raise SpecError(f"invalid input {spec!r}: no such file")
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r" if header_only else None)
    else:
        import h5py

        with h5py.File(path, "r") as f:
            if dataset is None or dataset not in f:
                raise SpecError(f"invalid input {spec!r}: name a dataset as FILE.h5:DATASET")
            ds = f[dataset]
            arr = np.broadcast_to(np.float32(0), ds.shape) if header_only else ds[()]
    if arr.ndim != 2:
        raise SpecError(f"invalid input {spec!r}: expected a 2-D (samples, features) array")
    return arr


@functools.cache
def _sklearn_dataset(name: str) -> np.ndarray:
    """A standardised scikit-learn data set (read-only, cached per process)."""
    try:
        import sklearn.datasets
    except ImportError:
        raise SpecError(
            f"invalid input 'sklearn:{name}': it needs scikit-learn "
            "(pip install 'fastrank[data]')"
        ) from None
    x = np.asarray(getattr(sklearn.datasets, f"load_{name}")().data, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    x = np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)
    x.flags.writeable = False
    return x
