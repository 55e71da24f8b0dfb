"""Claim 3: vanilla ReLU networks collapse too, with the log-norm slope of the ReLU
exponent (fastrank.theory.relu_log_norm_growth); with BN they keep a high rank."""

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
    Z,
    estimate,
    md_table,
    mean_sd,
    new_figure,
    num,
    percent,
    range_text,
    save_figure,
    verdict,
)


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: without BN: soft rank below this at the last layer of every run
    collapsed: float = 1.01
    #: with BN: numerical rank at the last layer at least this fraction of the width
    width_fraction: float = 0.9
    #: with BN: the deep regime, layers from this one on
    after: int = 100
    #: with BN: the soft rank never below this in the deep regime
    floor: float = 2.0


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return (f"without BN every run's soft rank below {lim.collapsed:g} at the last layer "
            f"(and the log-norm slope within {Z:g} standard errors of the ReLU exponent); "
            f"with BN the numerical rank at least {percent(lim.width_fraction)} of the width "
            f"in every run and the soft rank never below {lim.floor:g} after layer "
            f"{lim.after}.")


def _vanilla_growth(runs, starts, d: int) -> tuple[float, float, float]:
    """Pooled log-norm slope after the collapse: (measured, standard error, theory)."""
    depth = runs[0].network.depth
    g, used = theory.pooled_growth((r.layer, r.log_norm, s if s is not None else depth)
                                   for r, s in zip(runs, starts, strict=True))
    return (g, math.sqrt(theory.relu_log_norm_step_variance(d) / used),
            theory.relu_log_norm_growth(d, runs[0].network.weight_gain))


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 3 into ``outcome``."""
    lim: Limits = outcome.claim.limits
    table, ok_none, ok_bn, zs = [], True, True, []
    for d in sorted({int(w) for w in results.runs["width"]}):
        for norm in ("none", "bn"):
            runs = [r for r in results.select(width=d, norm=norm) if r.status == "complete"]
            if not runs:
                continue
            final = np.array([r.soft_rank[-1] for r in runs])
            num_rank = np.array([r.numerical_rank[r.tier == 1][-1] for r in runs])
            avg = [r.soft_rank[r.layer >= lim.after].mean() for r in runs]
            low = min(r.soft_rank[r.layer >= lim.after].min() for r in runs)
            starts = [theory.first_layer_below(r.layer, r.soft_rank, lim.collapsed)
                      for r in runs]
            growth_text = "-"
            if norm == "none":
                ok_none &= bool(np.all(final < lim.collapsed))
                g, se, th = _vanilla_growth(runs, starts, d)
                zs.append((g - th) / se)
                growth_text = f"{estimate(g, se)} (theory {th:.4g}, z {zs[-1]:+.1f})"
            else:
                ok_bn &= bool(np.all(num_rank >= lim.width_fraction * d)) and low > lim.floor
            reached = [s for s in starts if s is not None]
            table.append([d, norm, mean_sd(final), mean_sd(reached) if reached else "never",
                          mean_sd(avg), num(low), mean_sd(num_rank), growth_text])
    failed = [r for r in results if r.status == "failed"]
    ok_theory = not zs or max(abs(z) for z in zs) < Z
    outcome.reproduced = ok_none and ok_bn and ok_theory
    nets = outcome.sweep.networks()
    config = (f"relu, norm {{}}, d = {range_text([n.width for n in nets])}, N = d, "
              f"L = {nets[0].depth}, {len(outcome.sweep.seeds)} seeds")
    none_rows = [t for t in table if t[1] == "none"]
    bn_rows = [t for t in table if t[1] == "bn"]

    def by_width(rows, column: int) -> str:
        return ", ".join(f"{t[column]} (d={t[0]})" for t in rows)

    outcome.rows += [
        SummaryRow(3, config.format("none"),
            f"final soft rank {by_width(none_rows, 2)}; below {lim.collapsed:g} after "
            f"{by_width(none_rows, 3)} layers" + (f"; {len(failed)} runs vanished"
                                                   if failed else ""),
            "collapse; log-norm slope 1/2[log(2 gain/d) + E psi(K/2)], K ~ Bin(d, 1/2): "
            + ", ".join(t[7] for t in none_rows),
            verdict(ok_none and ok_theory)),
        SummaryRow(3, config.format("bn"),
            f"average soft rank (l >= {lim.after}) {by_width(bn_rows, 4)}; numerical rank "
            f"at L {by_width(bn_rows, 6)}",
            "high rank (no bound proven for ReLU)", verdict(ok_bn)),
    ]
    outcome.details.append(md_table(
        ["d", "norm", "soft rank at L", f"layers to soft rank < {lim.collapsed:g}",
         f"average soft rank (l >= {lim.after})", f"lowest (l >= {lim.after})",
         "numerical rank at L", "log-norm slope (vanilla)"], table))
    _figure(results, outcome, fig_dir)


def _figure(results, outcome: Outcome, fig_dir: Path) -> None:
    """Soft rank, numerical rank and the vanilla log-norm against depth."""
    from fastrank.plot import plot_depth

    fig, axes = new_figure(3, 4.6, 3.8)
    plot_depth(results, "soft_rank", ax=axes[0], title="soft rank")
    plot_depth(results, "numerical_rank", ax=axes[1], title="numerical rank (float32)")
    plot_depth(results, "log_norm", ax=axes[2], theory_overlay=True,
               select={"norm": "none"}, title="log-norm, no BN (dashed: theory)")
    save_figure(fig, fig_dir, "claim3_relu.png",
                "ReLU networks with and without BN: soft rank, numerical rank, and the "
                "log-norm of the vanilla ones against the ReLU exponent.", outcome)


CLAIM = Claim(
    3, "ReLU networks without normalisation collapse too; with BN they keep a high rank.",
    "claim3_relu.toml",
    {"width": [32], "depth": 500, "seed": "0-3"},
    Limits(), analyse, criterion)
