"""The depth loop end to end against the float64 reference network, weights and inputs
regenerated from (seed, layer), rescaling, and failure detection."""

import numpy as np
import pytest
from naive import network_ref

from fastrank import Network, RunFailed, Schedule, simulate, weights
from fastrank.init import input_matrix
from fastrank.propagate import iter_rows

EVERY_LAYER = Schedule(every=1, log=None)


@pytest.mark.parametrize(
    "network",
    [
        Network(width=12, batch=9, depth=40, dtype="float64"),
        Network(width=12, batch=9, depth=40, activation="relu", dtype="float64"),
        Network(width=12, batch=9, depth=40, activation="tanh", norm="ln", dtype="float64"),
        Network(width=12, batch=9, depth=40, activation="relu", norm="bn", dtype="float64"),
        Network(width=12, batch=16, depth=40, norm="bn-rms", gamma=0.5, dtype="float64"),
        Network(width=12, batch=9, depth=40, init="orthogonal", dtype="float64"),
        Network(width=12, batch=9, depth=40, init="uniform", input="orthogonal", dtype="float64"),
    ],
    ids=lambda n: n.label(),
)
def test_simulation_equals_reference_network(network):
    traj = simulate(network, seed=5, schedule=EVERY_LAYER)
    ref = network_ref(network, 5, lambda layer: weights(network, 5, layer),
                      input_matrix(network, 5))
    assert traj.layer.tolist() == list(range(network.depth + 1))
    for i, (h, log_norm) in enumerate(ref):
        s = np.linalg.svd(h, compute_uv=False)
        np.testing.assert_allclose(traj.spectrum[i], s, rtol=1e-8, atol=1e-12 * s[0])
        assert traj.log_norm[i] == pytest.approx(log_norm, rel=1e-10, abs=1e-10)


def test_float32_run_tracks_the_float64_one():
    net = Network(width=16, depth=30, activation="relu", norm="bn")
    t32 = simulate(net, 1, EVERY_LAYER)
    t64 = simulate(Network(**{**net.to_dict(), "dtype": "float64"}), 1, EVERY_LAYER)
    # float64 normals come from 53-bit uniforms (2 per Philox block), so the two runs
    # draw different networks: compare statistics, not entries. BN keeps both ranks up.
    assert t32.soft_rank.min() > 2 and t64.soft_rank.min() > 2


def test_weights_have_the_documented_distributions():
    d = 256
    g = weights(Network(width=d, depth=2), 0, 2)
    assert g.dtype == np.float32 and g.shape == (d, d)
    # variance gain/d_in: the sample variance of d^2 = 65536 normals has relative
    # standard error sqrt(2/65536) = 0.55%; 3% is > 5 standard errors.
    assert np.var(g) * d == pytest.approx(1.0, rel=0.03)
    u = weights(Network(width=d, depth=2, init="uniform", activation="relu"), 0, 1)
    a = np.sqrt(3 * 2.0 / d)
    assert np.abs(u).max() <= a and np.var(u) * d / 2.0 == pytest.approx(1.0, rel=0.03)
    o = weights(Network(width=d, depth=2, init="orthogonal", dtype="float64"), 0, 1)
    np.testing.assert_allclose(o @ o.T, np.eye(d), atol=1e-12)
    rect = weights(Network(width=(8, 8), input_dim=20, depth=2, init="orthogonal",
                           dtype="float64"), 0, 1)
    np.testing.assert_allclose(rect @ rect.T, np.eye(8), atol=1e-12)


def test_any_layer_is_regenerated_independently():
    net = Network(width=32, depth=1000)
    first = weights(net, 9, 777)
    weights(net, 9, 3)
    np.testing.assert_array_equal(weights(net, 9, 777), first)
    assert not np.array_equal(weights(net, 9, 778), first)
    assert not np.array_equal(weights(net, 10, 777), first)


def test_runs_are_deterministic():
    net = Network(width=24, depth=200, activation="relu", norm="bn")
    a, b = simulate(net, 2), simulate(net, 2)
    np.testing.assert_array_equal(a.spectrum, b.spectrum)
    np.testing.assert_array_equal(a.log_norm, b.log_norm)


def test_overflow_is_detected_and_reported_with_the_layer():
    net = Network(width=8, depth=50, activation="tanh", gain=1e80)  # weights overflow float32
    with pytest.raises(RunFailed) as err:
        list(iter_rows(net, 0))
    assert err.value.layer == 1 and "non-finite" in err.value.reason
    traj = simulate(net, 0)
    assert traj.failure is not None and traj.layer.tolist() == [0]


def test_rescaling_keeps_deep_vanilla_networks_finite():
    # With gain 4 at d = 16 the log-norm grows by the top Lyapunov exponent
    # 1/2 [log(2 * 4 / 16) + digamma(8)] = 0.661 per layer: ~1980 after 3000 layers,
    # e^1980 overflows even float64 unless rescaled. 1500 leaves room for fluctuations
    # (their sd grows like sqrt(depth / 2d) ~ 10).
    net = Network(width=16, depth=3000, gain=4.0)
    traj = simulate(net, 0, Schedule(every=1000, log=None))
    assert np.all(np.isfinite(traj.log_norm)) and traj.log_norm[-1] > 1500


