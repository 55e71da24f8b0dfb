"""The fused normalisation + activation kernel and the CPU layer against float64
numpy references written independently in tests/naive.py."""

import itertools

import numpy as np
import pytest
from naive import act_ref, layer_ref, norm_ref

from fastrank import Network, weights
from fastrank.backends.cpu import CPUBackend
from fastrank.kernels.cpu import layer as kernels

NORMS = ("none", "bn", "bn-rms", "ln")
ACTS = ("linear", "relu", "tanh")


def _z(shape=(12, 9), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)


@pytest.mark.parametrize("norm, act, act_first", list(itertools.product(NORMS, ACTS, (False, True))))
def test_normalize_activate_float64(norm, act, act_first):
    z = _z()
    expected = norm_ref(act_ref(z, act), norm, 1e-5) if act_first else act_ref(norm_ref(z, norm, 1e-5), act)
    got = z.copy()
    sumsq = kernels.normalize_activate(
        got, kernels.NORM_CODES[norm], kernels.ACTIVATION_CODES[act], act_first, 1e-5
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert sumsq == pytest.approx(np.sum(expected**2), rel=1e-12)


@pytest.mark.parametrize("norm, act", list(itertools.product(NORMS, ACTS)))
def test_normalize_activate_float32(norm, act):
    z = _z(dtype=np.float32)
    expected = act_ref(norm_ref(z.astype(np.float64), norm, 1e-5), act)
    got = z.copy()
    kernels.normalize_activate(got, kernels.NORM_CODES[norm], kernels.ACTIVATION_CODES[act], False, 1e-5)
    assert got.dtype == np.float32
    # Statistics are accumulated in float64, so only the final rounding to float32
    # (relative 6e-8) and float32 tanh (a few ulp) separate the result from the reference.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_batch_norm_matches_torch_batchnorm1d_in_training_mode():
    torch = pytest.importorskip("torch")
    z = _z((16, 10), np.float32)
    bn = torch.nn.BatchNorm1d(16, affine=False, eps=1e-5).train()
    with torch.no_grad():
        expected = bn(torch.from_numpy(z.T.copy())).numpy().T  # torch wants (batch, features)
    got = z.copy()
    kernels.normalize_activate(got, kernels.NORM_CODES["bn"], 0, False, 1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_scale_and_sum_of_squares():
    z = _z(dtype=np.float32)
    expected = z.astype(np.float64) * 0.25
    kernels.scale(z, 0.25)
    np.testing.assert_array_equal(z, expected.astype(np.float32))
    assert kernels.sum_of_squares(z) == pytest.approx(np.sum(expected**2), rel=1e-12)
    z[0, 0] = np.inf
    assert not np.isfinite(kernels.sum_of_squares(z))


@pytest.mark.parametrize(
    "network",
    [
        Network(width=10, batch=7, depth=3, activation=a, norm=n, order=o, dtype="float64")
        for a, n, o in itertools.product(ACTS, NORMS, ("norm-act", "act-norm"))
    ]
    + [
        Network(width=10, batch=7, depth=3, norm="bn-rms", gamma=0.3, dtype="float64"),
        Network(width=(6, 9, 4), input_dim=5, batch=7, depth=3, activation="relu", dtype="float64"),
    ],
    ids=lambda n: f"{n.activation}-{n.norm}-{n.order}-g{n.gamma}-{n.width}",
)
def test_cpu_layer_equals_reference(network):
    backend = CPUBackend()
    h = backend.input(network, seed=3)
    for layer in range(1, network.depth + 1):
        expected = layer_ref(weights(network, 3, layer), h, network)
        h_next, sumsq = backend.forward(network, 3, layer, h.copy())
        np.testing.assert_allclose(h_next, expected, rtol=1e-10, atol=1e-12)
        assert sumsq == pytest.approx(np.sum(expected**2), rel=1e-10)
        h = h_next
