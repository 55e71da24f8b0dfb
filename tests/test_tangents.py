"""Forward-mode tangents (fastrank.tangents) against torch's forward-mode autodiff and
finite differences on the same networks in float64, and their exponents against what
is known exactly: 0 for orthogonal linear networks, lambda_1 (theory.top_exponent) for
Gaussian linear ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from naive import layer_ref
from threads import on_one_and_two_threads

from fastrank import tangents, theory
from fastrank.init import input_matrix, weights
from fastrank.propagate import simulate as fastrank_simulate
from fastrank.spec import Network, Schedule

KINDS = [dict(norm=n, activation=a, order=o)
         for n, a, o in itertools.product(("none", "bn", "bn-rms", "ln"),
                                          ("linear", "relu", "tanh"),
                                          ("norm-act", "act-norm"))]
KINDS += [dict(norm="bn", activation="relu", gamma=0.3), dict(norm="none", activation="tanh",
                                                               gamma=0.5)]


def _pushed(net: Network, seed: int, layers: int):
    """H_0, T_0 (one tangent) and J_layers ... J_1 T_0 from fastrank.tangents, float64:
    the tangent's direction times exp of its log growth."""
    h = input_matrix(net, seed).astype(np.float64)
    state = tangents.start(net, seed, 1)
    h0, t0 = h.copy(), state.t[0].copy()
    for layer in range(1, layers + 1):
        w = weights(net, seed, layer)
        t = tangents.push(net, w, h, state.t)
        tangents.renormalise(state, t, layer, 1)
        h = layer_ref(w, h, net)
    return h0, t0, np.exp(state.log[0]) * state.t[0]


def _torch_layer(torch, w, h, net: Network):
    """fastrank's layer in torch, as tests/naive.py's layer_ref defines it."""
    z = w @ h
    if net.residual:
        z = h + net.gamma * z

    def norm(x):
        if net.norm == "none":
            return x
        dim = 0 if net.norm == "ln" else 1
        c = x - x.mean(dim=dim, keepdim=True) if net.norm != "bn-rms" else x
        return c / torch.sqrt((c * c).mean(dim=dim, keepdim=True) + net.eps)

    def act(x):
        return {"linear": x, "relu": torch.relu(x), "tanh": torch.tanh(x)}[net.activation]

    return norm(act(z)) if net.order == "act-norm" else act(norm(z))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_tangents_equal_torch_forward_mode_autodiff(kind):
    torch = pytest.importorskip("torch")
    net = Network(width=12, depth=30, batch=10, dtype="float64", **kind)
    h0, t0, ours = _pushed(net, 3, net.depth)
    ws = [torch.from_numpy(weights(net, 3, layer).astype(np.float64))
          for layer in range(1, net.depth + 1)]

    def network(h):
        for w in ws:
            h = _torch_layer(torch, w, h, net)
        return h

    _, ref = torch.func.jvp(network, (torch.from_numpy(h0),), (torch.from_numpy(t0),))
    ref = ref.numpy()
    assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("kind", [KINDS[i] for i in (1, 8, 15, 22, 24, 25)],
                         ids=lambda k: "-".join(str(v) for v in k.values()))
def test_tangents_equal_finite_differences(kind):
    """Central differences of the float64 network (tests/naive.py) along the tangent,
    step 1e-6 of H's scale: agreement to ~1e-7 relative (truncation ~ step^2, rounding
    ~ eps / step)."""
    net = Network(width=8, depth=6, batch=9, dtype="float64", **kind)
    h0, t0, ours = _pushed(net, 5, net.depth)
    ws = [weights(net, 5, layer) for layer in range(1, net.depth + 1)]

    def network(h):
        for w in ws:
            h = layer_ref(w, h, net)
        return h

    step = 1e-6 * np.abs(h0).max()
    fd = (network(h0 + step * t0) - network(h0 - step * t0)) / (2 * step)
    assert np.abs(ours - fd).max() <= 1e-6 * np.abs(fd).max()


