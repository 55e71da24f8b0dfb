"""fastrank.plot and `fastrank plot`: every kind of figure is written headless (Agg) as a
non-empty image, on ordinary, awkward (failed, pending, per-layer width) and in-memory
inputs; bad requests exit 2 with one line. Needs matplotlib (the plot extra)."""

import struct

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

import fastrank  # noqa: E402
import fastrank.plot as fp  # noqa: E402
from fastrank.cli import cli  # noqa: E402


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "r.h5"
    sweep = fastrank.Sweep(
        grid={
            "width": (8, 16),
            "depth": (120,),
            "activation": ("linear", "relu"),
            "norm": ("none", "bn"),
        },
        seeds=(0, 1),
        schedule=fastrank.Schedule(every=5, log=20, cheap_every=1),
    )
    fastrank.sweep(sweep, path)
    return path


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--measure", "numerical_rank"],
        [
            "--measure",
            "soft_rank_excess",
            "--theory",
            "--select",
            "activation=linear",
            "--select",
            "norm=none",
        ],
        ["--measure", "log_norm", "--theory"],
        ["--measure", "rank_tau", "--theory"],
        ["--kind", "width", "--at", "50,120", "--theory"],
        ["--kind", "width", "--average", "60-120", "--select", "norm=bn"],
        ["--kind", "spectrum", "--layers", "0,10,120", "--theory", "--select", "width=16"],
    ],
)
def test_every_kind_writes_a_png(results_file, tmp_path, args):
    out = tmp_path / "fig.png"
    result = CliRunner().invoke(cli, ["plot", str(results_file), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    width, height = _png_size(out)
    assert width > 100 and height > 100


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_pdf_and_svg(results_file, tmp_path, suffix, magic):
    out = tmp_path / f"fig{suffix}"
    result = CliRunner().invoke(cli, ["plot", str(results_file), "-o", str(out), "--theory"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 1000


def test_default_output_name(results_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plot", str(results_file), "--kind", "width"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r-width.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["-o", "fig.jpg"], "format"),
        (["--select", "norm"], "FIELD=VALUES"),
        (["--select", "colour=red"], "field"),
        (["--select", "width=abc"], "numbers"),
        (["--select", "norm=ln"], "no runs"),
        (["--average", "9-3", "--kind", "width"], "average"),
        (["--measure", "nope"], "nope"),
    ],
)
def test_bad_requests_exit_2_with_one_line(results_file, tmp_path, args, words):
    result = CliRunner().invoke(cli, ["plot", str(results_file), *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_and_foreign_files_exit_2(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    for name in ("missing.h5", "x.h5"):
        result = CliRunner().invoke(
            cli, ["plot", str(tmp_path / name), "-o", str(tmp_path / "f.png")]
        )
        assert result.exit_code == 2 and "fastrank: error:" in result.output


def test_awkward_files_plot(tmp_path):
    """Failed runs (vanishing ReLU), per-layer widths and pending runs still plot."""
    path = tmp_path / "odd.h5"
    sweep = fastrank.Sweep(
        grid={
            "width": ((6, 5, 4, 3, 2, 2, 2, 2, 2, 2) * 3,),
            "depth": (30,),
            "activation": ("relu",),
            "gain": (0.05,),
        },
        seeds=(0, 1, 2),
        schedule=fastrank.Schedule(every=1, log=None),
    )
    fastrank.sweep(sweep, path)
    with fastrank.open(path) as r:
        assert len(r) == 3
    for kind in ("depth", "spectrum"):
        fig = fp.figure(path, kind=kind, theory=True)
        fp.save(fig, tmp_path / f"{kind}.svg")
    with pytest.raises(fp.PlotError, match="constant width"):
        fp.figure(path, kind="width")
    # a file laid out but not run: every run pending, nothing to draw
    empty = tmp_path / "empty.h5"
    fastrank.store.Writer.create(empty, fastrank.Sweep(), {}).close()
    result = CliRunner().invoke(cli, ["plot", str(empty), "-o", str(tmp_path / "e.png")])
    assert result.exit_code == 2 and "no runs" in result.output


def test_in_memory_trajectories_and_own_axes(tmp_path):
    from matplotlib.figure import Figure

    trajs = fastrank.simulate_many(
        fastrank.Network(width=8, depth=60), range(3), fastrank.Schedule(every=1, log=None)
    )
    fig = Figure()
    ax = fig.add_subplot()
    assert fp.plot_depth(trajs, "soft_rank_excess", ax=ax, theory_overlay=True) is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("3 seeds" in t for t in labels) and any("theory" in t for t in labels)
    # the line is the geometric mean over seeds of soft rank - 1
    line = ax.get_lines()[0]
    excess = np.array([t.soft_rank - 1 for t in trajs])
    with np.errstate(divide="ignore"):
        expected = np.exp(np.mean(np.log(excess), axis=0))
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
    fig.savefig(tmp_path / "mem.png")
    assert (tmp_path / "mem.png").stat().st_size > 0


def test_width_values_and_slope_label(results_file):
    with fastrank.open(results_file) as r:
        data = fp.width_values(list(r), "soft_rank", average=(60, 120))
        run = r.select(width=16, activation="linear", norm="bn", seed=1)[0]
        expected = run.soft_rank[(run.layer >= 60) & (run.layer <= 120)].mean()
    group = data["linear/bn"]
    ((widths, values),) = group["curves"].values()
    assert list(widths) == [8, 16] and values.shape == (2, 2)
    assert values[1, 1] == pytest.approx(expected)
    ax = fp.plot_width(results_file, average=(60, 120), select={"norm": "bn"})
    assert any("slope" in t.get_text() for t in ax.get_legend().get_texts())


def test_missing_matplotlib_is_one_clear_error(results_file, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'fastrank-sim\[plot\]'"):
        fp._mpl()
    result = CliRunner().invoke(cli, ["plot", str(results_file), "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 1 and "pip install 'fastrank-sim[plot]'" in result.output


def test_select_picks_the_same_runs_from_a_list_as_from_the_file(results_file):
    """``select=`` on a list of runs (or trajectories) filters by their networks' options,
    a list or tuple meaning any of its values, as the file's own selection does; the
    figure drawn from either is the same."""
    from fastrank import curves

    criteria = ({"norm": "bn"}, {"width": 16, "activation": ("relu",)},
                {"width": [8, 16], "norm": ["none"], "activation": "linear"})
    with fastrank.open(results_file) as r:
        runs = list(r)
        for select in criteria:
            with curves.opened(runs, select) as chosen:
                ids = [run.id for run in chosen]
            assert ids == [run.id for run in r.select(**select)] and 0 < len(ids) < len(runs)
        with curves.opened(runs, {"norm": "ln"}) as chosen:
            assert chosen == []
        from_list = fp.plot_depth(runs, "soft_rank", select={"norm": "bn"})
    from_file = fp.plot_depth(results_file, "soft_rank", select={"norm": "bn"})
    assert len(from_list.get_lines()) == len(from_file.get_lines()) == 4
    for a, b in zip(from_list.get_lines(), from_file.get_lines(), strict=True):
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    trajs = fastrank.simulate_many(fastrank.Network(width=8, depth=20, norm="bn"), range(2),
                                   fastrank.Schedule(every=10, log=None))
    with curves.opened(trajs, {"norm": ["bn"]}) as chosen:
        assert len(chosen) == 2 and all(a is b for a, b in zip(chosen, trajs, strict=True))
    with curves.opened(trajs, {"norm": "none"}) as chosen:
        assert chosen == []
