"""The Gram tier: cheap measures at every layer from one Gram product, checked against
the same measures from the full spectrum, and its rows in files and trajectories."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank import Network, Schedule, Sweep, measures, simulate
from fastrank.backends.cpu import host_gram_stats, host_spectrum
from fastrank.cli import cli
from fastrank.version import FORMAT_VERSION_WITHOUT_TANGENTS


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (300, 300)])
def test_gram_tier_equals_the_spectrum_measures(shape):
    rng = np.random.default_rng(3)
    h = (rng.standard_normal(shape) * np.linspace(2, 0.1, shape[1])).astype(np.float32)
    if shape[0] == 300:  # nearly degenerate top eigenvalues: the hard case for Lanczos
        h = rng.standard_normal(shape).astype(np.float32)
    full = measures.all_measures(host_spectrum(h, "svd"), shape, "float32", (0.1,))
    cheap = measures.gram_measures(*host_gram_stats(h), shape[1], 1)
    # The Gram product is float32 (relative error ~ sqrt(k) eps32 ~ 1e-6 per entry).
    for name in ("soft_rank", "stable_rank", "orthogonality_gap"):
        assert cheap[name] == pytest.approx(full[name], rel=1e-5), name
    assert cheap["numerical_rank"] == -1 and np.isnan(cheap["effective_rank"])


@pytest.mark.parametrize("batch", [40, 24])
def test_wide_kernel_gram_statistics_equal_the_host_ones(monkeypatch, batch):
    """The wide kernel's networks get their Gram-tier statistics on numba's threads
    (CPUBackend.gram_stats): the host computation's to float32 GEMM rounding (the
    products are summed in blocks of rows instead of at once), both sides smaller."""
    from fastrank import tuning
    from fastrank.backends import cpu

    monkeypatch.setattr(tuning, "SEEDED_WIDTH_MAX", 16)
    net = Network(width=32, batch=batch, depth=4, activation="relu", norm="bn")
    assert cpu.uses_wide_kernel(net)
    backend = cpu.CPUBackend()
    b = backend.start(net, [0])
    backend.advance(b, 3)
    got, want = backend.gram_stats(b, 0), host_gram_stats(b.h[0])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_schedule_tiers():
    sched = Schedule(every=5, log=None, cheap_every=2)
    assert sched.points(10).tolist() == [0, 2, 4, 5, 6, 8, 10]
    assert sched.tiers(10).tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert Schedule(every=5, log=None).tiers(10).tolist() == [1, 1, 1]


def test_cheap_rows_match_a_full_run_of_the_same_network():
    net = Network(width=16, depth=30, activation="relu", norm="bn")
    cheap = simulate(net, 2, Schedule(every=10, log=None, cheap_every=1))
    full = simulate(net, 2, Schedule(every=1, log=None))
    assert cheap.layer.tolist() == full.layer.tolist()
    assert cheap.tier.tolist() == [1 if layer % 10 == 0 else 0 for layer in range(31)]
    np.testing.assert_allclose(cheap.soft_rank, full.soft_rank, rtol=1e-5)
    np.testing.assert_allclose(cheap.stable_rank, full.stable_rank, rtol=1e-5)
    np.testing.assert_array_equal(cheap.log_norm, full.log_norm)
    assert np.all(np.isnan(cheap.spectrum[cheap.tier == 0]))


def test_tiers_are_stored_and_old_files_read_as_full(tmp_path):
    import h5py

    sweep = Sweep(grid={"width": (8,), "depth": (12,)},
                  schedule=Schedule(every=4, log=None, cheap_every=1))
    path = fastrank.sweep(sweep, tmp_path / "t.h5")
    with fastrank.open(path) as results:
        assert results[0].tier.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
        assert np.all(results[0].numerical_rank[results[0].tier == 0] == -1)
    # A format-1 file (format 2's layout without tier datasets): every row is full;
    # resume rewrites it in the current format.
    old = tmp_path / "old.h5"
    shutil.copy(Path(__file__).parent / "data" / "format2.h5", old)
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 1
        for run in f["runs"].values():
            del run["tier"]
    with fastrank.open(old) as results:
        assert results[2].tier.tolist() == [1] * 15
    fastrank.sweep(None, old, resume=True)
    with fastrank.open(old) as results:
        assert results.attrs["format_version"] == FORMAT_VERSION_WITHOUT_TANGENTS
        assert results[2].tier.tolist() == [1] * 15


def test_cli_cheap_every(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "20", "--seed", "0",
                                      "--every", "10", "--log", "0", "--cheap-every", "1", "-q",
                                      "-o", "c.h5"])
    assert result.exit_code == 0, result.output
    with fastrank.open("c.h5") as results:
        assert len(results[0].layer) == 21 and int(results[0].tier.sum()) == 3
