"""Counter-based random numbers for fastrank (Python-facing layer).

Every random number fastrank uses is a pure function of four integers::

    (seed, stream, layer, element)  ->  number

computed with the Philox4x32-10 counter-based generator (see
:mod:`fastrank.kernels.cpu.philox` for the exact bit layout): the 64-bit ``seed`` is
the Philox key, and ``(block, layer, stream)`` form the Philox counter, where
``block`` is the index of a 4-word output block inside the (seed, stream, layer)
stream.  Element ``i`` of a request with ``offset`` is element ``offset + i`` of that
stream; for an n-d ``shape`` the element index is the flat C-order index.

Why a counter-based stream rather than a stateful generator:

* any layer's weights (or any slice of them) can be regenerated on their own,
  without replaying the layers before it, so a very deep network never has to be
  stored and a run can be resumed or checked at any depth;
* the numbers do not depend on the number of threads or on how the work is split
  into pieces, since every element is computed from its own index;
* the CUDA kernels compute the same function, so CPU and GPU runs draw the same
  numbers (uint32 words and uniforms bitwise, normals to float rounding).

Stream ids (``stream``) keep independent uses apart: :data:`WEIGHTS` for the
weight matrices, :data:`INPUT` for the input vectors, :data:`TANGENTS` for the
tangent directions (fastrank.tangents).
"""

import operator

import numpy as np

from fastrank.kernels.cpu import start_threads
from fastrank.kernels.cpu.philox import fill_normal, fill_uint32, fill_uniform

__all__ = ["WEIGHTS", "INPUT", "TANGENTS", "normal", "uniform", "uint32"]

#: Stream id of the weight matrices.
WEIGHTS = 0
#: Stream id of the input vectors.
INPUT = 1
#: Stream id of the tangent directions (layer 0).
TANGENTS = 2

_U64 = 2**64
_U32 = 2**32
# Element indices are int64 inside the kernels; keep offset + size well below 2**63.
_MAX_INDEX = 2**62


def _as_int(name, value):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _check_ids(seed, stream, layer):
    seed = _as_int("seed", seed)
    stream = _as_int("stream", stream)
    layer = _as_int("layer", layer)
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**64, got {seed}")
    if not 0 <= stream < _U32:
        raise ValueError(f"stream must satisfy 0 <= stream < 2**32, got {stream}")
    if not 0 <= layer < _U32:
        raise ValueError(f"layer must satisfy 0 <= layer < 2**32, got {layer}")
    return np.uint64(seed), np.uint32(stream), np.uint32(layer)


def _check_offset(offset, size):
    offset = _as_int("offset", offset)
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if offset + size > _MAX_INDEX:
        raise ValueError(f"offset + size must be <= 2**62, got {offset} + {size}")
    return np.int64(offset)


def _check_shape(shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        shape = tuple(_as_int("shape entry", s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be an integer or a tuple of integers, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape entries must be >= 0, got {shape}")
    size = 1
    for s in shape:
        size *= s
    return shape, size


def _check_float_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _float_fill(kernel, seed, stream, layer, shape, dtype, offset, out):
    ids = _check_ids(seed, stream, layer)
    dt = _check_float_dtype(dtype)
    shape, size = _check_shape(shape)
    off = _check_offset(offset, size)
    if out is None:
        out = np.empty(shape, dtype=dt)
    elif out.shape != shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dt} array of shape {shape}")
    start_threads()
    kernel(out.reshape(-1), *ids, off)
    return out


def normal(seed, stream, layer, shape, dtype=np.float32, offset=0, out=None):
    """Standard normal numbers ``offset .. offset + prod(shape) - 1`` of a stream.

    Parameters
    ----------
    seed : int, ``0 <= seed < 2**64``
    stream : int, ``0 <= stream < 2**32`` (e.g. :data:`WEIGHTS`, :data:`INPUT`)
    layer : int, ``0 <= layer < 2**32``
    shape : int or tuple of int
        Shape of the result (C order); element ``idx`` of the result is number
        ``offset + flat_C_index(idx)`` of the stream.
    dtype : float32 or float64
        float32 numbers use 24-bit uniforms and float32 Box-Muller (4 per Philox
        block); float64 use 53-bit uniforms and float64 Box-Muller (2 per block).
        The two dtypes are different streams, not roundings of each other.
    offset : int, >= 0
    out : array, optional
        C-contiguous array of that shape and dtype to fill (and return) instead of a new one.
    """
    return _float_fill(fill_normal, seed, stream, layer, shape, dtype, offset, out)


def uniform(seed, stream, layer, shape, dtype=np.float32, offset=0, out=None):
    """Uniform numbers in [0, 1): numbers ``offset ..`` of a stream, like :func:`normal`.

    float32: ``(x >> 8) * 2**-24`` per 32-bit word; float64: 53 bits from a pair of words.
    """
    return _float_fill(fill_uniform, seed, stream, layer, shape, dtype, offset, out)


def uint32(seed, stream, layer, n, offset=0):
    """Raw 32-bit words ``offset .. offset + n - 1`` of a stream, as a 1-D uint32 array."""
    ids = _check_ids(seed, stream, layer)
    n = _as_int("n", n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    off = _check_offset(offset, n)
    out = np.empty(n, dtype=np.uint32)
    fill_uint32(out, *ids, off)
    return out
