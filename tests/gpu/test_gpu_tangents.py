"""Tangents (fastrank.tangents, issue 30) on the GPU backend, on each device of the suite
(conftest.py: the host stand-in always, a CUDA device where one is usable), against the
CPU backend's.

What is compared, and how tightly:

* one layer at a time, the CPU's layer started from the device's H, tangents and logs:
  the tangents to fastrank.gpu.testing.tangent_tolerance (float64 on the GPU, the CPU's
  in its own dtype, in different summation orders; the stand-in shares the CPU's BLAS
  and LAPACK and is closer still), H to float32 rounding as in test_backend.py;
* whole trajectories, each side on its own: the logs to float64 rounding for float64
  networks on the stand-in, to the drift of float32 H (chaotic, ~1.5x a layer) over a
  few layers otherwise;
* what carrying tangents changes: nothing else (the same spectra and log-norms), and
  the path (layer by layer: no CUDA graph, no network whole on the chip).
"""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib.mixins import NDArrayOperatorsMixin

from fastrank import backends, tangents
from fastrank.backends.cpu import CPUBackend
from fastrank.cli import cli
from fastrank.gpu import GPUBackend
from fastrank.gpu.plan import TANGENT_STACKS, batch_bytes
from fastrank.gpu.testing import layer_by_layer, tangent_tolerance
from fastrank.propagate import simulate_many
from fastrank.runner import run_sweep
from fastrank.spec import Network, Schedule, Sweep
from fastrank.store import schema

F32 = np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def cpu():
    return CPUBackend()


def _h_tolerance(net: Network) -> float:
    """A layer's H against the CPU's from the same H (test_backend.py's _layer_tolerance)."""
    return 64 * F32 if net.dtype == "float32" else 1e-12


def _trajectory_tolerance(device, net: Network) -> float:
    """Whole trajectories of a dozen layers: float64 networks on the stand-in differ by
    float64 rounding only; float32 H differs from the CPU's by float32 rounding each layer
    (the device's GEMM and normalisation pass), which BN + ReLU amplifies ~1.5x a layer,
    and the logs' steps follow H."""
    return 1e-9 if device.kind == "host" and net.dtype == "float64" else 1e-3


KINDS = [
    Network(width=24, depth=6, batch=20, activation="relu", norm="bn"),
    Network(width=24, depth=6, batch=20, activation="tanh", norm="ln", order="act-norm"),
    Network(width=24, depth=6, batch=20, activation="relu", norm="bn-rms", gamma=0.5),
    Network(width=24, depth=6, batch=20, activation="relu", dtype="float64"),  # rescaled
    Network(width=24, depth=6, batch=20, activation="tanh", gamma=0.5, init="uniform"),
    Network(width=24, depth=6, batch=20, activation="relu", norm="bn", init="orthogonal",
            dtype="float64"),
    Network(width=(24, 30, 18, 18, 24, 24), depth=6, batch=20, activation="relu", norm="ln"),
]


@pytest.mark.parametrize("count, qr_every", [(1, 1), (2, 1), (3, 3)])
@pytest.mark.parametrize("net", KINDS, ids=lambda net: net.label())
def test_every_layer_s_tangents_are_the_cpus(device, cpu, net, count, qr_every):
    """K = 1 (scaled only), K >= 2 re-orthonormalised every layer and every third: each
    layer's tangents and the step of their logs within tangent_tolerance of the CPU's
    from the same H, tangents and logs; H as without tangents."""
    worst = layer_by_layer(device.backend(), cpu, net, [0, 5, 2**64 - 1], net.depth,
                           tangents=count, qr_every=qr_every)
    tol = worst["tangent_tolerance"]
    assert worst["failures_differ"] is None, worst
    assert worst["h"] < _h_tolerance(net) and worst["log_norm"] < _h_tolerance(net), worst
    assert worst["tangents"] < tol and worst["tangent_logs"] < tol, worst


def test_the_tolerance_is_the_bound_of_the_layer_s_sums():
    net = Network(width=24, batch=20)
    u, u32 = np.finfo(np.float64).eps / 2, np.finfo(np.float32).eps / 2
    assert tangent_tolerance(net) == pytest.approx(16 * (24 + 20 + 24 * 20) * u)
    assert tangent_tolerance(Network(width=(24, 64, 8), depth=3, batch=20)) == pytest.approx(
        16 * (64 + 20 + 64 * 20) * u)
    assert tangent_tolerance(net, np.float32) == pytest.approx(
        16 * ((24 + 20) * u32 + 24 * 20 * u))


