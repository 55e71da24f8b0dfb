"""The on-disk layouts of a results file, read through one interface: format 3's
datasets stacked along ``run`` (:class:`Stacked`) and the group per run of formats 1 and
2 (:class:`Grouped`), a file's chosen by :func:`layout_of`; and the rules on the runs'
status that both reading a file (fastrank.store.reader) and resuming it
(fastrank.store.writer) apply.

Every read is fresh from disk, so a SWMR reader sees the rows committed since the last.
"""

from __future__ import annotations

import h5py
import numpy as np

from fastrank.errors import one_line
from fastrank.store import schema
from fastrank.store.opening import DAMAGE, DamagedFile


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
                elif name not in (*schema.ROW_DATASETS, *schema.TANGENT_DATASETS):
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


def layout_of(f: h5py.File):
    """The reader of ``f``'s layout: Stacked (format 3) or Grouped (formats 1 and 2)."""
    return Stacked(f) if int(f.attrs["format_version"]) >= 3 else Grouped(f)


def run_status(rows: int, expected: int, failed: bool) -> str:
    """A run's status in words, from its committed ``rows``, the ``expected`` rows of
    the complete run and whether it ``failed``: pending, running, complete or failed."""
    if failed:
        return "failed"
    return "complete" if rows >= expected else ("running" if rows else "pending")
