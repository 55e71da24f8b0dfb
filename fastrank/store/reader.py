"""Reading results files: :func:`open` -> :class:`Results` (the runs table, whole-sweep
xarray and pandas views) -> :class:`Run` (one run's arrays), for format versions 2 and 3.

How a file is opened (strictly, or as a SWMR reader while a writer holds it or after
a kill; retried while it is written) is fastrank.store.opening. Only committed rows
(``n_rows``) are ever shown. Damage answers with :class:`DamagedFile`, one line naming
the file and what failed.

Its ~800 lines are the public reading API (Results, Run) with the reference docstrings
docs/api.md is generated from, and the two on-disk layouts (format 2's groups, format
3's stacked datasets) behind one interface; splitting them would split that interface.
"""

from __future__ import annotations

import contextlib
import json
import os

import h5py
import numpy as np

from fastrank.errors import one_line
from fastrank.lock import writer_alive
from fastrank.measures import SCALARS
from fastrank.spec import Network, Sweep
from fastrank.store import schema
from fastrank.store.opening import DAMAGE, EDITED, DamagedFile, open_file, retried
from fastrank.version import install_hint

#: What installs xarray, h5netcdf and pandas for to_xarray / to_pandas (pyproject.toml).
ANALYSIS_EXTRA = install_hint("analysis")