def test_the_tangents_start_as_the_cpus_bitwise(device):
    net = Network(width=12, depth=4, batch=10, activation="relu", norm="bn")
    seeds = [0, 3, 2**64 - 1]
    backend = device.backend()
    batch = backend.start(net, seeds, tangents=3, qr_every=2)
    with backend.dev.context():
        t = backend.dev.to_host(batch.tangents.t)
    assert t.shape == (3, 3, 12, 10) and t.dtype == np.float64
    for i, seed in enumerate(seeds):
        np.testing.assert_array_equal(t[i], tangents.start(net, seed, 3).t)
    np.testing.assert_array_equal(batch.tangent_logs(), np.zeros((3, 3)))
    stretch = backend.measure_stretch(batch, [0], "gram", (0.1,))()
    np.testing.assert_array_equal(stretch.tangent_logs, np.zeros((1, 3, 3)))


def test_a_run_without_tangents_has_none(device):
    backend = device.backend()
    batch = backend.start(Network(width=8, depth=2, batch=8), [0])
    assert batch.tangents is None and batch.tangent_logs() is None
    assert backend.measure_stretch(batch, [0, 1], "gram", (0.1,))().tangent_logs is None


def test_seeds_that_stop_have_nan_rows_as_on_the_cpu(device, cpu):
    """Vanilla ReLU at width 2 loses every unit within a few layers, and its tangents
    often before (a direction annihilated: -inf): the stretch's logs are the CPU's, NaN
    from the layer a seed stopped on, where its log-norm is. In float64, where both
    sides annihilate a direction exactly (float32 tangents keep a residue of rounding)."""
    net = Network(width=2, depth=60, activation="relu", dtype="float64")
    seeds, points = list(range(8)), [0, 1, 2, 3, 5, 10, 20, 40, 60]
    for count in (1, 2):
        backend = device.backend()
        g = backend.start(net, seeds, tangents=count)
        ours = backend.measure_stretch(g, points, "gram", (0.1,))()
        c = cpu.start(net, seeds, tangents=count)
        ref = cpu.measure_stretch(c, points, "gram", (0.1,))()
        assert np.isnan(ref.log_norms).any() and (~np.isnan(ref.log_norms)).any()
        np.testing.assert_array_equal(ours.failed_layer, ref.failed_layer)
        stopped = np.isnan(ref.log_norms)
        np.testing.assert_array_equal(np.isnan(ours.log_norms), stopped)
        assert np.isnan(ours.tangent_logs[stopped]).all()
        assert not np.isnan(ours.tangent_logs[~stopped]).any()
        tol = _trajectory_tolerance(device, net)
        np.testing.assert_allclose(ours.tangent_logs, ref.tangent_logs, rtol=tol, atol=tol)
        live = g.failed_layer < 0  # the batch's logs on the host: the live seeds' the CPU's
        np.testing.assert_allclose(g.tangent_logs()[live], c.tangent_logs()[live], rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("net, schedule, count, qr_every", [
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn", dtype="float64"),
     Schedule(every=4, log=None, cheap_every=2), 2, 1),
    (Network(width=12, depth=12, batch=10, activation="tanh", norm="ln", gamma=0.5,
             dtype="float64"), Schedule(every=3, log=0), 3, 3),
    (Network(width=(12, 9, 15, 7, 11, 13), depth=6, batch=10, activation="relu",
             norm="bn-rms", dtype="float64"), Schedule(every=1, log=0), 2, 2),
    (Network(width=12, depth=12, batch=10, activation="relu", norm="bn"),
     Schedule(every=4, log=None, cheap_every=2), 1, 1),
    (Network(width=12, depth=12, batch=10, activation="relu"), Schedule(every=3, log=0), 2, 1),
], ids=lambda x: x.label() if isinstance(x, Network) else None)
def test_trajectories_carry_the_cpus_tangents(device, cpu, net, schedule, count, qr_every):
    """simulate_many on both backends, both tiers (Gram-tier rows read the batch's logs
    from the device): tangent_log_norm and jacobian_exponents are the CPU's at every row;
    carrying tangents changes no other number of the GPU's."""
    seeds = [0, 1, 5]
    ours = simulate_many(net, seeds, schedule, backend=device.backend(), tangents=count,
                         qr_every=qr_every)
    ref = simulate_many(net, seeds, schedule, backend=cpu, tangents=count, qr_every=qr_every)
    plain = simulate_many(net, seeds, schedule, backend=device.backend())
    tol = _trajectory_tolerance(device, net)
    for a, b, p in zip(ref, ours, plain, strict=True):
        np.testing.assert_array_equal(a.layer, b.layer)
        assert b.tangent_log_norm.shape == (len(b.layer), count)
        np.testing.assert_allclose(b.tangent_log_norm, a.tangent_log_norm, rtol=tol, atol=tol)
        np.testing.assert_allclose(b.jacobian_exponents, a.jacobian_exponents, rtol=tol,
                                   atol=tol)
        np.testing.assert_array_equal(b.spectrum, p.spectrum)
        np.testing.assert_array_equal(b.log_norm, p.log_norm)
    if schedule.cheap_every:
        assert set(ours[0].tier.tolist()) == {0, 1}


