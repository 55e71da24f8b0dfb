"""Memory limits and thread counts of the machine, as a sweep meets them.

Under an address-space or data-segment limit (``ulimit -v`` / ``ulimit -d``) a sweep
ends in one of two ways, whatever the limit: exit 0 with a complete file, or exit 2 with
one line naming the limit and nothing written (before, a limit in the wrong range spun
forever in SciPy's OpenBLAS, aborted in LLVM, or failed in a library's words, leaving an
empty file and its lock). The need a refusal names is enough to run. NUMBA_NUM_THREADS
may exceed the CPUs; a value that is not a count, or one the limit cannot hold, is one
line before anything is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank import preflight
from fastrank.cli import cli

SWEEP = [sys.executable, "-m", "fastrank", "sweep", "--width", "16", "--depth", "30",
         "--seed", "0-3", "-q", "-o"]
UNITS = {"B": 0, "KiB": 10, "MiB": 20, "GiB": 30}
LIMIT_NAMES = {"-v": "address-space limit (ulimit -v)", "-d": "data-segment limit (ulimit -d)"}


def _under(flag: str, limit: int, command: list[str], **env) -> subprocess.CompletedProcess:
    """``command`` under a ``ulimit`` of ``limit`` bytes (and an 8 MiB stack, the threads'
    usual one), set by the shell that execs it, as tests/test_hardening.py sets ``-f``.
    A spin runs into the timeout: a failure."""
    shell = f'ulimit -s 8192 && ulimit {flag} {limit >> 10} && exec "$@"'
    return subprocess.run(["bash", "-c", shell, "limited", *command], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def _outcome(proc: subprocess.CompletedProcess, folder: Path, flag: str) -> int | None:
    """Check that a sweep into ``folder/r.h5`` ended either way, and return the bytes a
    refusal says it needs (None for a complete file). A file left by exit 2 must be one
    the line says --resume continues, and does (without the limit)."""
    names = sorted(p.name for p in folder.iterdir())
    if proc.returncode == 0:
        assert proc.stderr == "" and names == ["r.h5"], (proc.stderr[-2000:], names)
        with fastrank.open(folder / "r.h5") as results:
            assert set(results.runs["status"]) == {"complete"}
        return None
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    assert lines[0].startswith("fastrank: error: ") and LIMIT_NAMES[flag] in lines[0], lines
    if names:
        assert names == ["r.h5"] and "--resume continues it" in lines[0], (names, lines)
        resumed = subprocess.run([*proc.args[4:], "--resume"], capture_output=True, text=True,
                                 timeout=300)
        assert _outcome(resumed, folder, flag) is None
    found = re.search(r"needs about ([\d.]+) (\w+)", lines[0])
    return int(float(found[1]) * (1 << UNITS[found[2]])) if found else 0


@pytest.mark.parametrize("flag, limits", [
    ("-v", [64 << 20, 100 << 20, 160 << 20, 256 << 20, 400 << 20, 640 << 20, 1 << 30]),
    ("-d", [32 << 20, 96 << 20, 288 << 20, 864 << 20]),
], ids=["address space", "data segment"])
@pytest.mark.slow
def test_every_memory_limit_ends_in_a_complete_file_or_one_line(tmp_path, flag, limits):
    """From too small to start to ample, geometrically, at two numba threads whatever the
    machine: a complete file or one line and nothing written, within the timeout; both
    outcomes occur."""
    outcomes = []
    for limit in limits:
        folder = tmp_path / str(limit)
        folder.mkdir()
        proc = _under(flag, limit, [*SWEEP, str(folder / "r.h5")], NUMBA_NUM_THREADS="2")
        outcomes.append(_outcome(proc, folder, flag))
    assert outcomes[0] is not None and outcomes[-1] is None, outcomes


@pytest.mark.slow
def test_the_need_a_refusal_names_is_enough(tmp_path):
    """Width 256 with a second numba thread (whose BLAS work buffer is what SciPy's
    OpenBLAS retried forever at a limit just short of it): rerun at the need each refusal
    names, plus 1 MiB; the first count (before numba and the BLAS libraries load) can
    only grow once they have, and the sweep completes."""
    command = [*SWEEP[:5], "256", *SWEEP[6:]]
    limit, needs = 256 << 20, []
    for attempt in range(4):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        needed = _outcome(_under("-v", limit, [*command, str(folder / "r.h5")],
                                 NUMBA_NUM_THREADS="2"), folder, "-v")
        if needed is None:
            break
        assert needed > limit, (needed, limit)
        needs.append(needed)
        limit = needed + (1 << 20)
    assert needed is None and 1 <= len(needs) <= 3, needs


@pytest.mark.slow
def test_threads_beyond_the_cpus_run(tmp_path):
    """numba allows more threads than CPUs: so does the sweep (exit 0, complete file)."""
    from fastrank import blas

    threads = str(2 * blas.cores() + 1)
    proc = subprocess.run([*SWEEP, str(tmp_path / "r.h5")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NUMBA_NUM_THREADS": threads})
    assert _outcome(proc, tmp_path, "-v") is None


@pytest.mark.slow
def test_threads_a_limit_cannot_hold_are_refused_naming_both(tmp_path):
    """64 threads' stacks under 700 MiB: libgomp failed to create them (exit 1 in its
    words, an empty file and its lock left); now one line naming the limit and the thread
    count that fits, nothing written."""
    proc = _under("-v", 700 << 20, [*SWEEP, str(tmp_path / "r.h5")], NUMBA_NUM_THREADS="64")
    assert _outcome(proc, tmp_path, "-v") > 700 << 20
    assert "64 numba threads" in proc.stderr and "NUMBA_NUM_THREADS=1" in proc.stderr


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "2.5"])
def test_a_thread_count_that_is_not_one_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "5", "-o", "r.h5"])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"NUMBA_NUM_THREADS={value!r}" in lines[0] and "CPUs" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_limit_too_small_to_start_is_one_line():
    proc = _under("-v", 64 << 20, [sys.executable, "-m", "fastrank", "--version"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "ulimit -v" in proc.stderr and "to start" in proc.stderr


def _fake_limit(monkeypatch, limit: int = 64 << 20) -> None:
    name = preflight.LIMITS[0][1]
    monkeypatch.setattr(preflight, "memory_limits", lambda: [(name, limit, 0)])


def test_kernels_not_yet_compiled_are_counted(monkeypatch):
    """numba's cache without the kernels: compiling them (once) is part of the need."""
    sweep = fastrank.Sweep(grid={"width": [16]}, seeds=(0, 1))
    monkeypatch.setattr(preflight, "_kernels_cached", lambda wide: True)
    assert dict(preflight.limits_needed(sweep, loaded=True))["the compiled kernels"] == (
        preflight.KERNELS)
    monkeypatch.setattr(preflight, "_kernels_cached", lambda wide: False)
    parts = dict(preflight.limits_needed(sweep, loaded=True))
    assert parts["compiling the kernels (once per install)"] == preflight.COMPILE
    assert "the compiled kernels" not in parts
    _fake_limit(monkeypatch)
    with pytest.raises(preflight.Refused, match="compiling the kernels"):
        preflight.check_limits(sweep, loaded=True)


