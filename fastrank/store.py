"""The results file: one HDF5 file per sweep (schema in docs/format.md).

The whole sweep is laid out under a staging name, switched to HDF5 SWMR writing and
only then moved to its name, so the file never appears in a state a reader or a kill
could break. Rows are committed in batches (data flushed, then each run's ``n_rows``
raised and flushed), so readers in other processes see every committed row while the
file is written, and a killed sweep loses only uncommitted rows. One writer per file
is enforced by fastrank.lock. :meth:`Writer.resume` rebuilds a killed file; :func:`open`
reads any of them: finished files strictly (HDF5's end-of-file check, no retries),
files being written (or left by a killed writer) as a SWMR reader. Row data carry
Fletcher32 checksums.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
from datetime import datetime, timezone

import h5py
import numpy as np

from fastrank.lock import WriterLock, writer_alive
from fastrank.measures import SCALARS
from fastrank.spec import Network, Sweep
from fastrank.version import FORMAT_NAME, FORMAT_VERSION, __version__

#: Datasets that grow by one row per measured layer, in file order.
ROW_DATASETS = ("layer", "spectrum", *SCALARS, "rank_tau", "log_norm", "tier")
#: Scalar datasets holding a run's status (datasets, not attrs: SWMR may write them).
STATUS_DATASETS = ("n_rows", "failed_layer", "failure")
#: Bytes of the fixed-size UTF-8 ``failure`` string (SWMR cannot write vlen data safely).
FAILURE_BYTES = 1024
_INT_DATASETS = {"layer", "numerical_rank", "rank_tau", "tier"}
#: Integer measures a Gram-tier row has no value for: -1, declared as netCDF's _FillValue.
_NO_VALUE = {"numerical_rank", "rank_tau"}
#: Oldest HDF5 format features used: files stay readable by HDF5 1.10 tools (SWMR needs
#: 1.10). fastrank's own lock replaces HDF5's file locking (see fastrank.lock).
_LIBVER = ("v110", "latest")
_SWMR_READ = {"libver": "latest", "swmr": True, "locking": False}


class DamagedFile(ValueError):
    """A results file that cannot be read as written (truncated, corrupted): the message
    names the file and what failed, in one line."""


class SweepMismatch(ValueError):
    """A resume asked for a sweep other than the file's."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def run_id(index: int) -> str:
    """Name of run ``index``'s group under /runs: the index zero-padded to 5 digits."""
    return f"{index:05d}"


def _status(rows: int, expected: int, failed: bool) -> str:
    if failed:
        return "failed"
    return "complete" if rows >= expected else ("running" if rows else "pending")


def _encode_failure(reason: str) -> bytes:
    """UTF-8 bytes of ``reason`` cut to FAILURE_BYTES at a character boundary."""
    raw = str(reason).encode("utf-8")[:FAILURE_BYTES]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _network_attrs(net: Network) -> dict:
    """One attr per Network field; gain and input_dim as their effective values."""
    out = {}
    for f in dataclasses.fields(Network):
        value = getattr(net, f.name)
        if f.name == "gain":
            value = net.weight_gain
        elif f.name == "input_dim":
            value = net.in_dim
        out[f.name] = np.asarray(value, np.int64) if isinstance(value, tuple) else value
    return out


# Writing -------------------------------------------------------------------------------


