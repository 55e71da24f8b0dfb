"""Bad input and faults of the environment, as a tester tries them.

One table of cases, each a ``fastrank`` command line run in a folder of prepared files
(malformed option values, input arrays that no run could start from, unusable output
paths, damaged results files) or under an injected fault of the machine (read-only or
full file system, no permission, a small file size limit, a full disk mid-sweep). Every
case must end with exit status 2, exactly one line on stderr naming the problem, no
traceback, and no file of the folder created or changed. Then what the table cannot
show: a real file size limit in a subprocess (no segfault, the committed rows kept and
resumable), errors of the machine (exit 1), labels and failure reasons.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank.cli import cli

SMALL = ["--width", "8", "--depth", "5", "--seed", "0", "-q"]


def _prepare(folder: Path) -> None:
    """The files the cases name: input arrays good and bad, results files good and
    damaged, config files, special files."""
    rng = np.random.default_rng(0)
    arrays = {
        "ok": rng.standard_normal((40, 8)), "strings": np.array([["a", "b"], ["c", "d"]]),
        "complex": rng.standard_normal((40, 8)) * 1j, "one_d": rng.standard_normal(40),
        "three_d": rng.standard_normal((4, 4, 4)), "empty": np.zeros((0, 8)),
        "few": rng.standard_normal((3, 8)), "nan": np.full((40, 8), np.nan),
        "inf": np.full((40, 8), np.inf), "zero": np.zeros((40, 8)),
        "huge": np.full((40, 8), 1e300), "nofeatures": np.zeros((10, 0)),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    np.save(folder / "pickled.npy", np.array([{"a": 1}] * 4, dtype=object).reshape(2, 2),
            allow_pickle=True)
    (folder / "text.npy").write_text("1 2 3\n")
    np.savez(folder / "archive.npz", a=np.zeros((4, 4)))
    (folder / "archive.npz").rename(folder / "archive.npy")
    (folder / "truncated.npy").write_bytes((folder / "ok.npy").read_bytes()[:200])
    (folder / "dir.npy").mkdir()
    (folder / "text.h5").write_text("not hdf5")
    with h5py.File(folder / "g.h5", "w") as f:
        f.create_group("grp")
        f["x"] = rng.standard_normal((40, 8))
        f["words"] = np.array([b"a", b"b"])
    (folder / "bad.toml").write_bytes(b'width = "\xff\xfe"\n')
    (folder / "broken.toml").write_text("width = [8,\n")
    (folder / "unknown.toml").write_text("colour = 3\n")
    (folder / "flag.toml").write_text("norm = true\n")
    fastrank.sweep(fastrank.Sweep(grid={"width": (8,), "depth": (5,)}), folder / "r.h5")
    for name, edit in DAMAGE.items():
        shutil.copyfile(folder / "r.h5", folder / f"{name}.h5")
        with h5py.File(folder / f"{name}.h5", "r+") as f:
            edit(f)
    (folder / "fig.png").write_bytes(b"an older figure")
    (folder / "link.h5").symlink_to("r.h5")


def _set(f, name, value):
    del f[name]
    f[name] = value


DAMAGE = {
    "sweep_garbage": lambda f: f.attrs.__setitem__("sweep", np.bytes_(b"{not json")),
    "sweep_list": lambda f: f.attrs.__setitem__("sweep", np.bytes_(b"[1, 2]")),
    "no_sweep": lambda f: f.attrs.__delitem__("sweep"),
    "version_text": lambda f: f.attrs.__setitem__("format_version", np.bytes_(b"abc")),
    "version_array": lambda f: f.attrs.__setitem__("format_version", np.array([3, 3])),
    "newer": lambda f: f.attrs.__setitem__("format_version", np.int64(99)),
    "no_n_rows": lambda f: f.__delitem__("n_rows"),
    "rows_out_of_range": lambda f: f["n_rows"].__setitem__(0, 10**12),
    "rows_negative": lambda f: f["n_rows"].__setitem__(0, -5),
    "config_out_of_range": lambda f: f["config_of_run"].__setitem__(0, 99),
    "short_seed": lambda f: _set(f, "seed", np.zeros(0, np.uint64)),
    "text_counts": lambda f: _set(f, "expected_rows", np.array([b"a"])),
    "network_garbage": lambda f: _set(f, "network", np.array([b"{bad"])),
    "failure_bytes": lambda f: (f["failure"].__setitem__(0, b"\xff\xfe"),
                                f["failed_layer"].__setitem__(0, 3)),
    "layer_reshaped": lambda f: _set(f, "layer", np.zeros(3)),
}


def _statvfs_with(**fields):
    real = os.statvfs

    def fake(path):
        s = real(path)
        values = {name: getattr(s, name) for name in dir(s) if name.startswith("f_")}
        return type("statvfs", (), {**values, **fields})()

    return fake


def _failing_commit(self, rows, threads=None):
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise fastrank.store.WriteFailed(f"writing {self.path} failed") from None


#: A machine with 8 GiB available, whatever this one has.
SMALL_MACHINE = {"fastrank.preflight.available_memory": lambda: 8 << 30}

#: (id, command line, words the one line must hold, {module attribute: replacement}).
#: ``sweep`` command lines run with SMALL before them (theirs win) and -o out.h5.
CASES = [
    # option values
    ("width 0", ["sweep", "--width", "0"], "width", None),
    ("width word", ["sweep", "--width", "abc"], "width 'abc'", None),
    ("width superscript", ["sweep", "--width", "²"], "width '²'", None),
    ("width negative", ["sweep", "--width", "-5"], "width", None),
    ("width fraction", ["sweep", "--width", "1.5"], "width", None),
    ("width empty", ["sweep", "--width", ""], "empty", None),
    ("width empty item", ["sweep", "--width", "32,,64"], "empty", None),
    ("range down", ["sweep", "--width", "8-2"], "range", None),
    ("range factor 1", ["sweep", "--width", "8-256:x1"], "range", None),
    ("range too long", ["sweep", "--width", "1-2000000"], "at most", None),
    ("seeds too many", ["sweep", "--seed", "0-100000000000"], "at most", None),
    ("seed down", ["sweep", "--seed", "3-1"], "seed", None),
    ("seed 2**64", ["sweep", "--seed", str(2**64)], "2**64", None),
    ("runs too many", ["sweep", "--seed", "0-999999", "--width", "1-20"], "runs", None),
    ("depth 0", ["sweep", "--depth", "0"], "depth", None),
    ("depth 1e12 memory", ["sweep", "--depth", "1000000000000"], "memory", SMALL_MACHINE),
    ("depth 1e9 memory", ["sweep", "--depth", "1000000000"], "memory", SMALL_MACHINE),
    ("width 1e9 memory", ["sweep", "--width", "1000000000"], "memory", SMALL_MACHINE),
    ("width 1e5 memory", ["sweep", "--width", "100000"], "memory", SMALL_MACHINE),
    ("seeds memory", ["sweep", "--width", "4096", "--seed", "0-999"], "memory",
     SMALL_MACHINE),
    ("batch 0", ["sweep", "--batch", "0"], "batch", None),
    ("input-dim 0", ["sweep", "--input-dim", "0"], "input_dim", None),
    ("norm", ["sweep", "--norm", "foo"], "norm 'foo'", None),
    ("activation", ["sweep", "--activation", "sigmoid"], "activation", None),
    ("order", ["sweep", "--order", "sideways"], "order", None),
    ("init", ["sweep", "--init", "xavier"], "init", None),
    ("dtype", ["sweep", "--dtype", "float16"], "dtype", None),
    ("gamma 0", ["sweep", "--gamma", "0"], "gamma", None),
    ("gamma nan", ["sweep", "--gamma", "nan"], "gamma", None),
    ("gamma uneven widths", ["sweep", "--gamma", "0.5", "--input-dim", "4"], "constant", None),
    ("gain negative", ["sweep", "--gain", "-1"], "gain", None),
    ("gain inf", ["sweep", "--gain", "inf"], "gain", None),
    ("eps negative", ["sweep", "--eps", "-1"], "eps", None),
    ("tau 2", ["sweep", "--tau", "2"], "tau", None),
    ("tau 0", ["sweep", "--tau", "0"], "tau", None),
    ("every negative", ["sweep", "--every", "-1"], "every", None),
    ("log negative", ["sweep", "--log", "-3"], "log", None),
    ("layers beyond depth", ["sweep", "--depth", "10", "--layers", "99"], "beyond", None),
    ("gram float64", ["sweep", "--method", "gram", "--dtype", "float64"], "gram", None),
    ("method", ["sweep", "--method", "qr"], "qr", None),
    ("unknown option", ["sweep", "--bogus", "1"], "--bogus", None),
    ("overwrite and resume", ["sweep", "--overwrite", "--resume"], "exclude", None),
    ("resume without -o", ["sweep", "--resume"], "--resume needs", None),
    ("device without gpu", ["sweep", "--device", "0"], "--gpu", None),
    # input arrays
    ("input missing", ["sweep", "--input", "missing.npy"], "no such file", None),
    ("input unknown kind", ["sweep", "--input", "x.txt"], "FILE.npy", None),
    ("input sklearn name", ["sweep", "--input", "sklearn:mnist"], "sklearn:digits", None),
    ("input directory", ["sweep", "--input", "dir.npy"], "directory", None),
    ("input fifo", ["sweep", "--input", "fifo.npy"], "not a regular file", None),
    ("input text", ["sweep", "--input", "text.npy"], "pickled arrays are not accepted", None),
    ("input pickled", ["sweep", "--input", "pickled.npy"], "pickled arrays are not", None),
    ("input npz", ["sweep", "--input", "archive.npy"], "npz", None),
    ("input truncated", ["sweep", "--input", "truncated.npy"], "truncated.npy", None),
    ("input strings", ["sweep", "--input", "strings.npy"], "not numbers", None),
    ("input complex", ["sweep", "--input", "complex.npy"], "complex", None),
    ("input 1-D", ["sweep", "--input", "one_d.npy"], "2-D", None),
    ("input 3-D", ["sweep", "--input", "three_d.npy"], "2-D", None),
    ("input no samples", ["sweep", "--input", "empty.npy"], "only 0 samples", None),
    ("input few samples", ["sweep", "--input", "few.npy"], "only 3 samples", None),
    ("input no features", ["sweep", "--input", "nofeatures.npy"], "no features", None),
    ("input NaN", ["sweep", "--input", "nan.npy"], "NaN", None),
    ("input inf", ["sweep", "--input", "inf.npy"], "infinite", None),
    ("input zero", ["sweep", "--input", "zero.npy"], "all zero", None),
    ("input 1e300", ["sweep", "--input", "huge.npy"], "too large for float32", None),
    ("input 1e300 float64", ["sweep", "--input", "huge.npy", "--dtype", "float64"],
     "too large for float64", None),
    ("input and input-dim", ["sweep", "--input", "ok.npy", "--input-dim", "4"], "input_dim",
     None),
    ("input not hdf5", ["sweep", "--input", "text.h5:x"], "not an HDF5 file", None),
    ("input no dataset", ["sweep", "--input", "g.h5"], "FILE.h5:DATASET", None),
    ("input missing dataset", ["sweep", "--input", "g.h5:nope"], "no dataset", None),
    ("input group", ["sweep", "--input", "g.h5:grp"], "group", None),
    ("input hdf5 strings", ["sweep", "--input", "g.h5:words"], "not numbers", None),
    # config files
    ("config missing", ["sweep", "--config", "none.toml"], "cannot read config", None),
    ("config not utf-8", ["sweep", "--config", "bad.toml"], "not UTF-8", None),
    ("config not toml", ["sweep", "--config", "broken.toml"], "not valid TOML", None),
    ("config unknown key", ["sweep", "--config", "unknown.toml"], "colour", None),
    ("config flag value", ["sweep", "--config", "flag.toml"], "true/false", None),
    # output paths
    ("output no folder", ["sweep", "-o", "nodir/x.h5"], "No such file or directory", None),
    ("output name too long", ["sweep", "-o", "a" * 300 + ".h5"], "File name too long", None),
    ("output path too long", ["sweep", "-o", "a/" * 2100 + "x.h5"], "File name too long",
     None),
    ("output exists", ["sweep", "-o", "r.h5"], "--overwrite", None),
    ("output exists, bad width", ["sweep", "--width", "abc", "-o", "r.h5"], "width", None),
    ("output fifo", ["sweep", "--overwrite", "-o", "fifo.h5"], "FIFO", None),
    ("output symlink", ["sweep", "--overwrite", "-o", "link.h5"], "symbolic link", None),
    ("output directory", ["sweep", "-o", "dir.npy"], "directory", None),
    ("output read-only", ["sweep", "-o", "new.h5"], "Read-only file system",
     {"os.statvfs": _statvfs_with(f_flag=os.ST_RDONLY)}),
    ("output disk full", ["sweep", "-o", "new.h5"], "No space left",
     {"os.statvfs": _statvfs_with(f_bavail=0)}),
    ("output permission", ["sweep", "-o", "new.h5"], "Permission denied",
     {"os.access": lambda *a, **k: False}),
    ("output size limit", ["sweep", "-o", "new.h5"], "ulimit -f",
     {"resource.getrlimit": lambda which: (1024, 1024)}),
    ("disk full mid-sweep", ["sweep", "-o", "new.h5"], "No space left on device",
     {"fastrank.store.writer.Writer.commit": _failing_commit}),
    # resumes
    ("resume foreign file", ["sweep", "--resume", "-o", "text.h5"], "text.h5", None),
    ("resume damaged file", ["sweep", "--resume", "-o", "sweep_garbage.h5"], "damaged", None),
    ("resume other sweep", ["sweep", "--resume", "--width", "16", "-o", "r.h5"],
     "different sweep", None),
    # results files
    ("info missing", ["info", "missing.h5"], "no such file", None),
    ("info foreign", ["info", "text.h5"], "text.h5", None),
    ("info directory", ["info", "dir.npy"], "directory", None),
    *((f"info {name}", ["info", f"{name}.h5"], name, None) for name in DAMAGE),
    ("info --check damaged", ["info", "--check", "layer_reshaped.h5"], "layer", None),
    ("plot damaged", ["plot", "network_garbage.h5", "-o", "f.png"], "network", None),
    ("plot over a figure", ["plot", "r.h5", "-o", "fig.png"], "--overwrite", None),
    ("plot format", ["plot", "r.h5", "-o", "fig.jpg"], "format", None),
]


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: its kind, size, time and (files) content hash."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and (
                not path.is_symlink()) else None
            out[str(path.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                  digest)
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    _prepare(folder)
    return folder


def test_the_table_holds_60_cases_or_more_each_named_once():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("args, words, faults", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_exits_2_in_one_line_and_touches_nothing(prepared, tmp_path, monkeypatch,
                                                           args, words, faults):
    folder = tmp_path / "work"
    shutil.copytree(prepared, folder, symlinks=True)
    os.mkfifo(folder / "fifo.npy")
    os.mkfifo(folder / "fifo.h5")
    monkeypatch.chdir(folder)
    for target, replacement in (faults or {}).items():
        monkeypatch.setattr(target, replacement)
    if args[0] == "sweep":
        output = [] if "-o" in args or "--resume" in args else ["-o", "out.h5"]
        args = ["sweep", *SMALL, *args[1:], *output]
    before = _snapshot(folder)
    result = CliRunner().invoke(cli, args)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("fastrank: error: "), result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert _snapshot(folder) == before, "a file was created or changed"


@pytest.mark.slow
def test_sizes_are_refused_within_a_second_with_the_memory_they_need(tmp_path):
    for option, value in (("--width", "1000000000"), ("--depth", "1000000000000")):
        proc = subprocess.run([sys.executable, "-m", "fastrank", "sweep", option, value, "-o",
                               str(tmp_path / "x.h5")], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and "memory" in proc.stderr and "--force" in proc.stderr
        assert proc.stderr.count("\n") == 1 and not (tmp_path / "x.h5").exists()
    from fastrank import options, preflight

    needed, _ = preflight.memory_needed(options.build_sweep({"depth": "1000000000000"}))
    assert needed > 10**13


def _limited(kib: int, command: list[str]) -> list[str]:
    """``command`` under a file size limit of ``kib`` KiB, set by the shell that execs it
    (not a preexec_fn: forking a process that runs threads, JAX's say, can deadlock)."""
    return ["bash", "-c", f'ulimit -f {kib} && exec "$@"', "limited", *command]


@pytest.mark.slow
def test_a_file_size_limit_mid_sweep_keeps_the_rows_and_resumes(tmp_path):
    """A real ``ulimit -f`` in a subprocess: the write fails with EFBIG (Python ignores
    SIGXFSZ); one line, exit 2, no segfault at exit (HDF5 closing a file after a failed
    write used to crash), the committed rows read back, and --resume completes them.
    512 KiB hold the layout and the first spectrum chunk (runs 0-1, 256 KiB) with its
    measures; the chunk of runs 2-3 does not fit."""
    path = tmp_path / "big.h5"
    args = [sys.executable, "-m", "fastrank", "sweep", "--width", "64", "--depth", "3000",
            "--every", "1", "--seed", "0-3", "-q", "-o", str(path)]
    proc = subprocess.run(_limited(512, [*args, "--commit-every", "0"]), capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "File too large" in lines[0] and "--resume" in lines[0]
    with fastrank.open(path) as results:
        assert results.runs["rows"].sum() > 0
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with fastrank.open(path) as results:
        assert set(results.runs["status"]) == {"complete"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]


def test_errors_of_the_machine_exit_1_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr("fastrank.filling.fill", no_memory)
    result = CliRunner().invoke(cli, ["sweep", *SMALL, "-o", "r.h5"])
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        "fastrank: error: out of memory (MemoryError); --debug shows where"]
    monkeypatch.setenv("FASTRANK_DEBUG", "1")
    result = CliRunner().invoke(cli, ["sweep", *SMALL, "-o", "s.h5"])
    assert isinstance(result.exception, MemoryError)


def test_bare_fastrank_shows_the_help():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and "Commands:" in result.stdout and not result.stderr


def test_labels_name_every_option_that_varies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "20", "--seed",
                                      "0-1", "--activation", "relu", "--norm", "bn",
                                      "--order", "norm-act,act-norm", "-o", "r.h5"])
    assert result.exit_code == 0, result.output
    assert "order=norm-act" in result.stdout and "order=act-norm" in result.stdout
    with fastrank.open("r.h5") as results:
        assert len(set(results.runs["label"])) == 2
    summary = CliRunner().invoke(cli, ["info", "--summary", "r.h5"]).stdout
    assert summary.count("order=") == 2


