"""A full disk at every write of a sweep, as ``fastrank sweep`` meets it.

ENOSPC is injected (strace) into each write system call, in turn, that a small sweep
makes on its output: the lock file, the staging file the layout is built in, and the
results file, from the first call to the last (the close). Every one must end the
command with exit 2 and one line saying the disk is full; no staging or lock file left;
either no file (nothing was committed yet) or a file whose every run reads back as a
prefix of the uninterrupted sweep's rows; and ``--resume``, once there is space again,
must complete it to the uninterrupted sweep's numbers, bitwise. The same for a resume
(which rebuilds the file under a staging name and renames it into place): refused at
any of its writes, it leaves the file as it was until the rename, and a committed file
after it.

Two models of the failure: ``when=N+`` (the N-th call of that name fails and every
later one too: a disk that is full stays full) and ``when=N`` (only the N-th fails: a
disk that had space again a moment later). Only the calls on those three files are
failed (``strace -P``), so a write the sweep makes elsewhere (/dev/null, say) goes on.

The drivers (this file run as ``python tests/test_full_disk.py driver ...``, two at a
time, each taking every other point) import fastrank once and run each command line in a
forked child (a fork costs milliseconds, a ``python -m fastrank`` start a second) that
exits as the command does, h5py's objects freed and HDF5's exit handler run, where the
crashes of a failed write used to come (:func:`_exit`); strace attaches to the child,
stopped before the command. A few points run as whole processes besides.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from fault_harness import (
    ENV,
    STRACE,
    attach_strace,
    driver_reports,
    files_left,
    logs_as_output,
    read_runs,
    sha256,
    wait_pid,
)

pytestmark = pytest.mark.slow  # a full disk at every write: minutes under strace

THIS = Path(__file__).resolve()
#: 4 runs (linear, with and without batch norm, 2 seeds) of 6 rows, committed in 2
#: batches, one as each network's runs end (never on the clock, so that every run makes
#: the same calls): about 110 write calls, a new file's or a resume's.
SWEEP = ["sweep", "--width", "8", "--depth", "50", "--activation", "linear", "--norm",
         "none,bn", "--seed", "0-1", "--every", "10", "--log", "0", "--commit-every", "inf",
         "-q"]
#: The system calls that write or resize a file, or rename one into place.
WRITES = ("write", "pwrite64", "writev", "pwritev", "pwritev2", "ftruncate", "fallocate",
          "fsync", "fdatasync", "rename", "renameat", "renameat2")
WORKERS = 2
#: The random part of the staging file's name in the children (os.urandom), so that
#: strace can be told its path before it exists.
RANDOM = b"\xab" * 4
FULL = "No space left on device"


def test_a_full_disk_at_every_write_ends_in_one_line_and_resume_completes_it(tmp_path):
    if not os.access(STRACE, os.X_OK):
        pytest.skip(f"strace not found at {STRACE}")
    t0 = time.monotonic()
    drivers = [subprocess.Popen([sys.executable, str(THIS), "driver", str(tmp_path / f"w{w}"),
                                 str(w), str(WORKERS)], env={**ENV, **FORK_SAFE},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for w in range(WORKERS)]
    reports = driver_reports(drivers, tmp_path, "driver")
    lines, failures = [], []
    for phase in ("create", "resume"):
        parts = [r[phase] for r in reports]
        points = sorted((p for part in parts for p in part["points"]),
                        key=lambda p: (p["call"], p["mode"]))
        failures += [f"{phase}: {f}" for part in parts for f in part["failures"]]
        calls = parts[0]["writes"]
        wanted = {(c, m) for c in range(len(calls)) for m in ("+", "")}
        missing = wanted - {(p["call"], p["mode"]) for p in points}
        assert not missing, f"{phase}: points never run: {sorted(missing)[:10]}"
        # A disk full from a later call on keeps at least the rows of an earlier one.
        kept = [p["rows"] for p in points if p["mode"] == "+"]
        if any(b < a for a, b in zip(kept, kept[1:], strict=False)):
            failures.append(f"{phase}: fewer rows kept after a later failure: {kept}")
        outcomes: dict[str, int] = {}
        for p in points:
            outcomes[p["outcome"]] = outcomes.get(p["outcome"], 0) + 1
        names: dict[str, int] = {}
        for name, _ in calls:
            names[name] = names.get(name, 0) + 1
        seconds = {k: round(sum(part["seconds"].get(k, 0) for part in parts), 1)
                   for k in parts[0]["seconds"]}
        lines.append(f"{phase}: {len(calls)} write calls {names} of "
                     f"{parts[0]['traced']} calls on the output's files, "
                     f"{len(points)} points (N+ and N), outcomes {outcomes}, "
                     f"{sum(part['states'] for part in parts)} distinct files resumed; "
                     f"seconds by step {seconds}")
    lines.append(f"{time.monotonic() - t0:.1f} s in all ({WORKERS} drivers)")
    print("\n" + "\n".join(lines))
    assert not failures, f"{len(failures)} points broke:\n" + "\n".join(failures[:40]) + \
        "\n" + "\n".join(lines)


def test_a_full_disk_in_a_real_process_exits_2_in_one_line(tmp_path):
    """The drivers' children exit without Python's teardown of its modules: here the
    whole ``python -m fastrank`` process, under ``strace -f``, with the disk full from
    the first write of the first commit, from the middle and three quarters of the
    commits and from the close's own last write on (the calls on the results file and
    its lock file); the middle one resumed to the uninterrupted sweep's rows."""
    if not os.access(STRACE, os.X_OK):
        pytest.skip(f"strace not found at {STRACE}")

    def run(folder: Path, *strace: str) -> subprocess.Popen:
        folder.mkdir()
        return subprocess.Popen(
            [STRACE, "-f", "-qq", "-o", str(folder / "strace.log"), f"-P{folder / 'r.h5'}",
             f"-P{folder / '.r.h5.lock'}", *strace, sys.executable, "-m", "fastrank",
             *SWEEP, "-o", str(folder / "r.h5")],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = run(tmp_path / "ref", "-etrace=pwrite64")
    _, err = reference.communicate(timeout=120)
    if reference.returncode != 0 and "ptrace" in err.lower():
        pytest.skip(f"strace cannot trace here: {err.strip()[:200]}")
    assert reference.returncode == 0, err[-2000:]
    writes = len(_calls(tmp_path / "ref" / "strace.log"))
    assert writes > 10, writes
    # the lock file's one write, then the results file's, from the first commit on
    points = {2: None, writes // 2: None, writes * 3 // 4: None, writes: None}
    for k in points:
        points[k] = run(tmp_path / f"k{k}", "-etrace=pwrite64",
                        f"-einject=pwrite64:error=ENOSPC:when={k}+")
    for k, proc in points.items():
        _, err = proc.communicate(timeout=120)
        lines = [x for x in err.splitlines() if x.strip()]
        assert proc.returncode == 2, f"ENOSPC from write {k} of {writes} on: rc " \
            f"{proc.returncode}\n{err[-3000:]}"
        assert len(lines) == 1 and FULL in lines[0], (k, lines[:5])
        left = sorted(p.name for p in (tmp_path / f"k{k}").iterdir())
        # before the first commit the new file goes; from then on it stays
        gone = "no file is left" in lines[0]
        assert left == (["strace.log"] if gone else ["r.h5", "strace.log"]), (k, left)
        assert gone if k == 2 else True, (k, lines[0])
        assert not gone if k == writes else True, (k, lines[0])
    clean = read_runs(tmp_path / "ref" / "r.h5")
    rows = sum(r["rows"] for r in clean)
    kept = {k: _prefix_problem(tmp_path / f"k{k}" / "r.h5", clean) for k in points
            if (tmp_path / f"k{k}" / "r.h5").exists()}
    assert all(problem is None for problem, _ in kept.values()), kept
    assert kept[writes] == (None, rows), kept
    partial = [k for k, (_, n) in kept.items() if 0 < n < rows]
    assert partial, f"no failure kept some rows but not all: {kept}"
    folder = tmp_path / f"k{partial[0]}"
    done = subprocess.run([sys.executable, "-m", "fastrank", *SWEEP, "--resume", "-o",
                           str(folder / "r.h5")], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert _prefix_problem(folder / "r.h5", clean) == (None, rows)


# The driver ------------------------------------------------------------------------------

#: numba's workqueue threading layer survives a fork (GNU OpenMP's does not).
FORK_SAFE = {"NUMBA_THREADING_LAYER": "workqueue"}


def _command(args: list[str], logs: Path, stopped: bool = False) -> int:
    """Fork a child that runs the ``fastrank`` command line ``args`` and exits as
    ``python -m fastrank`` would (:func:`_exit`); stdout and stderr go to
    ``logs``.out/.err. With ``stopped``, the child stops itself first (for strace).
    Returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        logs_as_output(logs)
        os.urandom = lambda n: RANDOM[:n]  # the staging file's name, for strace -P
        if stopped:
            os.kill(os.getpid(), signal.SIGSTOP)
        from fastrank.cli import cli

        cli.main(args=args, prog_name="fastrank")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the driver's own failure, in the child
        traceback.print_exc()
        os._exit(code)
    _exit(code)


def _exit(code: int) -> None:
    """Leave as the interpreter does after the command, faster: what the command left
    is freed (h5py's objects closing HDF5's on the way: where the tracebacks and the
    crashes of a failed write used to come from), the exit functions run, then the C
    library's exit, where HDF5's own handler closes whatever is still open. Python's
    teardown of its modules, a third of a second with numba loaded, is left out (the
    driver froze the objects it had before forking, so the collection is quick)."""
    gc.collect()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    ctypes.CDLL(None).exit(code)


def _traced(args: list[str], logs: Path, out: Path, strace: list[str]) -> str:
    """The command line in a stopped child, run on under ``strace -p`` that sees only
    the calls on ``out``, its lock file and its staging file (-P)."""
    pid = _command(args, logs, stopped=True)
    _, status = os.waitpid(pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    paths = [out, out.parent / f".{out.name}.lock",
             out.parent / f".{out.name}.{pid}-{RANDOM.hex()}.tmp"]
    tracer = attach_strace(pid, logs, [*(f"-P{p}" for p in paths), *strace])
    outcome = wait_pid(pid, 60)
    tracer.wait(timeout=30)
    return outcome


def _calls(log: Path) -> list[tuple[str, str]]:
    """(name, line) of every system call in an strace log (-f's pid before it)."""
    calls = []
    for line in Path(log).read_text(errors="replace").splitlines():
        line = line.split(" ", 1)[1].lstrip() if line[:1].isdigit() else line
        name = line.split("(", 1)[0]
        if name.isidentifier():
            calls.append((name, line))
    return calls


def _lines(logs: Path) -> list[str]:
    return [x for x in Path(f"{logs}.err").read_text(errors="replace").splitlines() if x.strip()]


def _prefix_problem(path: Path, clean: list[dict]) -> tuple[str | None, int]:
    """(None or what is wrong, rows): whether every run of ``path`` reads back as the
    first rows of the uninterrupted sweep's run, and how many rows it holds."""
    try:
        runs = read_runs(path)
    except Exception as exc:  # noqa: BLE001
        return f"does not read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", 0
    if len(runs) != len(clean):
        return f"{len(runs)} runs, not {len(clean)}", 0
    for i, (got, want) in enumerate(zip(runs, clean, strict=True)):
        n = got["rows"]
        if got["status"] == "failed" or n > want["rows"]:
            return f"run {i}: {got['status']} with {n} rows", 0
        for name in ("layer", "spectrum", "soft_rank", "log_norm"):
            a, b = got[name], want[name][:n]
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                return f"run {i}: {name} is not the uninterrupted run's first {n} rows", 0
    return None, sum(r["rows"] for r in runs)


def _driver(folder: str, worker: str, workers: str) -> None:
    folder, worker, workers = Path(folder), int(worker), int(workers)
    folder.mkdir(parents=True)
    from fastrank.cli import cli

    # Warm up: load the kernels and import what the commands use, so that the children
    # run only their own calls.
    (folder / "warm").mkdir()
    for args in (SWEEP + ["-o", str(folder / "warm" / "r.h5")],
                 SWEEP + ["--resume", "-o", str(folder / "warm" / "r.h5")]):
        assert cli.main(args=args, prog_name="fastrank", standalone_mode=False) in (0, None)
    gc.collect()
    gc.freeze()  # the children's collections skip the driver's objects
    (folder / "clean").mkdir()
    outcome = wait_pid(_command(SWEEP + ["-o", str(folder / "clean" / "r.h5")],
                             folder / "clean-log"), 60)
    assert outcome == "exit 0", (outcome, _lines(folder / "clean-log"))
    clean = read_runs(folder / "clean" / "r.h5")
    assert {r["status"] for r in clean} == {"complete"}

    def create(out: Path, resume=False) -> list[str]:
        return SWEEP + (["--resume"] if resume else []) + ["-o", str(out)]

    def reference(name: str, setup) -> tuple[list[tuple[str, str]], int]:
        (folder / name).mkdir()
        setup(folder / name)
        outcome = _traced(create(folder / name / "r.h5", name == "rref"), folder / f"{name}-log",
                          folder / name / "r.h5", [])
        assert outcome == "exit 0", (outcome, _lines(folder / f"{name}-log"))
        calls = _calls(folder / f"{name}-log.strace")
        return [c for c in calls if c[0] in WRITES], len(calls)

    def point(phase: str, writes, n: int, mode: str, setup, before: str | None) -> dict:
        """ENOSPC at write call ``n`` (and with mode '+', at every later call of its
        name), then the checks; the point's record."""
        name = writes[n][0]
        k = sum(1 for c in writes[: n + 1] if c[0] == name)
        here = folder / f"{phase}{n}{'p' if mode else 's'}"
        here.mkdir()
        setup(here)
        out = here / "r.h5"
        logs = folder / f"{here.name}-log"
        tag = f"ENOSPC at write {n} ({name} #{k}{mode}: {writes[n][1][:90]})"
        record = {"call": n, "mode": mode, "rows": 0, "outcome": "?"}
        clock = time.monotonic()
        outcome = _traced(create(out, phase == "resume"), logs, out,
                          [f"-etrace={name}", f"-einject={name}:error=ENOSPC:when={k}{mode}"])
        clock = lap("inject", clock)
        lines = _lines(logs)
        problems = []
        if outcome != "exit 2":
            problems.append(f"ended {outcome}")
        if len(lines) != 1 or not lines[0].startswith("fastrank: error: ") or \
                FULL not in lines[0]:
            problems.append(f"stderr is not one line saying {FULL!r}: {lines[:3]}")
        left = sorted(p.name for p in here.iterdir() if p.name != "r.h5")
        if left:
            problems.append(f"left {left}")
        line = lines[0] if lines else ""
        if not out.exists():
            record["outcome"] = "no file"
            if phase == "resume":
                problems.append("the resumed file is gone")
        elif before is not None and sha256(out) == before:
            record["outcome"] = "as it was"
            if "as it was" not in line:
                problems.append(f"the file is as it was, the line says otherwise: {line}")
        else:
            record["outcome"] = "rows kept"
            problem, record["rows"] = _prefix_problem(out, clean)
            if problem:
                problems.append(f"the file left: {problem}")
            if "every committed row is kept" not in line:
                problems.append(f"a file is left, the line says otherwise: {line}")
        if record["outcome"] == "no file" and "no file is left" not in line and \
                "cannot write" not in line:
            problems.append(f"no file is left, the line says otherwise: {line}")
        for p in problems:
            part["failures"].append(f"{tag}: {p}")
        # --resume, once there is space, completes it to the uninterrupted numbers; the
        # files a point left decide what the resume does: the same files, checked once.
        state = files_left(here)
        if state not in verified:
            part["states"] += 1
            resume_logs = folder / f"{here.name}-resume"
            outcome = wait_pid(_command(create(out, True), resume_logs), 60)
            verified[state] = None
            if outcome != "exit 0":
                verified[state] = f"--resume ended {outcome}: {_lines(resume_logs)[-2:]}"
            else:
                problem, rows = _prefix_problem(out, clean)
                if problem or rows != sum(r["rows"] for r in clean):
                    verified[state] = f"after --resume: {problem or f'{rows} rows'}"
                elif sorted(p.name for p in here.iterdir()) != ["r.h5"]:
                    verified[state] = f"--resume left {sorted(p.name for p in here.iterdir())}"
            lap("resume", clock)
        if verified[state]:
            part["failures"].append(f"{tag}: {verified[state]}")
        shutil.rmtree(here, ignore_errors=True)
        return record

    def lap(what: str, since: float) -> float:
        now = time.monotonic()
        part["seconds"][what] = part["seconds"].get(what, 0.0) + now - since
        return now

    def loop(phase: str, setup, before: str | None) -> dict:
        nonlocal part, verified
        writes, traced = reference("ref" if phase == "create" else "rref", setup)
        part = {"writes": writes, "traced": traced, "points": [], "failures": [], "states": 0,
                "seconds": {}}
        verified = {}
        for n in range(len(writes)):
            for mode in ("+", ""):
                if (2 * n + (mode == "")) % workers == worker:
                    part["points"].append(point(phase, writes, n, mode, setup, before))
        return part

    part: dict = {}
    verified: dict = {}
    report = {}
    try:
        report["create"] = loop("create", lambda d: None, None)
    except RuntimeError as exc:  # no ptrace here (a container without CAP_SYS_PTRACE)
        (folder / "report.json").write_text(json.dumps({"skip": str(exc)}))
        return
    # A partial file to resume: the disk full in the middle of the commits (every
    # driver finds the same one), some runs complete and some not.
    writes = report["create"]["writes"]
    pwrites = [n for n, c in enumerate(writes) if c[0] == "pwrite64"]
    partial = folder / "partial"
    for n in sorted(pwrites, key=lambda n: abs(n - pwrites[len(pwrites) * 2 // 3])):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        k = pwrites.index(n) + 1
        _traced(create(partial / "r.h5"), folder / "partial-log", partial / "r.h5",
                ["-etrace=pwrite64", f"-einject=pwrite64:error=ENOSPC:when={k}+"])
        if (partial / "r.h5").exists():
            statuses = {r["status"] for r in read_runs(partial / "r.h5")}
            if "complete" in statuses and statuses - {"complete"}:
                break
    else:
        raise AssertionError("no failure left some runs complete and some not")
    before = sha256(partial / "r.h5")

    def copy_partial(here: Path) -> None:
        shutil.copy2(partial / "r.h5", here / "r.h5")

    report["resume"] = loop("resume", copy_partial, before)
    (folder / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    {"driver": _driver}[sys.argv[1]](*sys.argv[2:])
