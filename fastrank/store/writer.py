"""The one writer of a results file: creation, resume, batched commits, failures.

A file is laid out under a staging name, switched to HDF5 SWMR writing and only then
moved to its name, so it never appears in a state that a reader or a kill could break.
Rows are committed in batches: the data of every run in the batch is written and
flushed, then each run's ``n_rows`` is raised and flushed, so readers (in other
processes, while the file is written) and a killed file never count a row that is not
on disk. One writer per file is enforced by fastrank.lock, taken before anything is
checked or staged and held until :meth:`Writer.close`.

A write that fails (a full disk, the file size limit) ends the writer there: the file is
closed at once without writing anything more, so it stays as the failure left it, as
after a kill at that write (a staged file is removed, a new file that never got a row
too), and :class:`WriteFailed` says so in one line with the system's reason
(fastrank.store.write_failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from datetime import datetime, timezone

import h5py
import numpy as np

from fastrank.errors import one_line
from fastrank.lock import WriterLock, WriterLocked
from fastrank.rows import Rows
from fastrank.spec import Sweep
from fastrank.store import schema
from fastrank.store.layout import check_counts, layout_of, run_status
from fastrank.store.opening import DAMAGE, EDITED, DamagedFile, open_file
from fastrank.store.write_failure import (
    AS_IT_WAS,
    HDF5_ERRORS,
    KEPT,
    REMOVED,
    RESUMABLE,
    WriteFailed,
    abandon,
    close_file,
    write_failed,
)
from fastrank.version import FORMAT_NAME, __version__

#: Chunk cache of each row dataset the writer fills: the chunks a batch of runs is
#: filling stay in memory. Set per row dataset when the layout makes it, not for the
#: whole file (HDF5 gives every open dataset a cache of its own, the layout's ~40
#: included), with slots about 100x the chunks that fit (schema.CHUNK_ELEMENTS of 8
#: bytes), a prime as HDF5 advises.
CHUNK_CACHE_BYTES = 64 << 20
CHUNK_CACHE_SLOTS = 25_603
#: Row datasets that are fields of a Rows block (the others are in its ``measures``).
_ROWS_FIELDS = ("layer", "log_norm", "tier")


class SweepMismatch(ValueError):
    """A resume asked for a sweep other than the file's."""


def _written(sweep: Sweep) -> tuple[str, ...]:
    """The datasets a writer of ``sweep`` writes (kept open from the layout on)."""
    return (*schema.row_datasets(sweep), *schema.STATUS_DATASETS, *schema.THREAD_DATASETS)