def test_tangent_runs_go_layer_by_layer(device):
    """No CUDA graph and no network whole on the chip for a tangent run (their step is
    CuPy's and cuSOLVER's, not a kernel's); a run without tangents takes them."""
    net = Network(width=16, depth=24, batch=16, activation="relu", norm="bn")
    for count, whole in ((0, True), (2, False)):
        backend = device.backend(fused=True)
        launched = _recording(backend)
        batch = backend.start(net, [0, 1], tangents=count)
        backend.advance(batch, net.depth)
        assert ("network_f32" in launched) == whole, count
        plain = device.backend(fused=False)
        batch = plain.start(net, [0, 1], tangents=count)
        plain.advance(batch, net.depth)
        assert (plain.dev.graphs_captured > 0) == (whole and plain.dev.supports_graphs), count


def _recording(backend) -> list:
    """The names of the kernels ``backend`` launches from now on."""
    launched, launch = [], backend.dev.launch

    def record(name, *args, **kwargs):
        launched.append(name)
        return launch(name, *args, **kwargs)

    backend.dev.launch = record
    return launched


def _sweep(**options) -> Sweep:
    return Sweep(grid={"width": [8], "depth": [12], "activation": ["relu", "tanh"],
                       "norm": ["none", "bn"]}, seeds=(0, 1),
                 schedule=Schedule(every=4, log=3, cheap_every=2), tangents=2, **options)


def _assert_same_tangents(gpu_path, cpu_path, tol):
    with h5py.File(gpu_path, "r") as fg, h5py.File(cpu_path, "r") as fc:
        for name in schema.TANGENT_DATASETS:
            assert fg[name].shape == fc[name].shape and fg[name].dtype == fc[name].dtype
            np.testing.assert_allclose(fg[name][()], fc[name][()], rtol=tol, atol=tol,
                                       err_msg=name)
        np.testing.assert_array_equal(fg["layer"][()], fc["layer"][()])


def test_results_files_hold_the_cpus_tangents(device, tmp_path):
    tol = 1e-5 if device.kind == "host" else 1e-3
    a = run_sweep(_sweep(qr_every=2), tmp_path / "cpu.h5", backend="cpu")
    b = run_sweep(_sweep(qr_every=2), tmp_path / "gpu.h5", backend=device.backend())
    _assert_same_tangents(b, a, tol)


def test_sweep_gpu_tangents_on_the_command_line(device, tmp_path, monkeypatch):
    """``fastrank sweep --gpu --tangents 2`` (on the stand-in through the command line's
    get_backend, as tests/gpu/test_planner.py does) writes the CPU's tangents."""
    monkeypatch.chdir(tmp_path)
    if device.kind == "host":
        get_backend = backends.get_backend

        def on_stand_in(name, **options):
            if name != "gpu":
                return get_backend(name, **options)
            options.pop("device")
            return device.backend(**options)

        monkeypatch.setattr(backends, "get_backend", on_stand_in)
    args = ["sweep", "--width", "8", "--depth", "12", "--activation", "relu", "--norm", "bn",
            "--seed", "0-2", "--every", "3", "--tangents", "2", "--qr-every", "2", "-q"]
    for extra, path in ((["--gpu"], "gpu.h5"), ([], "cpu.h5")):
        result = CliRunner().invoke(cli, [*args, *extra, "-o", path])
        assert result.exit_code == 0, result.output
    _assert_same_tangents(tmp_path / "gpu.h5", tmp_path / "cpu.h5",
                          1e-5 if device.kind == "host" else 1e-3)


