"""Reproduce the claims of PAPER.md: run the sweeps of ``examples/claim*.toml``, measure
each claim's numbers from the results files, compare them with fastrank.theory where
there is a prediction, and write a Markdown report with figures.

    fastrank reproduce                          # quick scale (CI-sized, ~1 min)
    fastrank reproduce --scale full --doc docs/reproduction.md

The TOML files are the full scale (``fastrank sweep --config examples/claimN_*.toml``
runs one of them alone); the quick scale applies the overrides in ``Claim.quick`` to
them (fewer seeds, widths and layers). Results files go to ``results_dir`` as
``claimN-SCALE.h5`` and are resumed when present (recomputed when their config
changed), so a rerun only redraws; pass ``overwrite=True`` (``--overwrite``) to
recompute anyway.

Estimators (the same as tests/test_theory.py): collapse rates and log-norm slopes are
pooled random-walk slopes over the seeds (fastrank.theory.pooled_collapse_rate,
pooled_growth) with standard errors from the theory's step variances; agreement means
|z| < 4. Other numbers are means +- standard deviations over seeds.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fastrank import theory
from fastrank.spec import Sweep
from fastrank.version import __version__

SCALES = ("quick", "full")
SCALE_TEXT = {"full": "full scale: examples/ as written",
              "quick": "quick scale: fewer seeds, widths and layers than examples/"}
#: agreement with a theory prediction: |measured - predicted| < Z standard errors
Z = 4.0


@dataclass(frozen=True)
class Claim:
    """One claim of PAPER.md: its sweep (a file in examples/) and quick-scale overrides."""

    number: int
    title: str
    config: str
    quick: dict = field(default_factory=dict)


CLAIMS = (
    Claim(1, "Linear networks without normalisation collapse to rank ~1 within tens to "
             "hundreds of layers (faster for smaller width) and stay there.",
          "claim1_linear_collapse.toml",
          {"width": [8, 16], "depth": 1000, "seed": "0-7"}),
    Claim(2, "Linear networks with BN keep a rank of order sqrt(d) for as deep as one "
             "simulates (the paper: 50,000 layers at d = N = 32).",
          "claim2_bn_linear_deep.toml",
          {"depth": 10000, "seed": "0-3", "cheap_every": 100}),
    Claim(3, "ReLU networks without normalisation collapse too; with BN they keep a high "
             "rank.",
          "claim3_relu.toml",
          {"width": [32], "depth": 500, "seed": "0-3"}),
    Claim(4, "The BN rank grows with width like sqrt(d): slope about 1/2 on log axes over "
             "widths 8..256.",
          "claim4_bn_width.toml",
          {"width": "8-64:x2", "depth": 400, "seed": "0-3", "every": 100}),
    Claim(5, "Orthogonal weights in a linear network never lose rank (sanity check).",
          "claim5_orthogonal.toml",
          {"depth": 1000, "seed": "0-1"}),
    Claim(6, "Real data at initialisation: the rank of the last hidden layer falls with "
             "depth without BN and stays near the width with BN.",
          "claim6_digits.toml",
          {"seed": "0-3"}),
)


@dataclass
class Row:
    """One line of the summary table."""

    claim: int
    configuration: str
    measured: str
    theory: str
    verdict: str


@dataclass
class Outcome:
    """What one claim's reproduction produced."""

    claim: Claim
    sweep: Sweep
    results: Path
    seconds: float
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # Markdown blocks
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    reproduced: bool = True


# Sweeps --------------------------------------------------------------------------------


def examples_dir() -> Path:
    """The claim configs: examples/ of the source tree, installed as fastrank.examples."""
    from importlib.resources import files

    path = Path(str(files("fastrank.examples")))
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no examples folder; pass --examples DIR")
    return path


def claim_sweep(claim: Claim, scale: str = "full", examples: Path | None = None) -> Sweep:
    """The Sweep of a claim at a scale: its TOML file read as `fastrank sweep --config`
    reads it, with the quick overrides applied for ``scale='quick'``."""
    from fastrank.options import build_sweep, read_config

    if scale not in SCALES:
        raise ValueError(f"invalid scale {scale!r}: choose quick or full")
    values = read_config(str(Path(examples or examples_dir()) / claim.config))
    if scale == "quick":
        values.update(claim.quick)
    return build_sweep(values)


def run_claim(claim: Claim, scale: str, results_dir: Path, *, overwrite: bool = False,
              examples: Path | None = None) -> tuple[Sweep, Path, float]:
    """Run (or resume) a claim's sweep into ``results_dir/claimN-SCALE.h5``."""
    from fastrank.runner import run_sweep

    sweep = claim_sweep(claim, scale, examples)
    path = Path(results_dir) / f"claim{claim.number}-{scale}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        overwrite = not _holds(path, sweep)  # the config changed since: recompute
    start = time.perf_counter()
    run_sweep(sweep, path, overwrite=overwrite, resume=not overwrite)
    return sweep, path, time.perf_counter() - start