def test_orthogonal_linear_networks_keep_every_exponent_at_zero():
    """An orthogonal linear layer is an isometry of the batch: every exponent is 0, up to
    rounding (1000 layers, 4 directions, QR every layer)."""
    net = Network(width=16, depth=1000, batch=8, init="orthogonal", dtype="float64")
    state = tangents.start(net, 1, 4)
    h = input_matrix(net, 1)
    for layer in range(1, net.depth + 1):
        w = weights(net, 1, layer)
        tangents.renormalise(state, tangents.push(net, w, h, state.t), layer, 1)
        h = w @ h
    assert np.abs(state.log / net.depth).max() <= 1e-6


@pytest.mark.parametrize("d", [16, 64])
def test_gaussian_linear_tangents_grow_at_the_top_lyapunov_exponent(d):
    """The growth of a tangent of a Gaussian linear network per layer, past the layers in
    which it aligns with the top direction (10 / gap, the gap lambda_1 - lambda_2 ~
    1/(2d)), over 12 seeds: within 3 standard errors of lambda_1 = 1/2 [log(2/d) +
    psi(d/2)] (every increment of an aligned tangent has exactly that mean)."""
    transient = int(10 / theory.lyapunov_gap(d))
    depth = transient + 300
    net = Network(width=d, depth=depth, batch=4, dtype="float64")
    rates = []
    for seed in range(12):
        state = tangents.start(net, seed, 1)
        h = input_matrix(net, seed)
        for layer in range(1, depth + 1):
            w = weights(net, seed, layer)
            tangents.renormalise(state, tangents.push(net, w, h, state.t), layer, 1)
            h = w @ h
            h /= np.linalg.norm(h)
            if layer == transient:
                aligned = state.log[0]
        rates.append((state.log[0] - aligned) / (depth - transient))
    rates = np.array(rates)
    se = rates.std(ddof=1) / np.sqrt(len(rates))
    assert abs(rates.mean() - theory.top_exponent(d)) <= 3 * se