def _layout(f: h5py.File, sweep: Sweep, attrs: dict) -> None:
    """Write root attrs and every run's group with empty resizable datasets."""
    for name, value in attrs.items():
        f.attrs[name] = value
    runs = f.create_group("runs")
    for index, (net, seed) in enumerate(sweep.runs()):
        points = sweep.schedule.points(net.depth)
        widths = (net.in_dim, *net.widths)
        n, k = len(points), max(min(widths[p], net.batch) for p in points)
        g = runs.create_group(run_id(index))
        g.attrs.update(
            network=json.dumps(net.to_dict()),
            seed=np.uint64(seed),
            label=net.label(),
            **_network_attrs(net),
            expected_rows=np.int64(n),
        )
        for name in ROW_DATASETS:
            cols = {"spectrum": (k,), "rank_tau": (len(sweep.taus),)}.get(name, ())
            rows = max(1, min(n, 256, 2**16 // (8 * max(cols, default=1))))
            integer = name in _INT_DATASETS
            fill = (-1 if name in _NO_VALUE else 0) if integer else np.nan
            ds = g.create_dataset(
                name,
                (0, *cols),
                np.int64 if integer else np.float64,
                maxshape=(n, *cols),
                chunks=(rows, *cols),
                fillvalue=fill,
                fletcher32=True,
            )
            if name in _NO_VALUE:
                ds.attrs["_FillValue"] = np.int64(fill)
        g.create_dataset("tau", data=np.asarray(sweep.taus, np.float64))
        g.create_dataset("sv", data=np.arange(k, dtype=np.int64))
        g.create_dataset("n_rows", data=np.int64(0))
        g.create_dataset("failed_layer", data=np.int64(-1))
        g.create_dataset("failure", data=b"", dtype=h5py.string_dtype("utf-8", FAILURE_BYTES))
        for scale in ("layer", "sv", "tau"):
            g[scale].make_scale(scale)
        for name in ROW_DATASETS[1:]:
            g[name].dims[0].attach_scale(g["layer"])
        g["spectrum"].dims[1].attach_scale(g["sv"])
        g["rank_tau"].dims[1].attach_scale(g["tau"])


def _staged(path: str, sweep: Sweep, attrs: dict) -> h5py.File:
    """A fresh laid-out file under a staging name next to ``path``, already in SWMR
    write mode (rows can be written; :func:`_move_in` gives it its name)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    f = h5py.File(tmp, "x", libver=_LIBVER, locking=False)
    try:
        _layout(f, sweep, attrs)
        f.flush()
        f.swmr_mode = True  # nothing may be created from here on; datasets may grow
    except BaseException:
        _discard(f)
        raise
    return f


def _discard(f: h5py.File) -> None:
    tmp = f.filename
    with contextlib.suppress(Exception):
        f.close()
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _move_in(f: h5py.File, path: str) -> None:
    """Give the open staged file its name (an atomic rename; the handle stays valid)."""
    try:
        f.flush()
        os.replace(f.filename, path)
    except BaseException:
        _discard(f)
        raise


def _carry_over(old: h5py.File, new: h5py.File, path: str) -> None:
    """Copy the complete and failed runs of ``old`` into ``new`` (laid out for the same
    sweep); a run whose data fail their checksums is left to be computed again."""
    if set(old["runs"]) != set(new["runs"]):
        raise DamagedFile(f"{path}: its runs do not match its sweep")
    for rid, src in old["runs"].items():
        rows, failed_layer, failure = _read_status(src)
        if failed_layer < 0 and rows < src.attrs["expected_rows"]:
            continue  # incomplete: recomputed from layer 0
        try:
            data = {name: src[name][:rows] if name in src else np.ones(rows, np.int64)
                    for name in ROW_DATASETS}
        except OSError:  # a checksum failed: recomputed rather than copied
            continue
        dst = new["runs"][rid]
        for name, value in data.items():
            dst[name].resize(rows, axis=0)
            dst[name][:rows] = value
        dst["failure"][()] = _encode_failure(failure)
        dst["failed_layer"][()] = failed_layer
        dst["n_rows"][()] = rows


class Writer:
    """The single writer of a results file, in SWMR mode: commit rows, record failures.

    Get one with :meth:`create` or :meth:`resume`; both take the file's writer lock
    (fastrank.lock) first and hold it until :meth:`close`. Run numbers are indices into
    ``sweep.runs()``. Other processes may read the file meanwhile (:func:`open`).
    """

    def __init__(self, path, file: h5py.File, lock: WriterLock):
        self.path, self._f, self._lock = os.fspath(path), file, lock
        self.sweep = Sweep.from_dict(json.loads(file.attrs["sweep"]))
        runs = self.sweep.runs()
        self._groups = [file["runs"][run_id(i)] for i in range(len(runs))]
        self._points = [self.sweep.schedule.points(net.depth) for net, _ in runs]
        self._rows = [int(g["n_rows"][()]) for g in self._groups]
        self._failed = [int(g["failed_layer"][()]) >= 0 for g in self._groups]
        self._handles: dict[int, dict] = {}

    @classmethod
    def create(cls, path, sweep: Sweep, provenance: dict, overwrite: bool = False) -> Writer:
        """Lay out a new file for ``sweep``; an existing file is replaced only if ``overwrite``.

        Raises fastrank.lock.WriterLocked while another process writes ``path``. The
        layout is built under a staging name and moved into place whole, so a failure
        never leaves a half-made file or destroys the old one.
        """
        path = os.fspath(path)
        lock = WriterLock(path).acquire()
        try:
            if os.path.exists(path) and not overwrite:
                raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
            attrs = {
                "format": FORMAT_NAME,
                "format_version": np.int64(FORMAT_VERSION),
                "fastrank_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sweep": json.dumps(sweep.to_dict()),
                "provenance": json.dumps(provenance),
            }
            f = _staged(path, sweep, attrs)
            _move_in(f, path)
            return cls(path, f, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def resume(cls, path, sweep: Sweep | None = None) -> Writer:
        """Re-open a sweep for writing, even one killed while writing.

        ``sweep``, when given, must be the file's (else SweepMismatch, and the file is
        left untouched). A killed SWMR writer leaves status flags that make HDF5 refuse
        to open the file for writing, so the file is rebuilt: its committed rows are
        read and copied into a fresh file that atomically replaces it. Complete and
        failed runs keep their rows and status; other runs, and runs whose data fail
        their checksums, restart at 0 rows.
        """
        path = os.fspath(path)
        lock = WriterLock(path).acquire()
        try:
            old = _open_read(path, writing=False)
            try:
                stored = Sweep.from_dict(json.loads(old.attrs["sweep"]))
                if sweep is not None and stored != sweep:
                    mine = stored.to_dict()
                    differ = [k for k, v in sweep.to_dict().items() if mine.get(k) != v]
                    raise SweepMismatch(
                        f"{path} holds a different sweep (differs in: {', '.join(differ)}); "
                        "resume it without grid options or write to another file")
                # Laid out in the current format (an older file's rows are carried over;
                # format 1 had no tier: every row was full).
                attrs = {**old.attrs, "format_version": np.int64(FORMAT_VERSION)}
                new = _staged(path, stored, attrs)
                try:
                    _carry_over(old, new, path)
                    os.chmod(new.filename, stat.S_IMODE(os.stat(path).st_mode))
                except BaseException:
                    _discard(new)
                    raise
            finally:
                old.close()
            _move_in(new, path)
            return cls(path, new, lock)
        except BaseException:
            lock.release()
            raise

    def status(self, run: int) -> str:
        """``pending``, ``running`` (some rows), ``complete`` or ``failed``."""
        return _status(self._rows[run], len(self._points[run]), self._failed[run])

    def pending(self) -> list[int]:
        """Indices of the runs still to compute: neither complete nor failed."""
        return [i for i in range(len(self._groups)) if self.status(i) in ("pending", "running")]

    def append(self, run: int, row) -> None:
        """Commit the next measured layer of ``run`` (a :class:`fastrank.propagate.Row`)."""
        self.commit({run: [row]})

    def extend(self, run: int, rows) -> None:
        """Commit the next few measured layers of ``run`` at once."""
        self.commit({run: rows})

    def commit(self, rows_by_run: dict) -> None:
        """Commit the next rows of several runs at once: every run's data is written and
        flushed, then every ``n_rows`` raised and flushed, so readers and a killed file
        never count a row that is not fully on disk (two flushes, whatever the runs)."""
        batches = []
        for run, rows in rows_by_run.items():
            rows = list(rows)
            if rows:
                batches.append((run, self._rows[run], rows, self._values(run, rows)))
        for run, n, rows, values in batches:
            ds = self._datasets(run)
            for name, value in values.items():
                ds[name].resize(n + len(rows), axis=0)
                ds[name][n:] = value
        if not batches:
            return
        self._f.flush()
        for run, n, rows, _ in batches:
            self._datasets(run)["n_rows"][()] = n + len(rows)
            self._rows[run] = n + len(rows)
        self._f.flush()

    def _values(self, run: int, rows: list) -> dict:
        """The arrays of ``rows`` by dataset, checked against ``run``'s schedule."""
        state, n = self.status(run), self._rows[run]
        if state in ("complete", "failed"):
            raise ValueError(f"run {run} is {state}: no more rows can be appended")
        expected = self._points[run][n : n + len(rows)].tolist()
        layers = [row.layer for row in rows]
        if layers != expected:
            raise ValueError(f"run {run}: got rows for layers {layers}, expected {expected}")
        k = self._groups[run]["spectrum"].shape[1]
        spectra = np.full((len(rows), k), np.nan)
        for i, row in enumerate(rows):
            s = np.asarray(row.spectrum, np.float64).ravel()
            if s.size > k:
                raise ValueError(f"run {run}: spectrum has {s.size} values, the file holds {k}")
            spectra[i, : s.size] = s
        values = {
            "layer": layers,
            "spectrum": spectra,
            **{name: [row.measures[name] for row in rows] for name in SCALARS},
            "rank_tau": [row.measures["rank_tau"] for row in rows],
            "log_norm": [row.log_norm for row in rows],
            "tier": [row.tier for row in rows],
        }
        return {name: np.asarray(v, np.int64 if name in _INT_DATASETS else np.float64)
                for name, v in values.items()}

    def _datasets(self, run: int) -> dict:
        """Open handles of ``run``'s datasets, kept for the few runs written most recently."""
        ds = self._handles.pop(run, None) or {
            name: self._groups[run][name] for name in (*ROW_DATASETS, "n_rows")
        }
        self._handles[run] = ds
        if len(self._handles) > 64:
            del self._handles[next(iter(self._handles))]
        return ds

    def fail(self, run: int, layer: int, reason: str) -> None:
        """Mark ``run`` failed at ``layer`` (e.g. non-finite values); its rows are kept."""
        if self.status(run) == "complete":
            raise ValueError(f"run {run} is complete: it cannot fail")
        g = self._groups[run]
        g["failure"][()] = _encode_failure(reason)
        self._f.flush()
        g["failed_layer"][()] = int(layer)
        self._f.flush()
        self._failed[run] = True

    def close(self) -> None:
        """Close the file and release the writer's lock."""
        try:
            if self._f.id.valid:
                self._f.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Reading -------------------------------------------------------------------------------


def _check_format(f: h5py.File, path: str) -> None:
    name = _text(f.attrs.get("format", ""))
    if name != FORMAT_NAME:
        raise ValueError(f"{path} is not a fastrank results file (format attr {name!r})")
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}, newer than this fastrank "
            f"{__version__} reads ({FORMAT_VERSION}): upgrade fastrank"
        )
    if version < 1:
        raise ValueError(f"{path} has an invalid format version {version}")