def _calls(net_at, backend, depth):
    """Python function calls of one two-seed run of ``net_at(depth)`` measured at layer 0
    and its last layer, and how many of them computed Network.widths."""
    import cProfile
    import pstats

    from fastrank import simulate_many

    net = net_at(depth)
    profile = cProfile.Profile()
    profile.enable()
    simulate_many(net, [0, 1], Schedule(every=None, log=None), backend=backend)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(calls for _, calls, _, _, _ in stats.values())
    widths = sum(v[1] for (_, _, name), v in stats.items() if name == "widths")
    return total, widths


@pytest.mark.parametrize("path", ["cpu per layer", "gpu on the host stand-in"])
def test_host_work_per_layer_does_not_grow_with_depth(path):
    """Counted, not timed: the same calls for every layer at depth 20, 40 and 80 (the
    same measured layers), and the depth-long list of widths built once per network,
    never per layer (it cost 0.47 ms a call at depth 50,000)."""
    from fastrank.backends.cpu import CPUBackend

    if path == "cpu per layer":  # wider than the whole-depth kernel: a BLAS call per layer
        def net_at(depth):
            return Network(width=600, depth=depth, batch=8, activation="relu", norm="bn")
        backend = CPUBackend()
    else:
        gpu_testing = pytest.importorskip("fastrank.gpu.testing")
        from fastrank.gpu import GPUBackend
        from fastrank.gpu.program import CompileError

        try:
            backend = GPUBackend(dev=gpu_testing.HostDevice(block=32, eigen_block=32))
        except CompileError as exc:
            pytest.skip(f"no host build of the CUDA kernels: {exc}")

        def net_at(depth):
            return Network(width=8, depth=depth, activation="relu", norm="bn")
    _calls(net_at, backend, 20)  # warm: compiled kernels, buffers, imports
    (c20, w20), (c40, w40), (c80, w80) = (_calls(net_at, backend, d) for d in (20, 40, 80))
    # 40 more layers cost twice the calls of 20 more, up to a few calls of fixed work
    # (work growing with depth would add at least one call per layer, 40 here)
    assert abs((c80 - c40) - 2 * (c40 - c20)) <= 20, (c20, c40, c80)
    assert w20 <= 1 and w40 <= 1 and w80 <= 1


@pytest.mark.parametrize(
    "network, schedule",
    [
        # whole-depth kernel, full and Gram-tier rows interleaved
        (Network(width=8, depth=60, activation="relu", norm="bn"),
         Schedule(every=3, log=5, cheap_every=2)),
        # a seed that stops part way (tanh underflows in float32) and seeds that go on
        (Network(width=8, depth=3000, activation="tanh", gain=0.5),
         Schedule(every=7, log=None)),
        # the per-layer path (wider than the whole-depth kernel), point by point
        (Network(width=200, batch=12, depth=12, activation="relu", norm="bn"),
         Schedule(every=1, log=None)),
    ],
    ids=["kernel+gram-tier", "stops", "per-layer"],
)
def test_stretches_give_the_rows_of_one_layer_at_a_time(monkeypatch, network, schedule):
    """A stretch of one measured layer at a time, and stretches as long as the spectra
    allow, give the same rows bit for bit, the same failures, and rows up to (not
    including) the layer where a seed stopped."""
    from fastrank import simulate_many, tuning

    def runs(stretch_s):
        monkeypatch.setattr(tuning, "STRETCH_S", stretch_s)
        return simulate_many(network, [0, 1, 2], schedule)

    one, long = runs(0.0), runs(1e9)  # 0: never doubles; 1e9: doubles every stretch
    for a, b in zip(one, long, strict=True):
        np.testing.assert_array_equal(a.layer, b.layer)
        np.testing.assert_array_equal(a.spectrum, b.spectrum)
        np.testing.assert_array_equal(a.log_norm, b.log_norm)
        np.testing.assert_array_equal(a.tier, b.tier)
        np.testing.assert_array_equal(a.rank_tau, b.rank_tau)
        for name, values in a.measures.items():
            np.testing.assert_array_equal(values, b.measures[name])
        assert (a.failure is None) == (b.failure is None)
        points = schedule.points(network.depth)
        if a.failure is None:
            assert a.layer.tolist() == points.tolist()
        else:
            assert a.failure.layer == b.failure.layer
            assert a.layer.tolist() == points[points < a.failure.layer].tolist()
    if network.activation == "tanh":  # the case is what it says: some seeds stop
        assert any(t.failure is not None for t in one)


def test_a_trajectory_has_its_measures_as_attributes_and_no_others():
    """Every scalar measure is an attribute (the measures dict's array itself); any other
    name is an AttributeError naming it, so hasattr and getattr's default work."""
    from fastrank.measures import SCALARS

    traj = simulate(Network(width=8, depth=20), 0, Schedule(every=10, log=None))
    for name in SCALARS:
        assert getattr(traj, name) is traj.measures[name] and len(traj.measures[name]) == 3
    with pytest.raises(AttributeError, match="no_such_measure"):
        traj.no_such_measure  # noqa: B018
    assert not hasattr(traj, "rank_of_nothing")
    assert getattr(traj, "rank_of_nothing", "default") == "default"
