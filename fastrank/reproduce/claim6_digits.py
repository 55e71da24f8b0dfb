"""Claim 6: real data (scikit-learn digits) at initialisation: the rank of the last
hidden layer falls with depth without BN and, for ReLU networks with BN (the paper's
setting), stays near the width. The linear rows connect it to claims 1-2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastrank.reproduce.common import (
    Claim,
    Outcome,
    SummaryRow,
    md_table,
    new_figure,
    num,
    percent,
    save_figure,
    verdict,
)

NETWORKS = [(act, norm) for act in ("linear", "relu") for norm in ("none", "bn")]


@dataclass(frozen=True)
class Limits:
    """Thresholds of the verdict, read by the check and by the criterion text."""

    #: without BN: soft rank below this at the last layer of every run
    collapsed: float = 1.01
    #: without BN: mean numerical rank at the last layer at most this
    numerical: float = 2
    #: ReLU with BN: numerical rank at least this fraction of the width at every hidden
    #: layer of every run
    width_fraction: float = 0.9


def criterion(lim: Limits) -> str:
    """The criterion sentence of the report."""
    return (f"without BN every run's soft rank below {lim.collapsed:g} and the mean "
            f"numerical rank at most {lim.numerical:g} at the last layer; with BN (ReLU, the "
            f"paper's setting) at least {percent(lim.width_fraction)} of the width at every "
            "hidden layer in every run.")


def _at_layers(runs, measure: str, layers) -> list[float]:
    """The mean over runs of ``measure`` at each of ``layers`` (runs without the row
    left out)."""
    means = []
    for layer in layers:
        values = [getattr(r, measure)[i[0]] for r in runs
                  if (i := np.flatnonzero(r.layer == layer)).size]
        means.append(np.mean(values))
    return means


def analyse(results, outcome: Outcome, fig_dir: Path) -> None:
    """Measure, judge and draw claim 6 into ``outcome``."""
    lim: Limits = outcome.claim.limits
    net0 = results[0].network
    d, depth = net0.width, net0.depth
    layers = [0, *[x for x in outcome.sweep.schedule.layers if 0 < x <= depth]]
    table, final_num, final_soft, hidden_min, num_text = [], {}, {}, {}, {}
    for key in NETWORKS:
        runs = results.select(activation=key[0], norm=key[1])
        if not runs:
            continue
        num_at = _at_layers(runs, "numerical_rank", layers)
        table.append(["/".join(key), "numerical rank", *map(num, num_at)])
        table.append(["/".join(key), "soft rank",
                      *map(num, _at_layers(runs, "soft_rank", layers))])
        final_num[key] = np.array([r.numerical_rank[r.tier == 1][-1] for r in runs])
        final_soft[key] = np.array([r.soft_rank[-1] for r in runs])
        hidden_min[key] = min(
            int(r.numerical_rank[(r.tier == 1) & (r.layer >= 1)].min()) for r in runs)
        num_text[key] = ", ".join(f"{num(v)} (l={x})"
                                  for v, x in zip(num_at, layers, strict=True))
    falls = {act: bool(final_num.get((act, "none"), np.array([99])).mean() <= lim.numerical
                       and np.all(final_soft.get((act, "none"), np.array([99]))
                                  < lim.collapsed))
             for act in ("linear", "relu")}
    relu_ok = falls["relu"] and hidden_min.get(("relu", "bn"), 0) >= lim.width_fraction * d
    outcome.reproduced = relu_ok and falls["linear"]
    seeds = len(outcome.sweep.seeds)
    data = f"scikit-learn digits (first {net0.batch} images, 64 standardised pixels)"
    outcome.rows += [
        SummaryRow(6, f"{data}, width {d}, relu, norm none/bn, L = {depth}, {seeds} seeds",
            "mean numerical rank of layer l (the last hidden layer of the depth-l network): "
            f"relu/none {num_text.get(('relu', 'none'))}; "
            f"relu/bn {num_text.get(('relu', 'bn'))}",
            "no theory for ReLU; the paper: falls without BN, stays near the width with BN",
            verdict(relu_ok, f"without BN {num(final_num['relu', 'none'].mean())} on average "
                    f"at l = {depth}; with BN at least {hidden_min.get(('relu', 'bn'))} of "
                    f"{d} at every layer in every run")),
        SummaryRow(6, f"same data, linear, norm none/bn, {seeds} seeds",
            f"linear/none {num_text.get(('linear', 'none'))}; "
            f"linear/bn {num_text.get(('linear', 'bn'))}",
            "as claims 1-2: collapse to 1 without BN; with BN a rank of order sqrt(d)",
            verdict(falls["linear"], "falls without BN; with BN it stays at "
                    f"{hidden_min.get(('linear', 'bn'))} or more of {d}: order sqrt(d) as in "
                    "claim 2, not near the width")),
    ]
    outcome.details.append(md_table(["network", "measure", *[f"l = {x}" for x in layers]],
                                    table))
    outcome.details.append(
        "Means over seeds. Layer 0 is the input batch itself: its numerical rank is 52, "
        "not 64, because some pixels are blank in every image of the batch. The paper's "
        "real-data experiments are ReLU MLPs and CNNs; the linear rows connect them to "
        "claims 1-2.")
    _figure(results, outcome, fig_dir)


def _figure(results, outcome: Outcome, fig_dir: Path) -> None:
    """Numerical and soft rank of each hidden layer against depth."""
    from fastrank.plot import plot_depth

    fig, axes = new_figure(2, 5.0, 3.8)
    plot_depth(results, "numerical_rank", ax=axes[0], title="numerical rank (float32)")
    plot_depth(results, "soft_rank", ax=axes[1], title="soft rank")
    save_figure(fig, fig_dir, "claim6_digits.png",
                "Real data (scikit-learn digits) through random networks of width 64: rank "
                "of each hidden layer against depth.", outcome)


CLAIM = Claim(
    6, "Real data at initialisation: the rank of the last hidden layer falls with depth "
       "without BN and stays near the width with BN.",
    "claim6_digits.toml",
    {"seed": "0-3"},
    Limits(), analyse, criterion)
