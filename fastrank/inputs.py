"""The input batch H_0 read from data: a .npy file, an HDF5 dataset or a data set shipped
with scikit-learn, opened without loading what is not needed and checked before any run
starts (a real 2-D numeric array, enough finite samples); every problem is one
SpecError line naming the input and what is wrong with it.

float32 and float64 arrays are taken as they are; float16 and integer ones are converted
to the network's dtype, which they fit exactly (integers up to 2**24 in magnitude for
float32, 2**53 for float64: beyond, the batch is refused). Booleans, complex numbers,
long doubles and anything that is not a number are refused.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastrank.errors import SpecError, one_line, os_reason
from fastrank.version import install_hint

if TYPE_CHECKING:
    from fastrank.spec import Network


def input_path(spec: str) -> tuple[Path, str | None]:
    """Split an input array spec ``file.npy`` or ``file.h5:dataset`` into path and dataset,
    at the first ``.h5:`` or ``.hdf5:`` (a path may hold colons before it)."""
    split = re.search(r"\.(h5|hdf5):", spec)
    if split is None:
        return Path(spec), None
    return Path(spec[:split.end() - 1]), (spec[split.end():] or None)


#: Inputs drawn from the run's own random stream rather than read from data.
RANDOM_INPUTS = ("gaussian", "orthogonal")

#: Real data sets that ship inside scikit-learn (no download), usable as the input
#: ``sklearn:NAME`` (needs the ``data`` extra); standardised per feature, see
#: fastrank.init.load_input_array. digits: 1797 8x8 images, 64 features.
SKLEARN_INPUTS = ("digits", "iris", "wine", "breast_cancer")


def named_input(spec: str) -> str | None:
    """The data set name of an input spec ``sklearn:NAME``, else None (SpecError for an
    unknown name)."""
    if not spec.startswith("sklearn:"):
        return None
    name = spec[len("sklearn:"):]
    if name not in SKLEARN_INPUTS:
        raise SpecError(
            f"invalid input {spec!r}: scikit-learn data sets are "
            + ", ".join(f"sklearn:{n}" for n in SKLEARN_INPUTS)
        )
    return name


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


def check_inputs(sweep) -> None:
    """Read the batch of every input array a Sweep uses, once per (input, batch, dtype),
    and refuse one that no run could start from (check_input)."""
    seen = set()
    for net in sweep.networks():
        key = (net.input, net.batch, net.dtype)
        if net.input not in RANDOM_INPUTS and key not in seen:
            seen.add(key)
            check_input(net)


def check_not_output(sweep, output) -> None:
    """Refuse to write a sweep's results over the file of one of its input arrays: the
    writer would replace the data its runs read (and they would then fail to read it)."""
    if not os.path.exists(output):
        return
    for spec in sweep.grid.get("input", ()):
        path, _ = input_path(spec)
        if spec in RANDOM_INPUTS or named_input(spec) is not None:
            continue
        if path.exists() and os.path.samefile(path, output):
            raise _bad_input(spec, f"it is the output file {output}: write the results to "
                                   "another file")


def check_input(network: Network) -> None:
    """Refuse an input array whose batch cannot start the network, before anything runs:
    fewer samples than the batch, integers that the network's dtype does not hold
    exactly, or values that are NaN or infinite, all zero, or too large for the dtype
    (every run would fail at layer 0)."""
    x = input_batch(network)
    dtype = np.dtype(network.dtype)
    if x.dtype.kind in "iu" and x.size:
        exact = 2 ** (np.finfo(dtype).nmant + 1)  # every integer up to it is exact in dtype
        largest = max(int(x.max()), -int(x.min()))
        if largest > exact:
            raise _bad_input(network.input, f"its integers do not all convert exactly to "
                                             f"{dtype} (largest |x| = {largest}; at most "
                                             f"2**{exact.bit_length() - 1})")
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
    _check_npy_header(spec, path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except EOFError:
        raise _bad_input(spec, "an empty file") from None
    except (ValueError, OverflowError) as exc:  # pickled data, object dtype, a bad header
        why = "object or pickled arrays are not accepted" if "pickle" in str(exc) or (
            "Python objects" in str(exc)) else one_line(exc)
        raise _bad_input(spec, f"not a .npy array of numbers ({why})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        arr.close()
        raise _bad_input(spec, "not a .npy array (an .npz archive?)")
    return arr


def _check_npy_header(spec: str, path) -> None:
    """Refuse a .npy header whose shape is negative or needs more bytes than the file
    holds after it, which numpy's memory map meets as an OverflowError (after a warning
    for an overflowing size). Headers numpy's public readers do not read (format 3.0,
    for non-Latin-1 field names), object arrays and what is no .npy file at all are left
    to np.load, which says what they are."""
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        try:
            read = {(1, 0): npy.read_array_header_1_0,
                    (2, 0): npy.read_array_header_2_0}.get(npy.read_magic(f))
            if read is None:
                return
            shape, _, dtype = read(f)
        except ValueError:
            return
        body = os.fstat(f.fileno()).st_size - f.tell()
    if dtype.hasobject:
        return
    if any(n < 0 for n in shape):
        raise _bad_input(spec, f"its header gives a negative shape {shape}")
    needed = math.prod(shape) * dtype.itemsize
    if needed > body:
        raise _bad_input(spec, f"cut short: its header gives shape {shape} of {dtype} "
                               f"({needed:,} bytes), and {body:,} follow it")


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


#: What an input array may hold, for the messages that refuse the rest.
ACCEPTED = "fastrank takes float32 or float64 arrays (float16 and integer ones converted exactly)"


def _checked_array(spec: str, arr):
    """``arr`` if it is a 2-D array of floats of at most 64 bits or of integers."""
    dtype = arr.dtype
    if dtype.kind == "c":
        raise _bad_input(spec, f"complex values: {ACCEPTED}; pass the real and imaginary "
                               "parts as separate features")
    if dtype.kind == "f" and dtype.itemsize > 8:
        raise _bad_input(spec, f"holds {dtype} values: {ACCEPTED}")
    if dtype.kind not in "iuf":
        raise _bad_input(spec, f"holds {dtype} values, not numbers: {ACCEPTED}")
    if arr.shape is None:  # an HDF5 dataset with a null dataspace
        raise _bad_input(spec, "expected a 2-D (samples, features) array, got an empty "
                               "HDF5 dataset (no shape)")
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
            f"invalid input 'sklearn:{name}': it needs scikit-learn ({install_hint('data')})"
        ) from None
    x = np.asarray(getattr(sklearn.datasets, f"load_{name}")().data, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    x = np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)
    x.flags.writeable = False
    return x
