"""The results file: round trip, statuses, overwrite protection, xarray access, padding,
format checks, a SWMR reader in another process, and recovery after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_harness import flip_in_chunk

import fastrank
from fastrank import store
from fastrank.measures import SCALARS, all_measures
from fastrank.rows import Row
from fastrank.spec import Schedule, Sweep
from fastrank.store import Writer
from fastrank.version import FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSION_WITHOUT_TANGENTS

TESTS = Path(__file__).parent
SCHEDULE = Schedule(every=5, log=None)  # layers 0, 5, 10, 15, 20


def small_sweep(seeds=(0, 1)) -> Sweep:
    return Sweep(
        grid={"width": (8,), "depth": (20,), "batch": (6,)}, seeds=seeds, schedule=SCHEDULE
    )


SWEEP4 = small_sweep(seeds=(0, 1, 2, 3))


def make_row(run: int, layer: int, size: int = 6, d: int = 8, taus=(0.1,)) -> Row:
    """A made-up but self-consistent row, the same for the same (run, layer)."""
    rng = np.random.default_rng([run, layer])
    s = np.sort(rng.random(size) + 0.01)[::-1]
    return Row(layer, s, float(rng.normal()), all_measures(s, (d, 6), "float32", taus))


def fill(writer: Writer, run: int, start: int, stop: int, **kw) -> None:
    """Append rows start..stop-1 of ``run``'s schedule."""
    net, _ = writer.sweep.runs()[run]
    for layer in writer.sweep.schedule.points(net.depth)[start:stop]:
        writer.append(run, make_row(run, int(layer), **kw))


def check_rows(run, count: int, **kw) -> None:
    """``run`` holds exactly the first ``count`` made-up rows."""
    layers = SCHEDULE.points(20)[:count]
    assert run.rows == count and run.layer.tolist() == layers.tolist()
    rows = [make_row(run.index, int(layer), **kw) for layer in layers]
    assert run.spectrum.shape == (count, 6)
    np.testing.assert_array_equal(
        run.spectrum, np.array([r.spectrum for r in rows]).reshape(count, 6)
    )
    np.testing.assert_array_equal(run.log_norm, [r.log_norm for r in rows])
    np.testing.assert_array_equal(
        run.rank_tau, np.array([r.measures["rank_tau"] for r in rows]).reshape(count, 1)
    )
    for name in SCALARS:
        np.testing.assert_array_equal(getattr(run, name), [r.measures[name] for r in rows])


def test_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {"host": "test", "backend": "cpu"}) as w:
        assert w.sweep == small_sweep() and w.pending() == [0, 1]
        fill(w, 0, 0, 5)  # row by row
        w.extend(1, [make_row(1, layer) for layer in (0, 5, 10)])  # or several at once
        w.extend(1, [])
        with pytest.raises(ValueError, match=r"expected \[15, 20\]"):
            w.extend(1, [make_row(1, layer) for layer in (15, 20, 25)])
        w.extend(1, [make_row(1, layer) for layer in (15, 20)])
        assert w.pending() == []
    with store.open(path) as r:
        assert r.attrs["format"] == FORMAT_NAME
        assert r.attrs["format_version"] == FORMAT_VERSION_WITHOUT_TANGENTS
        assert r.attrs["provenance"] == {"host": "test", "backend": "cpu"}
        assert r.attrs["created"].endswith("+00:00")
        assert r.sweep == small_sweep() and len(r) == 2
        for run in r:
            check_rows(run, 5)
            assert run.status == "complete" and run.failure == "" and run.failed_layer is None
            assert run.network.width == 8 and run.taus.tolist() == [0.1]
        assert r[1].seed == 1 and r["00001"] is r[1] and r[-1] is r[1]
        assert r[0].numerical_rank.dtype == np.int64
        np.testing.assert_array_equal(r[0].measure("soft_rank"), r[0].soft_rank)
        table = r.runs
        assert table["id"].tolist() == ["00000", "00001"] and table["seed"].tolist() == [0, 1]
        assert table["width"].tolist() == [8, 8] and table["gain"].tolist() == [1.0, 1.0]
        assert table["status"].tolist() == ["complete"] * 2 and table["rows"].tolist() == [5, 5]
        assert table["final_soft_rank"][0] == r[0].soft_rank[-1]
        assert math.isinf(table["gamma"][0]) and table["label"][0] == r[0].network.label()
        assert [run.index for run in r.select(seed=1)] == [1]
        assert [run.index for run in r.select(seed=[0, 1], activation="linear")] == [0, 1]
        with pytest.raises(KeyError):
            r.select(colour="red")
        with pytest.raises(IndexError):
            r[2]
        assert list(r.to_pandas()["id"]) == ["00000", "00001"]
    with h5py.File(path, "r") as f:  # the layout, seen without fastrank
        assert f["seed"][1] == 1 and f["expected_rows"][1] == 5 and f["n_rows"][1] == 5
        assert json.loads(f["network"][f["config_of_run"][1]])["width"] == 8
        assert f["sv"][()].tolist() == list(range(6))
        assert f["soft_rank"].shape == (2, 5) and f["spectrum"].shape == (2, 5, 6)
        assert f["soft_rank"].fletcher32 and f["spectrum"].dims[0][0].name == "/run"