def test_qr_keeps_the_first_direction_and_counts_growth_every_layer():
    """With QR every 3 layers, the first total is still the first tangent's own log
    growth (Gram-Schmidt keeps its direction), at every layer; the totals equal those of
    QR every layer at the layers where both orthonormalise (the span is the same)."""
    net = Network(width=10, depth=12, batch=6, norm="bn", activation="relu",
                  dtype="float64")
    states = {q: tangents.start(net, 2, 3) for q in (1, 3)}
    single = tangents.start(net, 2, 1)
    h = input_matrix(net, 2)
    for layer in range(1, net.depth + 1):
        w = weights(net, 2, layer)
        for q, state in states.items():
            tangents.renormalise(state, tangents.push(net, w, h, state.t), layer, q)
        tangents.renormalise(single, tangents.push(net, w, h, single.t), layer, 1)
        h = layer_ref(w, h, net)
        for state in states.values():
            assert state.log[0] == pytest.approx(single.log[0], rel=1e-12, abs=1e-12)
        if layer % 3 == 0:
            np.testing.assert_allclose(states[3].log, states[1].log, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", [KINDS[9], KINDS[19], KINDS[-2]])
def test_a_stack_of_seeds_is_pushed_and_renormalised_as_each_seed_alone(kind):
    """Leading axes stack seeds (as the GPU keeps them): push and renormalise of the
    stack give each seed's own tangents and logs, QR layers and scaling layers alike."""
    net = Network(width=6, depth=4, batch=5, dtype="float64", **kind)
    seeds = (0, 1, 2)
    alone = [tangents.start(net, s, 3) for s in seeds]
    stack = tangents.Tangents(np.stack([a.t for a in alone]), np.zeros((3, 3)))
    hs = [input_matrix(net, s) for s in seeds]
    for layer in range(1, net.depth + 1):
        ws = [weights(net, s, layer) for s in seeds]
        tangents.renormalise(stack, tangents.push(net, np.stack(ws), np.stack(hs), stack.t),
                             layer, 2)
        for a, w, h in zip(alone, ws, hs, strict=True):
            tangents.renormalise(a, tangents.push(net, w, h, a.t), layer, 2)
        hs = [layer_ref(w, h, net) for w, h in zip(ws, hs, strict=True)]
        np.testing.assert_allclose(stack.log, [a.log for a in alone], rtol=1e-12)
        np.testing.assert_allclose(stack.t, [a.t for a in alone], rtol=1e-9, atol=1e-12)


def test_bad_counts_are_refused():
    net = Network(width=2, depth=1, batch=2)
    with pytest.raises(ValueError, match="at least 1"):
        tangents.start(net, 0, 0)
    with pytest.raises(ValueError, match="space of 4"):
        tangents.start(net, 0, 5)


# ---------------------------------------------------------------------------------------
# Through the depth loop: simulate, the sweep's options, the backends
# ---------------------------------------------------------------------------------------


def _reference_logs(net: Network, seed: int, count: int, qr_every: int, layers) -> np.ndarray:
    """The tangents' log growth at ``layers``, by fastrank.tangents over tests/naive.py's
    float64 forward pass."""
    state = tangents.start(net, seed, count)
    h = input_matrix(net, seed).astype(np.float64)
    out = {0: state.log.copy()}
    for layer in range(1, max(layers) + 1):
        w = weights(net, seed, layer)
        tangents.renormalise(state, tangents.push(net, w, h, state.t), layer, qr_every)
        h = layer_ref(w, h, net)
        out[layer] = state.log.copy()
    return np.stack([out[layer] for layer in layers])


@pytest.mark.parametrize("kind, dtype, qr_every", [
    (dict(norm="bn", activation="relu"), "float64", 2),
    (dict(norm="none", activation="relu"), "float64", 1),  # rescaled: H's scale is invisible
    (dict(norm="ln", activation="tanh", gamma=0.5), "float64", 3),
    (dict(norm="bn", activation="tanh", order="act-norm"), "float32", 1),
])
def test_simulate_carries_the_tangents_of_the_reference(kind, dtype, qr_every):
    """Every measured row's tangent_log_norm is the reference's at that layer (float64
    networks to rounding; float32 ones to float32's rounding of H, amplified by the
    layers), both tiers; jacobian_exponents is it divided by the layer."""
    net = Network(width=12, depth=40, batch=10, dtype=dtype, **kind)
    schedule = Schedule(every=10, log=None, cheap_every=5)
    traj = fastrank_simulate(net, 3, schedule, tangents=3, qr_every=qr_every)
    ref = _reference_logs(net, 3, 3, qr_every, traj.layer.tolist())
    tol = 1e-9 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(traj.tangent_log_norm, ref, rtol=tol, atol=tol)
    assert np.isnan(traj.jacobian_exponents[0]).all()
    np.testing.assert_allclose(traj.jacobian_exponents[1:],
                               traj.tangent_log_norm[1:] / traj.layer[1:, None], rtol=1e-15)
    assert set(traj.tier.tolist()) == {0, 1}


def test_tangents_change_no_other_number():
    net = Network(width=16, depth=60, batch=12, norm="bn", activation="relu", dtype="float64")
    plain = fastrank_simulate(net, 1, Schedule(every=20, log=None))
    carried = fastrank_simulate(net, 1, Schedule(every=20, log=None), tangents=2)
    np.testing.assert_array_equal(plain.spectrum, carried.spectrum)
    np.testing.assert_array_equal(plain.log_norm, carried.log_norm)
    assert not hasattr(plain, "tangent_log_norm")


def test_the_sweep_validates_and_stores_its_tangents():
    from fastrank.errors import SpecError
    from fastrank.spec import Sweep

    sweep = Sweep(grid={"width": [4]}, tangents=3, qr_every=2)
    assert Sweep.from_dict(sweep.to_dict()) == sweep
    assert "tangents" not in Sweep(grid={"width": [4]}).to_dict()  # files as before
    for options, words in (({"tangents": -1}, "tangents -1"), ({"qr_every": 0}, "qr-every 0"),
                           ({"tangents": 17}, "more directions than the 16 entries"),
                           ({"tangents": 1.5}, "tangents 1.5")):
        with pytest.raises(SpecError, match=words):
            Sweep(grid={"width": [4]}, **options)


def test_an_annihilated_direction_has_exponent_minus_infinity_without_a_warning():
    net = Network(width=2, depth=1, batch=2, activation="relu", dtype="float64")
    for k in (1, 2):
        state = tangents.start(net, 0, k)
        with np.errstate(all="raise"):
            tangents.renormalise(state, np.zeros_like(state.t), 1, 1)
        assert np.isneginf(state.log).all() and not np.isnan(state.t).any()


# ---------------------------------------------------------------------------------------
# The CPU's whole-depth kernel (kernels/cpu/depth.py, tangents.py) against the per-layer
# path (fastrank.tangents over numpy), float32 networks
# ---------------------------------------------------------------------------------------


def _run_tangents(net: Network, count: int, qr_every: int, points, per_layer: bool,
                  monkeypatch):
    """A CPU batch of seeds 3 and 4 with ``count`` tangents measured at ``points`` (one
    stretch: a single kernel call), then advanced to the network's depth (the Gram
    tier's way); by the per-layer path where ``per_layer``."""
    from fastrank.backends import cpu

    with monkeypatch.context() as patch:
        if per_layer:
            patch.setattr(cpu, "_in_depth_kernel", lambda batch: False)
        backend = cpu.CPUBackend()
        batch = backend.start(net, [3, 4], tangents=count, qr_every=qr_every)
        _, log_norms, logs = backend.measure_points(batch, points, "gram")
        backend.advance(batch, net.depth)
    return log_norms, logs, batch


#: How far the float32 tangents of the whole-depth kernel and of the per-layer path may
#: lie apart after tens of layers (their logs' totals and their entries; see below).
PATHS_ATOL = 2e-4


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_the_depth_kernel_carries_the_tangents_of_the_per_layer_path(kind, monkeypatch):
    """The kernel's layers give the per-layer path's float32 H bit for bit (checked
    here: the log-norms and the final H), and both push their float32 tangents through
    the same Jacobians with the same compiled pass; they differ only in float32
    rounding: the pass's sums over a feature's samples are float32, which its two builds
    (in the kernel's thread; shared among numba's threads) may vectorise in other
    orders, and the products come from two BLAS libraries (SciPy's in the kernel,
    numpy's layer by layer). That is a few units of u = 6e-8 per entry and layer,
    carried through 40 layers whose Jacobians' singular values spread by a few orders
    (a direction orthogonalised against a faster one carries the difference amplified):
    the worst seen over these networks is 3e-5 on totals up to 15 and 2e-5 on the
    tangents' entries (up to the sign QR gives each). PATHS_ATOL = 2e-4 leaves room and
    sits far below what a different H or a missing term makes (1e-2 and more)."""
    from fastrank.backends.cpu import uses_depth_kernel

    net = Network(width=12, depth=40, batch=10, **kind)
    assert uses_depth_kernel(net, 2)
    points = [0, 5, 13, 30]
    for count, qr_every in ((1, 1), (2, 1), (2, 3), (4, 1), (4, 3)):
        got = _run_tangents(net, count, qr_every, points, False, monkeypatch)
        ref = _run_tangents(net, count, qr_every, points, True, monkeypatch)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[2].h, np.stack(ref[2].h))
        assert got[1].shape == (len(points), 2, count)
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=PATHS_ATOL)
        np.testing.assert_allclose(got[2].tangent_logs(), ref[2].tangent_logs(), rtol=0,
                                   atol=PATHS_ATOL)
        for mine, theirs in zip(got[2].tangents, ref[2].tangents, strict=True):
            assert mine.t.shape == theirs.t.shape == (count, 12, 10)
            assert mine.t.dtype == theirs.t.dtype == np.float32
            signs = np.sign(np.einsum("kij,kij->k", mine.t, theirs.t))
            np.testing.assert_allclose(mine.t, signs[:, None, None] * theirs.t, rtol=0,
                                       atol=PATHS_ATOL)