def test_info_says_why_runs_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = fastrank.Sweep(grid={"width": (8,), "depth": (40,), "gain": (1e300,)},
                           seeds=(0, 1))
    fastrank.sweep(sweep, "f.h5")
    info = CliRunner().invoke(cli, ["info", "f.h5"]).stdout
    with fastrank.open("f.h5") as results:
        reason = results[0].failure
        assert results[0].status == "failed" and reason
    assert f"failed at layer {results[0].failed_layer}: {reason}" in info
    assert f"2 runs failed: {reason}" in info


def test_a_resume_on_other_threads_warns_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = fastrank.Sweep(grid={"width": (600,), "depth": (2,)},
                           schedule=fastrank.Schedule(every=1, log=None))
    fastrank.store.Writer.create("r.h5", sweep, {"numba_threads": 99}).close()
    result = CliRunner().invoke(cli, ["sweep", "--resume", "-q", "-o", "r.h5"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and "started on 99 threads" in result.stderr
    with fastrank.open("r.h5") as results:
        assert json.dumps(list(results.runs["status"])) == '["complete"]'


@pytest.mark.parametrize("tangents, warned", [(0, False), (1, True)])
def test_a_resume_on_other_threads_warns_where_tangents_go_layer_by_layer(
        tmp_path, monkeypatch, tangents, warned):
    """Between widths 129 and 512 a seed per thread takes the whole-depth kernel (the
    same bits on any thread count), but not with tangents: they go layer by layer."""
    import numba

    monkeypatch.chdir(tmp_path)
    sweep = fastrank.Sweep(grid={"width": (200,), "depth": (2,)},
                           seeds=tuple(range(numba.get_num_threads())), tangents=tangents,
                           schedule=fastrank.Schedule(every=1, log=None))
    fastrank.store.Writer.create("r.h5", sweep, {"numba_threads": 99}).close()
    result = CliRunner().invoke(cli, ["sweep", "--resume", "-q", "-o", "r.h5"])
    assert result.exit_code == 0, result.output
    assert ("started on 99 threads" in result.stderr) is warned, result.stderr
