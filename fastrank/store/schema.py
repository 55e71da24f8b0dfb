"""Format version 3 of the results file: names, dimensions, chunking and the layout.

One HDF5 file per sweep, every run stacked along one dimension ``run`` (docs/format.md):
run columns (seed, the network's options, status) of shape (run,), and row datasets of
shape (run, row[, sv | tau | tangent]) at their full size from the start, chunked and
filled lazily (a chunk costs disk only once written). Laying out takes a few dozen HDF5
calls whatever the number of runs, so a 10,000-run sweep starts writing at once. The
dimension scales ``run``, ``row``, ``sv``, ``tau`` (and ``tangent`` in a sweep with
tangents) make it a netCDF-4 file (xarray, ncdump).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import h5py
import numpy as np

from fastrank.measures import SCALARS
from fastrank.rows import TANGENT_MEASURES
from fastrank.spec import Network, Sweep, varying
from fastrank.version import FORMAT_VERSION, FORMAT_VERSION_WITHOUT_TANGENTS

#: Datasets of shape (run, row, ...): one row per measured layer, in file order.
ROW_DATASETS = ("layer", "spectrum", *SCALARS, "rank_tau", "log_norm", "tier")
#: Row datasets of a sweep with tangents only (Sweep.tangents > 0; fastrank.tangents),
#: after ROW_DATASETS: float64 (run, row, tangent).
TANGENT_DATASETS = TANGENT_MEASURES
#: The third dimension of the row datasets that have one.
COLUMN_DIMS = {"spectrum": "sv", "rank_tau": "tau", **dict.fromkeys(TANGENT_DATASETS, "tangent")}
#: Run columns that a writer updates (the status): committed rows, failure layer, reason.
STATUS_DATASETS = ("n_rows", "failed_layer", "failure")
#: Threads of the process that computed each run (-1: not recorded, or not a CPU run):
#: the per-layer path's BLAS products depend on the BLAS thread count (docs/format.md).
THREAD_DATASETS = ("numba_threads", "blas_threads")
#: Bytes of the fixed-size UTF-8 ``failure`` string (SWMR cannot write vlen data safely).
FAILURE_BYTES = 1024
#: Integer row datasets; -1 marks "no value" (padding, and Gram-tier rows' ranks).
INT_DATASETS = {"layer", "numerical_rank", "rank_tau", "tier"}
#: Row datasets stored with deflate (level 1, with shuffle): the integer ones, which
#: shrink many times over, cheaply. Float rows are stored as they are: float64 mantissas
#: barely compress, and deflating them would take most of a small sweep's commit time.
#: Damage is caught without it: Fletcher32 on every chunk, and a file cut short is
#: refused on opening (closed: opening._closed; left by a killed writer:
#: opening._chunk_past_the_end).
DEFLATED = INT_DATASETS
#: Oldest HDF5 format features used: files stay readable by HDF5 1.10 tools (SWMR needs
#: 1.10). fastrank's own lock replaces HDF5's file locking (see fastrank.lock).
LIBVER = ("v110", "latest")
#: Elements per chunk of a row dataset (float64: 256 KiB before compression).
CHUNK_ELEMENTS = 1 << 15
#: Network fields stored as run columns (tuple widths as -1; ``network`` holds them).
NETWORK_COLUMNS = tuple(f.name for f in dataclasses.fields(Network))

LONG_NAMES = {
    "layer": ("measured layer (0 = the input)", "1"),
    "spectrum": ("singular values of H, descending", "1"),
    "soft_rank": ("soft rank ||H||_F^4 / ||H^T H||_F^2", "1"),
    "numerical_rank": ("numerical rank at s_max max(d, N) eps", "1"),
    "effective_rank": ("effective rank (entropy of the normalised singular values)", "1"),
    "stable_rank": ("stable rank sum s^2 / s_max^2", "1"),
    "orthogonality_gap": ("|| H^T H / ||H||_F^2 - I / N ||_F", "1"),
    "condition_number": ("s_max / s_min", "1"),
    "rank_tau": ("eigenvalues of H H^T above tau times their mean", "1"),
    "log_norm": ("log ||H||_F of the un-rescaled network", "1"),
    "tier": ("1 full spectrum, 0 Gram tier only", "1"),
    "tangent_log_norm": ("log growth of each tangent through the layers' Jacobians "
                         "(with QR: the sums of log |R_ii|)", "1"),
    "jacobian_exponents": ("running estimate of the leading Lyapunov exponents of the "
                           "Jacobians' product: tangent_log_norm / layer", "1"),
}


def dims(name: str, *leading: str) -> tuple[str, ...]:
    """The dimensions of row dataset ``name`` with its first ones named ``leading``
    (``"run", "row"`` in the file; ``"layer"`` for one run)."""
    return (*leading, COLUMN_DIMS[name]) if name in COLUMN_DIMS else leading


def row_datasets(sweep: Sweep) -> tuple[str, ...]:
    """The row datasets of a file of ``sweep``: ROW_DATASETS, then TANGENT_DATASETS if
    it carries tangents."""
    return (*ROW_DATASETS, *TANGENT_DATASETS) if sweep.tangents else ROW_DATASETS


def format_version(sweep: Sweep) -> int:
    """The format version a file of ``sweep`` is written as: FORMAT_VERSION with tangents
    (a fastrank that knows none refuses it), FORMAT_VERSION_WITHOUT_TANGENTS without."""
    return FORMAT_VERSION if sweep.tangents else FORMAT_VERSION_WITHOUT_TANGENTS


def run_id(index: int) -> str:
    """The name of run ``index`` for people: the index zero-padded to 5 digits."""
    return f"{index:05d}"


def encode_failure(reason: str) -> bytes:
    """UTF-8 bytes of ``reason`` cut to FAILURE_BYTES at a character boundary."""
    raw = str(reason).encode("utf-8")[:FAILURE_BYTES]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def missing_as_nan(name: str, values: np.ndarray) -> np.ndarray:
    """Integer measures as float64 with NaN for -1 (no value: padding, Gram-tier rows),
    so that means and plots over xarray see missing values, not -1."""
    if name not in INT_DATASETS:
        return values
    return np.where(values < 0, np.nan, values.astype(np.float64))


def network_values(net: Network) -> dict:
    """One value per Network field: gain and input_dim as their effective values, a
    per-layer width as -1 (the run's ``network`` JSON holds the widths)."""
    out = {}
    for name in NETWORK_COLUMNS:
        value = getattr(net, name)
        if name == "gain":
            value = net.weight_gain
        elif name == "input_dim":
            value = net.in_dim
        elif name == "width" and isinstance(value, tuple):
            value = -1
        out[name] = value
    return out


def run_shape(net: Network, sweep: Sweep) -> tuple[int, int]:
    """(rows, singular values) of a run of ``net``: the schedule's measured layers, and
    the most singular values of any of them (min(width, batch))."""
    points = sweep.schedule.points(net.depth)
    return len(points), max(min(net.features(int(p)), net.batch) for p in points)


def _column(values: list) -> np.ndarray:
    """Values as an array; strings as fixed-size UTF-8 bytes, which (unlike variable-size
    strings, kept in HDF5's unchecksummed global heap) the checksum filter covers."""
    if isinstance(values[0], str):
        return np.array([v.encode("utf-8") for v in values], dtype=np.bytes_)
    return np.asarray(values)


def fixed(value: str) -> np.bytes_:
    """A string attribute as fixed-size bytes: stored in the object header, under its
    checksum (a variable-size string would live in the unchecksummed global heap)."""
    return np.bytes_(value.encode("utf-8"))


#: The variable-size UTF-8 string that h5py makes of a Python str.
_VLEN_STR = h5py.string_dtype()


def _h5type(dtype: np.dtype, logical: bool = True) -> h5py.h5t.TypeID:
    """h5py's HDF5 type of ``dtype`` (``logical``: as stored), made once: making one is
    much of a small attribute's creation. A string's encoding is part of the key: numpy
    finds h5py's UTF-8 ``S1024`` equal to a plain (ASCII) one."""
    if dtype.kind in "iuf":  # no string: its encoding need not be looked up
        return _h5type_of(dtype, None, logical)
    string = h5py.check_string_dtype(dtype)
    return _h5type_of(dtype, string.encoding if string else None, logical)


@functools.cache
def _h5type_of(dtype: np.dtype, encoding: str | None, logical: bool) -> h5py.h5t.TypeID:
    return h5py.h5t.py_create(_VLEN_STR if dtype == np.dtype(object) else dtype,
                              logical=logical)


@functools.lru_cache(maxsize=256)
def _space(shape: tuple) -> h5py.h5s.SpaceID:
    """The HDF5 dataspace of ``shape``, made once (spaces are not changed by use)."""
    return h5py.h5s.create(h5py.h5s.SCALAR) if shape == () else h5py.h5s.create_simple(shape)


@functools.lru_cache(maxsize=256)
def _creation(chunks: tuple, dtype: np.dtype, fill: bytes | None,
              deflate: bool) -> h5py.h5p.PropDCID:
    """A dataset creation property list with Fletcher32 checksums (every dataset has
    them), made once per kind of dataset (``fill``: the fill value's bytes; HDF5 copies
    a list into each dataset it creates, so one list serves every dataset of its kind)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_obj_track_times(False)  # as h5py does: no timestamps, same bytes every run
    if fill is not None:
        dcpl.set_fill_value(np.frombuffer(fill, dtype))
    if deflate:
        dcpl.set_shuffle()
        dcpl.set_deflate(1)
    dcpl.set_fletcher32()
    return dcpl


def _dataset(f: h5py.File, name: str, shape: tuple, dtype, chunks: tuple, *, fill=None,
             data: np.ndarray | None = None, deflate: bool = False,
             access: h5py.h5p.PropDAID | None = None) -> h5py.h5d.DatasetID:
    """A chunked dataset made through h5py's low-level calls: the same object as
    ``create_dataset`` gives, without most of its Python work (a layout makes ~40), as
    its HDF5 identifier (h5py.Dataset wraps one; most of a layout's are never read)."""
    dtype = np.dtype(dtype)
    fill = None if fill is None else np.array(fill, dtype).tobytes()
    dcpl = _creation(tuple(chunks), dtype, fill, deflate)
    dsid = h5py.h5d.create(f.id, name.encode(), _h5type(dtype),
                           _space(tuple(shape)), dcpl=dcpl, dapl=access)
    if data is not None:
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data, dtype))
    return dsid


