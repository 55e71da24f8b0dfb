"""The command line: sweeps, options, config files, info, env, and one-line errors
(through click's CliRunner and through a real subprocess)."""

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
    result = _ok(runner.invoke(cli, ["sweep", "--width", "8", "--depth", "30", "--seed", "0", "-o", "r.h5"]))
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


def test_real_subprocess_bad_input_and_version(tmp_path):
    cmd = [sys.executable, "-m", "fastrank", "sweep", "--norm", "foo", "-o", str(tmp_path / "x.h5")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "fastrank: error: invalid norm 'foo': choose one of none, bn, bn-rms, ln"
    ]
    assert not (tmp_path / "x.h5").exists()
    version = subprocess.run([sys.executable, "-m", "fastrank", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and fastrank.__version__ in version.stdout


def test_the_command_line_starts_without_the_kernels():
    """`fastrank --help` / `--version` / completion load no numba, scipy or h5py (they cost
    most of a second): the package's names load on first use."""
    code = ("import sys, fastrank, fastrank.cli; "
            "heavy = {'numba', 'scipy', 'h5py'} & set(sys.modules); "
            "assert not heavy, heavy; fastrank.Network; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


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