def test_a_stopped_seed_has_no_tangent_rows_in_the_depth_kernel(monkeypatch):
    """A network whose H vanishes (tanh with gain 0.5) stops at the same layer on both
    paths; the kernel's tangent logs are NaN from there on, and before it those of the
    per-layer path (to PATHS_ATOL)."""
    net = Network(width=8, batch=8, depth=1500, activation="tanh", gain=0.5)
    points = [0, 100, 500, 1500]
    got = _run_tangents(net, 2, 1, points, False, monkeypatch)
    ref = _run_tangents(net, 2, 1, points, True, monkeypatch)
    failed = got[2].failed_layer
    assert (failed > 0).all() and (failed < 1500).all()
    np.testing.assert_array_equal(failed, ref[2].failed_layer)
    stopped = np.asarray(points)[:, None] >= failed[None, :]
    assert np.isnan(got[1][stopped]).all() and np.isfinite(got[1][~stopped]).all()
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=PATHS_ATOL)


@pytest.mark.parametrize("kind", [dict(norm="bn", activation="relu"),
                                  dict(norm="none", activation="relu"),  # rescaled
                                  dict(norm="ln", activation="tanh", order="act-norm"),
                                  dict(norm="bn-rms", activation="linear", gamma=0.4)],
                         ids=lambda k: "-".join(str(v) for v in k.values()))
