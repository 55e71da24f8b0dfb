"""The command line: sweeps, options, config files, info, env, and one-line errors
(through click's CliRunner and through a real subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank.cli import cli

SMALL = ["--width", "8", "--depth", "30", "--seed", "0-1", "-q"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_sweep_writes_the_product_of_the_options(runner):
    _ok(runner.invoke(cli, ["sweep", *SMALL, "-o", "r.h5"]))
    with fastrank.open("r.h5") as results:
        assert len(results) == 8  # default activations 2 x norms 2 x seeds 2
        assert set(results.runs["status"]) == {"complete"}
        assert sorted(set(results.runs["norm"])) == ["bn", "none"]
        run = results.select(activation="relu", norm="bn")[0]
        assert run.layer[-1] == 30 and run.soft_rank.shape == run.layer.shape


def test_sweep_prints_a_summary_and_info_lists_runs(runner):
    result = _ok(runner.invoke(cli, ["sweep", "--width", "8", "--depth", "30", "--seed", "0",
                                     "-o", "r.h5"]))
    assert "soft rank" in result.stdout and "relu/bn d=8" in result.stdout
    info = _ok(runner.invoke(cli, ["info", "r.h5"]))
    assert info.stdout.count("complete") >= 4 and "4 runs: 4 complete" in info.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--width", "0"], ["width", ">= 1"]),
        (["--norm", "foo"], ["norm", "foo", "bn"]),
        (["--seed", "3-1"], ["seed"]),
        (["--tau", "2"], ["tau"]),
        (["--every", "-1"], ["every"]),
        (["--bogus", "1"], ["--bogus"]),
    ],
)
def test_bad_input_exits_2_with_one_line(runner, args, words):
    result = runner.invoke(cli, ["sweep", *args, "-o", "r.h5"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrank: error:")
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in result.output


def test_existing_output_is_never_overwritten_without_the_flag(runner, tmp_path):
    _ok(runner.invoke(cli, ["sweep", *SMALL, "-o", "r.h5"]))
    before = (tmp_path / "r.h5").read_bytes()
    result = runner.invoke(cli, ["sweep", *SMALL, "--depth", "40", "-o", "r.h5"])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "r.h5").read_bytes() == before
    _ok(runner.invoke(cli, ["sweep", *SMALL, "--depth", "40", "-o", "r.h5", "--overwrite"]))
    with fastrank.open("r.h5") as results:
        assert results[0].layer[-1] == 40


def test_default_output_picks_a_fresh_name(runner, tmp_path):
    _ok(runner.invoke(cli, ["sweep", *SMALL]))
    _ok(runner.invoke(cli, ["sweep", *SMALL]))
    assert (tmp_path / "fastrank-sweep.h5").exists() and (tmp_path / "fastrank-sweep-1.h5").exists()


def test_resume_of_a_complete_sweep_changes_nothing(runner):
    _ok(runner.invoke(cli, ["sweep", *SMALL, "-o", "r.h5"]))
    with fastrank.open("r.h5") as results:
        before = results[3].spectrum.copy()
    _ok(runner.invoke(cli, ["sweep", "--resume", "-o", "r.h5", "-q"]))  # options from the file
    _ok(runner.invoke(cli, ["sweep", *SMALL, "--resume", "-o", "r.h5"]))  # same options
    with fastrank.open("r.h5") as results:
        np.testing.assert_array_equal(results[3].spectrum, before)
    different = runner.invoke(cli, ["sweep", *SMALL, "--width", "16", "--resume", "-o", "r.h5"])
    assert different.exit_code == 2 and "different sweep" in different.stderr


def test_config_file_with_command_line_overrides(runner, tmp_path):
    (tmp_path / "s.toml").write_text(
        'width = [8, 12]\ndepth = 20\nactivation = "relu"\nnorm = ["bn"]\nseed = "0-2"\n'
        "every = 5\nlog = 0\ntau = [0.1, 0.5]\n"
    )
    _ok(runner.invoke(cli, ["sweep", "--config", "s.toml", "--width", "8", "-o", "r.h5", "-q"]))
    with fastrank.open("r.h5") as results:
        assert len(results) == 3 and set(results.runs["width"]) == {8}
        assert results[0].layer.tolist() == [0, 5, 10, 15, 20]
        assert results[0].rank_tau.shape == (5, 2)
    (tmp_path / "bad.toml").write_text("colour = 3\n")
    result = runner.invoke(cli, ["sweep", "--config", "bad.toml", "-o", "b.h5"])
    assert result.exit_code == 2 and "colour" in result.stderr


def test_info_on_a_missing_or_foreign_file_exits_2(runner, tmp_path):
    assert runner.invoke(cli, ["info", "nothing.h5"]).exit_code == 2
    (tmp_path / "text.h5").write_text("not hdf5")
    result = runner.invoke(cli, ["info", "text.h5"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_env_reports_versions(runner):
    result = _ok(runner.invoke(cli, ["env"]))
    for word in ("fastrank", "numba", "h5py", "blas", "cuda"):
        assert word in result.stdout


@pytest.mark.slow
def test_real_subprocess_bad_input_and_version(tmp_path):
    cmd = [sys.executable, "-m", "fastrank", "sweep", "--norm", "foo", "-o", str(tmp_path / "x.h5")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "fastrank: error: invalid norm 'foo': choose one of none, bn, bn-rms, ln"
    ]
    assert not (tmp_path / "x.h5").exists()
    version = subprocess.run([sys.executable, "-m", "fastrank", "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and fastrank.__version__ in version.stdout


def test_the_command_line_starts_without_the_kernels():
    """`fastrank --help` / `--version` / completion load no numba, scipy or h5py (they cost
    most of a second): the package's names load on first use."""
    code = ("import sys, fastrank, fastrank.cli; "
            "heavy = {'numba', 'scipy', 'h5py'} & set(sys.modules); "
            "assert not heavy, heavy; fastrank.Network; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _without_thread_settings() -> dict:
    from fastrank import blas

    return {k: v for k, v in os.environ.items() if k not in blas.THREAD_VARIABLES}


@pytest.mark.slow
def test_the_command_line_loads_blas_at_one_thread_and_raises_it_for_numpy_products():
    """The CLI loads numpy's and SciPy's OpenBLAS with one thread (each pool's threads
    would spin ~0.1 s of CPU at load), SciPy's through its Cython modules alone (not all
    of scipy.linalg), leaves the environment as it was for subprocesses, and raises the
    pools to the usual count inside blas.usual(); `fastrank env` reports that count."""
    code = (
        "import os, sys, fastrank.cli; from fastrank import blas; "
        "assert 'OPENBLAS_NUM_THREADS' not in os.environ; "
        "counts = lambda: sorted(lib.num_threads for lib in blas.libraries()); "
        "loaded = counts(); assert 'scipy.linalg' not in sys.modules\n"
        "with blas.usual(): raised = counts()\n"
        "print(len(os.sched_getaffinity(0)), loaded, raised, counts(), blas.usual_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=_without_thread_settings(),
                         check=True, capture_output=True, text=True).stdout.split(maxsplit=1)
    cores = int(out[0])
    assert out[1].strip() == f"[1, 1] [{cores}, {cores}] [1, 1] {cores}"
    env = subprocess.run([sys.executable, "-m", "fastrank", "env", "--json"], check=True,
                         env=_without_thread_settings(), capture_output=True, text=True)
    assert f", {cores} threads" in json.loads(env.stdout)["blas"]


def test_usual_raises_only_the_openblas_that_loaded_at_one_thread(monkeypatch):
    """Another BLAS (MKL, which OPENBLAS_NUM_THREADS does not reach) keeps the count it
    loaded with, inside blas.usual() and in the count recorded with each run."""
    from fastrank import blas

    class Library:  # threadpoolctl's controller, as far as fastrank.blas uses it
        def __init__(self, api, threads):
            self.internal_api, self.num_threads = api, threads

        def set_num_threads(self, threads):
            self.num_threads = threads

    libs = [Library("openblas", 1), Library("mkl", 3)]
    monkeypatch.setattr(blas, "libraries", lambda: libs)
    monkeypatch.setattr(blas, "_openblas", blas._openblas.__wrapped__)
    monkeypatch.setattr(blas, "_usual", 2)
    with blas.usual():
        assert [lib.num_threads for lib in libs] == [2, 3]
    assert [lib.num_threads for lib in libs] == [1, 3] and blas.usual_threads() == 3
    with blas.one_thread():
        assert [lib.num_threads for lib in libs] == [1, 1]
    assert [lib.num_threads for lib in libs] == [1, 3]


@pytest.mark.slow
def test_blas_started_at_one_thread_gives_the_numbers_of_the_usual_count(tmp_path):
    """numpy's own products (the per-layer path's GEMM, orthogonal weights' QR, spectra
    above tuning.SMALL_EIGEN_MAX) run at the usual thread count whether the process
    started BLAS at one thread (the CLI) or at that count (a user's setting): the same
    bits, and the same count recorded. (At one thread their last bits differ.)"""
    cores = len(os.sched_getaffinity(0))
    args = ["sweep", "--width", "520", "--norm", "ln", "--init", "orthogonal", "--input",
            "orthogonal", "--activation", "relu", "--depth", "3", "--every", "1", "--seed",
            "0", "-q"]

    def sweep(name, **settings):
        path = tmp_path / name
        subprocess.run([sys.executable, "-m", "fastrank", *args, "-o", str(path)], check=True,
                       env={**_without_thread_settings(), **settings}, timeout=300)
        with fastrank.open(path) as results:
            run = results[0]
            return np.asarray(run.spectrum), results.runs["blas_threads"].tolist()

    started_at_one, chosen = sweep("one.h5"), sweep("set.h5", OPENBLAS_NUM_THREADS=str(cores))
    assert started_at_one[1] == chosen[1] == [cores]
    np.testing.assert_array_equal(started_at_one[0], chosen[0])


@pytest.mark.parametrize("output, words", [
    ("nodir/x.h5", "cannot write nodir/x.h5: No such file or directory"),
    ("a" * 300 + ".h5", "File name too long"),
])
def test_an_unwritable_output_is_one_line_before_any_work(runner, output, words):
    result = runner.invoke(cli, ["sweep", *SMALL, "-o", output])
    assert result.exit_code == 2 and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_first_sweep_says_it_compiles_the_kernels(runner, monkeypatch):
    import fastrank.kernels.cpu as kernels

    assert isinstance(kernels.compiled_before(), bool)
    monkeypatch.setattr(kernels, "compiled_before", lambda: False)
    result = _ok(runner.invoke(cli, ["sweep", "--width", "8", "--depth", "5", "-o", "a.h5"]))
    assert "compiling the kernels for this machine (once" in result.stderr
    quiet = _ok(runner.invoke(cli, ["sweep", *SMALL, "-o", "b.h5"]))
    assert "compiling" not in quiet.stderr


def test_the_eta_follows_the_recent_layer_rate(monkeypatch):
    """A slow start (a first run compiling its kernels) does not keep the ETA off: it
    comes from the layers of the last 10 s (click's own averages from the start)."""
    from fastrank.cli import sweep as command

    clock = [0.0]
    monkeypatch.setattr(command.time, "monotonic", lambda: clock[0])
    progress = command._Progress(quiet=True)
    progress.total, progress.recent = 5000, command.collections.deque([(0.0, 0)])
    clock[0], progress.done = 20.0, 10  # 20 s for the first 10 layers
    progress._eta()
    for second in range(1, 16):  # then 100 layers per second
        clock[0], progress.done = 20.0 + second, 10 + 100 * second
        eta = progress._eta()
    assert eta == "ETA 00:00:34"  # 3490 layers left at 100 per second


# --- docs that match behaviour: --json for scripts, --help defaults, the README --------

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_info_json_holds_the_runs_and_the_summary(runner):
    import json

    _ok(runner.invoke(cli, ["sweep", *SMALL, "--norm", "none,bn", "-o", "r.h5"]))
    doc = json.loads(_ok(runner.invoke(cli, ["info", "--json", "r.h5"])).stdout)
    assert doc["n_runs"] == 8 and doc["status_counts"] == {"complete": 8}
    assert doc["format_version"] == 3 and doc["taus"] == [0.1]
    with fastrank.open("r.h5") as results:
        assert [r["id"] for r in doc["runs"]] == [run.id for run in results]
        assert [r["soft_rank"] for r in doc["runs"]] == [float(run.soft_rank[-1])
                                                          for run in results]
    assert doc["runs"][0]["network"]["gamma"] == "inf"  # strict JSON, as --gamma takes it
    groups = doc["summary"]["configurations"]
    assert len(groups) == 4 and all(g["runs"] == g["complete"] == 2 for g in groups)
    assert doc["summary"]["failures"] == {}
    text = _ok(runner.invoke(cli, ["info", "--summary", "r.h5"])).stdout
    assert all(g["configuration"] in text for g in groups)
    short = json.loads(_ok(runner.invoke(cli, ["info", "--json", "--summary", "--check",
                                               "r.h5"])).stdout)
    assert "runs" not in short and short["damaged"] == [] and short["summary"] == doc["summary"]


def test_env_json_is_what_env_prints(runner):
    import json

    doc = json.loads(_ok(runner.invoke(cli, ["env", "--json"])).stdout)
    plain = _ok(runner.invoke(cli, ["env"])).stdout.splitlines()
    assert list(doc) == [line.split()[0] for line in plain]
    assert doc["fastrank"].startswith(fastrank.__version__)


def test_float_options_refuse_a_range_in_one_line(runner):
    result = runner.invoke(cli, ["sweep", *SMALL, "--gain", "0.5-2", "-o", "r.h5"])
    assert result.exit_code == 2 and "not ranges" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _shown_defaults() -> dict:
    """``--option`` -> the default ``fastrank sweep --help`` shows for it (None: none)."""
    import re

    import click

    from fastrank.cli.sweep import sweep

    ctx = click.Context(sweep)
    shown = {}
    for param in sweep.params:
        record = param.get_help_record(ctx)
        if record and isinstance(param, click.Option):
            m = re.search(r"\[default: (.*?)(?:; [^\]]*)?\]$", " ".join(record[1].split()))
            shown[param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]] = (
                m[1] if m else None)
    return shown


