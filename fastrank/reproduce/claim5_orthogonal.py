"""Claim 5, the sanity check: products of orthogonal matrices are orthogonal, so a
linear network with orthogonal weights keeps its soft rank (up to rounding) and its
full numerical rank, in float32 and float64, and every exponent of its Jacobians (the
sweep's tangents) is 0: its gradients neither explode nor vanish."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrank.reproduce.common import (
    Claim,
    Outcome,
    SummaryRow,
    md_table,
    new_figure,
    num,
    save_figure,
    sci,
    seeds_text,
    verdict,
)


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: largest relative change of the soft rank that rounding may cause, per dtype
    rounding: dict = field(default_factory=lambda: {"float32": 1e-3, "float64": 1e-9})
    #: largest |Jacobian exponent| at the last layer, both dtypes (float32 weights are
    #: orthogonal to rounding: a layer's log growth is off by ~1e-7, its mean far less)
    zero: float = 1e-6


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    tolerances = " or ".join(f"{sci(tol)} ({dtype})" for dtype, tol in lim.rounding.items())
    return (f"the soft rank never changes by more than {tolerances} relative, the "
            f"numerical rank stays at d in every run, and every Jacobian exponent is within "
            f"{sci(lim.zero)} of 0 (a sweep with tangents).")


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 5 into ``outcome``."""
    from fastrank.plot import plot_depth

    lim: Limits = outcome.claim.limits
    table, outcome.reproduced = [], True
    for dtype, tol in lim.rounding.items():
        runs = results.select(dtype=dtype)
        if not runs:
            continue
        d, depth = runs[0].network.width, runs[0].network.depth
        dev = max(float(np.max(np.abs(r.soft_rank / r.soft_rank[0] - 1))) for r in runs)
        lowest = min(int(np.min(r.numerical_rank[r.tier == 1])) for r in runs)
        norm_dev = max(float(np.max(np.abs(r.log_norm - r.log_norm[0]))) for r in runs)
        exponent = max(_largest_exponent(r) for r in runs)
        good = dev < tol and lowest == d and not exponent >= lim.zero
        outcome.reproduced &= good
        table.append([dtype, d, depth, num(dev), lowest, num(norm_dev), num(exponent)])
        outcome.rows.append(SummaryRow(
            5, f"linear, orthogonal weights, {dtype}, d = N = {d}, L = {depth:,}, "
               f"{seeds_text(runs)}",
            f"largest relative change of the soft rank {num(dev)}; lowest numerical rank "
            f"{lowest}; largest change of log ||H||_F {num(norm_dev)}; largest |Jacobian "
            f"exponent| {num(exponent)}",
            f"no change: every Lyapunov exponent is 1/2 log(gain) = 0; numerical rank {d}",
            verdict(good, f"rounding < {tol:g}")))
    outcome.details.append(md_table(
        ["dtype", "d", "L", "max |soft rank / soft rank(0) - 1|", "lowest numerical rank",
         "max |log-norm change|", "max |Jacobian exponent| at L"], table))
    fig, axes = new_figure(2, 4.8, 3.6)
    plot_depth(results, "soft_rank", ax=axes[0], logy=False, title="soft rank")
    plot_depth(results, "numerical_rank", ax=axes[1], logy=False, title="numerical rank")
    save_figure(fig, fig_dir, "claim5_orthogonal.png",
                "Orthogonal linear networks keep their rank in float32 and float64.", outcome)


def _largest_exponent(run) -> float:
    """The largest |Jacobian exponent| at the run's last row (nan without tangents)."""
    try:
        return float(np.max(np.abs(run.jacobian_exponents[-1])))
    except AttributeError:  # NoTangents: a sweep without them
        return float("nan")


CLAIM = Claim(
    5, "Orthogonal weights in a linear network never lose rank, and every exponent of its "
       "Jacobians is 0 (sanity check).",
    "claim5_orthogonal.toml",
    {"depth": 1000, "seed": "0-1"},
    Limits(), analyse, criterion)
