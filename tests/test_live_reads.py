"""Reading a results file beside other readers and while it is written: never "damaged"
when it is not.

* In one process, ``fastrank.open`` and ``h5py.File`` / ``xarray.open_dataset`` share
  a file in either order, whatever file locking h5py was asked for.
* Many reads while a sweep writes (open, runs table, every array, refresh, the whole
  sweep as xarray, ``damaged()``) meet chunks and headers being rewritten and a file
  that grows under the cut-short check: none is reported as damage.
* The status columns (rows, failures) carry checksums: a flipped byte in them is
  damage, named, not a wrong count.
"""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import fastrank
from fastrank.store import DamagedFile

xarray = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
SMALL = fastrank.Sweep(grid={"width": [8], "depth": [30], "norm": ["none", "bn"]}, seeds=(0, 1))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return fastrank.sweep(SMALL, tmp_path_factory.mktemp("live") / "r.h5")


def _soft_ranks(path) -> np.ndarray:
    with fastrank.open(path) as results:
        return np.stack([run.soft_rank for run in results])


#: How a user's own open of the file may look (h5py's locking options, SWMR, xarray).
OTHER_OPENS = {
    "h5py": lambda p: h5py.File(p, "r"),
    "h5py locking=False": lambda p: h5py.File(p, "r", locking=False),
    "h5py locking=True": lambda p: h5py.File(p, "r", locking=True),
    "h5py best-effort": lambda p: h5py.File(p, "r", locking="best-effort"),
    "h5py swmr": lambda p: h5py.File(p, "r", swmr=True),
    "h5py latest": lambda p: h5py.File(p, "r", libver="latest"),
    "xarray": lambda p: xarray.open_dataset(p, engine="h5netcdf"),
}


@pytest.mark.parametrize("other", OTHER_OPENS)
def test_fastrank_opens_a_file_another_reader_of_this_process_holds(finished, other):
    want = _soft_ranks(finished)
    handle = OTHER_OPENS[other](finished)
    try:
        np.testing.assert_array_equal(_soft_ranks(finished), want)
        with fastrank.open(finished) as results:
            results.to_xarray()
            assert results.damaged() == []
        if other == "xarray":  # the other handle still reads after fastrank closed
            np.testing.assert_array_equal(handle.soft_rank.values, want)
        else:
            np.testing.assert_array_equal(handle["soft_rank"][()], want)
    finally:
        handle.close()


def test_h5py_and_xarray_open_a_file_fastrank_holds(finished):
    want = _soft_ranks(finished)
    with fastrank.open(finished) as results:
        with h5py.File(finished, "r") as f:
            np.testing.assert_array_equal(f["soft_rank"][()], want)
        with xarray.open_dataset(finished, engine="h5netcdf") as ds:
            np.testing.assert_array_equal(ds.soft_rank.values, want)
        np.testing.assert_array_equal(np.stack([run.soft_rank for run in results]), want)


#: The written sweep: 4 runs of 20,001 rows, every 20th layer measured, committed every
#: 20 ms: chunks are rewritten and appended while the reader reads, for ~10 s.
LIVE = ["--width", "8", "--depth", "400000", "--activation", "linear", "--norm", "none,bn",
        "--seed", "0-1", "--every", "20", "--log", "0", "--commit-every", "0.02", "-q"]


def _read(path, i: int) -> int:
    """Committed rows of every run, read the ways an analysis reads a live file: read
    ``i`` opens the file and reads the runs table; every third also every run's arrays
    and a refresh, every tenth the whole sweep as xarray and ``damaged()``."""
    with fastrank.open(path) as results:
        rows = int(results.runs["rows"].sum())
        if i % 3 == 0:
            for run in results:
                for name in ("spectrum", "soft_rank", "tier"):
                    run.measure(name)
            results.refresh()
        if i % 10 == 0:
            results.to_xarray()
            assert results.damaged() == [], results.damaged()
        return rows


@pytest.mark.slow
def test_reads_while_a_sweep_writes_are_never_called_damage(tmp_path):
    """Reads of the file as fast as they go while a sweep commits every 20 ms, from the
    moment the file appears to the end: every one succeeds (zero false reports), the
    committed rows never go back, and the finished file is complete."""
    path = tmp_path / "live.h5"
    env = {**__import__("os").environ, **ONE_THREAD}
    writer = subprocess.Popen([sys.executable, "-m", "fastrank", "sweep", *LIVE, "-o", str(path)],
                              env=env, stderr=subprocess.PIPE, text=True)
    reads, seen, failures = 0, [], []
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                seen.append(_read(path, reads))
            except (ValueError, OSError) as exc:
                failures.append(f"read {reads}: {type(exc).__name__}: {exc}")
            reads += 1
    finally:
        writer.kill() if writer.poll() is None else None
        _, err = writer.communicate()
    assert writer.returncode == 0, err
    print(f"\n{reads} reads while the sweep wrote, {len(failures)} failed; rows seen "
          f"{seen[:1]} .. {seen[-1:]}")
    assert not failures, f"{len(failures)} of {reads} live reads failed:\n" + "\n".join(
        failures[:10])
    assert reads >= 20 and len(set(seen)) > 5, f"too few live reads to mean anything: {seen}"
    assert seen == sorted(seen), "committed rows went back between reads"
    with fastrank.open(path) as results:
        assert list(results.runs["status"]) == ["complete"] * 4


def test_every_dataset_carries_checksums(finished):
    with h5py.File(finished, "r") as f:
        unchecked = [name for name in f if not f[name].fletcher32]
    assert not unchecked, f"datasets without Fletcher32: {unchecked}"


@pytest.mark.parametrize("name", ["n_rows", "numba_threads", "blas_threads"])
def test_a_flipped_byte_in_a_run_column_is_damage_named(finished, tmp_path, name):
    """The committed rows and the thread counts (the failure columns are made the same
    way, but have no chunk on disk in a sweep without failures)."""
    copy = tmp_path / "flipped.h5"
    data = bytearray(finished.read_bytes())
    with h5py.File(finished, "r") as f:
        chunk = f[name].id.get_chunk_info(0)
    data[chunk.byte_offset] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match=name) as refused:
        len(fastrank.open(copy).runs)
    assert "\n" not in str(refused.value)
    proc = subprocess.run([sys.executable, "-m", "fastrank", "info", "--check", str(copy)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("fastrank: error:") and f"damaged: {name}" in proc.stderr
