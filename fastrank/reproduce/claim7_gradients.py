"""Claim 7, the gradient side of the same networks (docs/gradients.md): batch norm keeps
the rank and its gradients explode at the mean-field rate; Gaussian linear networks
without normalisation collapse and their gradients follow lambda_1 (that orthogonal
linear networks keep every exponent at 0 is claim 5's).

The rates are the leading tangent's log growth per layer (theory.tangent_rate: over the
last three quarters of the depth, for vanilla networks from the layer all their runs
have collapsed; mean and standard error over seeds). Batch norm's are
extrapolated in 1/d over the sweep's widths to the wide limit the mean field describes
(theory.extrapolate) and compared with 1/2 log((N - 2)/(N - 3)) for linear networks
(theory.bn_linear_gradient_rate) and the Monte Carlo mean field at the sweep's N for
ReLU (fastrank.mean_field, whose large-batch limit is Yang et al.'s pi/(pi - 1))."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fastrank import mean_field, theory
from fastrank.reproduce.common import (
    Claim,
    Outcome,
    SummaryRow,
    Z,
    estimate,
    md_table,
    new_figure,
    num,
    range_text,
    save_figure,
    verdict,
)


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: vanilla Gaussian linear: soft rank below this at the last layer of every run
    collapsed: float = 1.01
    #: batch norm: the soft rank never below this after layer ``after``
    floor: float = 2.0
    after: int = 100


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return (f"with BN the soft rank never below {lim.floor:g} after layer {lim.after} and "
            f"the leading exponent, extrapolated in 1/d, within {Z:g} standard errors of "
            f"the mean-field rate; without normalisation Gaussian linear networks' soft rank "
            f"below {lim.collapsed:g} at the last layer and their leading exponent within "
            f"{Z:g} standard errors of lambda_1 at every width.")


def _complete(results, **criteria) -> list:
    return [r for r in results.select(**criteria) if r.status == "complete"]


def _rates(results, widths, **criteria) -> dict:
    """Width -> (leading tangent's rate, standard error) of the runs matching."""
    out = {}
    for d in widths:
        runs = _complete(results, width=d, **criteria)
        if runs:
            out[d] = theory.tangent_rate(runs, runs[0].network.depth // 4)
    return out


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 7 into ``outcome``."""
    lim: Limits = outcome.claim.limits
    nets = outcome.sweep.networks()
    widths = sorted({n.width for n in nets})
    n, depth = nets[0].batch, nets[0].depth
    seeds = len(outcome.sweep.seeds)
    table, checks = [], {}

    # Batch norm: rank kept, explosion at the mean-field rate in the wide limit.
    bn_ok, bn_text, bn_theory = True, [], []
    for act in ("linear", "relu"):
        runs = _complete(results, norm="bn", activation=act, init="gaussian")
        if not runs:
            continue
        low = min(float(r.soft_rank[r.layer >= lim.after].min()) for r in runs)
        rates = _rates(results, widths, norm="bn", activation=act, init="gaussian")
        net = runs[0].network
        if act == "linear":
            predicted, p_se = theory.bn_linear_gradient_rate(n), 0.0
            name = f"1/2 log((N-2)/(N-3)) = {predicted:.4g}"
        else:
            predicted, p_se = mean_field.gradient_rate(net)
            name = (f"mean field at N = {n}: {estimate(predicted, p_se)} (large-batch limit "
                    f"1/2 log(pi/(pi-1)) = {theory.bn_relu_gradient_rate():.4g})")
        value, se = (theory.extrapolate([1.0 / d for d in rates], [r for r, _ in rates.values()],
                                        [s for _, s in rates.values()])
                     if len(rates) >= 2 else (math.nan, math.nan))
        z = (value - predicted) / math.hypot(se, p_se)
        good = low > lim.floor and abs(z) < Z
        bn_ok &= good
        for d, (r, s) in rates.items():
            table.append(["bn", act, "gaussian", d, estimate(r, s), "", ""])
        table.append(["bn", act, "gaussian", "1/d -> 0", estimate(value, se), num(predicted, 4),
                      f"{z:+.1f}"])
        bn_text.append(f"{act}: lowest soft rank {num(low)}, wide-limit rate "
                       f"{estimate(value, se)} (z {z:+.1f})")
        bn_theory.append(f"{act}: {name}")
    checks["bn"] = bn_ok

    # Vanilla Gaussian linear: collapse, exponent lambda_1 at every width, measured from
    # the collapse on (before it the tangents span several directions and grow faster).
    van_ok, van_text = True, []
    for d in widths:
        runs = _complete(results, width=d, norm="none", activation="linear", init="gaussian")
        if not runs:
            continue
        final = max(float(r.soft_rank[-1]) for r in runs)
        starts = [theory.first_layer_below(r.layer, r.soft_rank, lim.collapsed) for r in runs]
        ok = final < lim.collapsed and None not in starts
        r, s = (theory.tangent_rate(runs, max(starts)) if ok else (math.nan, math.nan))
        predicted = theory.top_exponent(d, runs[0].network.weight_gain)
        z = (r - predicted) / s
        van_ok &= ok and abs(z) < Z
        table.append(["none", "linear", "gaussian", d, estimate(r, s), num(predicted, 4),
                      f"{z:+.1f}"])
        van_text.append(f"d = {d}: soft rank at L <= {num(final, 4)}, rate {estimate(r, s)} "
                        f"(z {z:+.1f})")
    checks["vanilla"] = van_ok

    # The rest, measured only (no prediction in fastrank.theory).
    for d, (r, s) in _rates(results, widths, norm="none", activation="relu",
                            init="gaussian").items():
        table.append(["none", "relu", "gaussian", d, estimate(r, s), "-", ""])

    outcome.reproduced = all(checks.values())
    config = (f"d = {range_text(widths)}, N = {n}, L = {depth:,}, {seeds} seeds, "
              f"{outcome.sweep.tangents} tangents")
    outcome.rows += [
        SummaryRow(7, f"BN, linear and ReLU, Gaussian weights, {config}",
                   "; ".join(bn_text), "; ".join(bn_theory), verdict(checks["bn"])),
        SummaryRow(7, f"no normalisation, linear, Gaussian weights, {config}",
                   "; ".join(van_text), "collapse; leading exponent lambda_1 "
                   "= 1/2[log(2 gain/d) + psi(d/2)]", verdict(checks["vanilla"])),
    ]
    outcome.details.append(md_table(
        ["norm", "activation", "init", "d", "leading exponent (per layer)", "theory", "z"],
        table))
    _figure(results, outcome, fig_dir)


def _figure(results, outcome: Outcome, fig_dir: Path) -> None:
    """The leading exponent against depth with the theory, and the soft rank."""
    from fastrank.plot import plot_depth

    fig, axes = new_figure(2, 5.2, 4.0)
    plot_depth(results, "jacobian_exponents", ax=axes[0], theory_overlay=True, tangent=0,
               select={"init": "gaussian"}, title="leading exponent (dashed: theory)")
    plot_depth(results, "soft_rank", ax=axes[1], select={"init": "gaussian"},
               title="soft rank")
    save_figure(fig, fig_dir, "claim7_gradients.png",
                "The leading Jacobian exponent (gradient growth per layer) and the soft rank "
                "of Gaussian networks with and without BN.", outcome)


CLAIM = Claim(
    7, "Gradients at initialisation: BN keeps the rank and its gradients explode at the "
       "mean-field rate; vanilla networks collapse with gradients at lambda_1 (orthogonal "
       "linear networks keep every exponent at 0: claim 5).",
    "claim7_gradients.toml",
    {"width": [64, 128], "depth": 1500, "seed": "0-3"},
    Limits(), analyse, criterion)
