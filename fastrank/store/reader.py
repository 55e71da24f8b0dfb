"""Reading results files: :func:`open` -> :class:`Results` (the runs table, whole-sweep
xarray and pandas views) -> :class:`fastrank.store.run.Run` (one run's arrays), for
format versions 2 and 3.

How a file is opened (strictly, or as a SWMR reader while a writer holds it or after
a kill; retried while it is written) is fastrank.store.opening; the on-disk layouts
read behind one interface are fastrank.store.layout. Only committed rows (``n_rows``)
are ever shown. Damage answers with :class:`DamagedFile`, one line naming the file and
what failed.
"""

from __future__ import annotations

import json
import os

import numpy as np

from fastrank.errors import one_line
from fastrank.lock import writer_alive
from fastrank.spec import Sweep
from fastrank.store import schema
from fastrank.store.layout import check_counts, layout_of, run_status
from fastrank.store.opening import EDITED, DamagedFile, damage_as, open_file, retried
from fastrank.store.run import Run
from fastrank.version import install_hint


class _Damage(DamagedFile):
    """What :meth:`Results.damaged` found, one line per damaged object (``lines``)."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


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
        with damage_as(f"{self.path} is damaged: the runs' status does not read back"):
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
        return np.array([run_status(int(r), int(e), int(f) >= 0) for r, e, f in
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
        with damage_as(f"{self.path} is damaged: the thread counts do not read back"):
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
            with damage_as(f"{self.path}: {name} does not read back as written"):
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
        for name in schema.row_datasets(self.sweep):
            if name in objects:
                continue
            if name in schema.TANGENT_DATASETS and name not in self._f:
                bad.append(f"{name}: missing, though the sweep ran with "
                           f"{self.sweep.tangents} tangents")
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
        tau | tangent]) (tangent: the measures of a sweep with tangents), the layer of
        each row, and each run's options, seed, status and rows as coordinates along
        ``run``. Rows past a run's committed ones, and the integer
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
                f"Results.to_xarray needs xarray: {install_hint('analysis')}") from None
        data = {name: (schema.dims(name, "run", "row"),
                       schema.missing_as_nan(name, self._block(name)),
                       {"long_name": schema.LONG_NAMES[name][0]})
                for name in schema.row_datasets(self.sweep) if name != "layer"}
        table = self.runs
        tangents = {"tangent": np.arange(self.sweep.tangents)} if self.sweep.tangents else {}
        coords = {"layer": (("run", "row"), self._block("layer")), "tau": self._layout.taus,
                  **tangents,
                  **{name: ("run", table[name]) for name in table.dtype.names
                     if name not in ("index", "final_soft_rank")}}
        return xarray.Dataset(data, coords=coords, attrs={"source": self.path, **{
            k: json.dumps(v) if isinstance(v, dict) else v for k, v in self.attrs.items()}})

    def to_pandas(self, long: bool = False):
        """The ``runs`` table as a pandas DataFrame; with ``long``, one row per (run,
        committed row): run, layer, every scalar measure, log_norm and tier, with the
        run's options as columns (tidy data for groupby and seaborn); a sweep with K
        tangents adds a column per tangent of each tangent measure,
        ``tangent_log_norm_0`` .. ``_{K-1}`` and ``jacobian_exponents_0`` .. ``_{K-1}``.
        Needs pandas.

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
                f"Results.to_pandas needs pandas: {install_hint('analysis')}") from None
        table = pandas.DataFrame(self.runs)
        if not long:
            return table
        keep = np.arange(self._block("layer").shape[1])[None, :] < self._rows[:, None]
        run, _ = np.nonzero(keep)
        measures = [n for n in schema.ROW_DATASETS if n not in ("spectrum", "rank_tau")]
        tangents = {f"{n}_{i}": values
                    for n in (schema.TANGENT_DATASETS if self.sweep.tangents else ())
                    for i, values in enumerate(self._block(n)[keep].T)}
        frame = pandas.DataFrame({"run": run, **{n: self._block(n)[keep] for n in measures},
                                  **tangents})
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
