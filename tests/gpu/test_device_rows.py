"""Measured rows made on the device (kernels/cuda/measures.cu, GPUBackend.measure_stretch):
the measures equal the CPU's from the same spectra, a stretch reaches the host as one
copy that nobody waited for, and a solver that does not converge stops its seed with the
reason instead of storing a value."""

from __future__ import annotations

import numpy as np
import pytest

from fastrank import codes
from fastrank.kernels.cpu.measures import measure_rows as host_measure_rows
from fastrank.propagate import _host_measures, simulate_many
from fastrank.spec import Network, Schedule


def _spectra(k: int) -> np.ndarray:
    """Descending spectra of k values that stress the measures: random, repeated,
    nearly collapsed, with zeros, all zero, one value."""
    gen = np.random.default_rng(k)
    rows = [np.sort(gen.random(k))[::-1] * 3.0,
            np.full(k, 0.7),
            np.r_[1.0, np.full(k - 1, 1e-9)],
            np.r_[np.sort(gen.random(k // 2 + 1))[::-1], np.zeros(k - k // 2 - 1)],
            np.zeros(k),
            np.r_[5.0, np.zeros(k - 1)],
            np.logspace(0, -15, k)]
    return np.ascontiguousarray(np.stack(rows)[:, :k])


@pytest.mark.parametrize("d, n", [(1, 5), (16, 16), (64, 200), (128, 40), (7, 3)])
def test_device_measures_equal_the_cpus_from_the_same_spectra(device, d, n):
    k = min(d, n)
    s = _spectra(k)
    taus = np.array([0.1, 0.5, 1.0, 2.0])
    live = np.zeros(len(s))
    live[2] = np.nan  # a seed without a row here
    ref_scalars = np.empty((len(s), 6))
    ref_counts = np.empty((len(s), len(taus)), np.int64)
    eps = float(np.finfo(np.float32).eps)
    host_measure_rows(s, d, n, eps, taus, ref_scalars, ref_counts)
    dev = device.dev
    with dev.context():
        scalars, counts = dev.empty((len(s), 6), np.float64), dev.empty((len(s), 4), np.float64)
        dev.launch("measure_rows", 1, dev.block, (
            dev.asarray(s), np.int32(len(s)), np.int32(k), np.int32(k), np.int32(d),
            np.int32(n), np.float64(eps), dev.asarray(taus), np.int32(len(taus)),
            dev.asarray(live), scalars, counts))
        scalars, counts = dev.to_host(scalars), dev.to_host(counts)
    rows = [0, 1, 3, 4, 5, 6]
    assert np.isnan(scalars[2, [0, 2, 3, 4, 5]]).all() and scalars[2, 1] == -1
    assert (counts[2] == -1).all()
    assert np.array_equal(counts[rows], ref_counts[rows])
    if device.kind == "host":  # the same arithmetic in the same order: the same bits
        assert np.array_equal(scalars[rows], ref_scalars[rows], equal_nan=True)
    else:  # the device's log and exp are within 1-2 ulps of glibc's
        np.testing.assert_allclose(scalars[rows], ref_scalars[rows], rtol=1e-14)


def test_spectrum_rows_from_eigenvalues_or_singular_values(device):
    """Eigenvalues (ascending, negatives from rounding clipped) become descending
    singular values, NaN-padded; a live seed whose solver status is not OK stops at the
    layer with that status as its reason; a seed stopped before keeps its record."""
    dev = device.dev
    eig = np.array([[-1e-18, 1.0, 4.0], [0.0, 0.25, 9.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    status = np.array([codes.OK, codes.OK, codes.EIGEN_UNCONVERGED, codes.NON_FINITE], np.int32)
    failed = np.array([-1, 7, -1, -1], np.int64)
    reason = np.array([0, codes.VANISHED, 0, 0], np.int64)
    log_norm = np.array([0.5, 0.25, 1.5, 2.5])
    for squared in (1, 0):
        with dev.context():
            f, r = dev.asarray(failed.copy()), dev.asarray(reason.copy())
            out, log_out = dev.empty((4, 5), np.float64), dev.empty(4, np.float64)
            values = eig if squared else np.sqrt(np.clip(eig, 0, None))[:, ::-1].copy()
            dev.launch("spectrum_rows", 1, dev.block, (
                dev.asarray(values), dev.asarray(status), np.int32(4), np.int32(3),
                np.int32(squared), np.int64(9), out, np.int32(5), dev.asarray(log_norm),
                log_out, f, r))
            out, log_out, f, r = map(dev.to_host, (out, log_out, f, r))
        assert np.array_equal(out[0], [2.0, 1.0, 0.0, np.nan, np.nan], equal_nan=True)
        assert np.isnan(out[1:]).all()
        assert np.array_equal(log_out, [0.5, np.nan, np.nan, np.nan], equal_nan=True)
        assert f.tolist() == [-1, 7, 9, 9]
        assert r.tolist() == [0, codes.VANISHED, codes.EIGEN_UNCONVERGED, codes.NON_FINITE]


@pytest.mark.parametrize("width, batch", [(24, 31), (130, 131)])  # the kernel, cuSOLVER
@pytest.mark.slow
def test_a_stretch_reaches_the_host_in_one_copy_nobody_waited_for(device, width, batch):
    if device.kind != "host":
        pytest.skip("counts the stand-in's copies")
    backend = device.backend()
    dev = backend.dev
    net = Network(width=width, depth=30, batch=batch, activation="relu", norm="bn")
    taus = (0.1, 0.5)
    b = backend.start(net, np.arange(3))
    before = dev.host_copies, dev.async_copies
    collect = backend.measure_stretch(b, [0, 10, 20, 30], "gram", taus)
    assert (dev.host_copies, dev.async_copies) == (before[0], before[1] + 1)
    stretch = collect()
    assert dev.host_copies == before[0]
    host = _host_measures(net, [0, 10, 20, 30], stretch.spectra, stretch.log_norms, taus)
    for name, values in stretch.measures.items():
        assert np.array_equal(values.reshape(host[name].shape), host[name], equal_nan=True)
    assert b.layer == 30 and (b.failed_layer == -1).all()


def test_an_unconverged_spectrum_stops_the_run_with_the_reason(device, tmp_path):
    backend = device.backend()
    net = Network(width=16, depth=40, activation="relu", norm="bn")
    seen = {}  # the layer being measured
    solve, rows = backend._eigvalsh_stack, backend._rows

    def patched(g):
        w, status = solve(g)
        if seen["layer"] == 20:
            with backend.dev.context():
                status[1] = codes.EIGEN_UNCONVERGED
        return w, status

    def track(st, method, out, log_out):
        seen["layer"] = st.host_layer
        rows(st, method, out, log_out)

    backend._eigvalsh_stack, backend._rows = patched, track
    runs = simulate_many(net, [0, 1, 2], Schedule(every=10, log=None), backend=backend)
    assert [r.failure is None for r in runs] == [True, False, True]
    assert runs[1].failure.layer == 20
    assert runs[1].failure.reason == codes.REASONS[codes.EIGEN_UNCONVERGED]
    assert runs[1].layer.tolist() == [0, 10]  # no row at the layer it could not measure
    assert runs[0].layer.tolist() == runs[2].layer.tolist() == [0, 10, 20, 30, 40]


def test_cusolver_reporting_no_convergence_stops_the_seed(device, monkeypatch):
    """Above the kernel's k = 128, cuSOLVER's info is checked: LinAlgError for a matrix
    stops its seed with the reason, the others are measured."""
    if device.kind != "host":
        pytest.skip("injects a failure into the stand-in's cuSOLVER")
    backend = device.backend()
    dev = backend.dev
    solve, calls = dev.eigvalsh, []

    def eigvalsh(g):
        calls.append(1)
        if len(calls) == 2:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return solve(g)

    monkeypatch.setattr(dev, "eigvalsh", eigvalsh)
    net = Network(width=130, depth=2, batch=140, activation="tanh")
    b = backend.start(net, np.arange(3))
    backend.advance(b, 2)
    spec = backend.spectra(b, [0, 1, 2], "gram")
    assert np.isnan(spec[1]).all() and not np.isnan(spec[[0, 2]]).any()
    assert b.failed_layer.tolist() == [-1, 2, -1]
    assert b.reason[1] == codes.EIGEN_UNCONVERGED