def _attribute(oid: h5py.h5o.ObjectID, name: str, value) -> None:
    """Attribute ``name`` of a new object (its HDF5 identifier), written once (h5py's
    ``attrs[name] =`` looks for an old one to replace first); a str is stored as h5py
    stores it (variable-size UTF-8)."""
    data = np.array(value, _VLEN_STR) if isinstance(value, str) else np.asarray(value)
    attr = h5py.h5a.create(oid, name.encode(), _h5type(data.dtype), _space(data.shape))
    attr.write(data, mtype=_h5type(data.dtype, logical=False))
    attr.close()


def _checked(f: h5py.File, name: str, data: np.ndarray) -> h5py.h5d.DatasetID:
    """A run column: chunked, with Fletcher32 checksums."""
    return _dataset(f, name, data.shape, data.dtype, (min(len(data), 4096),), data=data)


def layout(f: h5py.File, sweep: Sweep, attrs: dict,
           row_access: h5py.h5p.PropDAID | None = None) -> dict[str, h5py.h5d.DatasetID]:
    """Write root attrs, the run columns and empty row datasets of every run of ``sweep``;
    return every dataset's identifier by name, the row datasets opened with
    ``row_access`` (the writer's chunk cache)."""
    for name, value in attrs.items():
        _attribute(f.id, name, fixed(value) if isinstance(value, str) else value)
    runs = sweep.runs()
    configs: dict[Network, tuple] = {}
    for net, _ in runs:
        if net not in configs:
            configs[net] = (len(configs), run_shape(net, sweep), json.dumps(net.to_dict()))
    r = len(runs)
    index = np.array([configs[net][0] for net, _ in runs], np.int64)
    shapes = np.array([configs[net][1] for net in configs], np.int64)
    n, k, t = int(shapes[:, 0].max()), int(shapes[:, 1].max()), len(sweep.taus)

    scales = {"run": np.arange(r, dtype=np.int64), "row": np.arange(n, dtype=np.int64),
              "sv": np.arange(k, dtype=np.int64), "tau": np.asarray(sweep.taus, np.float64),
              "config": np.arange(len(configs), dtype=np.int64)}
    if sweep.tangents:
        scales["tangent"] = np.arange(sweep.tangents, dtype=np.int64)
    made = {}  # name -> dataset (looking a name up again costs more than creating it)
    for name, values in scales.items():
        made[name] = _checked(f, name, values)
        h5py.h5ds.set_scale(made[name], name.encode())
    made["network"] = _checked(f, "network", _column([configs[net][2] for net in configs]))
    h5py.h5ds.attach_scale(made["network"], made["config"], 0)

    per_config = [network_values(net) for net in configs]
    columns = {
        "seed": np.array([seed for _, seed in runs], np.uint64),
        "config_of_run": index,
        "label": _column([net.label(varying(configs)) for net in configs])[index],
        **{name: _column([v[name] for v in per_config])[index] for name in NETWORK_COLUMNS},
        "expected_rows": shapes[index, 0],
        "n_sv": shapes[index, 1],
    }
    for name, values in columns.items():
        made[name] = _checked(f, name, values)
    run_chunk = (min(r, 1024),)
    made["n_rows"] = _dataset(f, "n_rows", (r,), np.int64, run_chunk, fill=0)
    made["failed_layer"] = _dataset(f, "failed_layer", (r,), np.int64, run_chunk, fill=-1)
    made["failure"] = _dataset(f, "failure", (r,), h5py.string_dtype("utf-8", FAILURE_BYTES),
                               (min(r, 64),))
    for name in THREAD_DATASETS:
        made[name] = _dataset(f, name, (r,), np.int64, run_chunk, fill=-1)

    sizes = {"sv": k, "tau": t, "tangent": sweep.tangents}
    for name in row_datasets(sweep):
        cols = (sizes[COLUMN_DIMS[name]],) if name in COLUMN_DIMS else ()
        per_row = max(cols, default=1)
        rows = min(n, max(1, CHUNK_ELEMENTS // per_row), 256)
        chunk = (min(r, max(1, CHUNK_ELEMENTS // (rows * per_row))), rows, *cols)
        integer = name in INT_DATASETS
        fill = np.int64(-1) if integer else np.float64(np.nan)
        ds = made[name] = _dataset(f, name, (r, n, *cols), fill.dtype, chunk, fill=fill,
                                   deflate=name in DEFLATED, access=row_access)
        _attribute(ds, "_FillValue", fill)
        _attribute(ds, "long_name", LONG_NAMES[name][0])
        _attribute(ds, "units", LONG_NAMES[name][1])
        for axis, scale in enumerate(("run", "row", COLUMN_DIMS.get(name))):
            if scale:
                h5py.h5ds.attach_scale(ds, made[scale], axis)
    for name in (*columns, *STATUS_DATASETS, *THREAD_DATASETS):
        h5py.h5ds.attach_scale(made[name], made["run"], 0)
    return made
