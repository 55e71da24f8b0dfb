"""Claim 2: linear networks with BN keep a soft rank of order sqrt(d) as deep as one
simulates, without drift, and their average rank_tau stays above the paper's bound
(1 - tau)^2 times the average soft rank."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastrank import theory
from fastrank.reproduce.common import (
    Claim,
    Outcome,
    SummaryRow,
    md_table,
    mean_sd,
    new_figure,
    num,
    percent,
    save_figure,
    seeds_text,
    verdict,
)

#: the layer whose soft rank the summary quotes besides the last one
REPORTED_LAYER = 10000


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: the deep regime: layers from this one on
    after: int = 100
    #: no collapse: the soft rank never below this in the deep regime
    floor: float = 2.0
    #: no trend: |last tenth / first tenth - 1| below this
    drift: float = 0.15


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return (f"the soft rank never below {lim.floor:g} after layer {lim.after} in any run (no "
            f"collapse), no drift beyond ±{percent(lim.drift)} between the first and the "
            "last tenth of the depth, and the average rank_τ at or above the paper's bound "
            "(1-τ)² × average soft rank in every run.")


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 2 into ``outcome``."""
    from fastrank.plot import plot_depth

    lim: Limits = outcome.claim.limits
    tau = outcome.sweep.taus[0]
    table, outcome.reproduced = [], True
    for norm in sorted(set(results.runs["norm"]), key=["bn", "bn-rms"].index):
        runs = results.select(norm=norm)
        d, depth = runs[0].network.width, runs[0].network.depth
        at = min(REPORTED_LAYER, depth)
        at_layer = [r.soft_rank[np.searchsorted(r.layer, at)] for r in runs]
        last = [r.soft_rank[-1] for r in runs]
        deep = [r.soft_rank[r.layer >= lim.after] for r in runs]
        avg = [x.mean() for x in deep]
        low = min(x.min() for x in deep)
        cut = depth // 10
        early = np.mean([r.soft_rank[(r.layer >= lim.after)
                                     & (r.layer <= max(cut, 2 * lim.after))].mean()
                         for r in runs])
        late = np.mean([r.soft_rank[r.layer >= depth - cut].mean() for r in runs])
        drift = late / early - 1
        full = [(r.layer >= lim.after) & (r.tier == 1) for r in runs]
        rank_tau = [r.rank_tau[m, 0].mean() for r, m in zip(runs, full, strict=True)]
        bounds = [theory.rank_tau_lower_bound(r.soft_rank[m].mean(), tau)
                  for r, m in zip(runs, full, strict=True)]
        above = all(rt >= b for rt, b in zip(rank_tau, bounds, strict=True))
        num_rank = [r.numerical_rank[r.tier == 1][-1] for r in runs]
        ok = low > lim.floor and abs(drift) < lim.drift and above
        outcome.reproduced &= ok
        table.append([norm, d, depth, mean_sd(at_layer), mean_sd(last), mean_sd(avg),
                      num(low), f"{drift:+.1%}", mean_sd(rank_tau), mean_sd(bounds),
                      mean_sd(num_rank)])
        outcome.rows.append(SummaryRow(
            2, f"linear, norm {norm}, d = N = {d}, L = {depth}, {seeds_text(runs)}",
            f"soft rank at layer {at:,}: {mean_sd(at_layer)}; "
            + (f"at {depth:,}: {mean_sd(last)}; " if depth > at else "")
            + f"average over layers {lim.after}..{depth:,}: {mean_sd(avg)}, lowest value "
            f"{num(low)}; drift first → last tenth {drift:+.1%}; average rank_tau "
            f"{mean_sd(rank_tau)} >= bound {mean_sd(bounds)} in every run: "
            f"{'yes' if above else 'no'}",
            f"Omega(sqrt(d)), sqrt(d) = {math.sqrt(d):.3g}; average rank_tau >= "
            f"(1 - tau)^2 average soft rank (tau = {tau:g})",
            verdict(ok)))
    outcome.details.append(md_table(
        ["norm", "d", "L", f"soft rank at {REPORTED_LAYER:,}", "soft rank at L",
         f"average ({lim.after}..L)", f"lowest (any seed, l >= {lim.after})", "drift",
         f"average rank_τ (τ={tau:g})", "bound (1-τ)² r̄", "numerical rank at L"], table))
    outcome.details.append(
        f"Averages are over each run's rows at layers >= {lim.after} (Gram-tier rows every "
        f"{outcome.sweep.schedule.cheap_every} layers); the rank_tau average and its bound "
        "use the full-spectrum rows. Drift: mean soft rank over the last tenth of the "
        f"depth against layers {lim.after}..L/10 (reproduced: no trend beyond "
        f"±{percent(lim.drift)}). `bn` is torch's BatchNorm1d in training mode, `bn-rms` "
        "the paper's BN (rows to unit mean square, no centring).")
    fig, axes = new_figure(2, 5.4, 3.9)
    plot_depth(results, "soft_rank", ax=axes[0], theory_overlay=True, logx=True,
               title="soft rank")
    plot_depth(results, "rank_tau", ax=axes[1], theory_overlay=True, logx=True,
               title=f"rank_τ, τ = {tau:g}")
    save_figure(fig, fig_dir, "claim2_bn_depth.png",
                "Linear networks with BN at d = N = 32 to the full depth: soft rank (dotted: "
                "sqrt(d)) and rank_τ (dotted: the bound (1-τ)² times the average soft "
                "rank).", outcome)


CLAIM = Claim(
    2, "Linear networks with BN keep a rank of order sqrt(d) for as deep as one simulates "
       "(the paper: 50,000 layers at d = N = 32).",
    "claim2_bn_linear_deep.toml",
    {"depth": 10000, "seed": "0-3", "cheap_every": 100},
    Limits(), analyse, criterion)