def _staged(path: str, sweep: Sweep, attrs: dict) -> tuple[h5py.File, dict]:
    """A fresh laid-out file under a staging name next to ``path``, already in SWMR
    write mode (rows can be written; :func:`_move_in` gives it its name), and its
    datasets by name (the row datasets with the writer's chunk cache). A failed write
    raises HDF5's error and leaves nothing behind."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        f = h5py.File(tmp, "x", libver=schema.LIBVER, locking=False)
    except FileExistsError:
        raise
    except BaseException:
        with contextlib.suppress(OSError):  # HDF5 made it, then failed to write it
            os.unlink(tmp)
        raise
    try:
        cached = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        cached.set_chunk_cache(CHUNK_CACHE_SLOTS, CHUNK_CACHE_BYTES, 0.75)
        made = schema.layout(f, sweep, attrs, row_access=cached)
        # written while every dataset is open: a dataset closed with data to write
        # writes it as h5py frees it, where a failure is only printed (and breaks HDF5)
        f.flush()
        # only what the writer writes stays open: HDF5 visits every open dataset on
        # each flush, and on the switch to SWMR
        datasets = {name: h5py.Dataset(made.pop(name)) for name in _written(sweep)}
        del made
        f.swmr_mode = True  # nothing may be created from here on; data may be written
    except BaseException:
        _discard(f)
        raise
    return f, datasets


def _discard(f: h5py.File) -> None:
    """Close a staged file without writing and remove it."""
    tmp = f.filename
    abandon(f)
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


def _locked(path: str, outcome: str) -> WriterLock:
    """The writer's lock of ``path`` (fastrank.lock), a failure to write its lock file
    (a full disk) as WriteFailed saying ``outcome``."""
    try:
        return WriterLock(path).acquire()
    except WriterLocked:
        raise
    except OSError as exc:
        raise write_failed(path, exc, outcome) from None


def _write(ds: h5py.Dataset, start: tuple, values: np.ndarray) -> None:
    """Write ``values`` (of ``ds``'s dtype) into the block of ``ds`` that begins at
    ``start`` (leading axes; the rest from 0) in one HDF5 call: h5py's indexing costs
    several times that in Python, and a commit makes a dozen writes."""
    values = np.ascontiguousarray(values)
    space = ds.id.get_space()
    space.select_hyperslab((*start, *(0,) * (values.ndim - len(start))), values.shape)
    ds.id.write(h5py.h5s.create_simple(values.shape), space, values)


def _blocks(items, key) -> list[list]:
    """``items`` split into blocks of consecutive runs, each one HDF5 write: ``key(item)``
    is (run, *rest), and the items of a block have consecutive runs and equal rests."""
    groups: list[list] = []
    for item in sorted(items, key=key):
        run, *rest = key(item)
        if groups:
            last, *last_rest = key(groups[-1][-1])
            if run == last + 1 and rest == last_rest:
                groups[-1].append(item)
                continue
        groups.append([item])
    return groups


class Writer:
    """The single writer of a results file, in SWMR mode: commit rows, record failures.

    Get one with :meth:`create` or :meth:`resume`. Run numbers are indices into
    ``sweep.runs()``. Other processes may read the file meanwhile (fastrank.open).
    """

    def __init__(self, path, staged: tuple[h5py.File, dict], lock: WriterLock, sweep: Sweep,
                 fresh: bool = True):
        """Over a freshly laid-out file (:func:`_staged`): no rows, no failures yet.
        ``fresh``: the file is new (made by :meth:`create`), so a failed write that
        finds no row in it removes it."""
        self.path, (self._f, datasets), self._lock = os.fspath(path), staged, lock
        self.sweep = sweep
        points = {depth: sweep.schedule.points(depth)
                  for depth in {net.depth for net, _ in sweep.runs()}}
        self._points = [points[net.depth] for net, _ in sweep.runs()]
        self._fresh = fresh
        self._keep_lock = False
        self._failure: WriteFailed | None = None  # a write failed: the file is closed
        self._touched = False  # a status write was issued: the file may hold a row
        self._rows = np.zeros(len(self._points), np.int64)
        self._failed = np.zeros(len(self._points), bool)
        self._ds = datasets
        self._k = int(datasets["spectrum"].shape[2])

    @classmethod
    def create(cls, path, sweep: Sweep, provenance: dict, overwrite: bool = False) -> Writer:
        """Lay out a new file for ``sweep``; an existing file is replaced only if ``overwrite``.

        Raises fastrank.lock.WriterLocked while another process writes ``path``. The
        layout is built under a staging name and moved into place whole, so a failure
        never leaves a half-made file or destroys the old one (a failed write:
        WriteFailed, one line).
        """
        path = os.fspath(path)
        lock = _locked(path, AS_IT_WAS if os.path.exists(path) else REMOVED)
        try:
            existed = os.path.exists(path)
            if existed and not overwrite:
                raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
            attrs = {
                "format": FORMAT_NAME,
                "format_version": np.int64(schema.format_version(sweep)),
                "fastrank_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "sweep": json.dumps(sweep.to_dict()),
                "provenance": json.dumps(provenance),
            }
            try:
                staged = _staged(path, sweep, attrs)
                _move_in(staged[0], path)
            except HDF5_ERRORS as exc:
                raise write_failed(path, exc, AS_IT_WAS if existed else REMOVED) from None
            return cls(path, staged, lock, sweep)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def resume(cls, path, sweep: Sweep | None = None) -> Writer:
        """Re-open a sweep for writing, even one killed while writing.

        ``sweep``, when given, must be the file's (else SweepMismatch, and the file is
        left untouched). A killed SWMR writer leaves status flags that make HDF5 refuse
        to open the file for writing, so the file is rebuilt in the current format: its
        committed rows are read and copied into a fresh file that atomically replaces
        it. Complete and failed runs keep their rows and status; other runs, and runs
        whose data fail their checksums, restart at 0 rows. A file whose layout is not
        the format's is refused (DamagedFile, one line naming the object); a write that
        fails while the file is rebuilt leaves it as it was (WriteFailed).
        """
        path = os.fspath(path)
        lock = _locked(path, RESUMABLE)
        try:
            old = open_file(path, writing=False)
            try:
                try:
                    stored = Sweep.from_dict(json.loads(old.attrs["sweep"]))
                except (*EDITED, AttributeError) as exc:
                    raise DamagedFile(f"{path} is damaged: its sweep attribute does not "
                                      f"read back ({one_line(exc, typed=True)})") from None
                if sweep is not None and stored != sweep:
                    mine = stored.to_dict()
                    differ = [k for k, v in sweep.to_dict().items() if mine.get(k) != v]
                    raise SweepMismatch(
                        f"{path} holds a different sweep (differs in: {', '.join(differ)}); "
                        "resume it without grid options or write to another file")
                source = _source(old, path, stored)
                attrs = {**old.attrs, "format_version": np.int64(schema.format_version(stored))}
                try:
                    staged = _staged(path, stored, attrs)
                except HDF5_ERRORS as exc:
                    raise write_failed(path, exc, RESUMABLE) from None
                new = staged[0]
                try:
                    writer = cls(path, staged, lock, stored, fresh=False)
                    writer._carry_over(source)
                    os.chmod(new.filename, stat.S_IMODE(os.stat(path).st_mode))
                except BaseException:
                    _discard(new)
                    raise
            finally:
                old.close()
            try:
                _move_in(new, path)
            except HDF5_ERRORS as exc:
                raise write_failed(path, exc, RESUMABLE) from None
            return writer
        except BaseException:
            lock.release()
            raise

    def _carry_over(self, source) -> None:
        """Copy the complete and failed runs of ``source`` (the old file's layout,
        checked by :func:`_source`); a run whose data fail their checksums is left to
        be computed again. A write that fails: WriteFailed (the old file as it was)."""
        try:
            rows, failed_layer, failure = source.status()
            threads = source.threads()
        except (*EDITED, AttributeError) as exc:
            raise DamagedFile(f"{self.path} is damaged: its run status does not read back "
                              f"({one_line(exc, typed=True)})") from None
        expected = np.array([len(p) for p in self._points])
        check_counts(self.path, rows, failed_layer, expected)
        for i in np.flatnonzero((failed_layer >= 0) | (rows >= expected)):
            n = int(rows[i])
            try:
                data = {name: np.asarray(source.read(i, name, n))
                        for name in schema.row_datasets(self.sweep)}
            except DAMAGE:  # a checksum failed: recomputed rather than copied
                continue
            with self._staging():
                for name, value in data.items():
                    ds = self._ds[name]
                    if name == "spectrum":
                        ds[i, :n, : value.shape[1]] = value
                    else:
                        ds[i, :n] = value
                self._ds["failure"][i] = schema.encode_failure(failure[i])
                for name, values in threads.items():
                    self._ds[name][i] = values[i]
                self._ds["failed_layer"][i] = failed_layer[i]
                self._ds["n_rows"][i] = n
            self._rows[i], self._failed[i] = n, failed_layer[i] >= 0
        with self._staging():
            self._f.flush()

    @contextlib.contextmanager
    def _staging(self):
        """Writes of a resume's rebuilt file, still staged: a failed one is WriteFailed,
        the old file as it was (the caller discards the staged file)."""
        try:
            yield
        except HDF5_ERRORS as exc:
            raise write_failed(self.path, exc, RESUMABLE) from None

    def status(self, run: int) -> str:
        """``pending``, ``running`` (some rows), ``complete`` or ``failed``."""
        return run_status(int(self._rows[run]), len(self._points[run]), bool(self._failed[run]))

    def pending(self) -> list[int]:
        """Indices of the runs still to compute: neither complete nor failed."""
        return [i for i in range(len(self._points)) if self.status(i) in ("pending", "running")]

    def append(self, run: int, row) -> None:
        """Commit the next measured layer of ``run`` (a :class:`fastrank.rows.Row`)."""
        self.commit({run: [Rows.of([row])]})

    def extend(self, run: int, rows) -> None:
        """Commit the next few measured layers of ``run`` (Row objects) at once."""
        self.commit({run: [Rows.of(list(rows))]})

    def commit(self, rows_by_run: dict, threads: dict | None = None) -> None:
        """Commit the next rows of several runs at once: all data written and flushed,
        then every ``n_rows`` raised and flushed (two flushes, whatever the runs).
        ``rows_by_run``: run -> list of :class:`fastrank.rows.Rows` blocks, in order.
        Consecutive runs at the same row count are written as one block. ``threads``:
        run -> (numba threads, BLAS threads) of the process that computed it, recorded
        with the data (schema.THREAD_DATASETS)."""
        blocks = {run: [b for b in bs if len(b)] for run, bs in rows_by_run.items()}
        spans = [(run, int(self._rows[run]), self._checked(run, bs))
                 for run, bs in blocks.items() if bs]  # (run, start, rows)
        if not spans and not threads:
            return
        groups = _blocks(spans, key=lambda span: span)
        self._check_open()
        with self._writing():
            for runs in _blocks(threads or {}, key=lambda run: (run,)):
                counts = np.array([threads[run] for run in runs], np.int64)
                for name, column in zip(schema.THREAD_DATASETS, counts.T, strict=True):
                    _write(self._ds[name], (runs[0],), column)
        for group in groups:
            first, start = group[0][:2]
            arrays = self._arrays([blocks[run] for run, _, _ in group])
            with self._writing():
                for name, values in arrays.items():
                    _write(self._ds[name], (first, start), values)
        with self._writing():
            self._f.flush()
            self._touched = True
            for group in groups:
                first, end = group[0][0], group[0][1] + group[0][2]
                _write(self._ds["n_rows"], (first,), np.full(len(group), end, np.int64))
                self._rows[first : first + len(group)] = end
            self._f.flush()

    def _checked(self, run: int, blocks: list[Rows]) -> int:
        """The number of rows in ``blocks``, checked against ``run``'s schedule, the
        file's singular values and its tangents."""
        state, n = self.status(run), int(self._rows[run])
        if state in ("complete", "failed"):
            raise ValueError(f"run {run} is {state}: no more rows can be appended")
        layers = np.concatenate([b.layer for b in blocks])
        expected = self._points[run][n : n + len(layers)]
        if not np.array_equal(layers, expected):
            raise ValueError(f"run {run}: got rows for layers {layers.tolist()}, "
                             f"expected {expected.tolist()}")
        for b in blocks:
            beyond = b.spectrum[:, self._k :]  # only NaN padding may lie past the file's k
            if beyond.size and not np.isnan(beyond).all():
                raise ValueError(f"run {run}: spectrum has {b.spectrum.shape[1]} values, "
                                 f"the file holds {self._k}")
            for name in schema.TANGENT_DATASETS if self.sweep.tangents else ():
                values, want = b.measures.get(name), (len(b), self.sweep.tangents)
                if values is None or np.shape(values) != want:
                    got = "missing" if values is None else f"of shape {np.shape(values)}"
                    raise ValueError(f"run {run}: {name} {got}, the sweep's tangents make "
                                     f"it {want}")
        return len(layers)

    def _arrays(self, runs: list[list[Rows]]) -> dict[str, np.ndarray]:
        """The rows of consecutive runs (each a list of blocks, as many rows in each
        run) as one array per row dataset, (runs, rows[, sv | tau | tangent]): one copy
        of each value (spectra NaN-padded to the file's k)."""
        flat = [b for blocks in runs for b in blocks]
        shape = (len(runs), sum(len(b) for b in runs[0]))
        out = {}
        for name in schema.row_datasets(self.sweep):
            if name == "spectrum":
                parts = [b.spectra(self._k) for b in flat]
            elif name in _ROWS_FIELDS:
                parts = [getattr(b, name) for b in flat]
            else:
                parts = [b.measures[name] for b in flat]
            values = np.concatenate(parts)
            dtype = np.int64 if name in schema.INT_DATASETS else np.float64
            out[name] = values.astype(dtype, copy=False).reshape(*shape, *values.shape[1:])
        return out

    def fail(self, run: int, layer: int, reason: str) -> None:
        """Mark ``run`` failed at ``layer`` (e.g. non-finite values); its rows are kept."""
        if self.status(run) == "complete":
            raise ValueError(f"run {run} is complete: it cannot fail")
        self._check_open()
        with self._writing():
            self._touched = True
            self._ds["failure"][run] = schema.encode_failure(reason)
            self._f.flush()
            self._ds["failed_layer"][run] = int(layer)
            self._f.flush()
        self._failed[run] = True

    def close(self) -> None:
        """Close the file and release the writer's lock (unless :meth:`keep_lock`). A
        write that fails on the way (the last flush, the close's own write) is
        WriteFailed, the file as after a kill at that write; after a failed write the
        file is already closed."""
        try:
            if self._failure is None and self._f.id.valid:
                with self._writing():
                    self._f.flush()
                try:
                    close_file(self._f)
                except HDF5_ERRORS as exc:  # HDF5 has freed the file all the same
                    self._failure = write_failed(self.path, exc, KEPT)
                    raise self._failure from None
        finally:
            if not self._keep_lock:
                self._lock.release()

    def keep_lock(self) -> Writer:
        """Have :meth:`close` (and the end of a ``with`` block) leave the writer's lock
        held until :meth:`release_lock`: this process may then read the finished file
        before another writer can replace it (the command line's summary). Returns self."""
        self._keep_lock = True
        return self

    def release_lock(self) -> None:
        """Release the writer's lock (harmless when released already)."""
        self._lock.release()

    @property
    def failure(self) -> WriteFailed | None:
        """The failed write that ended this writer (its message says what became of the
        file), or None."""
        return self._failure

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure

    @contextlib.contextmanager
    def _writing(self):
        """HDF5's errors while writing as WriteFailed (the system's reason in one line),
        after which the file is closed at once without writing more (:func:`abandon`:
        on disk it stays as the failure left it) and, if it is new and never got a
        row, removed."""
        try:
            yield
        except HDF5_ERRORS as exc:
            self._give_up(exc)
            raise self._failure from None

    def _give_up(self, cause: BaseException) -> None:
        """After a failed write: close the file without writing, remove it if it is new
        and holds no row (no status was ever written), and keep the WriteFailed."""
        abandon(self._f)
        outcome = KEPT
        if self._fresh and not self._touched:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                outcome = REMOVED
        self._failure = write_failed(self.path, cause, outcome)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, WriteFailed) and self._failure is None:
            # a failed write that the caller met writing through this writer (a
            # backend's own write path): the file goes as after one of ours
            self._give_up(exc.__context__ or exc)
        self.close()