def test_statuses_and_failure(tmp_path):
    path = tmp_path / "r.h5"
    with Writer.create(path, SWEEP4, {}) as w:
        fill(w, 0, 0, 5)
        fill(w, 1, 0, 2)
        fill(w, 2, 0, 2)
        w.fail(2, 10, "non-finite values at layer 10 ✗")
        assert [w.status(i) for i in range(4)] == ["complete", "running", "failed", "pending"]
        assert w.pending() == [1, 3]
        for run in (0, 2):
            with pytest.raises(ValueError, match="no more rows"):
                w.append(run, make_row(run, 10))
        with pytest.raises(ValueError, match=r"expected \[10\]"):
            w.append(1, make_row(1, 15))
        with pytest.raises(ValueError, match="complete"):
            w.fail(0, 20, "too late")
    with store.open(path) as r:
        assert r.runs["status"].tolist() == ["complete", "running", "failed", "pending"]
        assert r.runs["rows"].tolist() == [5, 2, 2, 0]
        assert math.isnan(r.runs["final_soft_rank"][3])
        assert r[2].failure == "non-finite values at layer 10 ✗" and r[2].failed_layer == 10
        check_rows(r[2], 2)
        check_rows(r[3], 0)
        assert [run.index for run in r.select(status="failed")] == [2]


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    Writer.create(path, small_sweep(), {"n": 1}).close()
    with pytest.raises(FileExistsError):
        Writer.create(path, SWEEP4, {"n": 2})
    with store.open(path) as r:
        assert len(r) == 2 and r.attrs["provenance"] == {"n": 1}
    with Writer.create(path, SWEEP4, {"n": 2}, overwrite=True) as w:
        fill(w, 3, 0, 1)
    with store.open(path) as r:
        assert len(r) == 4 and r.attrs["provenance"] == {"n": 2} and r[3].rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]  # no temporary files left