def test_the_depth_kernels_tangents_change_no_other_number(kind):
    """With tangents the kernel's H, log-norms, spectra and every measure are the bits
    they are without (both tiers)."""
    from fastrank.backends.cpu import uses_depth_kernel

    net = Network(width=16, depth=60, batch=12, **kind)
    assert uses_depth_kernel(net)
    schedule = Schedule(every=20, log=None, cheap_every=10)
    plain = fastrank_simulate(net, 1, schedule)
    carried = fastrank_simulate(net, 1, schedule, tangents=3, qr_every=2)
    np.testing.assert_array_equal(plain.layer, carried.layer)
    np.testing.assert_array_equal(plain.spectrum, carried.spectrum)
    np.testing.assert_array_equal(plain.log_norm, carried.log_norm)
    for name, values in plain.measures.items():
        np.testing.assert_array_equal(values, carried.measures[name], err_msg=name)
    assert np.isfinite(carried.tangent_log_norm).all()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_the_compiled_push_is_the_float64_reference_to_float32_rounding(kind):
    """One layer of kernels/cpu/tangents (float32 products, the row pass in both builds)
    against fastrank.tangents.push in float64 on the same float32 weights, H,
    pre-activation (as the forward takes it) and tangents. Every entry is a product of
    d_in terms, then the row's normalisation and activation, a few roundings more, each
    u = 6e-8 of the entries' scale: the worst seen is 3e-7 of the largest entry; 1e-5
    leaves room. The two builds agree to float32 rounding, and the squared norms per
    feature are the pushed entries' own, summed in float32 over the N samples."""
    from fastrank import codes
    from fastrank.kernels.cpu import tangents as compiled

    net = Network(width=12, depth=1, batch=10, **kind)
    h, w = input_matrix(net, 5), weights(net, 5, 1)
    t = tangents.start(net, 5, 3, np.float32).t
    z = w @ h
    if net.residual:
        z *= np.float32(net.gamma)
        z += h
    ref = tangents.push(net, w, h, t.astype(np.float64), z=z.astype(np.float64))
    scale = np.abs(ref).max()
    layer = (net.gamma, codes.NORMS[net.norm], codes.ACTIVATIONS[net.activation],
             net.order == "act-norm", net.eps)
    pushed = []
    for build in (compiled.rows, compiled.rows_parallel):
        b, sq = w @ t, np.empty((12, 3))
        build(z.copy(), t, b, sq, *layer)
        np.testing.assert_allclose(b, ref, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(sq, (b.astype(np.float64) ** 2).sum(axis=2).T, rtol=1e-5)
        pushed.append(b)
    np.testing.assert_allclose(pushed[0], pushed[1], rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", [KINDS[9], KINDS[-2]],
                         ids=lambda k: "-".join(str(v) for v in k.values()))
def test_push_takes_the_forwards_pre_activation_and_follows_the_tangents_dtype(kind):
    """Given the forward's pre-activation ``z`` (W H, or H + gamma W H as the CPU's
    forward takes it), push gives the bits it gives taking W H itself; float32 tangents
    are pushed in float32 (products and statistics too: the worst seen is 2e-6 of the
    largest entry; 1e-5 leaves room)."""
    net = Network(width=8, depth=1, batch=6, dtype="float64", **kind)
    h, w = input_matrix(net, 2), weights(net, 2, 1)
    t = tangents.start(net, 2, 2).t
    z = w @ h
    if net.residual:
        z *= net.gamma
        z += h
    ref = tangents.push(net, w, h, t)
    np.testing.assert_array_equal(tangents.push(net, w, h, t, z=z), ref)
    single = tangents.push(net, *(a.astype(np.float32) for a in (w, h, t)))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("qr", [False, True])
def test_the_compiled_renormalise_is_the_reference_and_annihilates_without_nan(qr):
    """kernels/cpu/tangents.renormalise (float32) against fastrank.tangents.renormalise
    in float64 on the same pushed tangents (QR: the same |diag R| and Q up to signs), to
    float32 rounding (a few u = 6e-8; 1e-6 leaves room); rows past the first d (the
    whole-depth kernel's spare) are left alone. A zero direction adds -inf and stays
    zero, and the others stay finite."""
    from fastrank.kernels.cpu import tangents as compiled

    def squares(b):
        return np.ascontiguousarray((b[:, :5].astype(np.float64) ** 2).sum(axis=2).T)

    pushed = np.random.default_rng(7).standard_normal((3, 5, 4)).astype(np.float32)
    ref = tangents.Tangents(np.zeros((3, 5, 4)), np.full(3, 0.5))
    tangents.renormalise(ref, pushed.astype(np.float64), 1, 1 if qr else 2)
    b = np.full((3, 6, 4), 7.0, np.float32)
    b[:, :5] = pushed
    log = np.full(3, 0.5)
    compiled.renormalise(b, squares(b), log, qr)
    np.testing.assert_allclose(log, ref.log, rtol=1e-6)
    assert (b[:, 5] == 7.0).all()
    signs = np.sign(np.einsum("kij,kij->k", b[:, :5], ref.t))
    np.testing.assert_allclose(b[:, :5], signs[:, None, None] * ref.t, rtol=0, atol=1e-6)

    b[:, :5] = pushed
    b[0] = 0.0  # the first direction annihilated
    log = np.zeros(3)
    compiled.renormalise(b, squares(b), log, qr)
    assert np.isneginf(log[0]) and np.isfinite(log[1:]).all()
    assert not b[0].any() and np.isfinite(b).all()


def test_the_depth_kernels_tangents_are_the_same_bits_on_any_thread_count():
    """One seed per thread, each seed's tangents pushed by its own thread with BLAS at
    one thread: the thread count changes no bit (a resume on another count matches)."""
    from fastrank.backends.cpu import CPUBackend

    net = Network(width=24, depth=50, norm="bn", activation="relu")

    def run():
        backend = CPUBackend()
        batch = backend.start(net, range(3), tangents=4, qr_every=2)
        logs = backend.measure_points(batch, [0, 25, 50], "gram")[2]
        return logs, np.stack([t.t for t in batch.tangents])

    results = on_one_and_two_threads(run)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