def _source(old: h5py.File, path: str, sweep: Sweep):
    """The layout of a file to resume (its reader, fastrank.store.layout), checked to be
    the format's for ``sweep`` (format 3: :func:`_layout_problem`); else DamagedFile
    naming what differs, in one line."""
    try:
        problem = _layout_problem(old, sweep) if int(old.attrs["format_version"]) >= 3 \
            else None
        source = None if problem else layout_of(old)
        if source is not None and source.n_runs != sweep.n_runs:
            problem = f"it holds {source.n_runs} runs, its sweep {sweep.n_runs}"
    except (*EDITED, AttributeError) as exc:
        problem = f"its layout does not read back ({one_line(exc, typed=True)})"
    if problem:
        raise DamagedFile(f"{path} is damaged: {problem}")
    return source


def _layout_problem(f: h5py.File, sweep: Sweep) -> str | None:
    """What in a format-3 file differs from the layout of ``sweep`` (schema.layout, made
    in memory to compare with): a dataset missing or of another kind (a group), rank,
    shape or type; None if nothing does. Files from before the thread columns may lack
    them (the reader gives -1)."""
    for name, (shape, kind) in _layout_of(sweep).items():
        if name in schema.THREAD_DATASETS and name not in f:
            continue
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            what = "missing" if obj is None else f"a {type(obj).__name__.lower()}"
            return f"{name} is {what}, not a dataset"
        if obj.shape != shape:
            return f"{name} has shape {obj.shape}, the sweep's layout {shape}"
        if _kind(obj.dtype) != kind:
            return f"{name} holds {obj.dtype} values, not {_KIND_NAMES[kind]}"
    return None


def _layout_of(sweep: Sweep) -> dict[str, tuple[tuple, str]]:
    """(shape, kind of values) of every dataset of a format-3 file of ``sweep``: its
    layout made in a file in memory."""
    name = f"fastrank-layout-{os.getpid()}-{id(sweep)}.h5"
    with h5py.File(name, "w", driver="core", backing_store=False,
                   libver=schema.LIBVER) as f:
        schema.layout(f, sweep, {})
        return {k: (v.shape, _kind(v.dtype)) for k, v in f.items()
                if isinstance(v, h5py.Dataset)}


def _kind(dtype: np.dtype) -> str:
    """Integers, floats or strings (fixed-size or, in early format-3 files, variable)."""
    if dtype.kind in "SUO":
        return "S"
    return "i" if dtype.kind in "iu" else dtype.kind


_KIND_NAMES = {"i": "integers", "f": "floats", "S": "strings"}
