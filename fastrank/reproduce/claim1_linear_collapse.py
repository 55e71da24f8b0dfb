"""Claim 1: vanilla linear networks collapse to rank ~1, faster for smaller width, and
stay there; the collapse rate and the log-norm slope match the Lyapunov exponents of
Gaussian products (fastrank.theory) within Z standard errors."""

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
    config_text,
    estimate,
    md_table,
    mean_sd,
    new_figure,
    num,
    range_text,
    save_figure,
    sci,
    verdict,
)

#: the soft rank - 1 window of the pooled collapse rate (upper, lower): the asymptotic
#: regime, above float32's noise floor; read by the estimate and by the notes under it
WINDOW = (1e-2, 1e-9)


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: collapsed: soft rank below this at the last layer of every run
    collapsed: float = 1.01
    #: "and stay there": soft rank below this over the second half of the depth
    stays: float = 1.1
    #: mean numerical rank at the last layer at most this (float32 keeps a second
    #: singular value near the tolerance in some runs)
    numerical: float = 2


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return (f"every run's soft rank below {lim.collapsed:g} at the last layer and below "
            f"{lim.stays:g} over the second half of the depth, the mean numerical rank at "
            f"the last layer at most {lim.numerical:g} at every width (float32 rounding "
            "keeps a second singular value near the tolerance in some runs), the layer "
            f"where the soft rank falls below {lim.collapsed:g} increasing with width, and "
            f"the collapse rate and log-norm slope within {Z:g} standard errors of theory "
            "at every width.")


@dataclass
class _Width:
    """The measurements at one width: per-seed arrays and the pooled fits."""

    d: int
    reached: list  # layers where the soft rank fell below the threshold, runs that did
    final: np.ndarray  # soft rank at the last layer
    half: np.ndarray  # highest soft rank over the second half of the depth
    numerical: np.ndarray  # numerical rank at the last full-spectrum row
    rate: tuple[float, float, float]  # collapse rate: measured, standard error, theory
    growth: tuple[float, float, float]  # log-norm slope: measured, standard error, theory

    @property
    def collapse_mean(self) -> float:
        return float(np.mean(self.reached)) if self.reached else np.inf

    @property
    def z_rate(self) -> float:
        return (self.rate[0] - self.rate[2]) / self.rate[1]

    @property
    def z_growth(self) -> float:
        return (self.growth[0] - self.growth[2]) / self.growth[1]


