"""Format version 3 of the results file: names, dimensions, chunking and the layout.

One HDF5 file per sweep, every run stacked along one dimension ``run`` (docs/format.md):
run columns (seed, the network's options, status) of shape (run,), and row datasets of
shape (run, row[, sv | tau]) at their full size from the start, chunked and filled
lazily (a chunk costs disk only once written). Laying out takes a few dozen HDF5 calls
whatever the number of runs, so a 10,000-run sweep starts writing at once. The dimension
scales ``run``, ``row``, ``sv`` and ``tau`` make it a netCDF-4 file (xarray, ncdump).
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from fastrank.measures import SCALARS
from fastrank.spec import Network, Sweep, varying

#: Datasets of shape (run, row, ...): one row per measured layer, in file order.
ROW_DATASETS = ("layer", "spectrum", *SCALARS, "rank_tau", "log_norm", "tier")
#: Run columns that a writer updates (the status): committed rows, failure layer, reason.
STATUS_DATASETS = ("n_rows", "failed_layer", "failure")
#: Threads of the process that computed each run (-1: not recorded, or not a CPU run):
#: the per-layer path's BLAS products depend on the BLAS thread count (docs/format.md).
THREAD_DATASETS = ("numba_threads", "blas_threads")
#: Bytes of the fixed-size UTF-8 ``failure`` string (SWMR cannot write vlen data safely).
FAILURE_BYTES = 1024
#: Integer row datasets; -1 marks "no value" (padding, and Gram-tier rows' ranks).
INT_DATASETS = {"layer", "numerical_rank", "rank_tau", "tier"}
#: Oldest HDF5 format features used: files stay readable by HDF5 1.10 tools (SWMR needs
#: 1.10). fastrank's own lock replaces HDF5's file locking (see fastrank.lock).
LIBVER = ("v110", "latest")
#: Row datasets stored without deflate: the spectrum is most of a file's bytes and its
#: float64 mantissas barely compress (level 1 + shuffle: 17% smaller), at 16 ms per MB
#: written on this machine -- the largest part of a sweep's file cost at d = 64.
UNCOMPRESSED = {"spectrum"}
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
}


def run_id(index: int) -> str:
    """The name of run ``index`` for people: the index zero-padded to 5 digits."""
    return f"{index:05d}"


def encode_failure(reason: str) -> bytes:
    """UTF-8 bytes of ``reason`` cut to FAILURE_BYTES at a character boundary."""
    raw = str(reason).encode("utf-8")[:FAILURE_BYTES]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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


def _checked(f: h5py.File, name: str, data: np.ndarray) -> h5py.Dataset:
    """A run column: chunked, with Fletcher32 checksums."""
    return f.create_dataset(name, data=data, chunks=(min(len(data), 4096),), fletcher32=True)


def layout(f: h5py.File, sweep: Sweep, attrs: dict) -> None:
    """Write root attrs, the run columns and empty row datasets of every run of ``sweep``."""
    for name, value in attrs.items():
        f.attrs[name] = fixed(value) if isinstance(value, str) else value
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
    made = {}  # name -> dataset (looking a name up again costs more than creating it)
    for name, values in scales.items():
        made[name] = _checked(f, name, values)
        made[name].make_scale(name)
    _checked(f, "network", _column([configs[net][2] for net in configs])).dims[0].attach_scale(
        made["config"])

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
    made["n_rows"] = f.create_dataset("n_rows", (r,), np.int64, chunks=run_chunk, fillvalue=0)
    made["failed_layer"] = f.create_dataset("failed_layer", (r,), np.int64, chunks=run_chunk,
                                            fillvalue=-1)
    made["failure"] = f.create_dataset("failure", (r,), h5py.string_dtype("utf-8", FAILURE_BYTES),
                                       chunks=(min(r, 64),))
    for name in THREAD_DATASETS:
        made[name] = f.create_dataset(name, (r,), np.int64, chunks=run_chunk, fillvalue=-1)

    for name in ROW_DATASETS:
        cols = {"spectrum": (k,), "rank_tau": (t,)}.get(name, ())
        per_row = max(cols, default=1)
        rows = min(n, max(1, CHUNK_ELEMENTS // per_row), 256)
        chunk = (min(r, max(1, CHUNK_ELEMENTS // (rows * per_row))), rows, *cols)
        integer = name in INT_DATASETS
        deflate = {} if name in UNCOMPRESSED else {"shuffle": True, "compression": "gzip",
                                                   "compression_opts": 1}
        ds = f.create_dataset(name, (r, n, *cols), np.int64 if integer else np.float64,
                              chunks=chunk, fillvalue=-1 if integer else np.nan,
                              fletcher32=True, **deflate)
        ds.attrs["_FillValue"] = np.int64(-1) if integer else np.nan
        ds.attrs["long_name"], ds.attrs["units"] = LONG_NAMES[name]
        for axis, scale in enumerate(("run", "row", {"spectrum": "sv", "rank_tau": "tau"}.get(
                name))):
            if scale:
                ds.dims[axis].attach_scale(made[scale])
    for name in (*columns, *STATUS_DATASETS, *THREAD_DATASETS):
        made[name].dims[0].attach_scale(made["run"])
