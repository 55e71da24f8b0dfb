"""Reading results files: :func:`open` -> :class:`Results` (the runs table, whole-sweep
xarray and pandas views) -> :class:`Run` (one run's arrays), for format versions 2 and 3.

A finished file is opened strictly (HDF5 checks its end of file; a bad checksum fails at
once). A file that a writer holds (its lock says so), or that a killed writer left, is
opened as a SWMR reader, which sees every committed row while the file is written.
Only committed rows (``n_rows``) are ever shown. Damage answers with
:class:`DamagedFile`, one line naming the file and what failed.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from fastrank.errors import one_line
from fastrank.lock import writer_alive
from fastrank.measures import SCALARS
from fastrank.spec import Network, Sweep
from fastrank.store import schema
from fastrank.version import FORMAT_NAME, FORMAT_VERSION, __version__

_SWMR_READ = {"libver": "latest", "swmr": True, "locking": False}
#: Why a strict open fails on a file that a writer left, killed or after a failed write
#: (its superblock still flags it open for writing, or records space the write never
#: filled): the SWMR reader opens those, and checksums guard what it reads.
_LEFT_BY_A_WRITER = ("already open for write", "truncated file")


class DamagedFile(ValueError):
    """A results file that cannot be read as written (truncated, corrupted)."""


#: What h5py raises on damaged files: a failed metadata checksum opening an object is a
#: KeyError, a failed data checksum an OSError, a flipped byte in a string a decode error.
DAMAGE = (KeyError, OSError, UnicodeDecodeError, json.JSONDecodeError)
#: What reading an edited file's metadata raises besides: values of the wrong type or
#: shape, indexes out of range.
EDITED = (*DAMAGE, IndexError, TypeError, ValueError)


def _check_format(f: h5py.File, path: str) -> None:
    name = schema.text(f.attrs.get("format", ""))
    if name != FORMAT_NAME:
        raise ValueError(f"{path} is not a fastrank results file (format attr {name!r})")
    raw = f.attrs.get("format_version", 0)
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{path} has an invalid format version {raw!r}") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}, newer than this fastrank "
            f"{__version__} reads ({FORMAT_VERSION}): upgrade fastrank"
        )
    if version < 1:
        raise ValueError(f"{path} has an invalid format version {version}")


def open_file(path, writing: bool | None = None) -> h5py.File:
    """The HDF5 file of a results file, read-only: strictly when finished, as a SWMR
    reader when a writer holds it (``writing``; default: ask its lock) or left it."""
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
            if not any(m in str(exc) for m in _LEFT_BY_A_WRITER):
                raise DamagedFile(f"{path} is damaged: {one_line(exc)}") from None
    if f is None:
        try:
            f = h5py.File(path, "r", **_SWMR_READ)
        except OSError as exc:
            raise DamagedFile(f"{path} is damaged: {one_line(exc)}") from None
    try:
        _check_format(f, path)
    except BaseException:
        f.close()
        raise
    return f


class Stacked:
    """Format 3: every run along one dimension (fastrank.store.schema)."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.n_runs = int(f["run"].shape[0])
        self.taus = f["tau"][()]

    def columns(self) -> dict:
        names = ("seed", "label", *schema.NETWORK_COLUMNS, "expected_rows")
        out = {name: self.f[name][()] for name in names}
        out["network"] = self.f["network"][()][self.f["config_of_run"][()]]
        return out

    def status(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(n_rows, failed_layer, failure) of every run, fresh from disk."""
        values = []
        for name in schema.STATUS_DATASETS:
            self.f[name].refresh()
            values.append(self.f[name][()])
        return values[0], values[1], [schema.text(x) for x in values[2]]

    def read(self, i: int, name: str, rows: int) -> np.ndarray:
        ds = self.f[name]
        ds.refresh()
        out = ds[i, :rows]
        if name == "spectrum":
            out = out[:, : int(self.f["n_sv"][i])]
        return out

    def block(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Dataset ``name`` of every run: (run, row, ...), -1 or NaN past a run's rows
        (``rows``, the committed ones: the caller masks what lies past them)."""
        ds = self.f[name]
        ds.refresh()
        return ds[()]

    def unreadable_runs(self, name: str, rows: np.ndarray) -> list[int]:
        """Runs whose committed rows of ``name`` fail to read (checksum), a chunk of runs
        at a time and run by run only inside a failing chunk."""
        try:
            ds = self.f[name]
            ds.refresh()
        except DAMAGE:
            return list(range(self.n_runs))
        step, bad = ds.chunks[0], []
        for start in range(0, self.n_runs, step):
            stop = min(start + step, self.n_runs)
            n = int(rows[start:stop].max(initial=0))
            try:
                ds[start:stop, :n]
            except DAMAGE:
                for i in range(start, stop):
                    try:
                        ds[i, : int(rows[i])]
                    except DAMAGE:
                        bad.append(i)
        return bad


class Grouped:
    """Format 2: one group per run under /runs (read-only; resumes rewrite as format 3)."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.groups = [f["runs"][name] for name in sorted(f["runs"])]
        self.n_runs = len(self.groups)
        self.taus = self.groups[0]["tau"][()] if self.groups else np.zeros(0)
        self.capacity = max((int(g.attrs["expected_rows"]) for g in self.groups), default=1)

    def columns(self) -> dict:
        cols: dict[str, list] = {}
        for g in self.groups:
            a = g.attrs
            values = {"seed": a["seed"], "label": a["label"], "network": a["network"],
                      **{name: a[name] for name in schema.NETWORK_COLUMNS},
                      "expected_rows": a["expected_rows"]}
            if np.ndim(values["width"]):
                values["width"] = -1
            for k, v in values.items():
                cols.setdefault(k, []).append(schema.text(v) if isinstance(v, (str, bytes)) else v)
        return {k: np.asarray(v) for k, v in cols.items()}

    def status(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        rows, failed, failure = [], [], []
        for g in self.groups:
            for name in schema.STATUS_DATASETS:
                g[name].refresh()
            rows.append(int(g["n_rows"][()]))
            failed.append(int(g["failed_layer"][()]))
            failure.append(schema.text(g["failure"][()]))
        return np.array(rows, np.int64), np.array(failed, np.int64), failure

    def read(self, i: int, name: str, rows: int) -> np.ndarray:
        g = self.groups[i]
        if name == "tier" and name not in g:  # format 1: every row was full
            return np.ones(rows, np.int64)
        ds = g[name]
        ds.refresh()
        return ds[:rows]

    def unreadable_runs(self, name: str, rows: np.ndarray) -> list[int]:
        bad = []
        for i, n in enumerate(rows):
            try:
                self.read(i, name, int(n))
            except DAMAGE:
                bad.append(i)
        return bad

    def block(self, name: str, rows: np.ndarray) -> np.ndarray:
        parts = [self.read(i, name, int(n)) for i, n in enumerate(rows)]
        tail = max((p.shape[1:] for p in parts), default=())
        out = np.full((len(parts), self.capacity, *tail),
                      -1 if name in schema.INT_DATASETS else np.nan,
                      np.int64 if name in schema.INT_DATASETS else np.float64)
        for i, p in enumerate(parts):
            out[(i, slice(0, len(p)), *(slice(0, s) for s in p.shape[1:]))] = p
        return out


def _missing_as_nan(name: str, values: np.ndarray) -> np.ndarray:
    """Integer measures as float64 with NaN for -1 (no value: padding, Gram-tier rows),
    so that means and plots over xarray see missing values, not -1."""
    if name not in schema.INT_DATASETS:
        return values
    return np.where(values < 0, np.nan, values.astype(np.float64))


def layout_of(f: h5py.File):
    """The reader of ``f``'s layout: Stacked (format 3) or Grouped (formats 1 and 2)."""
    return Stacked(f) if int(f.attrs["format_version"]) >= 3 else Grouped(f)


def _status(rows: int, expected: int, failed: bool) -> str:
    if failed:
        return "failed"
    return "complete" if rows >= expected else ("running" if rows else "pending")


def open(path) -> Results:  # noqa: A001 - the public name is fastrank.open
    """Open a results file for reading, also while a sweep writes it or after a kill."""
    return Results(path)


class Results:
    """A results file opened for reading: a table of runs, each run's arrays, and the
    whole sweep as xarray or pandas.

    The file may be one that a sweep is writing (call :meth:`refresh` to see new rows)
    or one left by a killed sweep. Only committed rows (``n_rows``) are ever shown.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._f = open_file(self.path)
        try:
            a = self._f.attrs
            self.attrs = {
                "format": schema.text(a["format"]),
                "format_version": int(a["format_version"]),
                "fastrank_version": schema.text(a["fastrank_version"]),
                "created": schema.text(a["created"]),
                "provenance": json.loads(a["provenance"]),
            }
            self.sweep = Sweep.from_dict(json.loads(a["sweep"]))
            self._layout = layout_of(self._f)
            self._n = self._layout.n_runs
            self._columns = self._checked_columns(self._layout.columns())
            self._runs: dict[int, Run] = {}
            self._table = None
            self._blocks: dict[str, np.ndarray] = {}
            self._read_status()
        except EDITED as exc:  # DamagedFile among them (a ValueError)
            self._f.close()
            if isinstance(exc, (DamagedFile, FileNotFoundError)):
                raise
            raise DamagedFile(f"{self.path} is damaged: {one_line(exc, typed=True)}") from None

    def _checked_columns(self, columns: dict) -> dict:
        """The run columns, each with one value per run and integer where counted: an
        edited or damaged file is refused here in one line, not later mid-table."""
        for name, values in columns.items():
            if np.shape(values)[:1] != (self._n,):
                raise DamagedFile(f"{self.path} is damaged: column {name} has shape "
                                  f"{np.shape(values)} for {self._n} runs")
        for name in ("seed", "expected_rows"):
            if columns[name].dtype.kind not in "iu" or (columns[name] < 0).any():
                raise DamagedFile(f"{self.path} is damaged: column {name} holds "
                                  f"{columns[name].dtype} values, not counts")
        return columns

    def _read_status(self) -> None:
        try:
            rows, failed_layer, failure = self._layout.status()
        except EDITED as exc:
            raise DamagedFile(f"{self.path} is damaged: {one_line(exc, typed=True)}") from None
        expected = self._columns["expected_rows"]
        for name, values in (("n_rows", rows), ("failed_layer", failed_layer)):
            if np.shape(values) != (self._n,) or np.asarray(values).dtype.kind not in "iu":
                raise DamagedFile(f"{self.path} is damaged: {name} is not one count per run")
        if ((rows < 0) | (rows > expected)).any() or (failed_layer < -1).any():
            run = int(np.flatnonzero((rows < 0) | (rows > expected) | (failed_layer < -1))[0])
            raise DamagedFile(f"{self.path} is damaged: run {schema.run_id(run)} counts "
                              f"{int(rows[run])} of {int(expected[run])} rows, failed layer "
                              f"{int(failed_layer[run])}")
        self._rows, self._failed_layer, self._failure = rows, failed_layer, failure

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return (self[i] for i in range(self._n))

    def __getitem__(self, key) -> Run:
        """Run by index (negative counts from the end) or by id (``"00042"``)."""
        if isinstance(key, str):
            if not (key.isdigit() and int(key) < self._n):
                raise KeyError(f"no run {key!r} in {self.path}")
            key = int(key)
        index = int(key) + (self._n if key < 0 else 0)
        if not 0 <= index < self._n:
            raise IndexError(f"run {key} out of range: {self.path} has {self._n} runs")
        if index not in self._runs:
            self._runs[index] = Run(self, index)
        return self._runs[index]

    def _statuses(self) -> np.ndarray:
        expected = self._columns["expected_rows"]
        return np.array([_status(int(r), int(e), int(f) >= 0) for r, e, f in
                         zip(self._rows, expected, self._failed_layer, strict=True)])

    @property
    def runs(self) -> np.ndarray:
        """One row per run: id, index, label, Network fields (width -1 when per-layer),
        seed, rows, expected_rows, status, final_soft_rank (NaN without rows)."""
        if self._table is None:
            c = self._columns
            rows = self._rows
            soft = self._block("soft_rank")
            last = np.where(rows > 0, soft[np.arange(self._n), np.maximum(rows - 1, 0)], np.nan)
            cols = {
                "id": np.array([schema.run_id(i) for i in range(self._n)]),
                "index": np.arange(self._n),
                "label": np.array([schema.text(x) for x in c["label"]]),
                **{name: (np.array([schema.text(x) for x in c[name]])
                          if c[name].dtype.kind in "OSU" else c[name])
                   for name in schema.NETWORK_COLUMNS},
                "seed": c["seed"].astype(np.uint64),
                "rows": rows.astype(np.int64),
                "expected_rows": c["expected_rows"].astype(np.int64),
                "status": self._statuses(),
                "final_soft_rank": last.astype(np.float64),
            }
            self._table = np.empty(self._n, dtype=[(k, v.dtype) for k, v in cols.items()])
            for k, v in cols.items():
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
        self._blocks = {}
        self._read_status()
        for run in self._runs.values():
            run._load()

    def _block(self, name: str) -> np.ndarray:
        """Dataset ``name`` of every run, committed rows only (-1 / NaN beyond)."""
        blocks = self._blocks
        if name not in blocks:
            try:
                values = self._layout.block(name, self._rows)
                beyond = np.arange(values.shape[1])[None, :] >= self._rows[:, None]
                values[beyond] = -1 if name in schema.INT_DATASETS else np.nan
            except EDITED as exc:
                raise DamagedFile(f"{self.path}: {name} does not read back as written "
                                  f"({one_line(exc)})") from None
            blocks[name] = values
        return blocks[name]

    def damaged(self) -> list[str]:
        """Verify every committed row of every run against its checksum (format 3; format 2
        has none); returns one line per damaged dataset naming the runs it holds."""
        bad = []
        for name in schema.ROW_DATASETS:
            runs = self._layout.unreadable_runs(name, self._rows)
            if runs:
                shown = ", ".join(schema.run_id(i) for i in runs[:8])
                more = f" and {len(runs) - 8} more" if len(runs) > 8 else ""
                bad.append(f"{name}: runs {shown}{more} do not read back as written")
        return bad

    def to_xarray(self):
        """The whole sweep as one xarray.Dataset: every measure with dims (run, row[, sv |
        tau]), the layer of each row, and each run's options, seed, status and rows as
        coordinates along ``run``. Rows past a run's committed ones are NaN (integers:
        -1, the fill value)."""
        try:
            import xarray
        except ImportError:
            raise ImportError("Results.to_xarray needs xarray: pip install xarray") from None
        dims = {"spectrum": ("run", "row", "sv"), "rank_tau": ("run", "row", "tau")}
        data = {name: (dims.get(name, ("run", "row")), _missing_as_nan(name, self._block(name)),
                       {"long_name": schema.LONG_NAMES[name][0]})
                for name in schema.ROW_DATASETS if name != "layer"}
        table = self.runs
        coords = {"layer": (("run", "row"), self._block("layer")), "tau": self._layout.taus,
                  **{name: ("run", table[name]) for name in table.dtype.names
                     if name not in ("index", "final_soft_rank")}}
        return xarray.Dataset(data, coords=coords, attrs={"source": self.path, **{
            k: json.dumps(v) if isinstance(v, dict) else v for k, v in self.attrs.items()}})

    def to_pandas(self, long: bool = False):
        """The ``runs`` table as a pandas DataFrame; with ``long``, one row per (run,
        committed row): run, layer, every scalar measure, log_norm and tier, with the
        run's options as columns (tidy data for groupby and seaborn)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Results.to_pandas needs pandas: pip install pandas") from None
        table = pandas.DataFrame(self.runs)
        if not long:
            return table
        keep = np.arange(self._block("layer").shape[1])[None, :] < self._rows[:, None]
        run, _ = np.nonzero(keep)
        measures = [n for n in schema.ROW_DATASETS if n not in ("spectrum", "rank_tau")]
        frame = pandas.DataFrame({"run": run, **{n: self._block(n)[keep] for n in measures}})
        options = table.drop(columns=["index", "rows", "final_soft_rank"]).rename(
            columns={"id": "run_id"})
        return frame.join(options, on="run")

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
        self._results, self.index, self.id = results, index, schema.run_id(index)
        c = results._columns
        try:
            self.network = Network.from_dict(json.loads(schema.text(c["network"][index])))
        except (*DAMAGE, TypeError, ValueError) as exc:
            raise DamagedFile(f"{results.path}: run {self.id}: its network does not read back "
                              f"({type(exc).__name__}: {one_line(exc)})") from None
        self.seed, self.label = int(c["seed"][index]), schema.text(c["label"][index])
        self.expected_rows = int(c["expected_rows"][index])
        self.taus = results._layout.taus
        self._load()

    def refresh(self) -> None:
        """Re-read the status and drop cached arrays, to see newly committed rows."""
        self._results._read_status()
        self._load()

    def _load(self) -> None:
        """Status from the Results' last reading; cached arrays dropped."""
        self._arrays: dict[str, np.ndarray] = {}
        r, i = self._results, self.index
        self.rows, failed_layer = int(r._rows[i]), int(r._failed_layer[i])
        self.failure = r._failure[i]
        self.failed_layer = failed_layer if failed_layer >= 0 else None

    @property
    def status(self) -> str:
        """``pending``, ``running`` (some rows), ``complete`` or ``failed``."""
        return _status(self.rows, self.expected_rows, self.failed_layer is not None)

    def measure(self, name: str) -> np.ndarray:
        """Committed rows of dataset ``name``: layer, spectrum, log_norm, rank_tau or a scalar."""
        if name not in schema.ROW_DATASETS:
            raise KeyError(
                f"unknown measure {name!r}: choose from {', '.join(schema.ROW_DATASETS)}")
        if name not in self._arrays:
            try:
                self._arrays[name] = self._results._layout.read(self.index, name, self.rows)
            except EDITED as exc:  # a checksum mismatch, an unreadable or edited dataset
                raise DamagedFile(f"{self._results.path}: run {self.id}: {name} does not read "
                                  f"back as written ({one_line(exc)})") from None
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
        """This run as an xarray.Dataset (dims layer, sv, tau) of its committed rows (also
        while the file is written)."""
        try:
            import xarray
        except ImportError:
            raise ImportError("Run.to_xarray needs xarray: pip install xarray") from None
        dims = {"spectrum": ("layer", "sv"), "rank_tau": ("layer", "tau")}
        data = {name: (dims.get(name, ("layer",)), _missing_as_nan(name, self.measure(name)),
                       {"long_name": schema.LONG_NAMES[name][0]})
                for name in schema.ROW_DATASETS if name != "layer"}
        return xarray.Dataset(data, coords={"layer": self.layer, "tau": self.taus},
                              attrs={"run": self.id, "label": self.label, "seed": self.seed})

    def __repr__(self) -> str:
        rows = f"{self.rows}/{self.expected_rows} rows"
        return f"<fastrank.Run {self.id} {self.label} seed={self.seed}: {self.status}, {rows}>"


for _name in SCALARS:
    setattr(Run, _name, property(lambda self, _n=_name: self.measure(_n), doc=f"{_name} per row."))
del _name