def test_sweep_help_shows_every_default():
    import click

    from fastrank.cli.sweep import sweep

    without = {"--config", "--scheduler", "--scheduler-file", "--help"}  # none to show
    flags = {p.opts[-1] for p in sweep.params if isinstance(p, click.Option) and p.is_flag}
    missing = [o for o, d in _shown_defaults().items() if d is None and o not in without | flags]
    assert not missing


def test_readme_option_table_matches_sweep_help():
    """Every row of the README's option table names a `fastrank sweep` option, and its
    default column is the default --help shows; every grid and schedule option has a row."""
    from fastrank import options

    shown = _shown_defaults()
    rows = [line.split("|") for line in README.splitlines() if line.startswith("| `--")]
    documented = {}
    for row in rows:
        option, default = row[1].strip().strip("`"), row[-2].strip().strip("`")
        assert option in shown, option
        documented[option] = default
    assert {o: shown[o] for o in documented} == documented
    wanted = {"--" + name.replace("_", "-") for name in (*options.GRID_PARSERS,
                                                         *options.OTHER_KEYS)}
    assert wanted <= set(documented)


def test_shipped_files_name_no_unshipped_file_or_issue_number():
    """README, docs/, examples/ and the package refer to the paper or to docs/, not to
    notes beside the repository or to issue numbers of its tracker."""
    import re

    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "examples").glob("*.toml"), *(ROOT / "fastrank").rglob("*.py"),
             *(ROOT / "bench").glob("*.py")]
    bad = re.compile(r"PAPER\.md|DESIGN\.md|\.\./shared|\bissues? #?\d+", re.IGNORECASE)
    found = [f"{p.relative_to(ROOT)}: {m[0]}" for p in paths
             for m in [bad.search(p.read_text(encoding="utf-8"))] if m]
    assert not found