def test_xarray(tmp_path):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 5)
        fill(w, 1, 0, 3)
    # the file itself is netCDF-4: dims run, row, sv, tau; -1 is the ranks' _FillValue
    with xarray.open_dataset(path, engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"run": 2, "row": 5, "sv": 6, "tau": 1, "config": 1}
        assert ds["spectrum"].dims == ("run", "row", "sv")
        assert ds["rank_tau"].dims == ("run", "row", "tau")
        assert ds["layer"].values[0].tolist() == [0, 5, 10, 15, 20]
        assert ds["n_rows"].values.tolist() == [5, 3] and ds["seed"].values.tolist() == [0, 1]
        assert np.isnan(ds["numerical_rank"].values[1, 3:]).all()
    with store.open(path) as r:
        ds = r[1].to_xarray()
        assert dict(ds.sizes) == {"layer": 3, "sv": 6, "tau": 1}
        np.testing.assert_array_equal(ds["spectrum"].values, r[1].spectrum)
        whole = r.to_xarray()
        assert dict(whole.sizes) == {"run": 2, "row": 5, "sv": 6, "tau": 1}
        np.testing.assert_array_equal(whole["soft_rank"].values[1, :3], r[1].soft_rank)
        assert np.isnan(whole["soft_rank"].values[1, 3:]).all()
        assert whole["seed"].values.tolist() == [0, 1]
        assert whole["status"].values.tolist() == ["complete", "running"]
        tidy = r.to_pandas(long=True)
        assert len(tidy) == 8 and tidy["run"].tolist() == [0] * 5 + [1] * 3
        np.testing.assert_array_equal(tidy["soft_rank"][tidy["run"] == 1], r[1].soft_rank)
        assert (tidy["width"] == 8).all() and tidy["seed"].tolist() == [0] * 5 + [1] * 3


def test_per_layer_widths_pad_spectrum(tmp_path):
    widths = (4, 10, 3, 10)
    sweep = Sweep(
        grid={"width": (widths,), "depth": (4,), "batch": (6,)},
        schedule=Schedule(every=1, log=None),
    )
    path = tmp_path / "r.h5"
    sizes = [4, 4, 6, 3, 6]  # min(width at layer, batch); layer 0 has the input's width 4
    with Writer.create(path, sweep, {}) as w:
        for layer, size in enumerate(sizes):
            w.append(0, make_row(0, layer, size=size))
        with pytest.raises(ValueError, match="complete"):
            w.append(0, make_row(0, 5))
    with store.open(path) as r:
        run = r[0]
        assert run.spectrum.shape == (5, 6) and run.network.width == widths
        for i, size in enumerate(sizes):
            assert (
                np.isfinite(run.spectrum[i, :size]).all() and np.isnan(run.spectrum[i, size:]).all()
            )
        assert r.runs["width"].tolist() == [-1]
    with pytest.raises(ValueError, match="spectrum has 7"):
        with Writer.create(tmp_path / "s.h5", sweep, {}) as w:
            w.append(0, make_row(0, 0, size=7))


def test_rejects_foreign_files(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    for path in (foreign, text):
        with pytest.raises(ValueError, match="not a"):
            store.open(path)
        with pytest.raises(ValueError, match="not a"):
            Writer.resume(path)
    with pytest.raises(FileNotFoundError):
        store.open(tmp_path / "missing.h5")
    newer = tmp_path / "newer.h5"
    Writer.create(newer, small_sweep(), {}).close()
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        store.open(newer)
    with pytest.raises(ValueError, match="newer"):
        Writer.resume(newer)


READER = """
import json, sys
import fastrank
from fastrank import store
r = store.open(sys.argv[1])
first = r[0]
def report():
    r.refresh()
    out = {"rows": r.runs["rows"].tolist(), "status": r.runs["status"].tolist(),
           "layer": first.layer.tolist(), "soft_rank": first.soft_rank.tolist(),
           "failure": [run.failure for run in r]}
    try:
        import xarray, h5netcdf
        out["xarray_layers"] = first.to_xarray().sizes["layer"]
    except ImportError:
        pass
    print(json.dumps(out), flush=True)
report()
sys.stdin.readline()
report()
"""


@pytest.mark.slow
def test_swmr_reader_in_another_process(tmp_path):
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 2)
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            before = json.loads(proc.stdout.readline() or "null")
            fill(w, 0, 2, 5)
            w.fail(1, 0, "boom")
            proc.stdin.write("\n")
            proc.stdin.flush()
            after = json.loads(proc.stdout.readline() or "null")
        finally:
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert before["rows"] == [2, 0] and before["status"] == ["running", "pending"]
    assert before["layer"] == [0, 5]
    assert before["soft_rank"] == [make_row(0, layer).measures["soft_rank"] for layer in (0, 5)]
    assert after["rows"] == [5, 0] and after["status"] == ["complete", "failed"]
    assert after["layer"] == [0, 5, 10, 15, 20] and after["failure"] == ["", "boom"]
    if "xarray_layers" in before:
        assert (before["xarray_layers"], after["xarray_layers"]) == (2, 5)


