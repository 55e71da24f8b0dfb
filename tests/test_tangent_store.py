"""Tangents in the results file (issue 30): the datasets tangent_log_norm and
jacobian_exponents (run, row, tangent) of a sweep with tangents, written from the rows'
measures, carried over by a resume, read back (run properties, xarray, pandas, the
damage check), shown by ``fastrank info`` and drawn by ``fastrank plot``; a file without
tangents has none of it and says so in one line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from fault_harness import flip_in_chunk

import fastrank
from fastrank import curves, store
from fastrank.cli import cli
from fastrank.measures import all_measures
from fastrank.rows import Row
from fastrank.spec import Schedule, Sweep
from fastrank.store import NoTangents, Writer, schema

K = 3
SCHEDULE = Schedule(every=5, log=None)  # layers 0, 5, 10, 15, 20
LAYERS = (0, 5, 10, 15, 20)
TANGENTS = ("tangent_log_norm", "jacobian_exponents")


def sweep_of(tangents: int = K, seeds=(0, 1)) -> Sweep:
    return Sweep(grid={"width": (8,), "depth": (20,), "batch": (6,)}, seeds=seeds,
                 schedule=SCHEDULE, tangents=tangents, qr_every=2)


def make_row(run: int, layer: int, tangents: int = K) -> Row:
    """A made-up row, the same for the same (run, layer), with ``tangents`` tangents."""
    rng = np.random.default_rng([run, layer])
    s = np.sort(rng.random(6) + 0.01)[::-1]
    measures = all_measures(s, (8, 6), "float32", (0.1,))
    if tangents:
        logs = rng.normal(size=tangents)
        measures["tangent_log_norm"] = logs
        measures["jacobian_exponents"] = logs / layer if layer else np.full(tangents, np.nan)
    return Row(layer, s, float(rng.normal()), measures)


def expected(run: int, name: str, count: int = len(LAYERS)) -> np.ndarray:
    return np.array([make_row(run, layer).measures[name] for layer in LAYERS[:count]])


@pytest.fixture
def tangent_file(tmp_path):
    """Run 0 complete, run 1 with 2 of its 5 rows."""
    path = tmp_path / "t.h5"
    with Writer.create(path, sweep_of(), {"host": "test"}) as w:
        w.extend(0, [make_row(0, layer) for layer in LAYERS])
        w.extend(1, [make_row(1, layer) for layer in LAYERS[:2]])
    return path


@pytest.fixture
def plain_file(tmp_path):
    path = tmp_path / "p.h5"
    with Writer.create(path, sweep_of(0), {"host": "test"}) as w:
        w.extend(0, [make_row(0, layer, 0) for layer in LAYERS])
    return path


def test_the_datasets_are_laid_out_like_the_other_float_rows(tangent_file):
    with h5py.File(tangent_file, "r") as f:
        assert f["tangent"][()].tolist() == list(range(K))
        for name in TANGENTS:
            ds, like = f[name], f["log_norm"]
            assert ds.shape == (2, len(LAYERS), K) and ds.dtype == np.float64
            assert ds.fletcher32 and ds.compression is None and np.isnan(ds.fillvalue)
            assert ds.chunks == (2, len(LAYERS), K)
            assert np.isnan(ds.attrs["_FillValue"]) and ds.attrs["units"] == "1"
            assert ds.attrs["long_name"] == schema.LONG_NAMES[name][0]
            assert [d[0].name for d in ds.dims] == ["/run", "/row", "/tangent"]
            assert like.fletcher32 == ds.fletcher32
        assert json.loads(f.attrs["sweep"])["tangents"] == K
        assert f.attrs["format_version"] == fastrank.FORMAT_VERSION


def test_a_sweep_without_tangents_has_none_of_them(plain_file):
    with h5py.File(plain_file, "r") as f:
        assert not {"tangent", *TANGENTS} & set(f)
        assert "tangents" not in json.loads(f.attrs["sweep"])


def test_rows_read_back_committed_only(tangent_file):
    with store.open(tangent_file) as r:
        for run, count in ((r[0], 5), (r[1], 2)):
            for name in TANGENTS:
                np.testing.assert_array_equal(getattr(run, name),
                                              expected(run.index, name, count))
                np.testing.assert_array_equal(run.measure(name), getattr(run, name))
        assert np.isnan(r[0].jacobian_exponents[0]).all()  # layer 0
        assert hasattr(r[0], "jacobian_exponents") and r.damaged() == []


def test_xarray_and_pandas_have_the_tangent_dimension(tangent_file):
    pytest.importorskip("xarray")
    pytest.importorskip("pandas")
    with store.open(tangent_file) as r:
        ds = r.to_xarray()
        assert ds.sizes["tangent"] == K and ds["tangent"].values.tolist() == list(range(K))
        for name in TANGENTS:
            assert ds[name].dims == ("run", "row", "tangent")
            np.testing.assert_array_equal(ds[name].values[1, :2], expected(1, name, 2))
            assert np.isnan(ds[name].values[1, 2:]).all()  # past the committed rows
        one = r[1].to_xarray()
        assert one["jacobian_exponents"].dims == ("layer", "tangent") and one.sizes["layer"] == 2
        rows = r.to_pandas(long=True)
        assert len(rows) == 7
        for name in TANGENTS:
            for i in range(K):
                np.testing.assert_array_equal(
                    rows[f"{name}_{i}"], np.concatenate([expected(0, name)[:, i],
                                                         expected(1, name, 2)[:, i]]))


def test_a_file_without_tangents_says_so_in_one_line(plain_file):
    with store.open(plain_file) as r:
        run = r[0]
        assert not hasattr(run, "jacobian_exponents")
        assert not hasattr(run, "tangent_log_norm")
        for name in TANGENTS:
            with pytest.raises(NoTangents, match="ran without --tangents") as caught:
                run.measure(name)
            assert isinstance(caught.value, AttributeError) and "\n" not in str(caught.value)
        with pytest.raises(KeyError):
            run.measure("nothing")
        if pytest.importorskip("xarray"):
            assert not {"tangent", *TANGENTS} & set(r.to_xarray().variables)
        assert not [c for c in r.to_pandas(long=True).columns if "tangent" in c]


def test_the_writer_refuses_rows_without_the_sweeps_tangents(tmp_path):
    with Writer.create(tmp_path / "t.h5", sweep_of(), {}) as w:
        with pytest.raises(ValueError, match="run 0: tangent_log_norm missing"):
            w.append(0, make_row(0, 0, tangents=0))
        with pytest.raises(ValueError, match=r"of shape \(1, 2\).*\(1, 3\)"):
            w.append(0, make_row(0, 0, tangents=2))
        w.append(0, make_row(0, 0))
        assert w.status(0) == "running"


def test_a_resume_carries_the_tangent_rows_over(tangent_file):
    with store.open(tangent_file) as r:
        kept = {name: r[0].measure(name).tobytes() for name in TANGENTS}
    with Writer.resume(tangent_file, sweep_of()) as w:
        assert w.pending() == [1]  # the running run starts again
        w.extend(1, [make_row(1, layer) for layer in LAYERS])
    with store.open(tangent_file) as r:
        assert {name: r[0].measure(name).tobytes() for name in TANGENTS} == kept
        np.testing.assert_array_equal(r[1].jacobian_exponents, expected(1, "jacobian_exponents"))
        assert r.damaged() == []


def test_a_file_that_lost_its_tangents_is_refused_naming_them(tangent_file):
    """What an older fastrank's resume leaves: the sweep says tangents, the datasets are
    gone (docs/format.md, Compatibility)."""
    with h5py.File(tangent_file, "r+") as f:
        del f["jacobian_exponents"]
    with store.open(tangent_file) as r:
        assert r.damaged() == ["jacobian_exponents: missing, though the sweep ran with 3 "
                               "tangents"]
        assert r[0].soft_rank.shape == (5,)  # the rank measures still read
        with pytest.raises(store.DamagedFile, match="jacobian_exponents"):
            r[0].measure("jacobian_exponents")
    with pytest.raises(store.DamagedFile, match="jacobian_exponents is missing"):
        Writer.resume(tangent_file)


def test_a_flipped_tangent_byte_is_caught_by_its_checksum(tangent_file):
    flip_in_chunk(tangent_file, "jacobian_exponents", 100, 0x10)
    with store.open(tangent_file) as r:
        assert r.damaged() == ["jacobian_exponents: runs 00000, 00001 do not read back as "
                               "written"]


def test_info_shows_the_tangents_and_the_first_exponent(tangent_file, plain_file):
    runner = CliRunner()
    text = runner.invoke(cli, ["info", str(tangent_file)])
    assert text.exit_code == 0, text.output
    assert "taus [0.1], tangents 3, qr-every 2" in text.output
    lines = text.output.splitlines()
    header = next(line for line in lines if line.startswith("id "))
    assert header.split()[-1] == "lambda_1"
    first = next(line for line in lines if line.startswith("00000"))
    assert first.split()[-1] == f"{expected(0, 'jacobian_exponents')[-1, 0]:.3g}"
    assert "lambda_1 (last layer)" in text.output
    doc = json.loads(runner.invoke(cli, ["info", "--json", str(tangent_file)]).output)
    assert doc["tangents"] == K and doc["qr_every"] == 2
    assert doc["runs"][0]["lambda_1"] == expected(0, "jacobian_exponents")[-1, 0]
    assert doc["summary"]["configurations"][0]["lambda_1"]["n"] == 1
    plain = runner.invoke(cli, ["info", str(plain_file)]).output.split(str(plain_file))[-1]
    assert "tangents" not in plain and "lambda_1" not in plain
    doc = json.loads(runner.invoke(cli, ["info", "--json", str(plain_file)]).output)
    assert "tangents" not in doc and "lambda_1" not in doc["runs"][0]


@pytest.mark.parametrize("args", [["--measure", "jacobian_exponents"],
                                  ["--measure", "tangent_log_norm", "--tangent", "2"],
                                  ["--measure", "jacobian_exponents", "--kind", "width"]])
def test_plot_draws_the_tangent_measures(tangent_file, tmp_path, args):
    pytest.importorskip("matplotlib")
    out = tmp_path / "f.png"
    result = CliRunner().invoke(cli, ["plot", str(tangent_file), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("which, args, words", [
    ("plain", ["--measure", "jacobian_exponents"], "ran without --tangents"),
    ("plain", ["--measure", "tangent_log_norm"], "ran without --tangents"),
    ("tangents", ["--measure", "jacobian_exponents", "--tangent", "3"], "invalid tangent 3"),
    ("tangents", ["--tangent", "0"], "tangent belongs to the tangent measures"),
    ("tangents", ["--kind", "spectrum", "--tangent", "0"], "--tangent belongs to --kind"),
])
def test_plot_refuses_in_one_line(tangent_file, plain_file, tmp_path, which, args, words):
    pytest.importorskip("matplotlib")
    path = tangent_file if which == "tangents" else plain_file
    result = CliRunner().invoke(cli, ["plot", str(path), "-o", str(tmp_path / "f.png"), *args])
    assert result.exit_code == 2 and words in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "f.png").exists()


def test_a_line_per_configuration_and_tangent(tangent_file):
    pytest.importorskip("matplotlib")
    import fastrank.plot as fp

    with store.open(tangent_file) as r:
        assert [name for _, name in curves.columns(list(r), "jacobian_exponents")] == \
            ["$\\lambda_{1}$", "$\\lambda_{2}$", "$\\lambda_{3}$"]
        assert curves.columns(list(r), "rank_tau") == [(0, "")]
        ax = fp.plot_depth(r, "jacobian_exponents")
        assert len(ax.get_lines()) == K
        ax = fp.plot_depth(r, "tangent_log_norm", tangent=1)
        (line,) = ax.get_lines()
        layers, values = curves.stacked(list(r), "tangent_log_norm", 1)
        np.testing.assert_array_equal(line.get_xdata(), layers)
        np.testing.assert_allclose(line.get_ydata(), np.nanmean(values, axis=0))


def test_a_sweep_with_tangents_end_to_end(tmp_path):
    path = fastrank.sweep(Sweep(grid={"width": [8], "depth": [20]}, seeds=(0, 1),
                                tangents=2), tmp_path / "e.h5")
    with store.open(path) as r:
        assert r.sweep.tangents == 2 and r.damaged() == []
        for run in r:
            logs, exponents = run.tangent_log_norm, run.jacobian_exponents
            assert logs.shape == exponents.shape == (run.rows, 2)
            assert np.isfinite(logs).all() and np.isnan(exponents[0]).all()
            np.testing.assert_allclose(exponents[1:], logs[1:] / run.layer[1:, None])
        before = {name: r[1].measure(name).tobytes() for name in TANGENTS}
    with h5py.File(path, "r+") as f:  # as after a kill: run 1 to compute again
        f["n_rows"][1] = 3
    Writer.resume(path).close()
    result = CliRunner().invoke(cli, ["sweep", "--resume", "-o", str(path), "-q"])
    assert result.exit_code == 0, result.output
    with store.open(path) as r:
        assert {name: r[1].measure(name).tobytes() for name in TANGENTS} == before