def test_the_memory_plan_holds_the_tangents_peak(device):
    """On the stand-in (numpy arrays, which tracemalloc sees): what carrying K tangents
    adds to a batch's peak, QR every layer, stays within what batch_bytes adds for them,
    and is more than the carried stack and the pushed one. The stacks stay under
    numpy's 256 KiB of temporary elision, so numpy holds its temporaries as CuPy does;
    a first untraced run compiles what numba compiles."""
    if device.kind != "host":
        pytest.skip("the stand-in's memory is the host's")
    seeds = [0, 1, 2]
    for net, count in ((Network(width=24, depth=4, batch=24, activation="relu", norm="bn"), 3),
                       (Network(width=24, depth=4, batch=24, activation="tanh", norm="ln",
                                gamma=0.5, dtype="float64"), 1)):
        peaks = {}
        for k, traced in ((0, False), (count, False), (0, True), (count, True)):
            backend = device.backend(graphs=False)
            if traced:
                tracemalloc.start()
            try:
                batch = backend.start(net, seeds, tangents=k, qr_every=1)
                backend.measure_stretch(batch, [0, 2, 4], "gram", (0.1,))()
                if traced:
                    peaks[k] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        added = peaks[count] - peaks[0]
        stack = 8 * len(seeds) * count * net.width * net.batch
        assert 2 * stack < added <= batch_bytes(net, 3, count) - batch_bytes(net, 3), (
            added / stack, TANGENT_STACKS)


def test_a_tangent_batch_is_planned_with_its_tangents(device):
    if device.kind != "host":
        pytest.skip("the stand-in's reported free memory")
    from fastrank.gpu.testing import HostDevice

    net = Network(width=64, depth=4, batch=64, activation="relu", norm="bn")
    free = batch_bytes(net, 10)
    backend = GPUBackend(dev=HostDevice(block=32, eigen_block=32, free_memory=free))
    assert backend.max_batch(net) == 10
    most = backend.max_batch(net, tangents=4)
    assert most < 10
    assert batch_bytes(net, most, 4) <= free < batch_bytes(net, most + 1, 4)


# ---------------------------------------------------------------------------------------
# Only numpy's dispatch: what CuPy's arrays need of fastrank.tangents
# ---------------------------------------------------------------------------------------


class _DispatchOnly(NDArrayOperatorsMixin):
    """An array that numpy reaches only through __array_ufunc__ and __array_function__,
    and refuses to convert to a numpy array, as CuPy's (here holding a numpy array)."""

    def __init__(self, a):
        self.a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    shape = property(lambda self: self.a.shape)
    ndim = property(lambda self: self.a.ndim)
    dtype = property(lambda self: self.a.dtype)

    def __getitem__(self, key):
        return _DispatchOnly(self.a[key])

    def astype(self, *args, **kwargs):
        return _DispatchOnly(self.a.astype(*args, **kwargs))

    def reshape(self, *shape):
        return _DispatchOnly(self.a.reshape(*shape))

    def mean(self, *args, **kwargs):
        return _DispatchOnly(self.a.mean(*args, **kwargs))

    def copy(self):
        return _DispatchOnly(self.a.copy())


def _unwrap(x):
    if isinstance(x, _DispatchOnly):
        return x.a
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return _DispatchOnly(x)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def test_the_gpu_s_tangent_step_reaches_only_numpy_s_dispatch():
    """GPUBackend runs fastrank.tangents.push and renormalise on CuPy arrays through
    numpy's functions: every one of them must dispatch, on scaling and QR layers."""
    net = Network(width=6, depth=4, batch=5, norm="bn", activation="relu", gamma=0.5)
    rng = np.random.default_rng(0)
    w = _DispatchOnly(rng.standard_normal((2, 6, 6)).astype(np.float32))
    h = _DispatchOnly(rng.standard_normal((2, 6, 5)).astype(np.float32))
    state = tangents.Tangents(_DispatchOnly(rng.standard_normal((2, 3, 6, 5))),
                              _DispatchOnly(np.zeros((2, 3))))
    for layer in (1, 2):
        tangents.renormalise(state, tangents.push(net, w, h, state.t), layer, 2)
        assert isinstance(state.t, _DispatchOnly) and isinstance(state.log, _DispatchOnly)