def _measure(runs, d: int, lim: Limits) -> _Width:
    """The numbers of one width's runs."""
    depth = runs[0].network.depth
    starts = [theory.first_layer_below(r.layer, r.soft_rank, lim.collapsed) for r in runs]
    rate, used = theory.pooled_collapse_rate(((r.layer, r.soft_rank) for r in runs),
                                             *WINDOW)
    growth, gused = theory.pooled_growth(
        (r.layer, r.log_norm, s if s is not None else depth)
        for r, s in zip(runs, starts, strict=True))
    return _Width(
        d, [s for s in starts if s is not None],
        np.array([r.soft_rank[-1] for r in runs]),
        np.array([r.soft_rank[r.layer >= depth // 2].max() for r in runs]),
        np.array([r.numerical_rank[r.tier == 1][-1] for r in runs]),
        (rate, math.sqrt(theory.collapse_step_variance(d) / used), theory.collapse_rate(d)),
        (growth, math.sqrt(theory.log_norm_step_variance(d) / gused), theory.top_exponent(d)))


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 1 into ``outcome``."""
    lim: Limits = outcome.claim.limits
    widths = sorted({int(w) for w in results.runs["width"]})
    ms = [_measure(results.select(width=d), d, lim) for d in widths]
    collapsed = (all(np.all(m.final < lim.collapsed) for m in ms)
                 and all(np.all(m.half < lim.stays) for m in ms)
                 and all(m.numerical.mean() <= lim.numerical for m in ms))
    ordered = bool(np.all(np.diff([m.collapse_mean for m in ms]) > 0))
    z_rate = max(abs(m.z_rate) for m in ms)
    z_growth = max(abs(m.z_growth) for m in ms)
    outcome.reproduced = collapsed and ordered and z_rate < Z and z_growth < Z
    nums = np.concatenate([m.numerical for m in ms])
    outcome.rows += [
        SummaryRow(1, config_text(outcome.sweep),
            f"soft rank < {lim.collapsed:g} after "
            + ", ".join(f"{num(m.collapse_mean, 3)} (d={m.d})" for m in ms)
            + " layers (mean over seeds); at L soft rank - 1 <= "
            f"{num(max(float(np.max(m.final)) for m in ms) - 1)} in every run, over the "
            f"second half of the depth <= {num(max(float(np.max(m.half)) for m in ms) - 1)};"
            f" numerical rank at L: 1 in {int(np.sum(nums == 1))}/{len(results)} runs, 2 in "
            f"{int(np.sum(nums == 2))}, more in {int(np.sum(nums > 2))}",
            "rank 1: the top Lyapunov exponent is simple (lambda_1 > lambda_2)",
            verdict(collapsed and ordered)),
        SummaryRow(1, "same runs: collapse rate, d = " + range_text(widths),
            "rate of log(soft rank - 1): " + ", ".join(
                f"{m.rate[0]:.3g} ± {m.rate[1]:.1g}" for m in ms),
            "2(lambda_1 - lambda_2): " + ", ".join(f"{m.rate[2]:.3g}" for m in ms),
            verdict(z_rate < Z, f"max abs z = {z_rate:.1f}")),
        SummaryRow(1, "same runs: log-norm slope, d = " + range_text(widths),
            "slope of log ||H_l||_F: " + ", ".join(
                f"{m.growth[0]:.4g} ± {m.growth[1]:.1g}" for m in ms),
            "lambda_1: " + ", ".join(f"{m.growth[2]:.4g}" for m in ms),
            verdict(z_growth < Z, f"max abs z = {z_growth:.1f}")),
    ]
    outcome.details += [_table(ms, lim), _notes(lim)]
    _figures(results, ms, outcome, fig_dir)


def _table(ms: list[_Width], lim: Limits) -> str:
    """The per-width details table."""
    rows = [[m.d, f"{len(m.reached)}/{len(m.final)}", mean_sd(m.reached),
             num(float(np.exp(np.mean(np.log(m.final - 1 + 1e-300))))),
             f"{np.sum(m.numerical == 1)} × 1, {np.sum(m.numerical == 2)} × 2, "
             f"{np.sum(m.numerical > 2)} × >2",
             estimate(*m.rate[:2]), f"{m.rate[2]:.4g}", f"{m.z_rate:+.1f}",
             estimate(*m.growth[:2]), f"{m.growth[2]:.4g}", f"{m.z_growth:+.1f}"]
            for m in ms]
    return md_table(
        ["d", f"runs below {lim.collapsed:g}", f"layers to soft rank < {lim.collapsed:g}",
         "soft rank - 1 at L (geo. mean)", "numerical rank at L", "collapse rate",
         "2(λ1-λ2)", "z", "log-norm slope", "λ1", "z"], rows)


def _notes(lim: Limits) -> str:
    """How the collapse rate and the log-norm slope are measured."""
    upper, lower = WINDOW
    return ("Collapse rate: decay of log(soft rank - 1) per layer, pooled over seeds between "
            f"soft rank - 1 = {sci(upper)} and {sci(lower)} (before float32's noise floor "
            "near 1e-13). Log-norm slope: change of log ||H_l||_F per layer from the layer "
            f"each run's soft rank fell below {lim.collapsed:g} to the last layer. ± = "
            "standard error from the theory's step variance over the layers used; z = "
            "(measured - theory) / error.")


def _figures(results, ms: list[_Width], outcome: Outcome, fig_dir: Path) -> None:
    """The depth curves, the theory check against width, and the spectra."""
    import matplotlib.ticker

    from fastrank.plot import plot_depth, plot_spectra

    fig, axes = new_figure(3, 4.6, 3.8)
    plot_depth(results, "soft_rank", ax=axes[0], title="soft rank")
    plot_depth(results, "soft_rank_excess", ax=axes[1], theory_overlay=True, logx=False,
               title="soft rank − 1 (dashed: exp(c − 2(λ1−λ2) l))")
    plot_depth(results, "numerical_rank", ax=axes[2], title="numerical rank (float32)")
    save_figure(fig, fig_dir, "claim1_collapse.png",
                "Vanilla linear networks: soft rank, soft rank - 1 (dashed: theory rate, "
                "intercept fitted) and numerical rank against depth; mean over seeds, band "
                "16-84 % of seeds.", outcome)

    fig, axes = new_figure(2, 4.6, 3.6)
    ds = np.array([m.d for m in ms], dtype=float)
    dense = np.unique(np.rint(np.geomspace(ds.min(), ds.max(), 100)).astype(int))
    panels = ((axes[0], [m.rate for m in ms], 1, theory.collapse_rate, "2(λ1 - λ2)",
               "collapse rate per layer"),
              (axes[1], [m.growth for m in ms], -1, theory.top_exponent, "-λ1",
               "- log-norm slope per layer"))
    for ax, points, sign, predict, label, ylabel in panels:
        ax.errorbar(ds, [sign * p[0] for p in points], yerr=[2 * p[1] for p in points],
                    fmt="o", label="measured (± 2 s.e.)")
        ax.plot(dense, [sign * predict(int(d)) for d in dense], "--", label=label)
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("width d")
        ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, fig_dir, "claim1_theory.png",
                "Theory check: measured collapse rate and log-norm slope against the "
                "Lyapunov exponents of Gaussian products (gain 1).", outcome)

    widths = [m.d for m in ms]
    d_mid = 32 if 32 in widths else widths[len(widths) // 2]
    fig = plot_spectra(results.select(width=d_mid), theory_overlay=True)
    save_figure(fig, fig_dir, "claim1_spectra.png",
                f"Normalised spectra s_i/s_1 at d = {d_mid} (geometric mean over seeds); "
                "dashed: exp(l(λ_i - λ_1)), the asymptotic Lyapunov spectrum.", outcome)


CLAIM = Claim(
    1, "Linear networks without normalisation collapse to rank ~1 within tens to hundreds "
       "of layers (faster for smaller width) and stay there.",
    "claim1_linear_collapse.toml",
    {"width": [8, 16], "depth": 1000, "seed": "0-7"},
    Limits(), analyse, criterion)
