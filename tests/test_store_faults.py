"""Faults of the results store, tested through its public interfaces only.

The store's promises, checked from outside (``python -m fastrank sweep|info``,
``fastrank.open``, ``fastrank.sweep``), never through the HDF5 layout (groups and
datasets are an implementation detail that changes between format versions):

* one writer per file: a second writer is refused in one line naming the holder, and
  the first writer's file ends complete and correct;
* a file appears under its name ready for readers: a reader that opens it the moment
  it appears never breaks the writer;
* a sweep killed at any system call of its creation, of its commits or of a resume
  leaves a file (or no file) that ``fastrank info`` reads and ``--resume`` completes to
  the numbers of an uninterrupted sweep, bitwise;
* finished files are read strictly: a truncated or corrupted file gives a one-line
  error or a correct read, never a traceback, a hang or silently changed numbers;
* a refused resume leaves the file byte for byte as it was;
* stale staging files of an output are removed by its next writer.

Run as a script (``python tests/test_store_faults.py MODE ...``) this file is also the
helper process of some tests: the kill driver (MODE kill), the writer and the reader of
the open-as-it-appears race, and the checker of damaged copies.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import fastrank
from fastrank.errors import one_line
from fastrank.measures import SCALARS

THIS = Path(__file__).resolve()
STRACE = shutil.which("strace") or "/usr/bin/strace"
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ENV = {**os.environ, **ONE_THREAD}
#: Run arrays compared between files (besides status and rows).
ARRAYS = ("layer", "spectrum", "soft_rank", "log_norm")

# A sweep that streams rows for several seconds (4 runs of 10000 layers, every layer
# measured, committed every 0.05 s): long enough for two more writers to be refused
# (each retries a held lock for 2 s before it gives up).
LONG = ["--width", "8", "--depth", "10000", "--activation", "linear", "--norm", "none,bn",
        "--seed", "0-1", "--every", "1", "--log", "0", "--commit-every", "0.05", "-q"]
# A small finished file (4 runs of 51 rows) for the damage and refused-resume tests.
SMALL = ["--width", "8", "--depth", "50", "--activation", "linear", "--norm", "none,bn",
         "--seed", "0-1", "--every", "1", "--log", "0", "-q"]


# Helpers of the tests ------------------------------------------------------------------


def fastrank_cli(*args, timeout=120.0, cwd=None) -> subprocess.CompletedProcess:
    """``python -m fastrank ARGS``; a run past ``timeout`` fails the test as a hang."""
    try:
        return subprocess.run([sys.executable, "-m", "fastrank", *map(str, args)], env=ENV,
                              cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fastrank {' '.join(map(str, args))} hung (no answer in {timeout} s)")


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_runs(path) -> list[dict]:
    """Every run of a results file: status, rows and its arrays, through fastrank.open."""
    with fastrank.open(path) as results:
        table = results.runs
        runs = []
        for i, run in enumerate(results):
            runs.append({"status": str(run.status), "rows": int(run.rows),
                         "table_status": str(table["status"][i]),
                         "table_rows": int(table["rows"][i]),
                         **{name: np.asarray(getattr(run, name)) for name in ARRAYS}})
        return runs


def assert_same_runs(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} runs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for key in ("status", "rows", "table_status", "table_rows"):
            assert g[key] == w[key], f"{what}: run {i}: {key} {g[key]!r}, expected {w[key]!r}"
        for name in ARRAYS:
            np.testing.assert_array_equal(g[name], w[name], err_msg=f"{what}: run {i}: {name}")


def assert_complete(runs: list[dict], what: str) -> None:
    statuses = [r["status"] for r in runs]
    assert statuses == ["complete"] * len(runs), f"{what}: statuses {statuses}"
    assert [r["table_status"] for r in runs] == statuses, f"{what}: runs table disagrees"


def helper(mode: str, *args, env=None) -> subprocess.Popen:
    """This file run as a helper process (see the bottom of the file)."""
    return subprocess.Popen([sys.executable, str(THIS), mode, *map(str, args)],
                            env={**ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_helper(proc: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} did not end in {timeout} s\n{out[-3000:]}\n{err[-3000:]}")
    return out, err


def driver_reports(drivers: list[subprocess.Popen], folder: Path, what: str) -> list[dict]:
    """The report of each driver process (``folder/w{i}/report.json``), once it ended
    well within 900 s; the test is skipped where a driver says why it must be."""
    reports = []
    for w, proc in enumerate(drivers):
        _, err = wait_helper(proc, 900, f"{what} {w}")
        assert proc.returncode == 0, f"{what} {w}: rc {proc.returncode}\n{err[-5000:]}"
        reports.append(json.loads((folder / f"w{w}" / "report.json").read_text()))
    if any("skip" in r for r in reports):
        pytest.skip(next(r["skip"] for r in reports if "skip" in r))
    return reports


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    """A finished file of the SMALL sweep (read-only for the tests: copy it)."""
    path = tmp_path_factory.mktemp("small") / "small.h5"
    proc = fastrank_cli("sweep", *SMALL, "-o", path)
    assert proc.returncode == 0, proc.stderr
    return path


# 1. One writer per file ----------------------------------------------------------------


def test_a_second_writer_is_refused_and_the_first_file_is_intact(tmp_path):
    path, clean = tmp_path / "r.h5", tmp_path / "clean.h5"
    start = lambda *extra: subprocess.Popen(  # noqa: E731  (24x LONG: B and C take 2 s each)
        [sys.executable, "-m", "fastrank", "sweep", *LONG, "--depth", "240000", *extra], env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    a = start("-o", str(path))
    reference = start("-o", str(clean))  # the same sweep, uninterrupted, meanwhile
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert a.poll() is None, f"sweep A ended (rc {a.returncode}) before its file appeared"
            assert time.monotonic() < deadline, "sweep A's file did not appear in 60 s"
            time.sleep(0.005)
        b = start("--overwrite", "-o", str(path))
        c = start("--resume", "-o", str(path))
        others = (b, c)
        for name, proc in (("B (--overwrite)", b), ("C (--resume)", c)):
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"writer {name} hung on a file being written")
            lines = [line for line in err.splitlines() if line.strip()]
            assert proc.returncode == 2, f"writer {name}: rc {proc.returncode}\n{err}"
            assert a.poll() is None, (
                f"sweep A ended before writer {name} answered: the test proves nothing")
            assert len(lines) == 1, f"writer {name}: {len(lines)} stderr lines:\n{err}"
            assert lines[0].startswith("fastrank: error:"), lines[0]
            assert "being written" in lines[0], lines[0]
            assert f"pid {a.pid}" in lines[0] and socket.gethostname() in lines[0], (
                f"writer {name} does not name the holder (pid {a.pid}): {lines[0]}")
    finally:
        for proc in locals().get("others", ()):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _, err_a = a.communicate(timeout=300)
        _, err_ref = reference.communicate(timeout=300)
    assert a.returncode == 0, err_a
    assert reference.returncode == 0, err_ref
    got, want = read_runs(path), read_runs(clean)
    assert_complete(got, "A's file")
    assert_same_runs(got, want, "A's file against an uninterrupted sweep")


# 2. A reader opening the file the moment it appears ----------------------------------

RACE_TRIALS = 60


def test_a_reader_opening_the_file_as_it_appears_never_breaks_the_writer(tmp_path):
    """RACE_TRIALS sweeps (fastrank.sweep in one writer process) each raced by a reader
    process that spins on os.path.exists and opens the file (fastrank.open, .runs) the
    moment it appears. Neither may fail: a file that appears is laid out whole, and a
    live file's transient states are not damage."""
    t0 = time.monotonic()
    reader = helper("reader", tmp_path, RACE_TRIALS)
    writer = helper("writer", tmp_path, RACE_TRIALS)
    w_out, w_err = wait_helper(writer, 300, "the writer process")
    r_out, r_err = wait_helper(reader, 60, "the reader process")
    assert writer.returncode == 0, (
        f"the writer process died (rc {writer.returncode}) after trials:\n{w_out[-2000:]}"
        f"\n{w_err[-3000:]}")
    assert reader.returncode == 0, f"reader rc {reader.returncode}\n{r_err[-3000:]}"
    wrote = json.loads((tmp_path / "writer.json").read_text())
    read = json.loads((tmp_path / "reader.json").read_text())
    broken = {i: e for i, e in enumerate(wrote) if e is not None}
    assert not broken, f"sweeps that failed while a reader opened their file: {broken}"
    reference = read_runs(tmp_path / "r0.h5")
    assert_complete(reference, "trial 0")
    for i in range(1, RACE_TRIALS):
        assert_same_runs(read_runs(tmp_path / f"r{i}.h5"), reference, f"trial {i}")
    errors = [e for e in read if e["error"]]
    assert not errors, f"reads of a file as it appeared failed: {errors[:5]}"
    early = [e for e in read if e["rows"] is not None and e["rows"] < e["expected"]]
    assert early, "the reader never opened a file before it was complete: no race"
    print(f"\n{RACE_TRIALS} trials in {time.monotonic() - t0:.1f} s: the reader opened "
          f"{len(early)} files before they were complete, failed {len(errors)} times "
          f"({sorted({e['error'] for e in errors})[:5]})")