KILLED = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from test_store import SWEEP4, fill
import fastrank
from fastrank import store
from fastrank.store import Writer
w = Writer.create(sys.argv[1], SWEEP4, {"host": "killed"})
fill(w, 0, 0, 5)
fill(w, 1, 0, 2)
w.fail(1, 10, "diverged")
fill(w, 2, 0, 3)
for name in store.ROW_DATASETS:  # a torn 4th row: data written, n_rows not yet raised
    w._ds[name][2, 3] = w._ds[name][2, 2]
w._f.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_then_read_and_resume(tmp_path):
    path = tmp_path / "r.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(path), str(TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if h5py.version.hdf5_version_tuple >= (1, 10):  # SWMR status flags left set: the trap
        with pytest.raises(OSError):
            h5py.File(path, "a")
    with store.open(path) as r:
        assert r.runs["status"].tolist() == ["complete", "failed", "running", "pending"]
        for run, count in zip(r, (5, 2, 3, 0), strict=True):
            check_rows(run, count)
        assert r[1].failure == "diverged" and r[1].failed_layer == 10
        kept = {name: r[0].measure(name).tobytes() for name in store.ROW_DATASETS}
        created = r.attrs["created"]
    with Writer.resume(path) as w:
        assert [w.status(i) for i in range(4)] == ["complete", "failed", "pending", "pending"]
        assert w.pending() == [2, 3]
        for run in w.pending():
            fill(w, run, 0, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]
    with store.open(path) as r:
        assert r.attrs["created"] == created and r.attrs["provenance"] == {"host": "killed"}
        assert r.runs["status"].tolist() == ["complete", "failed", "complete", "complete"]
        assert all(r[0].measure(name).tobytes() == b for name, b in kept.items())
        assert r[1].failure == "diverged" and r[1].failed_layer == 10
        for run, count in zip(r, (5, 2, 5, 5), strict=True):
            check_rows(run, count)
    h5py.File(path, "a").close()  # closed cleanly: an ordinary HDF5 file again
    Writer.resume(path).close()  # and resumable again


def test_a_format_2_file_reads_as_the_same_sweep_in_format_3(tmp_path):
    """tests/data/format2.h5 was written by the format-2 writer; the same sweep written
    now (format 3) holds the same numbers (to the last bits of the eigensolver, which
    has changed since), and resuming the old file rewrites it as format 3 without
    changing them."""
    old = TESTS / "data" / "format2.h5"
    with store.open(old) as r2:
        assert r2.attrs["format_version"] == 2
        sweep = r2.sweep
        fresh = tmp_path / "fresh.h5"
        fastrank.sweep(sweep, fresh)
        copy = tmp_path / "old.h5"
        copy.write_bytes(old.read_bytes())
        fastrank.sweep(None, copy, resume=True)
        for path in (fresh, copy):
            with store.open(path) as r3:
                assert r3.attrs["format_version"] == FORMAT_VERSION_WITHOUT_TANGENTS
                assert r3.runs["status"].tolist() == r2.runs["status"].tolist()
                assert r3.runs["label"].tolist() == r2.runs["label"].tolist()
                for a, b in zip(r2, r3, strict=True):
                    assert (a.rows, a.failed_layer, a.failure) == (b.rows, b.failed_layer,
                                                                   b.failure)
                    for name in store.ROW_DATASETS:
                        x, y = a.measure(name), b.measure(name)
                        if path == copy or not np.issubdtype(x.dtype, np.floating):
                            np.testing.assert_array_equal(x, y)  # carried over as stored
                        else:  # recomputed now, by another eigensolver since
                            _same_to_eigensolver_accuracy(name, x, y, a.measure("spectrum"),
                                                          b.measure("spectrum"))


