"""A network's random ingredients, regenerated from (seed, layer) alone: the weight
matrix of any layer and the input batch H_0.

Weights of layer l (1-based) come from stream ``rng.WEIGHTS`` at counter layer l, the
input from stream ``rng.INPUT`` at layer 0, element index = flat C index. So any
layer can be rebuilt without replaying the others, on any thread count or device.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from fastrank import rng
from fastrank.errors import one_line, os_reason
from fastrank.spec import Network, SpecError, input_path, named_input


def layer_shape(network: Network, layer: int) -> tuple[int, int]:
    """(d_out, d_in) of the weight matrix of ``layer`` (1..depth)."""
    if not 1 <= layer <= network.depth:
        raise SpecError(f"invalid layer {layer}: must lie in 1..{network.depth}")
    widths = network.widths
    d_in = network.in_dim if layer == 1 else widths[layer - 2]
    return widths[layer - 1], d_in


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
    q, r = np.linalg.qr(rng.normal(seed, stream, layer, tall, np.float64))
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T


def input_array_shape(spec: str) -> tuple[int, int]:
    """(samples, features) of an input array, read without loading the data (a
    scikit-learn data set is loaded, once per process, so that a missing scikit-learn is
    reported where the network is specified)."""
    with _input_array(spec) as arr:
        return arr.shape


def load_input_array(spec: str, rows: int | None = None) -> np.ndarray:
    """The (samples, features) array of ``file.npy``, ``file.h5:dataset`` or
    ``sklearn:NAME``; only its first ``rows`` samples when given (the rest is not read).

    Files are used as they are. A scikit-learn data set (``sklearn:digits``, ...) is
    standardised: every feature centred and scaled to unit variance over the whole data
    set (features constant over it, such as the digits' always-blank corner pixels, are
    set to 0), float64, samples in the order the package ships them. Centring removes the
    mean image, which would otherwise dominate the batch before the first layer (the
    first 64 digits: soft rank 2.0 raw, 11.3 standardised); standardised inputs are also
    how such data are fed to networks in practice.
    """
    with _input_array(spec) as arr:
        try:
            return np.asarray(arr[:rows])
        except (OSError, ValueError) as exc:  # a truncated or unreadable data block
            raise _bad_input(spec, f"its data do not read ({one_line(exc)})") from None


def input_batch(network: Network) -> np.ndarray:
    """The first ``batch`` samples of a network's input array, as stored."""
    data = load_input_array(network.input, rows=network.batch)
    if data.shape[0] < network.batch:
        raise SpecError(f"invalid batch {network.batch}: input {network.input!r} holds only "
                        f"{data.shape[0]} samples")
    return data


def check_input(network: Network) -> None:
    """Refuse an input array whose batch cannot start the network, before anything runs:
    fewer samples than the batch, or values that are NaN or infinite, all zero, or too
    large for the network's dtype (every run would fail at layer 0)."""
    x = input_batch(network)
    dtype = np.dtype(network.dtype)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if not np.isfinite(x).all():
            raise _bad_input(network.input, f"its first {network.batch} samples hold NaN or "
                                             "infinite values")
        cast = x.astype(dtype)
        sumsq = float(np.sum(np.square(cast, dtype=np.float64)))
    if sumsq > np.finfo(dtype).max:  # also when a value overflows the cast
        raise _bad_input(network.input, f"its values are too large for {dtype} (largest "
                                         f"|x| = {np.abs(x).max():.3g})")
    if sumsq == 0.0:
        raise _bad_input(network.input, f"its first {network.batch} samples are all zero"
                         + ("" if not x.any() else f" in {dtype}"))


def _bad_input(spec: str, why: str) -> SpecError:
    return SpecError(f"invalid input {spec!r}: {why}")


@contextlib.contextmanager
def _input_array(spec: str):
    """The array of an input spec, opened but not read (a .npy memory map, an HDF5
    dataset, a scikit-learn array), checked to be a real 2-D numeric array; SpecError in
    one line for anything else."""
    name = named_input(spec)
    if name is not None:
        yield _sklearn_dataset(name)
        return
    path, dataset = input_path(spec)
    if not path.exists():
        raise _bad_input(spec, "no such file")
    if not path.is_file():
        raise _bad_input(spec, "a directory" if path.is_dir() else "not a regular file")
    try:
        if path.suffix == ".npy":
            yield _checked_array(spec, _npy_map(spec, path))
        else:
            yield from _h5_dataset(spec, path, dataset)
    except OSError as exc:  # unreadable: permissions, I/O errors
        raise _bad_input(spec, f"cannot read it ({os_reason(exc)})") from None


def _npy_map(spec: str, path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # pickled data, object dtype, a truncated file
        why = "object or pickled arrays are not accepted" if "pickle" in str(exc) or (
            "Python objects" in str(exc)) else one_line(exc)
        raise _bad_input(spec, f"not a .npy array of numbers ({why})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        arr.close()
        raise _bad_input(spec, "not a .npy array (an .npz archive?)")
    return arr


def _h5_dataset(spec: str, path, dataset: str | None):
    import h5py

    if not h5py.is_hdf5(path):
        raise _bad_input(spec, "not an HDF5 file")
    if dataset is None:
        raise _bad_input(spec, "name a dataset as FILE.h5:DATASET")
    with h5py.File(path, "r") as f:
        ds = f.get(dataset)
        if ds is None:
            raise _bad_input(spec, f"no dataset {dataset!r} in it (name one as FILE.h5:DATASET)")
        if not isinstance(ds, h5py.Dataset):
            raise _bad_input(spec, f"{dataset!r} is a group, not a dataset")
        yield _checked_array(spec, ds)


def _checked_array(spec: str, arr):
    """``arr`` if it is a 2-D array of real numbers (integers and booleans count)."""
    kind = arr.dtype.kind
    if kind == "c":
        raise _bad_input(spec, "complex values: fastrank takes real arrays (pass the real "
                               "and imaginary parts as separate features)")
    if kind not in "biuf":
        raise _bad_input(spec, f"holds {arr.dtype} values, not numbers")
    if arr.ndim != 2:
        raise _bad_input(spec, f"expected a 2-D (samples, features) array, got shape "
                               f"{tuple(arr.shape)}")
    if arr.shape[1] == 0:
        raise _bad_input(spec, f"it has no features (shape {tuple(arr.shape)})")
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