# 3. Kill at every system call of creation, commits and resume -------------------------

#: The killed sweep: 2 runs (two networks, so two groups), 3 rows each (layers 0, 5 and
#: 10), every stretch committed on its own (--commit-every 0; the input's row rides with
#: the first): 4 commits, and the creation and each commit a few dozen system calls.
KILL_GRID = ["--width", "4", "--depth", "10", "--activation", "linear", "--norm", "none,bn",
             "--seed", "0", "--every", "5", "--log", "0", "--commit-every", "0", "-q"]
KILL_WORKERS = 2


@pytest.mark.slow
def test_kill_at_every_system_call_of_creation_and_resume(tmp_path):
    """SIGKILL at each system call (strace fault injection), from the writer's first
    touch of its output to its exit, of a fresh sweep and of the resume of a killed
    one; after each kill `fastrank info` answers in 10 s with exit 0 (or the file does
    not exist yet) and `--resume` finishes the sweep to the uninterrupted numbers.

    Two driver processes share the calls (even and odd). Each imports fastrank once
    and runs every sweep, info and resume as the `fastrank` command line in a forked
    child (a `python -m fastrank` start costs ~1 s, a fork a few ms; numba's threading
    layer is workqueue, as GNU OpenMP's does not survive a fork); the child to kill
    stops itself, strace attaches to it (its main thread only), and it goes on. strace
    counts injections per system call name and tracee, so the N-th call overall is hit
    as the K-th call of its name (from a reference trace of the same forked sweep);
    each kill is checked against the reference (same call, same arguments). After a
    kill that left exactly the files of an earlier kill (same names, same bytes), info
    and --resume, deterministic functions of those files, are not run again."""
    if not os.access(STRACE, os.X_OK):
        pytest.skip(f"strace not found at {STRACE}")
    t0 = time.monotonic()
    fork_safe = {"NUMBA_THREADING_LAYER": "workqueue"}  # GNU OpenMP's is not
    drivers = [helper("kill", tmp_path / f"w{w}", w, KILL_WORKERS, env=fork_safe)
               for w in range(KILL_WORKERS)]
    reports = driver_reports(drivers, tmp_path, "kill driver")
    lines, failures = [], []
    for phase in ("create", "resume"):
        parts = [r[phase] for r in reports]
        for w, p in enumerate(parts):  # each driver killed its share of its own window
            share = [n for n in range(p["window"][0], p["window"][1] + 1)
                     if n % KILL_WORKERS == w]
            assert p["covered"] == share, f"{phase}: driver {w} left calls out"
        covered = sum(len(p["covered"]) for p in parts)
        exact = sum(p["exact"] for p in parts)
        drifted = [d for p in parts for d in p["drifted"]]
        missed = [d for p in parts for d in p["not_killed"]]
        failures += [f"{phase}: {f}" for p in parts for f in p["failures"]]
        seconds = {k: round(sum(p["seconds"][k] for p in parts), 1) for k in parts[0]["seconds"]}
        states = sum(p["states"] for p in parts)
        lines.append(
            f"{phase}: {parts[0]['calls']} system calls traced, windows "
            f"{[p['window'] for p in parts]} (from the first call naming the output to the "
            f"exit), {covered} kills: {exact} on the reference call, {len(drifted)} on "
            f"another call of that name, {len(missed)} never reached; {states} distinct sets "
            f"of files left, each checked with info and --resume; calls of the window by "
            f"name: {parts[0]['names']}; CPU-side seconds by step: {seconds}")
        if drifted:
            lines.append(f"  {phase} drifted (first 10): {drifted[:10]}")
        if missed:
            lines.append(f"  {phase} not killed (first 10): {missed[:10]}")
        # The file never disappears: a resume keeps it under its name throughout, and a
        # new file, once it has its name, keeps it whatever the kill. Call numbers are
        # each driver's own (its reference trace; brk and futex calls vary between
        # processes), so the "once" is judged driver by driver.
        for w, p in enumerate(parts):
            exists = sorted(p["exists"])
            gone = [n for n, there in exists if not there]
            if phase == "resume":
                failures += [f"resume: the kill at call {n} left no file under its name"
                             for n in gone]
            else:
                first = next((n for n, there in exists if there), None)
                failures += [f"create: the kill at call {n} (driver {w}) left no file under "
                             f"its name, the kill at call {first} did"
                             for n in gone if first is not None and n > first]
        # The method must work: all but a few calls (the futex calls of numba's worker
        # handshake vary from run to run) are hit exactly.
        assert exact >= 0.9 * covered, "\n".join(lines)
    lines.append(f"partial file resumed: {reports[0]['partial']}")
    lines.append(f"{time.monotonic() - t0:.1f} s in all")
    print("\n" + "\n".join(lines))
    assert not failures, f"{len(failures)} kills broke the store:\n" + "\n".join(
        failures[:60]) + "\n" + "\n".join(lines)