def _same_to_eigensolver_accuracy(name, x, y, sv_x, sv_y):
    """Two computations of a measure whose spectra came from different float64 Gram
    eigensolvers. Each Gram eigenvalue is good to c k eps lambda_max (c = 8, as
    tests/test_kernels.py checks), so a singular value to noise = sqrt(c k eps) s_max:
    the spectra agree to that; the effective rank (entropy of p = s / sum s) to
    k d (1 + |log d|), d = noise / sum s; the condition number to 2 noise / s_min where
    s_min is above 10 noise on both sides (below, it measures the noise); the measures
    of sums of s^2 and s^4 to float64 rounding amplified by cancellation (1e-9)."""
    np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
    x, y = np.nan_to_num(x), np.nan_to_num(y)
    k = sv_x.shape[1]
    s_max = np.nan_to_num(np.fmax(sv_x[:, 0], sv_y[:, 0]))
    noise = np.sqrt(8 * k * np.finfo(float).eps) * s_max
    if name == "spectrum":
        assert np.all(np.abs(x - y) <= noise[:, None])
    elif name == "effective_rank":
        d = noise / np.fmax(np.nansum(sv_x, axis=1), np.finfo(float).tiny)
        assert np.all(np.abs(x - y) <= k * d * (1 - np.log(np.fmax(d, np.finfo(float).tiny))))
    elif name == "condition_number":
        s_min = np.fmin(np.nan_to_num(sv_x, nan=np.inf).min(axis=1),
                        np.nan_to_num(sv_y, nan=np.inf).min(axis=1))
        ok = s_min > 10 * noise
        np.testing.assert_allclose(x[ok], y[ok], rtol=np.max(2 * noise[ok] / s_min[ok],
                                                             initial=0.0))
    else:
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=0)


def test_the_layout_does_not_grow_with_the_runs(tmp_path):
    """10,000 runs: the same HDF5 objects as 4 runs (runs are an array dimension, not
    groups), a few MB before the first row, and the runs table reads whole."""
    def objects(path):
        with h5py.File(path, "r") as f:
            names = []
            f.visit(names.append)
            return sorted(names)

    few, many = tmp_path / "few.h5", tmp_path / "many.h5"
    Writer.create(few, small_sweep(seeds=tuple(range(4))), {}).close()
    Writer.create(many, small_sweep(seeds=tuple(range(10_000))), {}).close()
    assert objects(few) == objects(many)
    assert many.stat().st_size < 10e6
    with store.open(many) as r:
        assert len(r.runs) == 10_000 and set(r.runs["status"]) == {"pending"}


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    from fastrank.lock import WriterLocked

    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 2)
        with pytest.raises(WriterLocked, match=f"{path.name} is being written by pid"):
            Writer.create(path, small_sweep(), {}, overwrite=True)
        with pytest.raises(WriterLocked):
            Writer.resume(path)
        fill(w, 0, 2, 5)
    with store.open(path) as r:
        check_rows(r[0], 5)
    Writer.resume(path).close()  # the lock went with the first writer