def _open_read(path, writing: bool | None = None) -> h5py.File:
    """Open a results file read-only. A finished file is opened strictly (HDF5 checks
    its end of file, and a bad checksum fails at once); a file that a writer holds
    (``writing``; default: ask its lock) or that a killed writer left is opened as a
    SWMR reader, which sees the committed rows of a file being written."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file, so not a fastrank results file")
    if writing is None:
        writing = writer_alive(path)
    f = None
    if not writing:
        try:
            f = h5py.File(path, "r", locking=False)
        except OSError as exc:  # a killed writer's flags are expected; anything else is not
            if "already open for write" not in str(exc):
                raise DamagedFile(f"{path} is damaged: {_one_line(exc)}") from None
    if f is None:
        try:
            f = h5py.File(path, "r", **_SWMR_READ)
        except OSError as exc:
            raise DamagedFile(f"{path} is damaged: {_one_line(exc)}") from None
    try:
        _check_format(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _read_status(g: h5py.Group) -> tuple[int, int, str]:
    """(n_rows, failed_layer, failure) of a run group, fresh from disk."""
    values = []
    for name in STATUS_DATASETS:
        g[name].refresh()
        values.append(g[name][()])
    return int(values[0]), int(values[1]), _text(values[2])


def open(path) -> Results:  # noqa: A001 - the public name is fastrank.open
    """Open a results file for reading, also while a sweep writes it or after a kill."""
    return Results(path)


class Results:
    """A results file opened for reading: a table of runs and each run's arrays.

    Opened as a SWMR reader, so the file may be one that a sweep is writing (call
    :meth:`refresh` to see new rows) or one left by a killed sweep. Only committed
    rows (``n_rows``) are ever shown.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._f = _open_read(self.path)
        a = self._f.attrs
        self.attrs = {
            "format": _text(a["format"]),
            "format_version": int(a["format_version"]),
            "fastrank_version": _text(a["fastrank_version"]),
            "created": _text(a["created"]),
            "provenance": json.loads(a["provenance"]),
        }
        self.sweep = Sweep.from_dict(json.loads(a["sweep"]))
        self._n = len(self._f["runs"])
        self._runs: dict[int, Run] = {}
        self._table = None

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return (self[i] for i in range(self._n))

    def __getitem__(self, key) -> Run:
        """Run by index (negative counts from the end) or by id (``"00042"``)."""
        if isinstance(key, str):
            if key not in self._f["runs"]:
                raise KeyError(f"no run {key!r} in {self.path}")
            key = int(key)
        index = int(key) + (self._n if key < 0 else 0)
        if not 0 <= index < self._n:
            raise IndexError(f"run {key} out of range: {self.path} has {self._n} runs")
        if index not in self._runs:
            self._runs[index] = Run(self, index)
        return self._runs[index]

    @property
    def runs(self) -> np.ndarray:
        """One row per run: id, index, label, Network fields (width -1 when per-layer),
        seed, rows, expected_rows, status, final_soft_rank (NaN without rows)."""
        if self._table is None:
            cols: dict[str, list] = {}
            for run in self:
                a = run._g.attrs
                fields = {f.name: a[f.name] for f in dataclasses.fields(Network)}
                fields = {
                    k: _text(v) if isinstance(v, (str, bytes)) else v for k, v in fields.items()
                }
                fields["width"] = int(fields["width"]) if np.ndim(fields["width"]) == 0 else -1
                row = {
                    "id": run.id,
                    "index": run.index,
                    "label": run.label,
                    **fields,
                    "seed": np.uint64(run.seed),
                    "rows": run.rows,
                    "expected_rows": run.expected_rows,
                    "status": run.status,
                    "final_soft_rank": run.soft_rank[-1] if run.rows else np.nan,
                }
                for k, v in row.items():
                    cols.setdefault(k, []).append(v)
            arrays = {k: np.asarray(v) for k, v in cols.items()}
            self._table = np.empty(self._n, dtype=[(k, v.dtype) for k, v in arrays.items()])
            for k, v in arrays.items():
                self._table[k] = v
        return self._table

    def select(self, **criteria) -> list[Run]:
        """Runs whose ``runs`` columns equal the given values (or lie in a given list)."""
        table = self.runs
        unknown = sorted(set(criteria) - set(table.dtype.names))
        if unknown:
            raise KeyError(
                f"unknown run fields {unknown}: choose from {', '.join(table.dtype.names)}"
            )
        mask = np.ones(len(table), bool)
        for name, value in criteria.items():
            if isinstance(value, (list, tuple, set, frozenset)):
                mask &= np.isin(table[name], list(value))
            else:
                mask &= table[name] == value
        return [self[int(i)] for i in np.flatnonzero(mask)]

    def refresh(self) -> None:
        """Pick up rows committed since opening (or the last refresh)."""
        self._table = None
        for run in self._runs.values():
            run.refresh()

    def to_pandas(self):
        """The ``runs`` table as a pandas DataFrame."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Results.to_pandas needs pandas: pip install pandas") from None
        return pandas.DataFrame(self.runs)

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrank.Results {self.path!r}: {self._n} runs>"


class Run:
    """One (network, seed) run: its spec, status and the arrays of its committed rows.

    Arrays are read on first access and kept until :meth:`refresh`.
    """

    def __init__(self, results: Results, index: int):
        self._results, self.index, self.id = results, index, run_id(index)
        self._g = results._f["runs"][self.id]
        a = self._g.attrs
        self.network = Network.from_dict(json.loads(a["network"]))
        self.seed, self.label = int(a["seed"]), _text(a["label"])
        self.expected_rows = int(a["expected_rows"])
        self.taus = self._g["tau"][()]
        self.refresh()

    def refresh(self) -> None:
        """Re-read the status and drop cached arrays, to see newly committed rows."""
        self._arrays: dict[str, np.ndarray] = {}
        self.rows, failed_layer, self.failure = _read_status(self._g)
        self.failed_layer = failed_layer if failed_layer >= 0 else None

    @property
    def status(self) -> str:
        """``pending``, ``running`` (some rows), ``complete`` or ``failed``."""
        return _status(self.rows, self.expected_rows, self.failed_layer is not None)

    def measure(self, name: str) -> np.ndarray:
        """Committed rows of dataset ``name``: layer, spectrum, log_norm, rank_tau or a scalar."""
        if name not in ROW_DATASETS:
            raise KeyError(f"unknown measure {name!r}: choose from {', '.join(ROW_DATASETS)}")
        if name not in self._arrays:
            if name == "tier" and name not in self._g:  # format 1: every row was full
                return np.ones(self.rows, np.int64)
            ds = self._g[name]
            try:
                ds.refresh()
                self._arrays[name] = ds[: self.rows]
            except OSError as exc:  # Fletcher32 mismatch or an unreadable chunk
                raise DamagedFile(f"{self._results.path}: run {self.id}: {name} does not read "
                                  f"back as written ({_one_line(exc)})") from None
        return self._arrays[name]

    layer = property(lambda self: self.measure("layer"), doc="Measured layers.")
    spectrum = property(
        lambda self: self.measure("spectrum"), doc="Singular values (rows x k), NaN-padded."
    )
    log_norm = property(lambda self: self.measure("log_norm"), doc="log ||H||_F per row.")
    rank_tau = property(lambda self: self.measure("rank_tau"), doc="rank_tau (rows x taus).")
    tier = property(
        lambda self: self.measure("tier"), doc="Per row: 1 full spectrum, 0 Gram tier only."
    )

    def to_xarray(self):
        """This run as an xarray.Dataset (dims layer, sv, tau), cut to the committed rows."""
        try:
            import h5netcdf  # noqa: F401
            import xarray
        except ImportError:
            raise ImportError(
                "Run.to_xarray needs xarray and h5netcdf: pip install xarray h5netcdf"
            ) from None
        mode = _SWMR_READ if self._results._f.swmr_mode else {"locking": False}  # as open
        ds = xarray.open_dataset(
            self._results.path, group=f"runs/{self.id}", engine="h5netcdf", driver_kwds=mode
        )
        return ds.isel(layer=slice(0, self.rows))

    def __repr__(self) -> str:
        rows = f"{self.rows}/{self.expected_rows} rows"
        return f"<fastrank.Run {self.id} {self.label} seed={self.seed}: {self.status}, {rows}>"


for _name in SCALARS:
    setattr(Run, _name, property(lambda self, _n=_name: self.measure(_n), doc=f"{_name} per row."))
del _name
