"""Forward-mode tangents (fastrank.tangents) against torch's forward-mode autodiff and
finite differences on the same networks in float64, and their exponents against what
is known exactly: 0 for orthogonal linear networks, lambda_1 (theory.top_exponent) for
Gaussian linear ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from naive import layer_ref

from fastrank import tangents, theory
from fastrank.init import input_matrix, weights
from fastrank.spec import Network

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
    assert np.abs(state.exponents(net.depth)).max() <= 1e-6


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


def test_bad_counts_are_refused():
    net = Network(width=2, depth=1, batch=2)
    with pytest.raises(ValueError, match="at least 1"):
        tangents.start(net, 0, 0)
    with pytest.raises(ValueError, match="space of 4"):
        tangents.start(net, 0, 5)