def test_readme_names_the_extra_of_to_xarray_and_it_exists():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    needs = {"xarray", "pandas", "h5netcdf"}
    assert needs <= {dep.split(">")[0].split("[")[0] for dep in extras["analysis"]}
    tour = README[README.index("### 2. Reading it in Python"):README.index("### 3. The file")]
    assert "pip install -e '.[analysis]'" in tour


def test_readme_sample_summary_matches_a_fresh_run(runner):
    """The README's first sweep, rerun at its sizes: the same configurations and counts,
    and the final soft ranks within 5% (the last bits depend on BLAS and threads)."""
    import re

    command = re.search(r"```bash\n(fastrank sweep --width 64[^`]*?)\n```", README)[1]
    args = command.replace("\\\n", " ").split()[1:]
    fresh = _ok(runner.invoke(cli, args)).stdout
    sample = README[README.index("configuration                 runs"):]
    sample = sample[:sample.index("```")]

    def rows(text):
        return [line.split() for line in text.splitlines()
                if line.startswith(("linear/", "relu/"))]

    assert [r[:5] for r in rows(sample)] == [r[:5] for r in rows(fresh)]
    for documented, measured in zip(rows(sample), rows(fresh), strict=True):
        assert float(measured[5]) == pytest.approx(float(documented[5]), rel=0.05)
    assert sample.strip().splitlines()[-1] == fresh.strip().splitlines()[-1]  # "Results in r.h5"


def test_the_summary_reads_the_file_while_the_sweep_still_holds_its_lock(runner, tmp_path,
                                                                         monkeypatch):
    """A finished sweep summarises its own file: it reads it before releasing the
    writer's lock, so a second writer waiting for it (--overwrite) cannot replace the
    file first (once, a sweep read the next writer's file and exited 2)."""
    from fastrank import store
    from fastrank.lock import writer_alive

    held, read = [], store.open
    monkeypatch.setattr(store, "open", lambda p: held.append(writer_alive(p)) or read(p))
    path = tmp_path / "r.h5"
    result = runner.invoke(cli, ["sweep", "--width", "8", "--depth", "20", "--seed", "0",
                                 "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert held == [True], "the summary read the file after the lock was released"
    assert not writer_alive(path), "the lock outlived the command"