class _Damage(DamagedFile):
    """What :meth:`Results.damaged` found, one line per damaged object (``lines``)."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


class Stacked:
    """Format 3: every run along one dimension (fastrank.store.schema)."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.n_runs = len(self.values("run"))
        self.taus = self.values("tau")

    def values(self, name: str, where=()) -> np.ndarray:
        """Dataset ``name`` (whole, or the selection ``where``), fresh from disk; damage as
        DamagedFile naming it."""
        try:
            ds = self.f[name]
            if not isinstance(ds, h5py.Dataset):
                raise DamagedFile(f"{self.f.filename} is damaged: {name} is a "
                                  f"{type(ds).__name__.lower()}, not a dataset")
            ds.refresh()
            return ds[where]
        except DAMAGE as exc:
            raise DamagedFile(f"{self.f.filename} is damaged: {name} does not read back as "
                              f"written ({one_line(exc)})") from None

    def columns(self) -> dict:
        names = ("seed", "label", *schema.NETWORK_COLUMNS, "expected_rows")
        out = {name: self.values(name) for name in names}
        network, config = self.values("network"), self.values("config_of_run")
        if config.shape != (self.n_runs,) or config.dtype.kind not in "iu" or \
                ((config < 0) | (config >= len(network))).any():
            raise DamagedFile(f"{self.f.filename} is damaged: config_of_run does not "
                              f"index network's {len(network)} configurations, one per run")
        out["network"] = network[config]
        return out

    def threads(self) -> dict:
        """schema.THREAD_DATASETS by name, fresh from disk (all -1 in files written
        before they existed)."""
        return {name: self.values(name) if name in self.f else np.full(self.n_runs, -1, np.int64)
                for name in schema.THREAD_DATASETS}

    def status(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(n_rows, failed_layer, failure) of every run, fresh from disk."""
        rows, failed_layer, failure = map(self.values, schema.STATUS_DATASETS)
        return rows, failed_layer, [schema.text(x) for x in failure]

    def read(self, i: int, name: str, rows: int) -> np.ndarray:
        ds = self.f[name]
        ds.refresh()
        out = ds[i, :rows]
        if name == "spectrum":
            out = out[:, : int(self.values("n_sv", i))]  # n_sv's damage named as its own
        return out

    def damaged_objects(self) -> dict[str, str]:
        """What fails to read among the root's attributes and every object of the file:
        its header, its attributes (dimension scales' references included, which xarray
        follows) and, but for the row datasets (:meth:`unreadable_runs`), its data.
        Object name -> the error, in one line; an object that is not a dataset is one."""
        bad = {}
        try:
            for key in self.f.attrs:
                self.f.attrs[key]
            names = list(self.f)
        except DAMAGE as exc:
            return {"/": one_line(exc)}
        for name in names:
            try:
                obj = self.f[name]
                for key in obj.attrs:
                    for ref in _references(obj.attrs[key]):
                        self.f[ref]
                if not isinstance(obj, h5py.Dataset):
                    bad[name] = f"a {type(obj).__name__.lower()}, not a dataset"
                elif name not in schema.ROW_DATASETS:
                    obj.refresh()
                    obj[()]
            except DAMAGE as exc:
                bad[name] = one_line(exc)
        return bad

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


def _references(value) -> list[h5py.Reference]:
    """The object references in an attribute's value (a dimension scale's lists)."""
    if isinstance(value, h5py.Reference):
        return [value] if value else []
    if isinstance(value, np.void):  # a compound value: its fields
        return [r for field in value.tolist() for r in _references(field)]
    if isinstance(value, np.ndarray) and value.dtype.kind in "OV":
        return [r for item in value.ravel() for r in _references(item)]
    if isinstance(value, tuple):
        return [r for item in value for r in _references(item)]
    return []


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

    def threads(self) -> dict:
        """Format 2 did not record them: -1 for every run."""
        return {name: np.full(self.n_runs, -1, np.int64) for name in schema.THREAD_DATASETS}

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

    def damaged_objects(self) -> dict[str, str]:
        """Format 2 has no checksums: what reads, reads as written."""
        return {}

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


def check_counts(path, rows: np.ndarray, failed_layer: np.ndarray,
                 expected: np.ndarray) -> None:
    """Refuse (DamagedFile, one line) the status no writer writes: committed rows outside
    0..``expected``, a failure layer below -1."""
    bad = np.flatnonzero((rows < 0) | (rows > expected) | (failed_layer < -1))
    if bad.size:
        run = int(bad[0])
        raise DamagedFile(f"{path} is damaged: run {schema.run_id(run)} counts "
                          f"{int(rows[run])} of {int(expected[run])} rows, failed layer "
                          f"{int(failed_layer[run])}")


@contextlib.contextmanager
def _damage_as(message: str):
    """A checksum mismatch or an unreadable or edited object met inside, as one
    DamagedFile line: ``message`` and the error; a DamagedFile (already naming what
    failed) passes as it is."""
    try:
        yield
    except DamagedFile:
        raise
    except EDITED as exc:
        raise DamagedFile(f"{message} ({one_line(exc, typed=True)})") from None


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
    """Open a results file for reading, also while a sweep writes it or after a kill.

    The way into a sweep's results (``fastrank.open``): a finished file is opened
    strictly, one that a sweep is writing (or that a killed sweep left) as a SWMR
    reader, which sees every committed row; only committed rows are ever shown. Formats
    2 and 3 are read. Use it as a context manager, or call ``close``.

    Parameters
    ----------
    path : str or os.PathLike
        The results file, as written by :func:`fastrank.sweep` or ``fastrank sweep``.

    Returns
    -------
    Results
        The runs table, each run's arrays, and the whole sweep as xarray or pandas.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        When the file is not a fastrank results file, or has a newer format version
        than this fastrank reads.
    fastrank.store.DamagedFile
        When the file is truncated or corrupted (a ValueError, one line).

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
    ...                        seeds=(0, 1))
    >>> path = fastrank.sweep(sweep, "sweep.h5")
    >>> with fastrank.open(path) as results:
    ...     print(results)
    ...     print([run.status for run in results])
    <fastrank.Results 'sweep.h5': 4 runs>
    ['complete', 'complete', 'complete', 'complete']
    """
    return Results(path)


class Results:
    """A results file opened for reading: a table of runs, each run's arrays, and the
    whole sweep as xarray or pandas.

    The file may be one that a sweep is writing (call :meth:`refresh` to see new rows)
    or one left by a killed sweep. Only committed rows (``n_rows``) are ever shown.
    ``len(results)`` is the number of runs; ``results[i]`` is run ``i`` as a :class:`Run`
    (negative indexes count from the end; a run id such as ``"00042"`` works too), and
    iterating gives every run in order. Usually made by :func:`fastrank.open`; a context
    manager that closes the file.

    Parameters
    ----------
    path : str or os.PathLike
        The results file.

    Attributes
    ----------
    path : str
        The file's path, as given.
    sweep : Sweep
        The sweep the file holds (its grid, seeds, schedule, method and taus).
    attrs : dict
        The file's metadata: format, format_version, fastrank_version, created and
        provenance (host, versions, backend, ...).

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
    ...                        seeds=(0, 1))
    >>> results = fastrank.open(fastrank.sweep(sweep, "results.h5"))
    >>> len(results), results.sweep.seeds
    (4, (0, 1))
    >>> results.runs["norm"].tolist(), results.runs["status"].tolist()
    (['none', 'none', 'bn', 'bn'], ['complete', 'complete', 'complete', 'complete'])
    >>> results[-1]
    <fastrank.Run 00003 linear/bn d=8 N=8 L=20 seed=1: complete, 21/21 rows>
    >>> results["00002"].seed
    0
    >>> results.close()
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._live = writer_alive(self.path)  # reads meeting a rewrite are retried
        self._f = open_file(self.path, writing=self._live)
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
            self._layout = self._read(lambda: layout_of(self._f))
            self._n = self._layout.n_runs
            self._columns = self._checked_columns(self._read(self._layout.columns))
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
            if np.shape(values) != (self._n,):
                raise DamagedFile(f"{self.path} is damaged: column {name} has shape "
                                  f"{np.shape(values)} for {self._n} runs")
        for name in ("seed", "expected_rows"):
            if columns[name].dtype.kind not in "iu" or (columns[name] < 0).any():
                raise DamagedFile(f"{self.path} is damaged: column {name} holds "
                                  f"{columns[name].dtype} values, not counts")
        return columns

    def _read(self, read):
        """``read()``, retried while a writer holds the file (:func:`retried`)."""
        return retried(read, self._live)

    def _read_status(self) -> None:
        with _damage_as(f"{self.path} is damaged: the runs' status does not read back"):
            rows, failed_layer, failure = self._read(self._layout.status)
        expected = self._columns["expected_rows"]
        for name, values in (("n_rows", rows), ("failed_layer", failed_layer)):
            if np.shape(values) != (self._n,) or np.asarray(values).dtype.kind not in "iu":
                raise DamagedFile(f"{self.path} is damaged: {name} is not one count per run")
        if len(failure) != self._n:
            raise DamagedFile(f"{self.path} is damaged: failure is not one reason per run")
        check_counts(self.path, rows, failed_layer, expected)
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
        """The runs table, a NumPy structured array with one row per run: id, index,
        label, the Network fields (width -1 when per-layer), seed, rows (committed),
        expected_rows, status, final_soft_rank (NaN without rows), and numba_threads and
        blas_threads of the process that computed the run (-1: not recorded)."""
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
                **{name: values.astype(np.int64) for name, values in self._threads().items()},
            }
            self._table = np.empty(self._n, dtype=[(k, v.dtype) for k, v in cols.items()])
            for k, v in cols.items():
                self._table[k] = v
        return self._table

    def _threads(self) -> dict:
        with _damage_as(f"{self.path} is damaged: the thread counts do not read back"):
            return self._read(self._layout.threads)

    def select(self, **criteria) -> list[Run]:
        """Runs whose ``runs`` columns equal the given values (or lie in a given list).

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
        ...                        seeds=(0, 1))
        >>> results = fastrank.open(fastrank.sweep(sweep, "select.h5"))
        >>> results.select(norm="bn", seed=1)
        [<fastrank.Run 00003 linear/bn d=8 N=8 L=20 seed=1: complete, 21/21 rows>]
        >>> [run.id for run in results.select(status="complete", norm=["none", "bn"])]
        ['00000', '00001', '00002', '00003']
        >>> results.close()
        """
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
        """Pick up rows committed since opening (or the last refresh), for a file that a
        sweep is writing: the table and every Run already handed out are updated."""
        self._table = None
        self._blocks = {}
        self._read_status()
        for run in self._runs.values():
            run._load()

    def _block(self, name: str) -> np.ndarray:
        """Dataset ``name`` of every run, committed rows only (-1 / NaN beyond)."""
        blocks = self._blocks
        if name not in blocks:
            with _damage_as(f"{self.path}: {name} does not read back as written"):
                values = self._read(lambda: self._layout.block(name, self._rows))
                beyond = np.arange(values.shape[1])[None, :] >= self._rows[:, None]
                values[beyond] = -1 if name in schema.INT_DATASETS else np.nan
            blocks[name] = values
        return blocks[name]

    def damaged(self) -> list[str]:
        """Read everything a reader can read, against its checksums (format 3; format 2
        has none): every attribute, every object's header and data, every committed row
        of every run. Returns one line per damaged object, naming the runs of a row
        dataset whose rows fail; an empty list for an intact file. Reads the whole file,
        so it takes as long as reading it; on a file being written, what fails is read
        again for up to 2 s before it counts."""
        try:
            self._read(self._check_everything)
        except _Damage as exc:
            return exc.lines
        return []

    def _check_everything(self) -> None:
        objects = self._layout.damaged_objects()
        bad = [f"{name}: does not read back as written ({why})" for name, why in
               objects.items()]
        for name in schema.ROW_DATASETS:
            if name in objects:
                continue
            runs = self._layout.unreadable_runs(name, self._rows)
            if runs:
                shown = ", ".join(schema.run_id(i) for i in runs[:8])
                more = f" and {len(runs) - 8} more" if len(runs) > 8 else ""
                bad.append(f"{name}: runs {shown}{more} do not read back as written")
        if bad:
            raise _Damage(bad)

    def to_xarray(self):
        """The whole sweep as one xarray.Dataset: every measure with dims (run, row[, sv |
        tau]), the layer of each row, and each run's options, seed, status and rows as
        coordinates along ``run``. Rows past a run's committed ones, and the integer
        measures' missing values (-1 in the file), are NaN. Needs xarray.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
        ...                        seeds=(0, 1))
        >>> with fastrank.open(fastrank.sweep(sweep, "xarray.h5")) as results:
        ...     ds = results.to_xarray()
        >>> dict(ds.sizes)
        {'run': 4, 'row': 21, 'sv': 8, 'tau': 1}
        >>> last = ds.soft_rank.isel(row=-1).groupby("norm").mean()
        >>> last.round(2).to_series().to_dict()  # mean final soft rank per norm
        {'bn': 2.31, 'none': 1.04}
        """
        try:
            import xarray
        except ImportError:
            raise ImportError(
                f"Results.to_xarray needs xarray: {ANALYSIS_EXTRA}") from None
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
        run's options as columns (tidy data for groupby and seaborn). Needs pandas.

        Parameters
        ----------
        long : bool
            One row per measured layer of every run instead of one per run.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
        ...                        seeds=(0, 1))
        >>> with fastrank.open(fastrank.sweep(sweep, "pandas.h5")) as results:
        ...     runs, rows = results.to_pandas(), results.to_pandas(long=True)
        >>> runs[["id", "norm", "seed", "status"]]
              id  norm  seed    status
        0  00000  none     0  complete
        1  00001  none     1  complete
        2  00002    bn     0  complete
        3  00003    bn     1  complete
        >>> len(rows), rows.groupby("norm").soft_rank.max().round(2).to_dict()
        (84, {'bn': 4.06, 'none': 4.06})
        """
        try:
            import pandas
        except ImportError:
            raise ImportError(
                f"Results.to_pandas needs pandas: {ANALYSIS_EXTRA}") from None
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
        """Close the file: its Runs read nothing more (what they read stays). Closing
        twice is harmless."""
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrank.Results {self.path!r}: {self._n} runs>"


def _measure_property(name: str, doc: str) -> property:
    """A read-only property of Run that returns ``run.measure(name)``, documented by
    ``doc`` (the getter carries it, so help() and the API page show it)."""

    def get(self) -> np.ndarray:
        return self.measure(name)

    get.__name__ = get.__qualname__ = name
    get.__doc__ = doc
    return property(get)


class Run:
    """One (network, seed) run: its spec, status and the arrays of its committed rows.

    Got from a :class:`Results` (``results[i]``, iteration, ``results.select``), not
    built directly. Arrays have one entry per committed row (a measured layer, see
    :class:`fastrank.Schedule`), are read on first access and kept until
    :meth:`refresh`. Every measure is a property (``run.soft_rank``,
    ``run.condition_number``, ...); :meth:`measure` reads one by name.

    Attributes
    ----------
    id : str
        The run's name, its index zero-padded to 5 digits (``"00042"``).
    index : int
        Its position in the file.
    network : Network
        The architecture that ran.
    seed : int
        Its seed.
    label : str
        Short name of its configuration (:meth:`fastrank.Network.label`).
    rows : int
        Committed rows, as of the last refresh.
    expected_rows : int
        Rows of the complete run.
    failed_layer : int or None
        The layer at which the run failed (non-finite or zero H), else None.
    failure : str
        Why it failed, in words ("" if it did not).
    taus : numpy.ndarray
        The thresholds of ``rank_tau``.

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
    ...                        seeds=(0, 1))
    >>> results = fastrank.open(fastrank.sweep(sweep, "runs.h5"))
    >>> run = results[2]
    >>> run
    <fastrank.Run 00002 linear/bn d=8 N=8 L=20 seed=0: complete, 21/21 rows>
    >>> run.network.norm, run.seed, run.status, run.failed_layer
    ('bn', 0, 'complete', None)
    >>> run.layer[:5], run.spectrum.shape, run.rank_tau.shape
    (array([0, 1, 2, 3, 4]), (21, 8), (21, 1))
    >>> round(float(run.soft_rank[-1]), 2), round(float(results[0].soft_rank[-1]), 2)
    (2.19, 1.07)
    >>> results.close()
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
        """Committed rows of dataset ``name``: layer, spectrum, log_norm, rank_tau, tier or a
        scalar measure (soft_rank, ...); KeyError for another name, DamagedFile when the
        data do not read back as written (checksum). Gram-tier rows (tier 0) have no
        spectrum: -1 for the integer measures, NaN for the others that need one.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20]},
        ...                        schedule=fastrank.Schedule(every=10, log=None, cheap_every=5))
        >>> with fastrank.open(fastrank.sweep(sweep, "measure.h5")) as results:
        ...     run = results[0]
        ...     print(run.measure("layer"), run.measure("tier"), run.measure("numerical_rank"))
        [ 0  5 10 15 20] [1 0 1 0 1] [ 8 -1  7 -1  5]
        """
        if name not in schema.ROW_DATASETS:
            raise KeyError(
                f"unknown measure {name!r}: choose from {', '.join(schema.ROW_DATASETS)}")
        if name not in self._arrays:
            if not self._results._f.id.valid:
                raise ValueError(f"{self._results.path} is closed: run {self.id} cannot read "
                                 f"{name} (read it before closing, or open the file again)")
            r = self._results
            with _damage_as(f"{r.path}: run {self.id}: {name} does not read back as written"):
                self._arrays[name] = r._read(lambda: r._layout.read(self.index, name, self.rows))
        return self._arrays[name]

    layer = _measure_property("layer", "The measured layer of each row, int64 (rows,); 0 is "
                              "the input.")
    spectrum = _measure_property(
        "spectrum", "Singular values of H at each row, descending, float64 (rows, k); NaN "
                    "where a row has fewer (Gram-tier rows have none).")
    log_norm = _measure_property(
        "log_norm", "log ||H||_F of the un-rescaled network at each row, float64 (rows,).")
    rank_tau = _measure_property(
        "rank_tau", "Number of eigenvalues of H H^T above tau times their mean, int64 "
                    "(rows, len(taus)); -1 on Gram-tier rows.")
    tier = _measure_property(
        "tier", "Per row, int64: 1 for the full spectrum, 0 for the Gram tier only.")

    def to_xarray(self):
        """This run as an xarray.Dataset (dims layer, sv, tau) of its committed rows (also
        while the file is written); integer measures' missing values are NaN. Needs xarray.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20]})
        >>> with fastrank.open(fastrank.sweep(sweep, "run_xarray.h5")) as results:
        ...     ds = results[0].to_xarray()
        >>> dict(ds.sizes), ds.attrs["label"]
        ({'layer': 21, 'sv': 8, 'tau': 1}, 'linear/none d=8 N=8 L=20')
        >>> float(ds.soft_rank.sel(layer=0).round(2))
        4.06
        """
        try:
            import xarray
        except ImportError:
            raise ImportError(f"Run.to_xarray needs xarray: {ANALYSIS_EXTRA}") from None
        dims = {"spectrum": ("layer", "sv"), "rank_tau": ("layer", "tau")}
        data = {name: (dims.get(name, ("layer",)), _missing_as_nan(name, self.measure(name)),
                       {"long_name": schema.LONG_NAMES[name][0]})
                for name in schema.ROW_DATASETS if name != "layer"}
        return xarray.Dataset(data, coords={"layer": self.layer, "tau": self.taus},
                              attrs={"run": self.id, "label": self.label, "seed": self.seed})

    def __repr__(self) -> str:
        rows = f"{self.rows}/{self.expected_rows} rows"
        return f"<fastrank.Run {self.id} {self.label} seed={self.seed}: {self.status}, {rows}>"


#: The scalar measures a Gram-tier row lacks and what it holds instead, for the
#: docstrings of Run's measure properties (fastrank.measures.gram_measures).
_GRAM_TIER_MISSING = {"numerical_rank": "; -1 on Gram-tier rows",
                      "effective_rank": "; NaN on Gram-tier rows",
                      "condition_number": "; NaN on Gram-tier rows"}
for _name in SCALARS:  # run.soft_rank, ..., run.condition_number
    setattr(Run, _name, _measure_property(_name, (
        f"``{_name}`` of each row ({schema.LONG_NAMES[_name][0]}), "
        f"{'int64' if _name in schema.INT_DATASETS else 'float64'} (rows,)"
        f"{_GRAM_TIER_MISSING.get(_name, '')}.")))
del _name
