"""Odd values of every option and malformed input arrays and config files, as a fuzzer
tries them: each is bad input, so the command exits 2 with exactly one line on stderr
(``fastrank: error: ...``, no traceback) and leaves nothing behind, neither the output
file nor its staging file nor its lock sidecar. One table of command lines run through
click's CliRunner (the same error boundary as the installed command), a few in a real
subprocess (numpy's warnings on a huge .npy header went to stderr there), and the
Python API, which refuses the same values with the same words."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib import format as npy

import fastrank
from fastrank.cli import cli

#: A small sweep, added for each of its options that a case does not give itself.
SMALL = {"--width": "8", "--depth": "5", "--seed": "0"}


def _npy(path: Path, shape, body: bytes = b"", descr="<f8", fortran_order=False) -> None:
    """A .npy file with the header given, whatever it says, and ``body`` after it."""
    with open(path, "wb") as f:
        npy.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran_order,
                                       "shape": shape})
        f.write(body)


def _config(text: str) -> str:
    """``text`` after the small sweep's values of the keys it does not set."""
    keys = {line.partition("=")[0].strip().replace("-", "_") for line in text.splitlines()}
    return "".join(f"{k[2:]} = {v}\n" for k, v in SMALL.items() if k[2:] not in keys) + text


CONFIGS = {
    "not_toml": "width = [8,\n",
    "twice": "cheap-every = 3\ncheap_every = 4\n",
    "unknown": "colour = 3\n",
    "width_float": "width = 8.5\n",
    "width_text": 'width = "a"\n',
    "width_table": "width = {a = 1}\n",
    "width_date": "width = 1979-05-27\n",
    "width_same_network": "width = [8, [8, 8, 8, 8, 8]]\n",
    "depth_float": "depth = 1e3\n",
    "every_text": 'every = "10"\n',
    "every_float": "every = 1.5\n",
    "seed_negative": "seed = -1\n",
    "seed_twice": "seed = [1, 1]\n",
    "tau_twice": "tau = [0.1, 0.1]\n",
    "method_number": "method = 3\n",
    "eps_zero": "eps = 0\n",
    "gamma_nan": "gamma = nan\n",
}