def test_a_refused_resume_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 3)
    before = path.read_bytes()
    with pytest.raises(store.SweepMismatch, match="differs in: seeds"):
        Writer.resume(path, small_sweep(seeds=(5,)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_flipped_data_byte_is_caught_by_its_checksum(tmp_path):
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 5)
        fill(w, 1, 0, 5)
    flip_in_chunk(path, "soft_rank", 3, 0x10)
    with store.open(path) as r:
        assert r.damaged() == ["soft_rank: runs 00000, 00001 do not read back as written"]
        with pytest.raises(store.DamagedFile, match="soft_rank does not read back"):
            r[0].measure("soft_rank")
        assert r[1].spectrum.shape == (5, 6)  # other datasets still read


def test_layout_types_keep_their_string_encoding_whatever_came_first():
    """The layout makes each HDF5 type once; numpy finds h5py's UTF-8 ``S1024`` (the
    ``failure`` column) equal to a plain ASCII one, so the encoding must be part of the
    key, or the type made first would serve both."""
    from fastrank.store import schema

    utf8, plain = h5py.string_dtype("utf-8", 1024), np.dtype("S1024")
    assert utf8 == plain  # why the key needs the encoding
    for first in (utf8, plain):
        schema._h5type_of.cache_clear()
        schema._h5type(first)
        assert schema._h5type(utf8).get_cset() == h5py.h5t.CSET_UTF8
        assert schema._h5type(plain).get_cset() == h5py.h5t.CSET_ASCII


def test_a_run_sees_rows_committed_since_it_was_read_after_refresh(tmp_path):
    """A Run keeps its status and arrays until :meth:`Run.refresh`, which reads the rows
    the writer committed meanwhile; an unknown measure is a KeyError naming the choices
    and a closed file a ValueError saying so."""
    path = tmp_path / "r.h5"
    with Writer.create(path, small_sweep(), {}) as w:
        fill(w, 0, 0, 2)
        with store.open(path) as r:
            run = r[0]
            check_rows(run, 2)
            assert run.status == "running"
            fill(w, 0, 2, 5)
            w.fail(1, 5, "diverged")
            assert run.rows == 2 and run.layer.tolist() == [0, 5]  # as last read
            run.refresh()
            check_rows(run, 5)
            assert run.status == "complete"
            assert r.runs["status"].tolist() == ["complete", "failed"]  # the Results' too
            with pytest.raises(KeyError, match="unknown measure 'soft_ranks': choose from "
                                               "layer, spectrum"):
                run.measure("soft_ranks")
            soft = run.soft_rank
            other = r[1]
        assert run.soft_rank is soft  # read before closing: kept
        with pytest.raises(ValueError, match=f"{path} is closed: run 00001 cannot read layer"):
            other.layer  # noqa: B018


def test_the_writer_lock_as_a_context_manager_holds_the_file_inside_only(tmp_path, monkeypatch):
    from fastrank import lock

    monkeypatch.setattr(lock, "RETRY_S", 0.0)  # a held lock is refused at once
    path = tmp_path / "r.h5"
    sidecar = Path(lock.sidecar(path))
    with lock.WriterLock(path) as held:
        assert held.held and lock.writer_alive(path)
        assert sidecar.read_text().split()[0] == str(os.getpid())
        with pytest.raises(lock.WriterLocked, match=f"{path} is being written by pid"):
            lock.WriterLock(path).acquire()
        with pytest.raises(lock.WriterLocked):
            Writer.create(path, small_sweep(), {})
    assert not held.held and not lock.writer_alive(path) and not sidecar.exists()
    assert not path.exists()
    with pytest.raises(RuntimeError, match="inside"), lock.WriterLock(path) as inner:
        raise RuntimeError("inside")
    assert not inner.held and not lock.writer_alive(path)
    with lock.WriterLock(path) as again:  # free again
        assert again.held
    held.release()  # releasing twice is harmless
    assert not held.held


def test_a_format_2_file_with_an_unreadable_run_is_named_by_the_check(tmp_path):
    """Format 2 has no checksums: ``damaged()`` (``fastrank info --check``) finds nothing
    in an intact file, and names the run whose rows do not read (a dataset gone)."""
    from click.testing import CliRunner

    from fastrank.cli import cli

    old = TESTS / "data" / "format2.h5"
    with store.open(old) as r:
        assert r.attrs["format_version"] == 2 and r.damaged() == []
    copy = tmp_path / "old.h5"
    copy.write_bytes(old.read_bytes())
    with h5py.File(copy, "r+") as f:
        del f["runs/00003/orthogonality_gap"]
    with store.open(copy) as r:
        assert r.damaged() == ["orthogonality_gap: runs 00003 do not read back as written"]
        with pytest.raises(store.DamagedFile, match="run 00003: orthogonality_gap does not"):
            r[3].orthogonality_gap  # noqa: B018
        assert len(r[2].orthogonality_gap) == r[2].rows > 0  # the other runs still read
    result = CliRunner().invoke(cli, ["info", "--check", str(copy)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (f"fastrank: error: {copy} is damaged: orthogonality_gap: runs 00003 do "
                        "not read back as written")
