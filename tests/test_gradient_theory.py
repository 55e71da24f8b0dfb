"""The tangents' growth through batch-normalised networks against mean-field theory:
the closed forms of fastrank.theory (linear at any batch, ReLU's large-batch limit of
Yang et al. 2019), the Monte Carlo mean field of fastrank.mean_field, and fastrank's
simulations, each step within 3 standard errors of the next (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastrank
from fastrank import mean_field, theory
from fastrank.spec import Schedule

pytestmark = pytest.mark.slow


def _rate(net, seeds) -> tuple[float, float]:
    """The tangent's log growth per layer over the last three quarters of the depth:
    (mean over seeds, standard error)."""
    runs = fastrank.simulate_many(net, seeds, Schedule(every=10, log=None), tangents=1)
    return theory.tangent_rate(runs, net.depth // 4)


@pytest.mark.parametrize("norm", ["bn", "bn-rms"])
def test_the_mean_field_reproduces_the_closed_form_linear_rate(norm):
    """bn_linear_gradient_rate is derived from the same recursion the Monte Carlo runs:
    they agree within 3 of its standard errors at N = 8 (the rate is 0.09 for bn)."""
    net = fastrank.Network(width=8, depth=1, batch=8, norm=norm, activation="linear")
    rate, se = mean_field.gradient_rate(net)
    predicted = theory.bn_linear_gradient_rate(8, centred=norm == "bn")
    assert abs(rate - predicted) < 3 * se, (rate, se, predicted)


def test_the_mean_field_relu_rate_tends_to_the_large_batch_limit():
    """Yang et al.'s pi/(pi - 1) is the limit of large batches: the Monte Carlo mean field
    at N = 16, 24, 32, 48, 64, extrapolated to 1/N = 0 by a quadratic in 1/N (its excess
    is about 0.54/N + 1.7/N^2), meets 1/2 log(pi/(pi - 1)) within 3 standard errors."""
    batches = (16, 24, 32, 48, 64)
    rates = [mean_field.gradient_rate(fastrank.Network(width=8, depth=1, batch=n,
                                                       norm="bn", activation="relu"))
             for n in batches]
    value, se = theory.extrapolate([1.0 / n for n in batches], [r for r, _ in rates],
                           [s for _, s in rates], 2)
    assert abs(value - theory.bn_relu_gradient_rate()) < 3 * se, (value, se)
    assert all(r > theory.bn_relu_gradient_rate() for r, _ in rates)  # from above


@pytest.mark.parametrize("order", ["norm-act", "act-norm"])
def test_relu_bn_tangents_extrapolate_in_width_to_the_mean_field_rate(order):
    """ReLU BN at N = 32: the tangents' rate at d = 64, 96, 128, extrapolated linearly in
    1/d (the finite-width excess is about +0.5/d with the norm after the activation,
    below the errors with it before), meets the Monte Carlo mean-field rate within 3
    combined standard errors."""
    widths = (64, 96, 128)
    rates = [_rate(fastrank.Network(width=d, depth=400, batch=32, norm="bn",
                                    activation="relu", order=order), range(6))
             for d in widths]
    value, se = theory.extrapolate([1.0 / d for d in widths], [r for r, _ in rates],
                           [s for _, s in rates], 1)
    predicted, mf_se = mean_field.gradient_rate(
        fastrank.Network(width=8, depth=1, batch=32, norm="bn", activation="relu",
                         order=order))
    assert abs(value - predicted) < 3 * math.hypot(se, mf_se), (value, se, predicted, rates)


def test_linear_bn_tangents_extrapolate_in_width_to_the_mean_field_rate():
    """Linear BN at N = 8: the leading exponent falls short of 1/2 log(6/5) by O(1/d) at
    finite width (about 1.4/d); the rates at d = 128, 256, 512 extrapolated linearly in
    1/d meet it within 3 standard errors."""
    widths = (128, 256, 512)
    rates = [_rate(fastrank.Network(width=d, depth=300, batch=8, norm="bn",
                                    activation="linear"), range(6)) for d in widths]
    value, se = theory.extrapolate([1.0 / d for d in widths], [r for r, _ in rates],
                           [s for _, s in rates], 1)
    predicted = theory.bn_linear_gradient_rate(8)
    assert abs(value - predicted) < 3 * se, (value, se, predicted, rates)
    assert all(r < predicted for r, _ in rates)  # the shortfall's sign


def test_theory_names_its_predictions_only_where_it_has_them():
    """jacobian_exponents: every exponent for vanilla linear networks, the leading one for
    BN linear and ReLU, nothing for tanh, residual branches or layer norm."""
    def net(**kw):
        return fastrank.Network(width=16, depth=10, batch=8, **kw)

    lam, _ = theory.jacobian_exponents(net(norm="none", activation="linear"), 10)
    np.testing.assert_allclose(lam, np.repeat(theory.lyapunov_exponents(16), 8)[:10])
    zero, _ = theory.jacobian_exponents(net(norm="none", activation="linear",
                                            init="orthogonal"), 3)
    np.testing.assert_array_equal(zero, 0.0)
    bn, _ = theory.jacobian_exponents(net(norm="bn", activation="relu"), 3)
    assert bn[0] == theory.bn_relu_gradient_rate() and np.isnan(bn[1:]).all()
    for kw in (dict(norm="bn", activation="tanh"), dict(norm="ln", activation="relu"),
               dict(norm="bn", activation="relu", gamma=0.5)):
        assert theory.jacobian_exponents(net(**kw), 2) is None
    with pytest.raises(ValueError, match="batch of at least 4"):
        theory.bn_linear_gradient_rate(3)


def test_plot_draws_each_prediction_at_its_level():
    """fastrank plot --theory: a dashed level per configuration with a prediction (the
    closed forms, the mean field at N for BN-ReLU), none for tanh without one nor for
    orthogonal BN-ReLU (the mean field is that of iid Gaussian weights)."""
    pytest.importorskip("matplotlib")
    from fastrank import plot

    kinds = [dict(norm="none", activation="linear"), dict(norm="bn", activation="linear"),
             dict(norm="bn", activation="relu"), dict(norm="none", activation="tanh"),
             dict(norm="bn", activation="relu", init="orthogonal")]
    runs = [run for kw in kinds for run in fastrank.simulate_many(
        fastrank.Network(width=16, depth=40, batch=8, **kw), [0],
        Schedule(every=20, log=None), tangents=2)]
    ax = plot.plot_depth(runs, "jacobian_exponents", theory_overlay=True, tangent=0)
    levels = sorted(float(line.get_ydata()[0]) for line in ax.get_lines()
                    if line.get_linestyle() == "--")
    relu = mean_field.gradient_rate(runs[2].network)[0]
    expected = sorted([theory.top_exponent(16), theory.bn_linear_gradient_rate(8), relu])
    np.testing.assert_allclose(levels, expected)