def _prepare(folder: Path) -> None:
    """Input arrays (.npy headers and bodies, HDF5 datasets) and config files, each
    wrong in one way."""
    ok = np.random.default_rng(0).standard_normal((40, 8))
    body = ok.tobytes()
    np.save(folder / "ok.npy", ok)
    _npy(folder / "neg_rows.npy", (-40, 8), body)
    _npy(folder / "neg_features.npy", (40, -8), body)
    _npy(folder / "huge.npy", (10**12, 10**12), body)
    _npy(folder / "tall.npy", (2**40, 8), body)
    _npy(folder / "overflow.npy", (2**62, 2**62), body)
    _npy(folder / "cut.npy", (40, 8), body[:100])
    _npy(folder / "fortran_yes.npy", (40, 8), body, fortran_order="yes")
    _npy(folder / "object.npy", (40, 8), body, descr="|O")
    _npy(folder / "nonsense.npy", (40, 8), body, descr="xyz")
    _npy(folder / "float_shape.npy", (40.5, 8), body)
    _npy(folder / "one_d.npy", (40,), body)
    _npy(folder / "three_d.npy", (10, 4, 8), body)
    _npy(folder / "scalar.npy", (), body[:8])
    _npy(folder / "no_rows.npy", (0, 8))
    _npy(folder / "no_features.npy", (40, 0))
    (folder / "empty.npy").write_bytes(b"")
    (folder / "version9.npy").write_bytes(b"\x93NUMPY\x09\x00" + body)
    arrays = {
        "bool": ok > 0, "complex": ok.astype(np.complex64), "long": ok.astype(np.longdouble),
        "dates": np.zeros((40, 8), "M8[s]"), "times": np.zeros((40, 8), "m8[s]"),
        "bytes": np.zeros((40, 8), "S3"), "words": np.zeros((40, 8), "U3"),
        "void": np.zeros((40, 8), "V8"), "record": np.zeros((40, 8), [("a", "f8")]),
        "int_huge": np.full((40, 8), 2**24 + 1, np.int32),
        "int_huge64": np.full((40, 8), 2**53 + 1, np.int64),
        "one_nan": np.where(np.arange(320).reshape(40, 8) == 5, np.nan, ok),
        "one_inf": np.where(np.arange(320).reshape(40, 8) == 5, -np.inf, ok),
        "half_inf": np.where(np.arange(320).reshape(40, 8) == 5, np.inf, ok).astype(np.float16),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    with h5py.File(folder / "g.h5", "w") as f:
        f["x"] = ok
        f.create_group("grp")
        f["one_d"], f["three_d"] = ok[:, 0], ok.reshape(40, 4, 2)
        f.create_dataset("no_rows", shape=(0, 8), dtype="f8")
        f.create_dataset("no_features", shape=(40, 0), dtype="f8")
        f["bytes"] = np.zeros((40, 8), "S3")
        f["text"] = np.array([["a"] * 8] * 40, dtype=h5py.string_dtype())
        f["record"] = np.zeros((40, 8), [("a", "f8"), ("b", "i4")])
        f["null"] = h5py.Empty("f8")
        f["bool"], f["complex"] = ok > 0, ok.astype(np.complex128)
        f["nan"] = np.full((40, 8), np.nan)
    (folder / "with:colon.h5").write_bytes((folder / "g.h5").read_bytes())
    for name, text in CONFIGS.items():
        (folder / f"{name}.toml").write_text(_config(text))
    (folder / "latin1.toml").write_bytes(b'width = "\xff"\n')


#: (id, command line, words the one line must hold). ``sweep`` command lines get -q,
#: the SMALL values they do not set and ``-o out.h5`` unless they name an output.
CASES = [
    # .npy headers and bodies
    ("npy negative rows", ["--input", "neg_rows.npy"], "negative shape (-40, 8)"),
    ("npy negative features", ["--input", "neg_features.npy"], "negative shape (40, -8)"),
    ("npy huge shape", ["--input", "huge.npy"], "cut short"),
    ("npy 2**40 rows", ["--input", "tall.npy"], "cut short"),
    ("npy size over 2**64", ["--input", "overflow.npy"], "cut short"),
    ("npy body cut", ["--input", "cut.npy"], "2,560 bytes), and 100 follow it"),
    ("npy empty file", ["--input", "empty.npy"], "an empty file"),
    ("npy fortran_order text", ["--input", "fortran_yes.npy"], "fortran_order"),
    ("npy object dtype", ["--input", "object.npy"], "object or pickled"),
    ("npy descr nonsense", ["--input", "nonsense.npy"], "descr"),
    ("npy float shape", ["--input", "float_shape.npy"], "shape"),
    ("npy version 9", ["--input", "version9.npy"], "version"),
    ("npy 1-D", ["--input", "one_d.npy"], "2-D"),
    ("npy 3-D", ["--input", "three_d.npy"], "2-D"),
    ("npy scalar", ["--input", "scalar.npy"], "got shape ()"),
    ("npy no rows", ["--input", "no_rows.npy"], "only 0 samples"),
    ("npy no features", ["--input", "no_features.npy"], "no features"),
    # dtypes: float32/float64 as they are, float16 and exact integers converted
    ("dtype bool", ["--input", "bool.npy"], "bool values"),
    ("dtype complex", ["--input", "complex.npy"], "complex"),
    ("dtype long double", ["--input", "long.npy"], "float128 values: fastrank takes float32"),
    ("dtype datetime", ["--input", "dates.npy"], "datetime64[s] values, not numbers"),
    ("dtype timedelta", ["--input", "times.npy"], "timedelta64[s]"),
    ("dtype bytes", ["--input", "bytes.npy"], "not numbers"),
    ("dtype unicode", ["--input", "words.npy"], "<U3"),
    ("dtype void", ["--input", "void.npy"], "V8"),
    ("dtype record", ["--input", "record.npy"], "not numbers"),
    ("int beyond float32", ["--input", "int_huge.npy"], "exactly to float32"),
    ("int beyond float64", ["--input", "int_huge64.npy", "--dtype", "float64"],
     "at most 2**53"),
    ("one NaN", ["--input", "one_nan.npy"], "NaN or infinite"),
    ("one -inf", ["--input", "one_inf.npy"], "NaN or infinite"),
    ("float16 inf", ["--input", "half_inf.npy"], "NaN or infinite"),
    # HDF5 datasets
    ("h5 missing dataset", ["--input", "g.h5:nope"], "no dataset 'nope'"),
    ("h5 no dataset named", ["--input", "g.h5"], "FILE.h5:DATASET"),
    ("h5 group", ["--input", "g.h5:grp"], "group"),
    ("h5 colon in the path", ["--input", "with:colon.h5:nope"], "no dataset 'nope'"),
    ("h5 root", ["--input", "g.h5:/"], "group"),
    ("h5 1-D", ["--input", "g.h5:one_d"], "2-D"),
    ("h5 3-D", ["--input", "g.h5:three_d"], "2-D"),
    ("h5 null dataspace", ["--input", "g.h5:null"], "no shape"),
    ("h5 no rows", ["--input", "g.h5:no_rows"], "only 0 samples"),
    ("h5 no features", ["--input", "g.h5:no_features"], "no features"),
    ("h5 bytes", ["--input", "g.h5:bytes"], "not numbers"),
    ("h5 strings", ["--input", "g.h5:text"], "not numbers"),
    ("h5 compound", ["--input", "g.h5:record"], "not numbers"),
    ("h5 bool", ["--input", "g.h5:bool"], "bool"),
    ("h5 complex", ["--input", "g.h5:complex"], "complex"),
    ("h5 NaN", ["--input", "g.h5:nan"], "NaN"),
    # output and the other paths
    ("-o the input's .npy", ["--input", "ok.npy", "-o", "ok.npy", "--overwrite"],
     "it is the output file ok.npy"),
    ("-o the input's HDF5", ["--input", "g.h5:x", "-o", "./g.h5", "--overwrite"],
     "it is the output file g.h5"),
    ("-o empty", ["-o", ""], "invalid -o '': empty"),
    ("-o blank", ["-o", " "], "invalid -o ' ': empty"),
    ("-o stdout", ["-o", "-"], "not a stream"),
    ("--config empty", ["--config", ""], "--config"),
    ("--scheduler empty", ["--scheduler", ""], "--scheduler"),
    ("--scheduler-file empty", ["--scheduler-file", ""], "--scheduler-file"),
    # float options
    ("commit-every nan", ["--commit-every", "nan"], "'--commit-every': nan"),
    ("commit-every negative", ["--commit-every", "-1"], "--commit-every"),
    ("commit-every -inf", ["--commit-every", "-inf"], "--commit-every"),
    ("commit-every empty", ["--commit-every", ""], "--commit-every"),
    ("eps 0", ["--eps", "0"], "invalid eps 0.0: must be > 0"),
    ("eps -0", ["--eps", "-0"], "eps -0.0"),
    ("eps underflow", ["--eps", "1e-400"], "eps 0.0"),
    ("eps nan", ["--eps", "nan"], "eps nan"),
    ("eps inf", ["--eps", "inf"], "eps inf"),
    ("eps negative", ["--eps", "-1e-5"], "eps"),
    ("gamma 0", ["--gamma", "0"], "gamma"),
    ("gamma -inf", ["--gamma", "-inf"], "gamma -inf"),
    ("gamma nan", ["--gamma", "nan"], "gamma nan"),
    ("gamma underflow", ["--gamma", "1e-400"], "gamma 0.0"),
    ("gain 0", ["--gain", "0"], "gain"),
    ("gain inf", ["--gain", "inf"], "gain inf"),
    ("gain nan", ["--gain", "nan"], "gain nan"),
    ("gain range", ["--gain", "0.5-2"], "not ranges"),
    ("tau nan", ["--tau", "nan"], "tau nan"),
    ("tau inf", ["--tau", "inf"], "tau inf"),
    ("tau 1", ["--tau", "1"], "strictly between 0 and 1"),
    # values listed twice
    ("width twice", ["--width", "32,32"], "invalid width 32: listed twice"),
    ("seed in a range twice", ["--seed", "0-3,2"], "invalid seed 2: listed twice"),
    ("norm twice", ["--norm", "bn,bn"], "norm 'bn'"),
    ("dtype twice", ["--dtype", "float32,float32"], "dtype 'float32'"),
    ("input twice", ["--input", "ok.npy,ok.npy"], "input 'ok.npy'"),
    ("tau twice", ["--tau", "0.1,0.1"], "tau 0.1: listed twice"),
    # integers: huge, empty, negative, odd ranges, whitespace, unicode
    ("width 10**30", ["--width", str(10**30)], "memory"),
    ("log 10**30", ["--log", str(10**30)], "memory"),
    ("seed 10**30", ["--seed", str(10**30)], "2**64"),
    ("layers 10**30", ["--layers", str(10**30)], "beyond depth"),
    ("every in floating point", ["--every", "1e30"], "--every"),
    ("width 0-0", ["--width", "0-0"], "width 0"),
    ("width range down", ["--width", "8-2"], "range"),
    ("layers range down", ["--layers", "3-1"], "range"),
    ("layers negative", ["--layers", "-1"], "layers '-1'"),
    ("width blank", ["--width", " "], "empty"),
    ("width fullwidth digit", ["--width", "８"], "width '８'"),
    ("width hex", ["--width", "0x10"], "0x10"),
    ("width factor 0", ["--width", "8-16:x0"], "range"),
    ("cheap-every negative", ["--cheap-every", "-1"], "cheap_every"),
    ("every empty", ["--every", ""], "--every"),
    ("device empty", ["--device", ""], "--device"),
    ("workers 0", ["--workers", "0"], "--workers 0"),
    ("threads alone", ["--threads-per-worker", "2"], "--threads-per-worker"),
    # words
    ("activation case", ["--activation", "ReLU"], "activation 'ReLU'"),
    ("norm trailing comma", ["--norm", "bn,"], "empty"),
    ("method empty", ["--method", ""], "--method"),
    ("input empty", ["--input", ""], "empty"),
    ("input upper case", ["--input", "OK.NPY"], "FILE.npy"),
    # config files
    ("config invalid TOML", ["--config", "not_toml.toml"], "not valid TOML"),
    ("config latin-1", ["--config", "latin1.toml"], "not UTF-8"),
    ("config one option twice", ["--config", "twice.toml"], "cheap-every and cheap_every"),
    ("config unknown key", ["--config", "unknown.toml"], "'colour'"),
    ("config width float", ["--config", "width_float.toml"], "width '8.5'"),
    ("config width text", ["--config", "width_text.toml"], "width 'a'"),
    ("config width table", ["--config", "width_table.toml"], "width"),
    ("config width date", ["--config", "width_date.toml"], "1979-05-27"),
    ("config same network", ["--config", "width_same_network.toml"], "the same network"),
    ("config depth float", ["--config", "depth_float.toml"], "depth '1000.0'"),
    ("config every text", ["--config", "every_text.toml"], "every '10'"),
    ("config every float", ["--config", "every_float.toml"], "every 1.5"),
    ("config seed negative", ["--config", "seed_negative.toml"], "seed '-1'"),
    ("config seed twice", ["--config", "seed_twice.toml"], "seed 1: listed twice"),
    ("config tau twice", ["--config", "tau_twice.toml"], "tau 0.1"),
    ("config method number", ["--config", "method_number.toml"], "method 3"),
    ("config eps 0", ["--config", "eps_zero.toml"], "eps 0.0"),
    ("config gamma nan", ["--config", "gamma_nan.toml"], "gamma nan"),
    # info and plot
    ("info empty path", ["info", ""], "no results file given (an empty path)"),
    ("info two files", ["info", "g.h5", "g.h5"], "unexpected extra argument"),
    ("plot bad --select", ["plot", "r.h5", "--select", "="], "--select"),
    ("plot --average open", ["plot", "r.h5", "--kind", "width", "--average", "5-"], "LO-HI"),
    ("plot --at negative", ["plot", "r.h5", "--kind", "width", "--at", "-1"], "at '-1'"),
    ("plot nameless figure", ["plot", "r.h5", "-o", ".png"], "format"),
    ("plot kind", ["plot", "r.h5", "--kind", "bar"], "--kind"),
    ("plot empty path", ["plot", "", "-o", "f.png"], "no results file given (an empty path)"),
    ("plot -o empty", ["plot", "r.h5", "-o", ""], "invalid -o '': empty"),
    ("plot -o blank", ["plot", "r.h5", "-o", " "], "invalid -o ' ': empty"),
    ("plot --at empty", ["plot", "r.h5", "--kind", "width", "--at", ""], "invalid at ''"),
    ("plot --average empty", ["plot", "r.h5", "--kind", "width", "--average", ""],
     "invalid average ''"),
    ("plot --layers empty", ["plot", "r.h5", "--kind", "spectrum", "--layers", ""],
     "invalid layers ''"),
    ("plot --average fullwidth digit", ["plot", "r.h5", "--kind", "width", "--average", "１-2"],
     "invalid average '１-2'"),
    ("plot --at fullwidth digit", ["plot", "r.h5", "--kind", "width", "--at", "２"], "at '２'"),
    ("plot --average beyond depth", ["plot", "r.h5", "--kind", "width", "--average", "100-200"],
     "invalid average 100-200: the runs end at layer 5"),
    ("plot --average past the end", ["plot", "r.h5", "--kind", "width", "--average", "3-6"],
     "invalid average 3-6: the runs end at layer 5"),
    ("plot --at beyond depth", ["plot", "r.h5", "--kind", "width", "--at", "2,6"],
     "invalid at 6: the runs end at layer 5"),
    ("plot --at 10**30", ["plot", "r.h5", "--kind", "width", "--at", str(10**30)],
     "the runs end at layer 5"),
    ("plot --layers beyond depth", ["plot", "r.h5", "--kind", "spectrum", "--layers", "0,6"],
     "invalid layers 6: the runs end at layer 5"),
    ("plot --average of depth", ["plot", "r.h5", "--average", "1-2"],
     "--average belongs to --kind width, not --kind depth"),
    ("plot --at of spectrum", ["plot", "r.h5", "--kind", "spectrum", "--at", "1"],
     "--at belongs to --kind width, not --kind spectrum"),
    ("plot --layers of width", ["plot", "r.h5", "--kind", "width", "--layers", "1"],
     "--layers belongs to --kind spectrum, not --kind width"),
    ("plot --layers of depth", ["plot", "r.h5", "--layers", "1"], "--layers belongs"),
    ("plot --measure of spectrum", ["plot", "r.h5", "--kind", "spectrum", "--measure",
                                    "soft_rank"], "--measure belongs to --kind depth or width"),
    ("plot --at and --average", ["plot", "r.h5", "--kind", "width", "--at", "2", "--average",
                                 "1-3"], "--at and --average exclude each other"),
    # local Dask clusters: refused before a worker starts
    ("workers 10**30", ["--workers", str(10**30)], "at most one worker process per core"),
    ("workers beyond the cores", ["--workers", str((os.cpu_count() or 1) + 1)],
     "Dask workers on this machine's"),
    ("threads beyond the cores", ["--workers", "1", "--threads-per-worker", str(10**30)],
     "threads: this machine has"),
]


def _command(args: list[str]) -> list[str]:
    if args[0] in ("info", "plot"):
        return args
    config = "--config" in args
    small = [x for k, v in SMALL.items() if k not in args and not config for x in (k, v)]
    output = [] if "-o" in args else ["-o", "out.h5"]
    return ["sweep", "-q", *small, *args, *output]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    _prepare(folder)
    fastrank.sweep(fastrank.Sweep(grid={"width": (8,), "depth": (5,)}), folder / "r.h5")
    return folder


def _listing(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrank: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_the_table_names_each_case_once():
    assert len({case[0] for case in CASES}) == len(CASES) > 100


@pytest.mark.parametrize("args, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_in_one_line_and_leaves_nothing(prepared, monkeypatch, args, words):
    monkeypatch.chdir(prepared)
    before = _listing(prepared)
    try:
        result = CliRunner().invoke(cli, _command(args))
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert words in _one_line(result.stderr)
        assert _listing(prepared) == before  # no out.h5, .out.h5.*.tmp or .out.h5.lock
    finally:  # what a failing case left must not reach the next ones
        for name in set(os.listdir(prepared)) - set(before):
            os.unlink(prepared / name)


@pytest.mark.parametrize("name", ["neg_rows", "huge"])
def test_a_bad_npy_header_in_a_real_process(prepared, tmp_path, name):
    """Where numpy's RuntimeWarnings about an overflowing size would reach stderr."""
    args = ["--input", str(prepared / f"{name}.npy"), "-o", str(tmp_path / "out.h5")]
    proc = subprocess.run([sys.executable, "-m", "fastrank", *_command(args)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{name}.npy" in _one_line(proc.stderr)
    assert list(tmp_path.iterdir()) == []


#: (id, command line, the same refusal through the Python API).
API = [
    ("eps 0", ["--eps", "0"], lambda: fastrank.Network(eps=0)),
    ("width twice", ["--width", "32,32"], lambda: fastrank.Sweep(grid={"width": [32, 32]})),
    ("seed twice", ["--seed", "1,1"], lambda: fastrank.Sweep(seeds=(1, 1))),
    ("tau twice", ["--tau", "0.5,0.5"], lambda: fastrank.Sweep(taus=(0.5, 0.5))),
    ("same network", ["--config", "width_same_network.toml"],
     lambda: fastrank.Sweep(grid={"width": [8, (8,) * 5], "depth": [5]})),
    ("npy negative shape", ["--input", "neg_rows.npy"],
     lambda: fastrank.Network(input="neg_rows.npy")),
    ("npy bool", ["--input", "bool.npy"], lambda: fastrank.Network(input="bool.npy")),
    ("h5 null dataspace", ["--input", "g.h5:null"], lambda: fastrank.Network(input="g.h5:null")),
]


@pytest.mark.parametrize("args, build", [c[1:] for c in API], ids=[c[0] for c in API])
def test_the_python_api_refuses_with_the_same_words(prepared, monkeypatch, args, build):
    monkeypatch.chdir(prepared)
    line = _one_line(CliRunner().invoke(cli, _command(args)).stderr)
    with pytest.raises(fastrank.SpecError) as refused:
        build()
    assert line == f"fastrank: error: {refused.value}"


@pytest.mark.parametrize("build, words", [
    (lambda: fastrank.Sweep(seeds=5), "invalid seed 5: give a list"),
    (lambda: fastrank.Sweep(taus=0.1), "invalid tau 0.1: give a list"),
    (lambda: fastrank.Sweep(taus=[]), "invalid tau: the list of thresholds is empty"),
    (lambda: fastrank.Sweep(grid="width"), "invalid grid 'width'"),
    (lambda: fastrank.Sweep(schedule=None), "invalid schedule None"),
    (lambda: fastrank.Schedule(layers=5), "invalid layers 5: give a list"),
], ids=["seeds 5", "taus 0.1", "taus empty", "grid text", "schedule None", "layers 5"])
def test_python_api_values_of_the_wrong_kind_are_one_spec_error(build, words):
    """Where a TypeError or AttributeError came out, or a sweep failed at its layout."""
    with pytest.raises(fastrank.SpecError, match=words):
        build()


def test_an_input_path_object_is_its_text(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(prepared)
    sweep = fastrank.Sweep(grid={"input": [Path("ok.npy")], "depth": [3]})
    assert fastrank.Network(input=Path("ok.npy"), depth=3) == sweep.networks()[0]
    with fastrank.open(fastrank.sweep(sweep, tmp_path / "p.h5")) as results:
        assert results.sweep == sweep and results[0].network.input == "ok.npy"


def test_a_results_file_reads_after_its_input_file_moved(tmp_path, monkeypatch):
    """The file stores each run's network; its sweep named an input file that is gone:
    it still opens (it said 'damaged'), and a resume, which needs the input, is refused
    in one line with the file untouched."""
    monkeypatch.chdir(tmp_path)
    np.save("in.npy", np.random.default_rng(2).standard_normal((8, 8)))
    sweep = fastrank.Sweep(grid={"input": ["in.npy"], "width": [8], "depth": [3],
                                 "gamma": [0.5, math.inf]})
    fastrank.sweep(sweep, "r.h5")
    os.unlink("in.npy")
    before = Path("r.h5").read_bytes()
    with fastrank.open("r.h5") as results:
        assert results.sweep == sweep and [run.network.batch for run in results] == [8, 8]
    assert CliRunner().invoke(cli, ["info", "r.h5"]).exit_code == 0
    resumed = CliRunner().invoke(cli, ["sweep", "--resume", "-q", "-o", "r.h5"])
    assert resumed.exit_code == 2 and "'in.npy': no such file" in _one_line(resumed.stderr)
    assert Path("r.h5").read_bytes() == before


def test_a_file_written_with_a_seed_listed_twice_still_opens(tmp_path):
    """Values listed twice are refused from now on; files that hold them stay readable."""
    from fastrank import spec

    with spec._rebuilding():
        sweep = fastrank.Sweep(grid={"depth": [3]}, seeds=(1, 1))
    fastrank.store.Writer.create(tmp_path / "twice.h5", sweep, {}).close()
    with fastrank.open(tmp_path / "twice.h5") as results:
        assert results.sweep.seeds == (1, 1) and len(results) == 2


def test_float16_and_integer_inputs_are_their_exact_conversion(tmp_path, monkeypatch):
    """Accepted, not refused: a float16 or integer batch runs exactly as its float32 copy."""
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(1).integers(-1000, 1000, (16, 8))
    arrays = {"f32": x.astype(np.float32), "f16": x.astype(np.float16), "i16": x.astype(np.int16),
              "u64": (x + 1000).astype(np.uint64), "f32u": (x + 1000).astype(np.float32)}
    for name, array in arrays.items():
        np.save(f"{name}.npy", array)
    spectra = {name: fastrank.simulate(fastrank.Network(input=f"{name}.npy", depth=3,
                                                        norm="bn"), seed=0).spectrum
               for name in arrays}
    np.testing.assert_array_equal(spectra["f16"], spectra["f32"])
    np.testing.assert_array_equal(spectra["i16"], spectra["f32"])
    np.testing.assert_array_equal(spectra["u64"], spectra["f32u"])


def test_an_hdf5_path_may_hold_colons(prepared, monkeypatch):
    monkeypatch.chdir(prepared)
    assert fastrank.Network(input="with:colon.h5:x").in_dim == 8


def test_commit_every_0_and_inf_are_accepted(tmp_path, monkeypatch):
    """0 commits every stretch of layers, inf only when a group of runs ends."""
    monkeypatch.chdir(tmp_path)
    for i, value in enumerate(("0", "inf")):
        result = CliRunner().invoke(cli, _command(["--commit-every", value, "-o", f"{i}.h5"]))
        assert result.exit_code == 0, result.output
        with fastrank.open(f"{i}.h5") as results:
            assert set(results.runs["status"]) == {"complete"}


#: (id, the file's bytes, what the one line says after "... is not a Dask scheduler file (").
SCHEDULER_FILES = [
    ("not JSON", b"tcp://127.0.0.1:8786\n", "not JSON"),
    ("no address", b'{"type": "Scheduler", "id": "x"}', 'its JSON has no "address"'),
    ("address a number", b'{"address": 8786}', 'its JSON has no "address"'),
    ("address empty", b'{"address": " "}', 'its JSON has no "address"'),
    ("a list", b'["tcp://127.0.0.1:8786"]', 'its JSON has no "address"'),
    ("not UTF-8", b'{"address": "\xff"}', "not UTF-8"),
    ("nested too deep", b"[" * 100_000, "not JSON"),
    ("huge", b" " * (1 << 20) + b"{}", "more than 1,048,576 characters"),
]


@pytest.mark.parametrize("content, words", [c[1:] for c in SCHEDULER_FILES],
                         ids=[c[0] for c in SCHEDULER_FILES])
def test_a_scheduler_file_of_anything_else_is_one_line(tmp_path, monkeypatch, content, words):
    """Dask's client met these with an AssertionError traceback (exit 1)."""
    monkeypatch.chdir(tmp_path)
    Path("s.json").write_bytes(content)
    result = CliRunner().invoke(cli, _command(["--scheduler-file", "s.json"]))
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"s.json is not a Dask scheduler file ({words}" in _one_line(result.stderr)
    assert os.listdir() == ["s.json"]


def test_a_scheduler_file_that_is_no_regular_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo("s.json")  # opening it would wait for a writer forever
    result = CliRunner().invoke(cli, _command(["--scheduler-file", "s.json"]))
    assert result.exit_code == 2
    assert "s.json is not a Dask scheduler file (not a regular file)" in _one_line(result.stderr)


def test_more_threads_per_task_than_a_workers_host_has(tmp_path, monkeypatch):
    """A running cluster's workers are asked their cores before any file is touched."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        result = CliRunner().invoke(cli, _command(["--scheduler", cluster.scheduler_address,
                                                   "--threads-per-worker", str(10**6)]))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "1,000,000 threads: a Dask worker's host has" in _one_line(result.stderr)
    assert os.listdir() == []


def test_layers_no_run_has_are_refused_by_the_python_api_too():
    """plot_width and plot_spectra: past the depth, below 0, and a window without a
    measured row (matplotlib's 'cannot be log-scaled' ValueError before)."""
    from fastrank import plot as fp

    runs = fastrank.simulate_many(fastrank.Network(width=8, depth=20), range(2),
                                  fastrank.Schedule(every=10, log=None))
    for call, words in [
        (lambda: fp.plot_width(runs, at=[21]), "invalid at 21: the runs end at layer 20"),
        (lambda: fp.plot_width(runs, at=[-1]), "invalid at -1: layers start at 0"),
        (lambda: fp.plot_width(runs, average=(15, 25)), "invalid average 15-25"),
        (lambda: fp.plot_spectra(runs, layers=[0, 30]), "invalid layers 30"),
        (lambda: fp.plot_width(runs, average=(1, 9)),
         "no run has 'soft_rank' measured in layers 1-9"),
    ]:
        with pytest.raises(fp.PlotError) as refused:
            call()
        assert words in str(refused.value)
    assert fp.plot_width(runs, average=(1, 10)).get_lines()


def test_fastrank_sweep_refuses_before_touching_a_file(tmp_path, monkeypatch):
    """The Python API's own checks (the command line makes them on its way too): an
    empty path, an input array's file as the output (with overwrite: the data would be
    replaced), an input no run could start from (NaN: every run would fail)."""
    monkeypatch.chdir(tmp_path)
    data = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    np.save("x.npy", data)
    data[0, 0] = np.nan
    np.save("nan.npy", data)
    before, kept = sorted(os.listdir(tmp_path)), Path("x.npy").read_bytes()
    cases = [("", "x.npy", {}, "empty"), ("x.npy", "x.npy", {"overwrite": True}, "output file"),
             ("r.h5", "nan.npy", {}, "NaN")]
    for path, given, options, words in cases:
        sweep = fastrank.Sweep(grid={"width": [8], "depth": [10], "input": [given]}, seeds=(0,))
        with pytest.raises(fastrank.SpecError, match=words):
            fastrank.sweep(sweep, path, **options)
        assert sorted(os.listdir(tmp_path)) == before, (path, given)
    assert Path("x.npy").read_bytes() == kept