# 4. Truncated and corrupted finished files ---------------------------------------------

FLIPS = 40


def _damaged_copies(original: Path, folder: Path) -> dict[str, Path]:
    data = original.read_bytes()
    copies = {}
    for percent in (50, 90, 99):
        path = folder / f"trunc{percent}.h5"
        path.write_bytes(data[: len(data) * percent // 100])
        kept = len(data) * percent // 100
        copies[f"truncated to {percent}% ({kept} of {len(data)} bytes)"] = path
    for pos in np.linspace(0, len(data) - 1, FLIPS).astype(int):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        path = folder / f"flip{pos}.h5"
        path.write_bytes(bytes(flipped))
        copies[f"byte {pos} flipped (0x{data[pos]:02x} -> 0x{flipped[pos]:02x})"] = path
    return copies


def _info(path, *options, timeout=10.0):
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "fastrank", "info", *options, str(path)],
                              env=ENV, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - start
    return proc, time.monotonic() - start


def _judge_info(proc, seconds, want_stdout: str, path: Path) -> str | None:
    """None if `fastrank info` answered as promised: exit 0 and the original's output,
    or exit 2 and one line "fastrank: error: ..."; else what went wrong."""
    if proc is None:
        return f"no answer in {seconds:.1f} s (hang)"
    lines = stderr_lines(proc)
    if proc.returncode == 0:
        got = proc.stdout.replace(str(path), "FILE")
        if got != want_stdout:
            diff = [f"{a!r} != {b!r}" for a, b in zip(got.splitlines(), want_stdout.splitlines(),
                                                       strict=False)
                    if a != b][:3]
            return f"exit 0 with output other than the original's (silent change): {diff}"
        return None
    if proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("fastrank: error:"):
        return None
    tail = " | ".join(lines[-3:])
    return f"exit {proc.returncode} with {len(lines)} stderr lines: {tail[:400]}"


def _damage(small_file: Path, folder: Path, *options: str) -> None:
    """`fastrank info OPTIONS` on every damaged copy (10 s each), then fastrank.open on
    those it read; fails the test with every copy answered otherwise than promised."""
    t0 = time.monotonic()
    want = _info(small_file, *options, timeout=60)[0]
    assert want.returncode == 0, want.stderr
    want_stdout = want.stdout.replace(str(small_file), "FILE")
    copies = _damaged_copies(small_file, folder)
    command = " ".join(("fastrank info", *options))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = dict(zip(copies, pool.map(lambda p: _info(p, *options), copies.values()),
                           strict=True))
    failures, outcomes = [], {}
    for what, (proc, seconds) in answers.items():
        problem = _judge_info(proc, seconds, want_stdout, copies[what])
        if problem:
            failures.append(f"{what}: {command}: {problem}")
        outcomes[what] = "read" if proc is not None and proc.returncode == 0 else "error"
    # Copies that `fastrank info` read: every run's arrays must equal the original's in
    # Python too (a changed value is a silent corruption; a one-line error is fine,
    # except after --check, which vouched for every row).
    readable = [what for what, outcome in outcomes.items() if outcome == "read"]
    checked = _check_copies(small_file, [copies[w] for w in readable], folder)
    for what in readable:
        verdict = checked[str(copies[what])]
        if verdict["problem"]:
            failures.append(f"{what}: fastrank.open after {command} exit 0: {verdict['problem']}")
        elif verdict.get("error") and "--check" in options:
            failures.append(f"{what}: {command} exit 0 but fastrank.open fails to read the "
                            f"arrays: {' '.join(verdict['error'].split())[:300]}")
    late = [w for w in readable if checked[str(copies[w])].get("error")]
    errors = sum(o == "error" for o in outcomes.values())
    print(f"\n{command}: {len(copies)} damaged copies in {time.monotonic() - t0:.1f} s: "
          f"{errors} refused, {len(readable)} read ({len(late)} of them refused only when "
          f"fastrank.open read every array: {late}); {len(failures)} failures")
    assert not failures, f"{len(failures)} of {len(copies)} damaged copies:\n" + "\n".join(
        failures)


def test_truncated_and_flipped_files_answer_in_one_line_within_10_s(small_file, tmp_path):
    _damage(small_file, tmp_path)


def test_info_check_refuses_damaged_files_in_one_line_within_10_s(small_file, tmp_path):
    """`fastrank info --check`: the same promise, and a copy it passes must read in full,
    equal to the original."""
    _damage(small_file, tmp_path, "--check")


#: Truncation points spread over the whole file for the in-process cut test.
CUTS = 256


def test_a_finished_file_cut_anywhere_is_refused_not_read_as_zeros(small_file, tmp_path):
    """The small file cut at CUTS points from its superblock to its last byte: every
    copy is refused on opening (one line), none read. HDF5 reads what a cut removed as
    zeros, and zeros pass Fletcher32 in an uncompressed chunk (the spectrum), so a SWMR
    read of a closed, truncated file changed 133 of 200 cuts silently before fastrank
    told closed files from ones a writer left."""
    data = small_file.read_bytes()
    path = tmp_path / "cut.h5"
    read = []
    for cut in np.unique(np.linspace(8, len(data) - 1, CUTS).astype(int)):
        path.write_bytes(data[:cut])
        try:
            with fastrank.open(path) as results:
                for run in results:
                    run.spectrum, run.measure("soft_rank")
        except ValueError as exc:  # DamagedFile, or not an HDF5 file at all
            assert "\n" not in str(exc), str(exc)
            continue
        read.append(int(cut))
    assert not read, f"cuts read as if whole (of {len(data)} bytes): {read[:20]}"


def _spectra_and_soft_ranks(path) -> list[np.ndarray]:
    """What an analysis that reads only spectra and soft ranks gets from a results file
    (the integer rows, deflated, fail to inflate where a cut left zeros; these do not)."""
    with fastrank.open(path) as results:
        return [a for run in results for a in (np.asarray(run.spectrum),
                                               np.asarray(run.measure("soft_rank")))]


@pytest.fixture(scope="module")
def killed_file(tmp_path_factory) -> Path:
    """A LONG sweep's file, its writer killed mid-sweep (read-only for the tests)."""
    path = tmp_path_factory.mktemp("killed") / "killed.h5"
    _killed_file(path)
    return path


def test_a_killed_writers_file_cut_anywhere_is_refused_not_read_as_zeros(killed_file, tmp_path):
    """A file whose writer was killed, then cut at CUTS points over its second half (the
    rows' chunks): each copy reads its spectra and soft ranks as the uncut file or is
    refused (one line). A killed writer's file is read as a SWMR reader, which HDF5 does
    not check against the recorded length, and what a cut removed reads as zeros that
    pass Fletcher32 in an uncompressed chunk. Outside the suite, a killed file of two
    complete 200,001-row runs cut 300 ways read changed spectra and measures in 108 cuts
    with the float rows uncompressed, in none once the reader looked for chunks past the
    end of the file (opening._chunk_past_the_end); this small file's cuts are refused
    either way (its chunks lie otherwise), so here the test guards the property, not
    that check."""
    want = _spectra_and_soft_ranks(killed_file)
    data = killed_file.read_bytes()
    path = tmp_path / "cut.h5"
    changed, outcomes = [], {"refused": 0, "same": 0}
    for cut in np.unique(np.linspace(len(data) // 2, len(data) - 1, CUTS).astype(int)):
        path.write_bytes(data[:cut])
        try:
            got = _spectra_and_soft_ranks(path)
        except ValueError as exc:  # DamagedFile
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
            continue
        if all(np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want, strict=True)):
            outcomes["same"] += 1
        else:
            changed.append(f"cut at {cut} of {len(data)} bytes")
    print(f"\nkilled file of {len(data)} bytes cut {CUTS} ways: {outcomes}")
    assert not changed, f"{len(changed)} cuts read changed:\n" + "\n".join(changed[:20])


def test_a_killed_writers_file_cut_at_every_kib_of_its_first_64_answers_within_10_s(
        killed_file, tmp_path):
    """The killed file cut at every KiB of its first 64 (its layout's metadata), each
    read in a child process given 10 s: refused in one line (or read as the whole file),
    never a hang. A killed writer's file is read as a SWMR reader, which retried each
    failed metadata checksum with back-off: such cuts hung for 10 minutes and more,
    until the reader of a file no writer holds read its metadata once."""
    data = killed_file.read_bytes()
    paths = []
    for kib in range(1, 65):
        paths.append(tmp_path / f"cut{kib}.h5")
        paths[-1].write_bytes(data[: kib * 1024])
    verdicts = _check_copies(killed_file, paths, tmp_path)
    problems = [f"{Path(p).name}: {v['problem']}" for p, v in verdicts.items() if v["problem"]]
    assert not problems, "\n".join(problems)


def _flipped(data: bytes, stride: int, path: Path):
    """``data`` with its byte at every ``stride``-th offset flipped in turn, written to
    ``path``: yields each offset once its copy is there."""
    for pos in range(0, len(data), stride):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        path.write_bytes(bytes(flipped))
        yield pos


#: Every FLIP_STRIDE-th byte of the small file is flipped in the in-process flip test.
FLIP_STRIDE = 41


def test_a_finished_file_with_a_byte_flipped_anywhere_reads_the_same_or_is_refused(
        small_file, tmp_path):
    """One byte of the small file flipped at every FLIP_STRIDE-th offset, superblock to
    last byte: each copy reads exactly as the original or is refused on opening or
    reading (a one-line ValueError), never another exception or a changed value. A flip
    in the root group's header was a KeyError traceback (a failed metadata checksum)
    until the format check met it as damage; every byte flipped (48,285 copies, outside
    the suite) gave 29,869 refused and 18,416 unchanged, nothing else."""
    data = small_file.read_bytes()
    want = read_runs(small_file)
    path = tmp_path / "flipped.h5"
    broken, outcomes = [], {"refused": 0, "same": 0}
    for pos in _flipped(data, FLIP_STRIDE, path):
        try:
            got = read_runs(path)
        except ValueError as exc:  # DamagedFile, or not an HDF5 file at all
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the test reports every kind it meets
            broken.append(f"byte {pos}: {type(exc).__name__}: {one_line(exc)}")
            continue
        try:
            assert_same_runs(got, want, f"byte {pos} flipped")
            outcomes["same"] += 1
        except AssertionError as exc:
            broken.append(f"byte {pos}: read without error but changed: {one_line(exc)}")
    print(f"\n{len(data)} bytes, every {FLIP_STRIDE}th flipped: {outcomes}")
    assert not broken, f"{len(broken)} flips:\n" + "\n".join(broken[:30])


#: Every CHECK_STRIDE-th byte of the small file is flipped in the --check agreement test.
CHECK_STRIDE = 197


def _every_read(path) -> None:
    """Everything an analysis reads: fastrank's runs table, every measure of every run,
    the whole sweep as xarray, and the file through xarray (h5netcdf) on its own."""
    import xarray

    with fastrank.open(path) as results:
        len(results.runs)
        for run in results:
            for name in ("layer", "spectrum", "log_norm", "tier", "rank_tau", *SCALARS):
                run.measure(name)
        results.to_xarray()
    with xarray.open_dataset(path, engine="h5netcdf") as ds:
        ds.load()


def test_info_check_fails_exactly_where_a_read_fails(small_file, tmp_path):
    """One byte of the small file flipped at every CHECK_STRIDE-th offset: the check
    (``damaged()``, what ``fastrank info --check`` runs, or a refusal on opening) finds
    damage exactly when some read of the file fails. It said every row read back on a
    file whose every spectrum read failed (a flipped byte in the header of ``n_sv``,
    which a spectrum read consults), and missed what only xarray reads (the dimension
    scales' references)."""
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    data = small_file.read_bytes()
    path = tmp_path / "flipped.h5"
    disagree, outcomes = [], {"damaged": 0, "intact": 0}
    for pos in _flipped(data, CHECK_STRIDE, path):
        try:
            with fastrank.open(path) as results:
                found = results.damaged()
        except ValueError as exc:
            found = [str(exc)]
        try:
            _every_read(path)
            failed = None
        except Exception as exc:  # noqa: BLE001 - any failure of a read counts
            failed = f"{type(exc).__name__}: {one_line(exc)}"
        outcomes["damaged" if found else "intact"] += 1
        if bool(found) != bool(failed):
            disagree.append(f"byte {pos}: check {found or 'passed'}; reads "
                            f"{failed or 'all succeeded'}")
    print(f"\n{len(data)} bytes, every {CHECK_STRIDE}th flipped: {outcomes}")
    assert not disagree, f"{len(disagree)} flips:\n" + "\n".join(disagree[:20])


def _check_copies(original: Path, paths: list[Path], folder: Path) -> dict:
    """The checker helper's verdict on each copy: {"problem": None or what is wrong,
    "error": the one-line error that stopped the read, if any}."""
    if not paths:
        return {}
    out = folder / "checked.json"
    proc = helper("check", original, out, *paths)
    _, err = wait_helper(proc, 300, "the checker")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.read_text())


# 5. A refused resume leaves the file untouched ----------------------------------------


def _killed_file(path: Path) -> None:
    """A LONG sweep SIGKILLed once it has committed rows (some runs still running)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastrank", "sweep", *LONG, "-o", str(path)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with fastrank.open(path) as results:
                    if int(results.runs["rows"].sum()) > 200:
                        break
            except (FileNotFoundError, OSError, ValueError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        proc.kill()
        proc.wait()


def test_a_refused_resume_leaves_the_file_untouched(small_file, tmp_path):
    finished, killed = tmp_path / "finished.h5", tmp_path / "killed.h5"
    shutil.copyfile(small_file, finished)
    _killed_file(killed)
    statuses = {r["status"] for r in read_runs(killed)}
    assert statuses - {"complete"}, f"the killed file is complete: {statuses}"
    for path, grid in ((finished, SMALL), (killed, LONG)):
        before = sha256(path)
        wrong = list(grid)
        wrong[wrong.index("--width") + 1] = "16"
        proc = fastrank_cli("sweep", *wrong, "--resume", "-o", path, timeout=60)
        lines = stderr_lines(proc)
        assert proc.returncode == 2, f"{path.name}: rc {proc.returncode}\n{proc.stderr}"
        assert len(lines) == 1 and lines[0].startswith("fastrank: error:"), proc.stderr
        assert sha256(path) == before, f"{path.name} changed by a refused resume"
        leftovers = sorted(p.name for p in tmp_path.glob(f".{path.name}.*.tmp"))
        assert not leftovers, f"a refused resume left staging files: {leftovers}"


# 6. Stale staging files ----------------------------------------------------------------


def test_stale_staging_files_are_removed_by_the_next_writer(tmp_path):
    tiny = ["--width", "4", "--depth", "5", "--activation", "linear", "--norm", "none",
            "--seed", "0", "--every", "1", "--log", "0", "-q"]
    out = tmp_path / "r.h5"
    other = tmp_path / ".other.h5.12345-deadbeef.tmp"  # another output's: not ours to remove
    other.write_bytes(b"someone else's staging file")
    reference = None
    for how in ((), ("--overwrite",), ("--resume",)):
        stale = [tmp_path / ".r.h5.12345-deadbeef.tmp",
                 tmp_path / f".r.h5.{os.getpid()}-0badf00d.tmp"]
        for path in stale:
            path.write_bytes(b"\x89HDF\r\n\x1a\n half a staged file")
        proc = fastrank_cli("sweep", *tiny, *how, "-o", out, timeout=60)
        assert proc.returncode == 0, f"sweep {' '.join(how)}: {proc.stderr}"
        assert not [p.name for p in stale if p.exists()], (
            f"sweep {' '.join(how) or '(new file)'} left stale staging files: "
            f"{[p.name for p in stale if p.exists()]}")
        assert other.exists(), "the writer of r.h5 removed another output's staging file"
        runs = read_runs(out)
        assert_complete(runs, f"sweep {' '.join(how)}")
        if reference is None:
            reference = runs
        assert_same_runs(runs, reference, f"sweep {' '.join(how)}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [other.name]


# Helper processes ------------------------------------------------------------------------


def _race_writer(folder: str, trials: str) -> None:
    """Writer of the open-as-it-appears race: trial i waits for the reader's ready.i,
    then sweeps into r{i}.h5. Outcomes (None or the exception) go to writer.json."""
    folder = Path(folder)
    sweep = fastrank.Sweep(grid={"width": (8,), "depth": (50,), "activation": ("linear",),
                                 "norm": ("none", "bn")},
                           seeds=(0,), schedule=fastrank.Schedule(every=1, log=None))
    outcomes = []
    for i in range(int(trials)):
        deadline = time.monotonic() + 60
        while not (folder / f"ready.{i}").exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"trial {i}: the reader never got ready")
            time.sleep(0.0005)
        print(f"trial {i}", flush=True)
        try:
            fastrank.sweep(sweep, folder / f"r{i}.h5")
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            outcomes.append(f"{type(exc).__name__}: {exc}")
    (folder / "writer.json").write_text(json.dumps(outcomes))


def _race_reader(folder: str, trials: str) -> None:
    """Reader of the race: for each trial, spin until r{i}.h5 exists and open it at once."""
    folder = Path(folder)
    seen = []
    for i in range(int(trials)):
        path = str(folder / f"r{i}.h5")
        (folder / f"ready.{i}").touch()
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit(f"trial {i}: the file never appeared")
        entry = {"error": None, "rows": None, "expected": None}
        try:
            with fastrank.open(path) as results:
                table = results.runs
                entry["rows"] = int(table["rows"].sum())
                entry["expected"] = int(table["expected_rows"].sum())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            entry["error"] = f"{type(exc).__name__}: {exc}"
        seen.append(entry)
    (folder / "reader.json").write_text(json.dumps(seen))


def _describe_difference(got: list[dict], want: list[dict]) -> str | None:
    try:
        assert_same_runs(got, want, "copy")
    except AssertionError as exc:
        return "silently changed: " + " ".join(str(exc).split())[:300]
    return None


def _check(original: str, out: str, *paths: str) -> None:
    """Checker of damaged copies: each copy read in a forked child (10 s, then killed):
    every run's arrays and the runs table must equal the original's, or the read must
    stop with a one-line ValueError/OSError. Verdicts go to ``out`` as JSON."""
    want = read_runs(original)
    with fastrank.open(original) as results:
        want_table = results.runs.copy()
    verdicts = {}
    for path in paths:
        result = Path(out).with_suffix(".child.json")
        result.unlink(missing_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            problem = None
            try:
                try:
                    got = read_runs(path)
                    with fastrank.open(path) as results:
                        table = results.runs
                    problem = _describe_difference(got, want)
                    if problem is None:
                        for name in want_table.dtype.names:
                            a, b = np.asarray(table[name]), np.asarray(want_table[name])
                            if a.dtype.kind == "f":
                                same = np.array_equal(a, b, equal_nan=True)
                            else:
                                same = np.array_equal(a, b)
                            if not same:
                                problem = f"silently changed: runs table column {name!r}"
                                break
                    error = None
                except (ValueError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if "\n" in str(exc).strip():
                        problem = f"{type(exc).__name__} of several lines: {str(exc)[:300]!r}"
                except Exception as exc:  # noqa: BLE001
                    error = f"{type(exc).__name__}: {exc}"
                    problem = (f"{type(exc).__name__} (not a ValueError/OSError): "
                               f"{' '.join(str(exc).split())[:300]}")
                result.write_text(json.dumps({"problem": problem, "error": error}))
            finally:
                os._exit(0)
        verdicts[path] = _wait_child(pid, 10.0, result)
    Path(out).write_text(json.dumps(verdicts))


def wait_pid(pid: int, timeout: float) -> str:
    """How a forked child ended: 'exit N', 'signal N' or 'hang' (then killed)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _wait_child(pid: int, timeout: float, result: Path) -> dict:
    ended = wait_pid(pid, timeout)
    if ended == "hang":
        return {"problem": f"no answer in {timeout} s (hang)"}
    if ended.startswith("signal"):
        return {"problem": f"the reading process died of {ended}"}
    if not result.exists():
        return {"problem": "the reading process wrote no verdict"}
    return json.loads(result.read_text())


# The kill driver (test 3) ------------------------------------------------------------------


class _Child:
    """The `fastrank` command line in a forked child: stdout and stderr to files; with
    ``stopped`` the child stops itself (SIGSTOP) before the command, for strace. If the
    command exits 0, ``then()`` (None or a problem) runs in the child: see :attr:`then`."""

    def __init__(self, args: list[str], logs: Path, stopped: bool = False, then=None):
        self.logs = logs
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child
            code = 1
            try:
                logs_as_output(logs)
                if stopped:
                    os.kill(os.getpid(), signal.SIGSTOP)
                from fastrank.cli import cli

                try:
                    cli.main(args=args, prog_name="fastrank")  # exits like python -m fastrank
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if code == 0 and then is not None:
                    try:
                        problem = then()
                    except Exception as exc:  # noqa: BLE001
                        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                    Path(f"{logs}.then.json").write_text(json.dumps(problem))
            except BaseException:  # noqa: BLE001 - a traceback, as python would print it
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def wait(self, timeout: float) -> tuple[str, int | None]:
        """("exit", code), ("signal", number) or ("hang", None) (then killed)."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return "hang", None
            time.sleep(0.001)
        if os.WIFSIGNALED(status):
            return "signal", os.WTERMSIG(status)
        return "exit", os.WEXITSTATUS(status)

    @property
    def then(self) -> str | None:
        """What ``then()`` returned (a problem) or that it did not run."""
        try:
            return json.loads(Path(f"{self.logs}.then.json").read_text())
        except FileNotFoundError:
            return "the check after the command did not run"

    @property
    def stderr(self) -> str:
        return Path(f"{self.logs}.err").read_text(errors="replace")


def logs_as_output(logs) -> None:
    """This (forked) process's stdout and stderr into ``logs``.out and ``logs``.err."""
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(f"{logs}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)


def attach_strace(pid: int, logs, options: list[str]) -> subprocess.Popen:
    """strace (``options``, its log ``logs``.strace) attached to the stopped child
    ``pid``, which then continues; where strace cannot attach, the child is killed and
    RuntimeError says why."""
    with open(f"{logs}.strace-err", "w") as err:
        tracer = subprocess.Popen([STRACE, "-qq", "-o", f"{logs}.strace", "-p", str(pid),
                                   *options], stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 10
    while True:  # attached once the child's TracerPid is strace's
        with open(f"/proc/{pid}/status") as f:
            tracer_pid = next(line.split()[1] for line in f if line.startswith("TracerPid:"))
        if tracer_pid != "0":
            break
        if tracer.poll() is not None or time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError(f"strace did not attach: "
                               f"{Path(f'{logs}.strace-err').read_text().strip()}")
        time.sleep(0.0005)
    os.kill(pid, signal.SIGCONT)
    return tracer


def _traced(args: list[str], logs: Path, strace_options: list[str], timeout=60.0):
    """Run the command line in a forked child under ``strace -p`` (only the child's main
    thread is traced: numba's worker thread, started after the attach, is not)."""
    child = _Child(args, logs, stopped=True)
    _, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    tracer = attach_strace(child.pid, logs, strace_options)
    outcome = child.wait(timeout)
    tracer.wait(timeout=30)
    return outcome, child


_CALL = re.compile(r"^([a-z_0-9]+)\((.*)$")


def _calls(log: Path) -> list[str]:
    """The system calls of an strace log, one line each (signals and exits left out)."""
    calls = []
    for line in Path(log).read_text(errors="replace").splitlines():
        if _CALL.match(line):
            calls.append(line)
    return calls


def _normalised(call: str) -> str:
    """A call without what changes from run to run: result, addresses, pids, names."""
    call = re.sub(r"\.out\.h5\.\d+-[0-9a-f]{8}\.tmp", ".out.h5.TMP", call)
    call = re.sub(r"/(rk|k|partial)\d+(?=[/\"])|/(rref|ref)(?=[/\"])", "/DIR", call)
    call = re.sub(r'"(?:[^"\\]|\\.)*"(\.\.\.)?', lambda m: m.group(0) if m.group(0).startswith('"/')
                  else '"..."', call)  # data buffers (times, pids) but not paths
    call = re.sub(r"\) += .*$|\) *= \?$| <unfinished \.\.\.>$", ")", call)
    return re.sub(r"0x[0-9a-f]+", "ADDR", call)


def _files_left(folder: Path) -> tuple:
    """The files in ``folder`` by name and content; the staging file's name (pid and
    random part) and the lock sidecar's content (a dead writer's pid) left out."""
    files = []
    for path in sorted(folder.iterdir()):
        name = re.sub(r"\.\d+-[0-9a-f]{8}\.tmp$", ".STAGED.tmp", path.name)
        content = "" if name.endswith(".lock") else hashlib.sha256(path.read_bytes()).hexdigest()
        files.append((name, content))
    return tuple(files)


def _lap(part: dict, what: str, since: float) -> float:
    now = time.monotonic()
    part.setdefault("seconds", {})[what] = part.get("seconds", {}).get(what, 0.0) + now - since
    return now


def _same_call(killed: str, whole: str) -> bool:
    """Whether a killed call (its arguments decoded on entry only, then "<unfinished
    ...>" or "= ?") is the reference call ``whole``."""
    prefix = _normalised(killed.split("<unfinished ...>")[0])
    prefix = re.sub(r"[, ]*\)?$", "", prefix)
    return _normalised(whole).startswith(prefix)


def _kill_driver(folder: str, worker: str, workers: str) -> None:
    folder, worker, workers = Path(folder), int(worker), int(workers)
    folder.mkdir(parents=True)
    assert os.environ.get("NUMBA_THREADING_LAYER") == "workqueue", "forks need a fork-safe layer"
    grid = ["sweep", *KILL_GRID]
    report: dict = {}

    def cli_child(args, name, timeout, then=None):
        child = _Child(args, folder / name, then=then)
        return child.wait(timeout), child

    # Warm up: compile/load the kernels and import everything the commands use, so that
    # the forked commands run only their own system calls.
    (folder / "warm").mkdir()
    from fastrank.cli import cli

    for args in (grid + ["-o", str(folder / "warm" / "out.h5")],
                 grid + ["--resume", "-o", str(folder / "warm" / "out.h5")],
                 ["info", str(folder / "warm" / "out.h5")]):
        assert cli.main(args=args, prog_name="fastrank", standalone_mode=False) in (0, None)

    def compare(path: Path) -> str | None:
        """None if ``path`` holds the clean sweep's runs, complete, bitwise; else why not
        (run in the resumed child once its command has ended and closed the file)."""
        try:
            got = read_runs(path)
        except Exception as exc:  # noqa: BLE001
            return f"read failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        statuses = [r["status"] for r in got]
        if statuses != ["complete"] * len(got):
            return f"statuses {statuses}"
        return _describe_difference(got, clean)

    # The uninterrupted sweep.
    (folder / "clean").mkdir()
    (outcome, child) = cli_child(grid + ["-o", str(folder / "clean" / "out.h5")], "clean", 60)
    assert outcome == ("exit", 0), (outcome, child.stderr)
    clean = read_runs(folder / "clean" / "out.h5")
    assert [r["status"] for r in clean] == ["complete"] * 2

    def reference(args, name, setup) -> tuple[list[str], tuple[int, int]]:
        """The traced calls of an uninterrupted command and the window: from its first
        call that names the output to its last call."""
        (folder / name).mkdir()
        setup(folder / name)
        outcome, child = _traced(args(folder / name / "out.h5"), folder / f"{name}-log", [])
        assert outcome == ("exit", 0), (outcome, child.stderr)
        calls = _calls(folder / f"{name}-log.strace")
        first = next(i for i, c in enumerate(calls) if "out.h5" in c)
        return calls, (first, len(calls) - 1)

    def kill_loop(phase, args, setup, calls, window) -> dict:
        names: dict[str, int] = {}
        for c in calls[window[0]: window[1] + 1]:
            names[_CALL.match(c).group(1)] = names.get(_CALL.match(c).group(1), 0) + 1
        part = {"calls": len(calls), "window": list(window), "covered": [], "exact": 0,
                "drifted": [], "not_killed": [], "failures": [], "states": 0, "exists": [],
                "names": dict(sorted(names.items(), key=lambda kv: -kv[1]))}
        verified: dict[tuple, str | None] = {}  # files left by a kill -> failed kill or None
        for n in range(window[0], window[1] + 1):
            if n % workers != worker:
                continue
            name = _CALL.match(calls[n]).group(1)
            k = sum(1 for c in calls[: n + 1] if _CALL.match(c).group(1) == name)
            here = folder / f"{phase}{n}"
            here.mkdir()
            setup(here)
            out = here / "out.h5"
            tag = f"kill at call {n} ({name} #{k}: {calls[n][:110]})"
            part["covered"].append(n)
            clock = time.monotonic()
            try:
                outcome, child = _traced(args(out), folder / f"{phase}{n}-log",
                                         ["-e", f"trace={name}",
                                          f"--inject={name}:signal=KILL:when={k}"])
            except RuntimeError as exc:
                part["failures"].append(f"{tag}: {exc}")
                continue
            hit = [c for c in _calls(folder / f"{phase}{n}-log.strace")]
            if outcome != ("signal", signal.SIGKILL):
                part["not_killed"].append(f"{n} {name} #{k}: {outcome}")
                if outcome[0] != "exit" or outcome[1] != 0:
                    part["failures"].append(f"{tag}: the unkilled sweep ended {outcome}: "
                                            f"{child.stderr[-500:]}")
            elif len(hit) >= k and _same_call(hit[k - 1], calls[n]):
                part["exact"] += 1
            else:
                part["drifted"].append(f"{n} {name} #{k}: wanted {_normalised(calls[n])[:90]}"
                                       f" got {_normalised(hit[-1])[:90] if hit else None}")
            clock = _lap(part, "kill", clock)
            part["exists"].append([n, out.exists()])
            # The checks below are deterministic functions of the files the kill left: a
            # kill that left the very files of an earlier one is not checked again.
            state = _files_left(here)
            if state in verified:
                if verified[state]:
                    part["failures"].append(f"{tag}: left the files of {verified[state]}")
                shutil.rmtree(here, ignore_errors=True)
                continue
            part["states"] += 1
            failed = len(part["failures"])
            # fastrank info answers at once with exit 0 (or there is no file yet).
            if out.exists():
                (how, code), info = cli_child(["info", str(out)], f"{phase}{n}-info", 10.0)
                if (how, code) != ("exit", 0):
                    lines = [x for x in info.stderr.splitlines() if x.strip()]
                    part["failures"].append(f"{tag}: fastrank info after the kill: {how} "
                                            f"{code}: {' | '.join(lines[-2:])[:400]}")
            clock = _lap(part, "info", clock)
            # --resume finishes it to the uninterrupted numbers.
            (how, code), resume = cli_child(args(out, resume=True), f"{phase}{n}-resume", 30.0,
                                            then=lambda out=out: compare(out))
            clock = _lap(part, "resume", clock)
            if (how, code) != ("exit", 0):
                lines = [x for x in resume.stderr.splitlines() if x.strip()]
                part["failures"].append(f"{tag}: --resume after the kill: {how} {code}: "
                                        f"{' | '.join(lines[-2:])[:400]}")
            else:
                problem = resume.then
                if problem:
                    part["failures"].append(f"{tag}: after --resume: {problem[:400]}")
                stale = sorted(p.name for p in here.glob(".out.h5.*.tmp"))
                if stale:
                    part["failures"].append(f"{tag}: staging files left after --resume: {stale}")
            verified[state] = f"the kill at call {n}" if len(part["failures"]) > failed else None
            shutil.rmtree(here, ignore_errors=True)
        return part

    def sweep_args(out, resume=False):
        return grid + (["--resume"] if resume else []) + ["-o", str(out)]

    t0 = time.monotonic()
    try:
        calls, window = reference(sweep_args, "ref", lambda d: None)
    except RuntimeError as exc:  # no ptrace here (a container without CAP_SYS_PTRACE)
        (folder / "report.json").write_text(json.dumps({"skip": f"strace cannot attach: {exc}"}))
        return
    report["create"] = kill_loop("k", sweep_args, lambda d: None, calls, window)

    # A partial file: killed during the commits of the second run (run 0 complete,
    # run 1 with some rows), found among the kills of the creation.
    partial = None
    after = [n for n in range(window[0], window[1] + 1) if calls[n].startswith("pwrite64")]
    for n in sorted(after, key=lambda n: abs(n - (window[0] + 3 * (window[1] - window[0]) // 4))):
        name = "pwrite64"
        k = sum(1 for c in calls[: n + 1] if c.startswith(name + "("))
        candidate = folder / f"partial{n}"
        candidate.mkdir()
        outcome, _ = _traced(sweep_args(candidate / "out.h5"), folder / f"partial{n}-log",
                             ["-e", f"trace={name}", f"--inject={name}:signal=KILL:when={k}"])
        if outcome == ("signal", signal.SIGKILL) and (candidate / "out.h5").exists():
            try:
                statuses = [r["status"] for r in read_runs(candidate / "out.h5")]
            except (OSError, ValueError):
                statuses = []
            if statuses == ["complete", "running"]:
                partial = candidate
                break
        shutil.rmtree(candidate)
    assert partial is not None, "no kill left run 0 complete and run 1 partial"
    report["partial"] = {"killed_at": partial.name, "statuses": statuses}

    def copy_partial(here: Path) -> None:
        for item in partial.iterdir():
            shutil.copy2(item, here / item.name)

    calls, window = reference(lambda out, resume=True: sweep_args(out, True), "rref",
                              copy_partial)
    report["resume"] = kill_loop("rk", lambda out, resume=True: sweep_args(out, True),
                                 copy_partial, calls, window)
    report["seconds"] = time.monotonic() - t0
    (folder / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    modes = {"kill": _kill_driver, "writer": _race_writer, "reader": _race_reader,
             "check": _check}
    modes[sys.argv[1]](*sys.argv[2:])