def _holds(path: Path, sweep: Sweep) -> bool:
    """Whether the results file at ``path`` is (a part of) exactly this sweep."""
    from fastrank import store

    try:
        with store.open(path) as results:
            return results.sweep == sweep
    except (OSError, ValueError):
        return False


# Formatting ----------------------------------------------------------------------------


def _g(x: float, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


def _pm(values, digits: int = 3) -> str:
    """mean +- sd over seeds."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "n/a"
    if v.size == 1:
        return _g(v[0], digits)
    return f"{_g(v.mean(), digits)} ± {_g(v.std(ddof=1), 2)}"


def _est(value: float, se: float) -> str:
    return f"{value:.4g} ± {se:.2g}"


def _table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table ('|' inside cells escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])


def _range_text(values) -> str:
    values = sorted(set(values))
    if len(values) == 1:
        return str(values[0])
    return f"{values[0]}..{values[-1]}"


def _config_text(sweep: Sweep, **shown) -> str:
    """One line naming a sweep: the options it varies or sets, seeds, depth."""
    nets = sweep.networks()
    parts = []
    acts = sorted({n.activation for n in nets})
    norms = sorted({n.norm for n in nets})
    parts.append("/".join(acts) + ", norm " + "/".join(norms))
    widths = [n.width for n in nets if isinstance(n.width, int)]
    parts.append(f"d = {_range_text(widths)}")
    if all(n.batch == n.width for n in nets):
        parts.append("N = d")
    else:
        parts.append(f"N = {_range_text([n.batch for n in nets])}")
    parts.append(f"L = {_range_text([n.depth for n in nets])}")
    for key, value in shown.items():
        parts.append(f"{key} {value}")
    parts.append(f"{len(sweep.seeds)} seeds")
    return ", ".join(parts)


# Figures -------------------------------------------------------------------------------


def _figure(ncols: int, width: float = 5.2, height: float = 4.0, nrows: int = 1):
    from fastrank.plot import _mpl

    _, Figure = _mpl()
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, axes


def _save(fig, fig_dir: Path, name: str, caption: str, outcome: Outcome) -> None:
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_dir / name, dpi=110)
    outcome.figures.append((name, caption))


# Claims --------------------------------------------------------------------------------


def _seeds_text(runs) -> str:
    return f"{len(runs)} seed{'s' if len(runs) != 1 else ''}"


def analyse_1(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_depth, plot_spectra

    widths = sorted({int(w) for w in results.runs["width"]})
    table, z_rate, z_growth, collapse_means, finals, numranks = [], [], [], [], [], []
    halves = []
    rate_points, growth_points = [], []
    for d in widths:
        runs = results.select(width=d)
        depth = runs[0].network.depth
        starts = [theory.first_layer_below(r.layer, r.soft_rank, 1.01) for r in runs]
        reached = [s for s in starts if s is not None]
        collapse_means.append(np.mean(reached) if reached else np.inf)
        final = np.array([r.soft_rank[-1] for r in runs])
        finals.append(final)
        # "and stay there": the highest soft rank over the second half of the depth
        halves.append(np.array([r.soft_rank[r.layer >= depth // 2].max() for r in runs]))
        num = np.array([r.numerical_rank[r.tier == 1][-1] for r in runs])
        numranks.append(num)
        rate, used = theory.pooled_collapse_rate((r.layer, r.soft_rank) for r in runs)
        rate_se = math.sqrt(theory.collapse_step_variance(d) / used)
        rate_th = theory.collapse_rate(d)
        growth, gused = theory.pooled_growth(
            (r.layer, r.log_norm, s if s is not None else depth)
            for r, s in zip(runs, starts, strict=True))
        growth_se = math.sqrt(theory.log_norm_step_variance(d) / gused)
        growth_th = theory.top_exponent(d)
        z_rate.append((rate - rate_th) / rate_se)
        z_growth.append((growth - growth_th) / growth_se)
        rate_points.append((d, rate, rate_se, rate_th))
        growth_points.append((d, growth, growth_se, growth_th))
        table.append([
            d, f"{len(reached)}/{len(runs)}", _pm(reached),
            _g(float(np.exp(np.mean(np.log(final - 1 + 1e-300))))),
            f"{np.sum(num == 1)} × 1, {np.sum(num == 2)} × 2, {np.sum(num > 2)} × >2",
            _est(rate, rate_se), f"{rate_th:.4g}", f"{z_rate[-1]:+.1f}",
            _est(growth, growth_se), f"{growth_th:.4g}", f"{z_growth[-1]:+.1f}",
        ])
    collapsed = (all(np.all(f < 1.01) for f in finals) and all(np.all(h < 1.1) for h in halves)
                 and all(n.mean() <= 2 for n in numranks))
    ordered = bool(np.all(np.diff(collapse_means) > 0))
    rates_ok = max(abs(z) for z in z_rate) < Z
    growth_ok = max(abs(z) for z in z_growth) < Z
    n_runs = len(results)
    config = _config_text(outcome.sweep)
    collapse_text = ", ".join(f"{_g(m, 3)} (d={d})"
                              for d, m in zip(widths, collapse_means, strict=True))
    outcome.rows += [
        Row(1, config,
            f"soft rank < 1.01 after {collapse_text} layers (mean over seeds); at L soft "
            f"rank - 1 <= {_g(max(float(np.max(f)) for f in finals) - 1)} in every run, over "
            f"the second half of the depth <= {_g(max(float(np.max(h)) for h in halves) - 1)};"
            " numerical rank "
            f"at L: 1 in {sum(int(np.sum(n == 1)) for n in numranks)}/{n_runs} runs, 2 in "
            f"{sum(int(np.sum(n == 2)) for n in numranks)}, more in "
            f"{sum(int(np.sum(n > 2)) for n in numranks)}",
            "rank 1: the top Lyapunov exponent is simple (lambda_1 > lambda_2)",
            _verdict(collapsed and ordered)),
        Row(1, "same runs: collapse rate, d = " + _range_text(widths),
            "rate of log(soft rank - 1): " + ", ".join(
                f"{r:.3g} ± {se:.1g}" for _, r, se, _ in rate_points),
            "2(lambda_1 - lambda_2): " + ", ".join(f"{t:.3g}" for *_, t in rate_points),
            _verdict(rates_ok, f"max abs z = {max(abs(z) for z in z_rate):.1f}")),
        Row(1, "same runs: log-norm slope, d = " + _range_text(widths),
            "slope of log ||H_l||_F: " + ", ".join(
                f"{g:.4g} ± {se:.1g}" for _, g, se, _ in growth_points),
            "lambda_1: " + ", ".join(f"{t:.4g}" for *_, t in growth_points),
            _verdict(growth_ok, f"max abs z = {max(abs(z) for z in z_growth):.1f}")),
    ]
    outcome.reproduced = collapsed and ordered and rates_ok and growth_ok
    outcome.details.append(_table(
        ["d", "runs below 1.01", "layers to soft rank < 1.01", "soft rank - 1 at L (geo. mean)",
         "numerical rank at L", "collapse rate", "2(λ1-λ2)", "z", "log-norm slope", "λ1", "z"],
        table))
    outcome.details.append(
        "Collapse rate: decay of log(soft rank - 1) per layer, pooled over seeds between "
        "soft rank - 1 = 1e-2 and 1e-9 (before float32's noise floor near 1e-13). "
        "Log-norm slope: change of log ||H_l||_F per layer from the layer each run's "
        "soft rank fell below 1.01 to the last layer. ± = standard error from the "
        "theory's step variance over the layers used; z = (measured - theory) / error.")

    fig, axes = _figure(3, 4.6, 3.8)
    plot_depth(results, "soft_rank", ax=axes[0], title="soft rank")
    plot_depth(results, "soft_rank_excess", ax=axes[1], theory_overlay=True, logx=False,
               title="soft rank − 1 (dashed: exp(c − 2(λ1−λ2) l))")
    plot_depth(results, "numerical_rank", ax=axes[2], title="numerical rank (float32)")
    _save(fig, fig_dir, "claim1_collapse.png",
          "Vanilla linear networks: soft rank, soft rank - 1 (dashed: theory rate, "
          "intercept fitted) and numerical rank against depth; mean over seeds, band "
          "16-84 % of seeds.", outcome)

    fig, axes = _figure(2, 4.6, 3.6)
    ds = np.array([p[0] for p in rate_points], dtype=float)
    dense = np.geomspace(ds.min(), ds.max(), 100)
    dense_int = np.unique(np.rint(dense).astype(int))
    axes[0].errorbar(ds, [p[1] for p in rate_points], yerr=[2 * p[2] for p in rate_points],
                     fmt="o", label="measured (± 2 s.e.)")
    axes[0].plot(dense_int, [theory.collapse_rate(int(d)) for d in dense_int], "--",
                 label="2(λ1 - λ2)")
    axes[0].set_ylabel("collapse rate per layer")
    axes[1].errorbar(ds, [-p[1] for p in growth_points], yerr=[2 * p[2] for p in growth_points],
                     fmt="o", label="measured (± 2 s.e.)")
    axes[1].plot(dense_int, [-theory.top_exponent(int(d)) for d in dense_int], "--",
                 label="-λ1")
    axes[1].set_ylabel("- log-norm slope per layer")
    import matplotlib.ticker

    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("width d")
        ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, fig_dir, "claim1_theory.png",
          "Theory check: measured collapse rate and log-norm slope against the Lyapunov "
          "exponents of Gaussian products (gain 1).", outcome)

    d_mid = 32 if 32 in widths else widths[len(widths) // 2]
    fig = plot_spectra(results.select(width=d_mid), theory_overlay=True)
    _save(fig, fig_dir, "claim1_spectra.png",
          f"Normalised spectra s_i/s_1 at d = {d_mid} (geometric mean over seeds); dashed: "
          "exp(l(λ_i - λ_1)), the asymptotic Lyapunov spectrum.", outcome)


def analyse_2(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_depth

    ok_all = True
    table = []
    taus = outcome.sweep.taus
    for norm in sorted(set(results.runs["norm"]), key=["bn", "bn-rms"].index):
        runs = results.select(norm=norm)
        net = runs[0].network
        d, depth = net.width, net.depth
        at = min(10000, depth)
        at_10k = [r.soft_rank[np.searchsorted(r.layer, at)] for r in runs]
        last = [r.soft_rank[-1] for r in runs]
        deep = [r.soft_rank[r.layer >= 100] for r in runs]
        avg = [x.mean() for x in deep]
        low = min(x.min() for x in deep)
        cut = depth // 10
        early = np.mean([r.soft_rank[(r.layer >= 100) & (r.layer <= max(cut, 200))].mean()
                         for r in runs])
        late = np.mean([r.soft_rank[r.layer >= depth - cut].mean() for r in runs])
        drift = late / early - 1
        full = [(r.layer >= 100) & (r.tier == 1) for r in runs]
        rank_tau = [r.rank_tau[m, 0].mean() for r, m in zip(runs, full, strict=True)]
        soft_full = [r.soft_rank[m].mean() for r, m in zip(runs, full, strict=True)]
        bounds = [theory.rank_tau_lower_bound(s, taus[0]) for s in soft_full]
        above = all(rt >= b for rt, b in zip(rank_tau, bounds, strict=True))
        num = [r.numerical_rank[r.tier == 1][-1] for r in runs]
        ok = low > 2.0 and abs(drift) < 0.15 and above
        ok_all &= ok
        table.append([norm, d, depth, _pm(at_10k), _pm(last), _pm(avg), _g(low),
                      f"{drift:+.1%}", _pm(rank_tau), _pm(bounds), _pm(num)])
        outcome.rows.append(Row(
            2, f"linear, norm {norm}, d = N = {d}, L = {depth}, {_seeds_text(runs)}",
            f"soft rank at layer {at:,}: {_pm(at_10k)}; "
            + (f"at {depth:,}: {_pm(last)}; " if depth > at else "")
            + f"average over layers 100..{depth:,}: {_pm(avg)}, lowest value {_g(low)}; "
            f"drift first → last tenth {drift:+.1%}; average rank_tau "
            f"{_pm(rank_tau)} >= bound {_pm(bounds)} in every run: {'yes' if above else 'no'}",
            f"Omega(sqrt(d)), sqrt(d) = {math.sqrt(d):.3g}; average rank_tau >= "
            f"(1 - tau)^2 average soft rank (tau = {taus[0]:g})",
            _verdict(ok)))
    outcome.reproduced = ok_all
    outcome.details.append(_table(
        ["norm", "d", "L", "soft rank at 10,000", "soft rank at L", "average (100..L)",
         "lowest (any seed, l >= 100)", "drift", f"average rank_τ (τ={taus[0]:g})",
         "bound (1-τ)² r̄", "numerical rank at L"], table))
    outcome.details.append(
        "Averages are over each run's rows at layers >= 100 (Gram-tier rows every "
        f"{outcome.sweep.schedule.cheap_every} layers); the rank_tau average and its bound "
        "use the full-spectrum rows. Drift: mean soft rank over the last tenth of the "
        "depth against layers 100..L/10 (reproduced: no trend beyond ±15 %). "
        "`bn` is torch's BatchNorm1d in training mode, `bn-rms` the paper's BN "
        "(rows to unit mean square, no centring).")
    fig, axes = _figure(2, 5.4, 3.9)
    plot_depth(results, "soft_rank", ax=axes[0], theory_overlay=True, logx=True,
               title="soft rank")
    plot_depth(results, "rank_tau", ax=axes[1], theory_overlay=True, logx=True,
               title=f"rank_τ, τ = {taus[0]:g}")
    _save(fig, fig_dir, "claim2_bn_depth.png",
          "Linear networks with BN at d = N = 32 to the full depth: soft rank (dotted: "
          "sqrt(d)) and rank_τ (dotted: the bound (1-τ)² times the average soft rank).",
          outcome)


def analyse_3(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_depth

    table, ok_none, ok_bn, zs = [], True, True, []
    widths = sorted({int(w) for w in results.runs["width"]})
    for d in widths:
        for norm in ("none", "bn"):
            runs = [r for r in results.select(width=d, norm=norm) if r.status == "complete"]
            if not runs:
                continue
            final = np.array([r.soft_rank[-1] for r in runs])
            num = np.array([r.numerical_rank[r.tier == 1][-1] for r in runs])
            avg = [r.soft_rank[r.layer >= 100].mean() for r in runs]
            low = min(r.soft_rank[r.layer >= 100].min() for r in runs)
            starts = [theory.first_layer_below(r.layer, r.soft_rank, 1.01) for r in runs]
            growth_text = "-"
            if norm == "none":
                ok_none &= bool(np.all(final < 1.01))
                depth = runs[0].network.depth
                g, used = theory.pooled_growth(
                    (r.layer, r.log_norm, s if s is not None else depth)
                    for r, s in zip(runs, starts, strict=True))
                se = math.sqrt(theory.relu_log_norm_step_variance(d) / used)
                th = theory.relu_log_norm_growth(d, runs[0].network.weight_gain)
                zs.append((g - th) / se)
                growth_text = f"{_est(g, se)} (theory {th:.4g}, z {zs[-1]:+.1f})"
            else:
                ok_bn &= bool(np.all(num >= 0.9 * d)) and low > 2.0
            reached = [s for s in starts if s is not None]
            table.append([d, norm, _pm(final), _pm(reached) if reached else "never",
                          _pm(avg), _g(low), _pm(num), growth_text])
    failed = [r for r in results if r.status == "failed"]
    ok_theory = not zs or max(abs(z) for z in zs) < Z
    outcome.reproduced = ok_none and ok_bn and ok_theory
    sweep = outcome.sweep
    nets = sweep.networks()
    config = (f"relu, norm {{}}, d = {_range_text([n.width for n in nets])}, N = d, "
              f"L = {nets[0].depth}, {len(sweep.seeds)} seeds")
    none_rows = [t for t in table if t[1] == "none"]
    bn_rows = [t for t in table if t[1] == "bn"]
    outcome.rows += [
        Row(3, config.format("none"),
            "final soft rank " + ", ".join(f"{t[2]} (d={t[0]})" for t in none_rows)
            + "; below 1.01 after " + ", ".join(f"{t[3]} (d={t[0]})" for t in none_rows)
            + " layers" + (f"; {len(failed)} runs vanished" if failed else ""),
            "collapse; log-norm slope 1/2[log(2 gain/d) + E psi(K/2)], K ~ Bin(d, 1/2): "
            + ", ".join(t[7] for t in none_rows),
            _verdict(ok_none and ok_theory)),
        Row(3, config.format("bn"),
            "average soft rank (l >= 100) " + ", ".join(f"{t[4]} (d={t[0]})" for t in bn_rows)
            + "; numerical rank at L " + ", ".join(f"{t[6]} (d={t[0]})" for t in bn_rows),
            "high rank (no bound proven for ReLU)", _verdict(ok_bn)),
    ]
    outcome.details.append(_table(
        ["d", "norm", "soft rank at L", "layers to soft rank < 1.01",
         "average soft rank (l >= 100)", "lowest (l >= 100)", "numerical rank at L",
         "log-norm slope (vanilla)"], table))
    fig, axes = _figure(3, 4.6, 3.8)
    plot_depth(results, "soft_rank", ax=axes[0], title="soft rank")
    plot_depth(results, "numerical_rank", ax=axes[1], title="numerical rank (float32)")
    plot_depth(results, "log_norm", ax=axes[2], theory_overlay=True,
               select={"norm": "none"}, title="log-norm, no BN (dashed: theory)")
    _save(fig, fig_dir, "claim3_relu.png",
          "ReLU networks with and without BN: soft rank, numerical rank, and the log-norm "
          "of the vanilla ones against the ReLU exponent.", outcome)


def analyse_4(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_width, width_values

    depth = int(max(results.runs["depth"]))
    window = (depth // 4, depth)
    data = width_values(list(results), "soft_rank", average=window)
    table, ok = [], True
    for label, group in data.items():
        net = group["network"]
        (widths, vals), = group["curves"].values()
        mean = np.nanmean(vals, axis=0)
        slope, prefactor, se = theory.power_law_fit(widths, mean)
        linear = net.activation == "linear"
        good = abs(slope - 0.5) < 0.1
        if linear:
            ok &= good
        table.append([label, _g(slope, 3) + (f" ± {se:.1g}" if np.isfinite(se) else ""),
                      _g(prefactor), ", ".join(f"{m:.3g}" for m in mean),
                      "0.5" if linear else "- (not covered)"])
        outcome.rows.append(Row(
            4, f"{net.activation}, norm {net.norm}, d = {_range_text(widths)}, N = d, "
               f"L = {depth}, {vals.shape[0]} seeds, soft rank averaged over layers "
               f"{window[0]}..{window[1]}",
            f"slope of log soft rank vs log d: {slope:.3f} ± {se:.1g} (fit); "
            f"soft rank / sqrt(d) from {mean[0] / math.sqrt(widths[0]):.2f} to "
            f"{mean[-1] / math.sqrt(widths[-1]):.2f}",
            "1/2 (the bound's rate sqrt(d))" if linear
            else "none (the bound is for linear networks)",
            _verdict(good) if linear else f"not claimed (slope {slope:.2f})"))
    outcome.reproduced = ok
    widths = next(iter(data.values()))["curves"]
    widths = next(iter(widths.values()))[0]
    outcome.details.append(_table(
        ["configuration", "slope", "prefactor C (r ≈ C d^slope)",
         "mean soft rank at d = " + ", ".join(str(w) for w in widths), "theory"], table))
    fig, axes = _figure(1, 6.4, 4.4)
    plot_width(results, "soft_rank", average=window, ax=axes[0], theory_overlay=True,
               title=f"soft rank averaged over layers {window[0]}..{window[1]}")
    _save(fig, fig_dir, "claim4_width.png",
          "BN soft rank against width on log-log axes with least-squares slopes (error "
          "bars: sd over seeds); dashed: C sqrt(d) with C fitted, the bound's rate.",
          outcome)


def analyse_5(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_depth

    table, ok = [], True
    for dtype in ("float32", "float64"):
        runs = results.select(dtype=dtype)
        if not runs:
            continue
        d = runs[0].network.width
        dev = max(float(np.max(np.abs(r.soft_rank / r.soft_rank[0] - 1))) for r in runs)
        num = min(int(np.min(r.numerical_rank[r.tier == 1])) for r in runs)
        norm_dev = max(float(np.max(np.abs(r.log_norm - r.log_norm[0]))) for r in runs)
        tol = 1e-3 if dtype == "float32" else 1e-9
        good = dev < tol and num == d
        ok &= good
        table.append([dtype, d, runs[0].network.depth, _g(dev), num, _g(norm_dev)])
        outcome.rows.append(Row(
            5, f"linear, orthogonal weights, {dtype}, d = N = {d}, L = "
               f"{runs[0].network.depth:,}, {_seeds_text(runs)}",
            f"largest relative change of the soft rank {_g(dev)}; lowest numerical rank "
            f"{num}; largest change of log ||H||_F {_g(norm_dev)}",
            f"no change: every Lyapunov exponent is 1/2 log(gain) = 0; numerical rank {d}",
            _verdict(good, f"rounding < {tol:g}")))
    outcome.reproduced = ok
    outcome.details.append(_table(
        ["dtype", "d", "L", "max |soft rank / soft rank(0) - 1|", "lowest numerical rank",
         "max |log-norm change|"], table))
    fig, axes = _figure(2, 4.8, 3.6)
    plot_depth(results, "soft_rank", ax=axes[0], logy=False, title="soft rank")
    plot_depth(results, "numerical_rank", ax=axes[1], logy=False, title="numerical rank")
    _save(fig, fig_dir, "claim5_orthogonal.png",
          "Orthogonal linear networks keep their rank in float32 and float64.", outcome)


def analyse_6(results, outcome: Outcome, fig_dir: Path) -> None:
    from fastrank.plot import plot_depth

    net0 = results[0].network
    d, depth = net0.width, net0.depth
    layers = [0, *[x for x in outcome.sweep.schedule.layers if 0 < x <= depth]]
    table, final_num, final_soft, hidden_min, num_text = [], {}, {}, {}, {}
    for act in ("linear", "relu"):
        for norm in ("none", "bn"):
            runs = results.select(activation=act, norm=norm)
            if not runs:
                continue
            num_at, soft_at = [], []
            for layer in layers:
                rows = [np.flatnonzero(r.layer == layer) for r in runs]
                num_at.append(np.mean([r.numerical_rank[i[0]] for r, i in
                                       zip(runs, rows, strict=True) if i.size]))
                soft_at.append(np.mean([r.soft_rank[i[0]] for r, i in
                                        zip(runs, rows, strict=True) if i.size]))
            table.append([f"{act}/{norm}", "numerical rank", *map(_g, num_at)])
            table.append([f"{act}/{norm}", "soft rank", *map(_g, soft_at)])
            final_num[act, norm] = np.array([r.numerical_rank[r.tier == 1][-1] for r in runs])
            final_soft[act, norm] = np.array([r.soft_rank[-1] for r in runs])
            hidden_min[act, norm] = min(
                int(r.numerical_rank[(r.tier == 1) & (r.layer >= 1)].min()) for r in runs)
            num_text[act, norm] = ", ".join(
                f"{_g(v)} (l={x})" for v, x in zip(num_at, layers, strict=True))
    falls = {act: bool(final_num.get((act, "none"), np.array([99])).mean() <= 2
                       and np.all(final_soft.get((act, "none"), np.array([99])) < 1.01))
             for act in ("linear", "relu")}
    relu_bn_ok = hidden_min.get(("relu", "bn"), 0) >= 0.9 * d
    relu_ok = falls["relu"] and relu_bn_ok
    outcome.reproduced = relu_ok and falls["linear"]
    seeds = len(outcome.sweep.seeds)
    data = f"scikit-learn digits (first {net0.batch} images, 64 standardised pixels)"
    outcome.rows += [
        Row(6, f"{data}, width {d}, relu, norm none/bn, L = {depth}, {seeds} seeds",
            "mean numerical rank of layer l (the last hidden layer of the depth-l network): "
            f"relu/none {num_text.get(('relu', 'none'))}; "
            f"relu/bn {num_text.get(('relu', 'bn'))}",
            "no theory for ReLU; the paper: falls without BN, stays near the width with BN",
            _verdict(relu_ok, f"without BN {_g(final_num['relu', 'none'].mean())} on average "
                     f"at l = {depth}; with BN at least {hidden_min.get(('relu', 'bn'))} of "
                     f"{d} at every layer in every run")),
        Row(6, f"same data, linear, norm none/bn, {seeds} seeds",
            f"linear/none {num_text.get(('linear', 'none'))}; "
            f"linear/bn {num_text.get(('linear', 'bn'))}",
            "as claims 1-2: collapse to 1 without BN; with BN a rank of order sqrt(d)",
            _verdict(falls["linear"], "falls without BN; with BN it stays at "
                     f"{hidden_min.get(('linear', 'bn'))} or more of {d}: order sqrt(d) as in "
                     "claim 2, not near the width")),
    ]
    outcome.details.append(_table(["network", "measure", *[f"l = {x}" for x in layers]], table))
    outcome.details.append(
        "Means over seeds. Layer 0 is the input batch itself: its numerical rank is 52, "
        "not 64, because some pixels are blank in every image of the batch. The paper's "
        "real-data experiments are ReLU MLPs and CNNs; the linear rows connect them to "
        "claims 1-2.")
    fig, axes = _figure(2, 5.0, 3.8)
    plot_depth(results, "numerical_rank", ax=axes[0], title="numerical rank (float32)")
    plot_depth(results, "soft_rank", ax=axes[1], title="soft rank")
    _save(fig, fig_dir, "claim6_digits.png",
          "Real data (scikit-learn digits) through random networks of width 64: rank of "
          "each hidden layer against depth.", outcome)


ANALYSES: dict[int, Callable] = {1: analyse_1, 2: analyse_2, 3: analyse_3, 4: analyse_4,
                                 5: analyse_5, 6: analyse_6}


def _verdict(ok: bool, note: str = "") -> str:
    text = "**reproduced**" if ok else "**not reproduced**"
    return f"{text} ({note})" if note else text


# The whole reproduction ----------------------------------------------------------------


def reproduce(scale: str = "quick", claims=None, *, doc: str | Path = "reproduction.md",
              results_dir: str | Path = "fastrank-reproduce", overwrite: bool = False,
              examples: str | Path | None = None,
              log: Callable[[str], None] | None = print) -> list[Outcome]:
    """Run the claims' sweeps at ``scale``, analyse them, and write ``doc`` (Markdown)
    with its figures in ``figures/`` beside it. Returns one Outcome per claim."""
    if scale not in SCALES:
        raise ValueError(f"invalid scale {scale!r}: choose quick or full")
    wanted = [c for c in CLAIMS if claims is None or c.number in set(claims)]
    unknown = set(claims or ()) - {c.number for c in CLAIMS}
    if unknown:
        raise ValueError(f"unknown claims {sorted(unknown)}: choose from 1-{len(CLAIMS)}")
    doc = Path(doc)
    fig_dir = doc.parent / "figures"
    examples = Path(examples) if examples else examples_dir()
    log = log or (lambda _: None)
    start = time.perf_counter()
    outcomes = []
    from fastrank import store

    for claim in wanted:
        sweep, path, seconds = run_claim(claim, scale, Path(results_dir), overwrite=overwrite,
                                         examples=examples)
        outcome = Outcome(claim, sweep, path, seconds)
        with store.open(path) as results:
            ANALYSES[claim.number](results, outcome, fig_dir)
        outcomes.append(outcome)
        log(f"claim {claim.number}: {len(sweep.runs())} runs in {seconds:.1f} s -> "
            f"{'reproduced' if outcome.reproduced else 'NOT reproduced'}")
    total = time.perf_counter() - start
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(outcomes, scale, total, doc, examples))
    log(f"wrote {doc} and {len(sum((o.figures for o in outcomes), []))} figures in {fig_dir} "
        f"({total:.0f} s)")
    return outcomes


def render(outcomes: list[Outcome], scale: str, seconds: float, doc: Path,
           examples: Path) -> str:
    """The Markdown report."""
    rel = lambda p: os.path.relpath(p, doc.parent).replace(os.sep, "/")  # noqa: E731
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cores = os.cpu_count()
    command = f"fastrank reproduce --scale {scale} --doc {doc.as_posix()}"
    lines = [
        "# Reproducing the paper",
        "",
        "<!-- Generated by fastrank.reproduce: edit the code or examples/*.toml, not this "
        "file. -->",
        "",
        "Daneshmand, Kohler, Bach, Hofmann, Lucchi, *Batch Normalization Provably Avoids "
        "Rank Collapse for Randomly Initialised Deep Networks*, NeurIPS 2020 "
        "(arXiv 2003.01652). Each claim listed in the project's PAPER.md (the science "
        "notes beside the repository) is run as a sweep from `examples/`, measured over "
        "seeds and, where `fastrank.theory` has a prediction, compared with it.",
        "",
        f"Generated by `{command}` with fastrank {__version__} on {now}, "
        f"{platform.machine()} with {cores} cores, in {seconds:.0f} s "
        f"({SCALE_TEXT[scale]}).",
        "",
        "## Summary",
        "",
        "| claim | configuration | measured (mean ± sd over seeds) | theory | verdict |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        for r in o.rows:
            cells = [str(r.claim), r.configuration, r.measured, r.theory, r.verdict]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Verdicts: a claim is *reproduced* when its numbers meet the criterion "
              "stated in its section; theory comparisons agree when |z| < "
              f"{Z:g} standard errors.", ""]
    for o in outcomes:
        c = o.claim
        lines += [
            f"## Claim {c.number}",
            "",
            f"> {c.title}",
            "",
            f"Configuration: [`examples/{c.config}`]({rel(examples / c.config)})"
            + (" with the quick overrides " + ", ".join(f"`{k} = {v}`" for k, v in c.quick.items())
               if scale == "quick" else "")
            + f"; {len(o.sweep.runs())} runs, {o.seconds:.1f} s. "
            f"Alone: `fastrank sweep --config examples/{c.config} -o claim{c.number}.h5`.",
            "",
            f"Criterion: {CRITERIA[c.number]}",
            "",
        ]
        for block in o.details:
            lines += [block, ""]
        for name, caption in o.figures:
            lines += [f"![{caption}]({rel(doc.parent / 'figures' / name)})", "", f"*{caption}*", ""]
    lines += [
        "## Theory used",
        "",
        "`fastrank/theory.py`. For iid N(0, gain/d) weights (PAPER.md's sigma² = gain), the "
        "Lyapunov exponents of the product are λ_i = ½[log(2 gain/d) + ψ((d-i+1)/2)]. A "
        "vanilla linear network's log ||H_l||_F grows by λ1 per layer and its soft rank "
        "approaches 1 as 1 + exp(c - 2(λ1 - λ2) l). A vanilla ReLU network's log-norm "
        "grows by ½[log(2 gain/d) + E ψ(K/2)], K ~ Binomial(d, ½). The BN bound: average "
        "rank_τ >= (1-τ)² × average soft rank = Ω(√d). Assumptions: constant width, no "
        "residual branch, Gaussian weights, and depth past a transient; the intercepts "
        "are fitted, only slopes are predicted.",
        "",
        "Real data: `--input sklearn:digits` (the `data` extra, `pip install 'fastrank[data]'`) "
        "uses scikit-learn's 1797 8x8 digit images, every pixel standardised over the data set "
        "(blank pixels set to 0); the batch is the first N images.",
        "",
    ]
    return "\n".join(lines)


CRITERIA = {
    1: "every run's soft rank below 1.01 at the last layer and below 1.1 over the second "
       "half of the depth, the mean numerical rank at the last layer at most 2 at every "
       "width (float32 rounding keeps a second singular value near the tolerance in some "
       "runs), "
       "the layer where the soft rank falls below 1.01 increasing with width, and the "
       f"collapse rate and log-norm slope within {Z:g} standard errors of theory at every "
       "width.",
    2: "the soft rank never below 2 after layer 100 in any run (no collapse), no drift "
       "beyond ±15 % between the first and the last tenth of the depth, and the average "
       "rank_τ at or above the paper's bound (1-τ)² × average soft rank in every run.",
    3: "without BN every run's soft rank below 1.01 at the last layer (and the log-norm "
       f"slope within {Z:g} standard errors of the ReLU exponent); with BN the numerical "
       "rank at least 90 % of the width in every run and the soft rank never below 2 "
       "after layer 100.",
    4: "for linear BN networks (bn and bn-rms) the least-squares slope of log soft rank "
       "against log d within 0.1 of 1/2 (the bound fixes the rate sqrt(d), not an exact "
       "exponent at finite d).",
    5: "the soft rank never changes by more than 1e-3 (float32) or 1e-9 (float64) "
       "relative, and the numerical rank stays at d in every run.",
    6: "without BN every run's soft rank below 1.01 and the mean numerical rank at most 2 "
       "at the last layer; with BN "
       "(ReLU, the paper's setting) at least 90 % of the width at every hidden layer in "
       "every run.",
}
