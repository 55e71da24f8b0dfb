"""A real sweep process killed with SIGKILL mid-run, resumed to the same numbers as
an uninterrupted sweep, and read by a second process while it writes (SWMR)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastrank
from fastrank import store

pytestmark = pytest.mark.slow  # whole processes, killed mid-sweep

# Every layer measured so that rows stream steadily for a few seconds (4 x 60000 rows:
# about a second per network at ~10 us a row).
ARGS = ["--width", "8", "--depth", "60000", "--activation", "linear", "--norm", "none,bn",
        "--seed", "0-1", "--every", "1", "--log", "0", "--commit-every", "0.05", "-q"]
ROWS = 60001


def _start(path):
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fastrank", "sweep", *ARGS, "-o", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(path) -> list[int]:
    """Rows per run as a reader sees them now (empty while the file does not exist yet)."""
    try:
        with store.open(path) as results:
            return [int(r) for r in results.runs["rows"]]
    except (FileNotFoundError, OSError, ValueError):
        return []


def _wait_until(proc, path, condition, timeout=120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _committed(path)
        if rows and condition(rows):
            return rows
        if proc.poll() is not None:
            pytest.fail(f"sweep ended (rc {proc.returncode}) before the condition: {rows}\n"
                        f"{proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"condition not reached in {timeout} s: {_committed(path)}")


def _arrays(path):
    with fastrank.open(path) as results:
        return [(run.status, run.layer, run.spectrum, run.log_norm, run.soft_rank)
                for run in results]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "clean.h5"
    proc = _start(path)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return _arrays(path)


def test_sigkill_then_resume_gives_the_uninterrupted_numbers(tmp_path, uninterrupted):
    path = tmp_path / "killed.h5"
    proc = _start(path)
    # Kill once the first network's runs are complete and the second's part way.
    seen = _wait_until(proc, path, lambda rows: rows[0] == ROWS and 10 < rows[2] < ROWS - 200)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # `fastrank info` reads the killed file, and every committed row is intact.
    info = subprocess.run([sys.executable, "-m", "fastrank", "info", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "complete" in info.stdout and "running" in info.stdout
    killed = _arrays(path)
    assert killed[0][0] == "complete"
    rows_after_kill = len(killed[2][1])
    assert rows_after_kill >= seen[2]
    for got, want in zip(killed[2][1:], uninterrupted[2][1:], strict=True):
        np.testing.assert_array_equal(got, want[:rows_after_kill])

    resume = subprocess.run([sys.executable, "-m", "fastrank", "sweep", *ARGS, "--resume", "-o",
                             str(path)],
                            capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    resumed = _arrays(path)
    assert [r[0] for r in resumed] == ["complete"] * 4
    for run_resumed, run_clean in zip(resumed, uninterrupted, strict=True):
        for got, want in zip(run_resumed[1:], run_clean[1:], strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_second_process_reads_rows_while_the_sweep_writes(tmp_path):
    path = tmp_path / "live.h5"
    proc = _start(path)
    try:
        first = _wait_until(proc, path, lambda rows: 0 < sum(rows) < 4 * ROWS)
        later = _wait_until(proc, path, lambda rows: sum(rows) > sum(first) + 100)
        assert proc.poll() is None  # still writing while we read
        # A long-lived reader refreshes and sees the file grow.
        with fastrank.open(path) as results:
            n0 = sum(int(r) for r in results.runs["rows"])
            deadline = time.monotonic() + 60
            while sum(int(r) for r in results.runs["rows"]) == n0 and time.monotonic() < deadline:
                time.sleep(0.05)
                results.refresh()
            assert sum(int(r) for r in results.runs["rows"]) > n0 >= sum(later)
            run = results[0]
            assert len(run.soft_rank) == len(run.layer) == int(results.runs["rows"][0])
    finally:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert _committed(path) == [ROWS] * 4