def test_malloc_arenas_are_counted_unless_one_is_shared(monkeypatch):
    """glibc's arena per thread (64 MiB of address space, none of the data segment)
    counts unless MALLOC_ARENA_MAX=1 or fastrank.preflight.share_arenas."""
    sweep = fastrank.Sweep(grid={"width": [16]}, seeds=(0, 1, 2, 3))

    def threads_part():
        return dict(preflight.limits_needed(sweep, threads=4))["4 numba threads"]

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(preflight, "_arenas_shared", False)
    apart = threads_part()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    shared = threads_part()
    assert apart[0] - shared[0] == 3 * preflight.ARENA and apart[1] == shared[1]


def test_openmp_stack_size_is_read_as_libgomp_reads_it(monkeypatch):
    for text, expected in (("64M", 64 << 20), ("512", 512 << 10), ("1g", 1 << 30),
                           ("100 B", 100)):
        monkeypatch.setenv("OMP_STACKSIZE", text)
        assert preflight._thread_stack(openmp=True) == expected
    monkeypatch.setenv("OMP_STACKSIZE", "a lot")
    assert preflight._thread_stack(openmp=True) == preflight._thread_stack(openmp=False)


def test_errors_a_limit_explains_name_it(monkeypatch):
    mapped = ImportError("libscipy_openblas.so: failed to map segment from shared object")
    assert preflight.under_limit(MemoryError()) is None  # no limit here
    _fake_limit(monkeypatch)
    assert preflight.under_limit(MemoryError()) == (
        "the address-space limit (ulimit -v) of 64 MiB")
    assert preflight.under_limit(mapped) is not None
    assert preflight.under_limit(ImportError("No module named 'dask'")) is None


def test_running_out_of_memory_under_a_limit_mid_sweep_keeps_a_resumable_file(
        tmp_path, monkeypatch):
    """Past the estimate: one line naming the limit, exit 2, and a file --resume
    completes."""
    import fastrank.filling

    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--width", "8", "--depth", "5", "--seed", "0-1", "-q", "-o", "r.h5"]
    real_fill = fastrank.filling.fill

    def fill_then_fail(writer, backend, **kwargs):
        _fake_limit(monkeypatch)
        raise MemoryError

    monkeypatch.setattr(fastrank.filling, "fill", fill_then_fail)
    result = CliRunner().invoke(cli, args)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "ulimit -v" in lines[0] and "--resume continues it" in lines[0], lines
    monkeypatch.setattr(fastrank.filling, "fill", real_fill)
    monkeypatch.setattr(preflight, "memory_limits", lambda: [])
    assert CliRunner().invoke(cli, [*args, "--resume"]).exit_code == 0
    with fastrank.open(tmp_path / "r.h5") as results:
        assert set(results.runs["status"]) == {"complete"}


def test_a_need_is_named_rounded_up():
    """A refusal's need, read back from its three digits, is never below the need: a limit
    raised to the amount named holds it (it read '485 MiB' for 485.3 MiB before)."""
    rng = np.random.default_rng(0)
    for n in rng.uniform(1, 1 << 40, 5000).tolist() + [508859360, 999.6 * 2**20, 1023.7 * 2**20]:
        found = re.fullmatch(r"([\d.]+) (\w+)", preflight.size(n, up=True))
        assert float(found[1]) * (1 << UNITS[found[2]]) >= n, (n, found[0])
    assert preflight.size(508859360) == "485 MiB" and preflight.size(508859360, up=True) == \
        "486 MiB"
