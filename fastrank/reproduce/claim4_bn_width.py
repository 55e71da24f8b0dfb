"""Claim 4: the BN soft rank grows with width at the bound's rate sqrt(d): a slope of
about 1/2 of log soft rank against log d (fastrank.theory.power_law_fit)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fastrank import theory
from fastrank.reproduce.common import (
    Claim,
    Outcome,
    SummaryRow,
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

    #: the slope of log soft rank against log d that the bound's rate sqrt(d) gives
    slope: float = 0.5
    #: linear BN networks: |fitted slope - slope| below this
    tolerance: float = 0.1


def _ratio(x: float) -> str:
    """A slope as a fraction: 0.5 as ``1/2``."""
    return str(Fraction(x).limit_denominator(100))


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return ("for linear BN networks (bn and bn-rms) the least-squares slope of log soft rank "
            f"against log d within {lim.tolerance:g} of {_ratio(lim.slope)} (the bound fixes "
            "the rate sqrt(d), not an exact exponent at finite d).")


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 4 into ``outcome``."""
    from fastrank.plot import plot_width, width_values

    lim: Limits = outcome.claim.limits
    depth = int(max(results.runs["depth"]))
    window = (depth // 4, depth)
    data = width_values(list(results), "soft_rank", average=window)
    table, outcome.reproduced = [], True
    for label, group in data.items():
        net = group["network"]
        (widths, vals), = group["curves"].values()
        mean = np.nanmean(vals, axis=0)
        slope, prefactor, se = theory.power_law_fit(widths, mean)
        linear = net.activation == "linear"
        good = abs(slope - lim.slope) < lim.tolerance
        if linear:
            outcome.reproduced &= good
        table.append([label, num(slope, 3) + (f" ± {se:.1g}" if np.isfinite(se) else ""),
                      num(prefactor), ", ".join(f"{m:.3g}" for m in mean),
                      f"{lim.slope:g}" if linear else "- (not covered)"])
        outcome.rows.append(SummaryRow(
            4, f"{net.activation}, norm {net.norm}, d = {range_text(widths)}, N = d, "
               f"L = {depth}, {vals.shape[0]} seeds, soft rank averaged over layers "
               f"{window[0]}..{window[1]}",
            f"slope of log soft rank vs log d: {slope:.3f} ± {se:.1g} (fit); "
            f"soft rank / sqrt(d) from {mean[0] / math.sqrt(widths[0]):.2f} to "
            f"{mean[-1] / math.sqrt(widths[-1]):.2f}",
            f"{_ratio(lim.slope)} (the bound's rate sqrt(d))" if linear
            else "none (the bound is for linear networks)",
            verdict(good) if linear else f"not claimed (slope {slope:.2f})"))
    widths = next(iter(next(iter(data.values()))["curves"].values()))[0]
    outcome.details.append(md_table(
        ["configuration", "slope", "prefactor C (r ≈ C d^slope)",
         "mean soft rank at d = " + ", ".join(str(w) for w in widths), "theory"], table))
    fig, axes = new_figure(1, 6.4, 4.4)
    plot_width(results, "soft_rank", average=window, ax=axes[0], theory_overlay=True,
               title=f"soft rank averaged over layers {window[0]}..{window[1]}")
    save_figure(fig, fig_dir, "claim4_width.png",
                "BN soft rank against width on log-log axes with least-squares slopes (error "
                "bars: sd over seeds); dashed: C sqrt(d) with C fitted, the bound's rate.",
                outcome)


CLAIM = Claim(
    4, "The BN rank grows with width like sqrt(d): slope about 1/2 on log axes over widths "
       "8..256.",
    "claim4_bn_width.toml",
    {"width": "8-64:x2", "depth": 400, "seed": "0-3", "every": 100},
    Limits(), analyse, criterion)
