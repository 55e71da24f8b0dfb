"""The fault harness: running the ``fastrank`` command line and reading what it left,
helper processes, forked commands and strace.

Imported by the fault tests (tests/test_store_faults.py, tests/test_full_disk.py, ...):
the environment their processes run in (one thread each), ``fastrank`` as a command,
every run of a results file read back and compared bitwise, processes that must end in
time (a hang fails the test), forked children and strace attached to them.

Run as a script (``python tests/fault_harness.py MODE ...``) it is the helper process of
tests/test_store_faults.py: the kill driver (MODE kill), the writer and the reader of
the open-as-it-appears race, and the checker of damaged copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import fastrank

THIS = Path(__file__).resolve()
STRACE = shutil.which("strace") or "/usr/bin/strace"
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ENV = {**os.environ, **ONE_THREAD}
#: Run arrays compared between files (besides status and rows).
ARRAYS = ("layer", "spectrum", "soft_rank", "log_norm")


# Helpers of the tests -----------------------------------------------------------------


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


def flipped(data: bytes, stride: int, path: Path):
    """``data`` with its byte at every ``stride``-th offset flipped in turn, written to
    ``path``: yields each offset once its copy is there."""
    for pos in range(0, len(data), stride):
        copy = bytearray(data)
        copy[pos] ^= 0xFF
        path.write_bytes(bytes(copy))
        yield pos


def flip_in_chunk(path: Path, name: str, at: int, bits: int) -> None:
    """Flip ``bits`` of the byte ``at`` bytes into the first chunk of dataset ``name`` of
    the file ``path`` (its checksum then fails)."""
    import h5py

    with h5py.File(path, "r") as f:
        offset = f[name].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + at] ^= bits
    path.write_bytes(bytes(data))


def check_copies(original: Path, paths: list[Path], folder: Path) -> dict:
    """The checker helper's verdict on each copy: {"problem": None or what is wrong,
    "error": the one-line error that stopped the read, if any}."""
    if not paths:
        return {}
    out = folder / "checked.json"
    proc = helper("check", original, out, *paths)
    _, err = wait_helper(proc, 300, "the checker")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.read_text())


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


# The kill driver (test_store_faults.py's kill at every system call) -----------------------

#: The killed sweep: 2 runs (two networks, so two groups), 3 rows each (layers 0, 5 and
#: 10), every stretch committed on its own (--commit-every 0; the input's row rides with
#: the first): 4 commits, and the creation and each commit a few dozen system calls.
KILL_GRID = ["--width", "4", "--depth", "10", "--activation", "linear", "--norm", "none,bn",
             "--seed", "0", "--every", "5", "--log", "0", "--commit-every", "0", "-q"]


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


def files_left(folder: Path) -> tuple:
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
            state = files_left(here)
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
