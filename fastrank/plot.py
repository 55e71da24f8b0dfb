"""Figures from a results file (or from in-memory trajectories): a measure against
depth, a measure against width at chosen depths, and spectra at chosen layers, each
with optional theory overlays from :mod:`fastrank.theory`. The curves themselves (runs
grouped, bands over seeds, values against width) come from fastrank.curves.

matplotlib is the ``plot`` extra (``pip install 'fastrank-sim[plot]'``); it is imported only
when a figure is made. Figures are built on ``matplotlib.figure.Figure`` objects, never
through pyplot, so nothing here needs a display or changes the caller's backend::

    import fastrank.plot as fp
    fig = fp.figure("r.h5", kind="depth", measure="soft_rank", theory=True)
    fig.savefig("depth.png")
    fp.plot_width("r.h5", at=[1000], ax=my_axes)      # draw into your own axes

Every function takes a *source*: a results file path, an open :class:`fastrank.Results`,
or a list of runs or :class:`fastrank.Trajectory` objects. Runs are grouped by
configuration (everything but the seed); each group is drawn as the mean over seeds
with a band from the 16th to the 84th percentile of the seeds (one standard deviation
either side for normal scatter), and is labelled by the options that differ between
the groups drawn.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fastrank import curves, mean_field, theory
from fastrank.curves import MEASURES, PlotError, group_runs, width_values
from fastrank.version import install_hint

KINDS = ("depth", "width", "spectrum")
FORMATS = (".png", ".pdf", ".svg")
LABELS = {
    "soft_rank": "soft rank  $\\|H\\|_F^4 / \\|H^T H\\|_F^2$",
    "soft_rank_excess": "soft rank $-$ 1",
    "numerical_rank": "numerical rank",
    "effective_rank": "effective rank",
    "stable_rank": "stable rank",
    "orthogonality_gap": "orthogonality gap",
    "condition_number": "condition number",
    "rank_tau": "rank$_\\tau$",
    "log_norm": "log $\\|H_\\ell\\|_F$ (un-rescaled)",
    "tangent_log_norm": "log growth of the tangents $\\log \\|J_\\ell \\cdots J_1 T\\|$",
    "jacobian_exponents": "Jacobian exponents $\\lambda_i$ (log growth per layer)",
}
#: Measures spanning many decades: their line is the geometric mean over seeds.
GEOMETRIC = ("soft_rank_excess", "condition_number")


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"fastrank.plot needs matplotlib: {install_hint('plot')}") from None
    import matplotlib.ticker  # noqa: F401  (used as matplotlib.ticker)
    from matplotlib.figure import Figure

    return matplotlib, Figure


# Measure against depth -----------------------------------------------------------------


def plot_depth(source, measure: str = "soft_rank", *, ax=None, theory_overlay: bool = False,
               select: dict | None = None, logx: bool | None = None,
               logy: bool | None = None, title: str | None = None,
               tangent: int | None = None):
    """A measure against layer, one line per configuration (mean over seeds, band of
    16-84 % of seeds); a tangent measure (tangent_log_norm, jacobian_exponents: a sweep
    with tangents) one line per configuration and tangent, each configuration's
    tangents in lighter shades of its colour, or only tangent ``tangent`` (0 is the
    leading exponent). ``logx``/``logy`` default to log axes where the data span two
    decades (x: symmetric-log, so layer 0 stays visible) / one decade of positive values.
    ``theory_overlay`` adds, where fastrank.theory has one: the collapse curve of vanilla
    linear networks (soft rank, soft rank - 1), their log-norm slope lambda_1 (and ReLU's),
    sqrt(d) for the BN soft rank and the (1 - tau)^2 bound for the BN rank_tau, and for
    the tangent measures the exponents of theory.jacobian_exponents (a level for
    jacobian_exponents, a slope for tangent_log_norm). Returns the axes."""
    with curves.opened(source, select) as runs:
        if not runs:
            raise PlotError("no runs with measured rows to plot")
        groups = group_runs(runs)
        drawn = curves.columns(runs, measure, tangent)
        ax = ax or _new_axes()
        colors = _colors(len(groups))
        all_layers, all_values = [], []
        for (label, members), color in zip(groups.items(), colors, strict=True):
            for j, (column, name) in enumerate(drawn):
                layers, values = curves.stacked(members, measure, column)
                if not layers.size:
                    continue
                mean, lo, hi = curves.mean_band(values, geometric=measure in GEOMETRIC)
                n = len(members)
                shade = _shade(color, j, len(drawn))
                ax.plot(layers, mean, color=shade, lw=1.4,
                        label=f"{label}{' ' + name if name else ''} "
                              f"({n} seed{'s' if n > 1 else ''})")
                if n > 1:
                    ax.fill_between(layers, lo, hi, color=shade, alpha=0.2, lw=0)
                all_layers.append(layers)
                all_values.append(values)
                if theory_overlay:
                    _depth_theory(ax, members, measure, layers, values, shade, column)
        if not all_layers:
            raise PlotError(f"no rows carry {measure!r} in the selected runs")
        layers = np.concatenate(all_layers)
        values = np.concatenate([v.ravel() for v in all_values])
    if logx is None and measure in ("log_norm", "tangent_log_norm"):
        logx = False  # a straight line in the layer: keep the layer axis linear
    _axes_scales(ax, layers, values, logx, logy)
    ax.set_xlabel("layer $\\ell$")
    ylabel = LABELS.get(measure, measure)
    if measure in GEOMETRIC:
        ylabel += " (geometric mean)"
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _legend(ax)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def _legend(ax):
    """A legend inside the axes, or beside them when it has many entries."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries > 8:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif entries:
        ax.legend(fontsize="small")


def _depth_theory(ax, members, measure, layers, values, color, column=0):
    """Overlay the predictions of fastrank.theory for one configuration (dashed); for a
    tangent measure, for its tangent ``column``."""
    net = members[0].network
    d = curves.constant_width(net)
    kw = dict(color=color, ls="--", lw=1.0)
    if measure in ("jacobian_exponents", "tangent_log_norm"):
        _exponent_theory(ax, net, measure, layers, values, column, kw)
        return
    if measure in ("soft_rank", "soft_rank_excess") and curves.is_vanilla_linear(net) \
            and net.init == "gaussian" and d and d >= 2:
        excess = values - 1.0 if measure == "soft_rank" else values
        with curves.quiet(), np.errstate(all="ignore"):
            geo = np.nanmean(np.log(np.where(excess > 0, excess, np.nan)), axis=0)
        window = theory.collapse_window(np.exp(geo) + 1.0)
        if window.sum() < 2:
            return
        rate = theory.collapse_rate(d, net.weight_gain)
        c = float(np.mean(geo[window] + rate * layers[window]))
        x = layers[layers >= layers[window][0] // 2]
        y = np.exp(c - rate * x)
        keep = y > 1e-14
        ax.plot(x[keep], (y + 1.0 if measure == "soft_rank" else y)[keep],
                label=f"theory: rate 2($\\lambda_1-\\lambda_2$) = {rate:.3g}/layer", **kw)
    elif measure == "log_norm" and net.norm == "none" and math.isinf(net.gamma) and d:
        if net.activation == "linear" and net.init in ("gaussian", "orthogonal"):
            slope = theory.log_norm_growth(d, net.weight_gain, net.init)
            name = "$\\lambda_1$" if net.init == "gaussian" else "$\\frac{1}{2}\\log$ gain"
        elif net.activation == "relu" and net.init == "gaussian":
            slope, name = theory.relu_log_norm_growth(d, net.weight_gain), "ReLU exponent"
        else:
            return
        with curves.quiet():
            mean = np.nanmean(values, axis=0)
        late = layers >= min(2 * d, layers[-1] // 2)
        offset = float(np.mean(mean[late] - slope * layers[late]))
        x = layers[late]
        ax.plot(x, offset + slope * x,
                label=f"theory: slope {name} = {slope:.4g}", **kw)
    elif measure == "soft_rank" and curves.is_bn_linear(net):
        ax.axhline(math.sqrt(d), label=f"$\\sqrt{{d}}$ = {math.sqrt(d):.3g} (BN bound's rate)",
                   color=color, ls=":", lw=1.0)
    elif measure == "rank_tau" and curves.is_bn_linear(net) and hasattr(members[0], "taus"):
        tau = float(members[0].taus[0])
        soft = [np.mean(curves.series(r, "soft_rank")[1][1:]) for r in members if len(r.layer) > 1]
        if soft:
            bound = theory.rank_tau_lower_bound(float(np.mean(soft)), tau)
            ax.axhline(bound, color=color, ls=":", lw=1.0,
                       label=f"bound $(1-\\tau)^2 \\bar r$ = {bound:.3g} ($\\tau$={tau:g})")


def _exponent_theory(ax, net, measure, layers, values, column, kw):
    """The predicted exponent of tangent ``column``: a level for jacobian_exponents, a
    slope through the late mean for tangent_log_norm. Batch norm with a nonlinearity
    (Gaussian weights, constant width, as the mean field assumes) takes the Monte Carlo
    mean field at the network's batch (fastrank.mean_field; the
    closed form of theory.jacobian_exponents is only its large-batch limit), the other
    networks theory.jacobian_exponents."""
    if column == 0 and net.norm in ("bn", "bn-rms") and net.activation != "linear" \
            and not net.residual and net.init == "gaussian" and curves.constant_width(net):
        rate = _mean_field_rate(net.activation, net.norm, net.order, net.batch, net.eps,
                                net.weight_gain)
        name = f"BN mean field at N = {net.batch}"
    else:
        predicted = theory.jacobian_exponents(net, column + 1)
        if predicted is None or not np.isfinite(predicted[0][column]):
            return
        rate, name = float(predicted[0][column]), predicted[1]
    label = f"theory: {name} = {rate:.4g}/layer" if column == 0 else None
    if measure == "jacobian_exponents":
        ax.axhline(rate, label=label, **kw)
        return
    with curves.quiet():
        mean = np.nanmean(values, axis=0)
    late = (layers >= layers[-1] // 2) & np.isfinite(mean)
    if not late.any():
        return
    offset = float(np.mean(mean[late] - rate * layers[late]))
    ax.plot(layers[late], offset + rate * layers[late], label=label, **kw)


@functools.lru_cache(maxsize=64)
def _mean_field_rate(activation, norm, order, batch, eps, gain) -> float:
    """fastrank.mean_field's rate for these options (the width plays no part), once per
    figure's configurations: a few seconds each at its default rows, whose Monte Carlo
    bias (of order 1/rows) is then below a line's width."""
    from fastrank.spec import Network

    net = Network(width=batch, depth=1, batch=batch, activation=activation, norm=norm,
                  order=order, eps=eps, gain=gain)
    return mean_field.gradient_rate(net)[0]


def _axes_scales(ax, layers, values, logx, logy):
    positive = layers[layers > 0]
    if logx is None:
        logx = positive.size > 0 and positive.max() / positive.min() >= 100
    if logx:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0)
    finite = values[np.isfinite(values)]
    if logy is None:
        logy = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= 10
    if logy:
        ax.set_yscale("log")


def _shade(color, j: int, n: int):
    """Shade ``j`` of ``n`` of ``color``: the colour itself first, then lighter ones
    (towards white, at most 60 % of the way), for the tangents of one configuration."""
    _mpl()
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(color))
    return tuple(rgb + (1.0 - rgb) * 0.6 * j / max(n - 1, 1))


def _colors(n: int):
    matplotlib, _ = _mpl()
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _new_axes():
    _, Figure = _mpl()
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    return fig.add_subplot()


# Measure against width -----------------------------------------------------------------




def plot_width(source, measure: str = "soft_rank", *, at=None, average=None, ax=None,
               theory_overlay: bool = False, select: dict | None = None,
               title: str | None = None, tangent: int | None = None):
    """A measure against width on log-log axes, one line per configuration and chosen
    depth (and tangent, for a tangent measure: every one, or only ``tangent``; mean over
    seeds, error bars one standard deviation), each with the slope of a least-squares
    power-law fit in its label. ``at``: layers to read (default each run's
    last); ``average``: (lo, hi) layer range to average over instead. ``theory_overlay``
    adds C sqrt(d) (slope 1/2, C fitted) to linear BN configurations: the rate of the
    paper's rank bound. Layers past the deepest run, and a choice that leaves no measured
    value to draw, are a PlotError. Returns the axes."""
    with curves.opened(source, select) as runs:
        curves.check_layers(runs, "at", at)
        curves.check_layers(runs, "average", average)
        data = [(suffix, width_values(runs, measure, at, average, column))
                for column, suffix in curves.columns(runs, measure, tangent)]
    if not any(groups for _, groups in data):
        raise PlotError("no runs of constant width to plot against width")
    lines = [(label, group["network"], f"{name}, {suffix}" if suffix else name, w, v)
             for suffix, groups in data for label, group in groups.items()
             for name, (w, v) in group["curves"].items()]
    if not any(np.isfinite(v).any() for *_, v in lines):
        where = (f" in layers {average[0]}-{average[1]}" if average is not None
                 else " at or below the layers chosen" if at is not None else "")
        raise PlotError(f"no run has {measure!r} measured{where}")
    ax = ax or _new_axes()
    colors = _colors(len(lines))
    positive = True
    for (label, net, name, widths, vals), color in zip(lines, colors, strict=True):
        with curves.quiet():
            mean = np.nanmean(vals, axis=0)
            sd = np.nanstd(vals, axis=0, ddof=1) if vals.shape[0] > 1 else np.zeros_like(mean)
        ok = np.isfinite(mean)
        positive &= bool(np.all(mean[ok] > 0))
        text = f"{label}, {name}" if len(lines) > 1 else f"{label} {name}".strip()
        if ok.sum() >= 2 and np.all(mean[ok] > 0):
            slope, _, se = theory.power_law_fit(widths[ok], mean[ok])
            text += f": slope {slope:.3f}" + (f" $\\pm$ {se:.3f}" if np.isfinite(se) else "")
        ax.errorbar(widths[ok], mean[ok], yerr=np.nan_to_num(sd[ok]), color=color, marker="o",
                    ms=4, lw=1.4, capsize=2, label=text)
        if theory_overlay and curves.is_bn_linear(net) and measure == "soft_rank" \
                and ok.sum() >= 1 and np.all(mean[ok] > 0):
            c = float(np.exp(np.mean(np.log(mean[ok]) - 0.5 * np.log(widths[ok]))))
            xs = np.geomspace(widths[ok].min(), widths[ok].max(), 50)
            ax.plot(xs, c * np.sqrt(xs), color=color, ls="--", lw=1.0,
                    label=f"{c:.2f} $\\sqrt{{d}}$ (bound's rate, slope 1/2)")
    matplotlib, _ = _mpl()
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("width $d$")
    ax.set_ylabel(LABELS.get(measure, measure))
    if title:
        ax.set_title(title)
    _legend(ax)
    ax.grid(True, which="both", alpha=0.3)
    return ax


# Spectra -------------------------------------------------------------------------------


def plot_spectra(source, layers=None, *, fig=None, theory_overlay: bool = False,
                 select: dict | None = None, max_panels: int = 16):
    """Normalised singular values s_i / s_1 against i at chosen layers, one panel per
    configuration (geometric mean over seeds), log y. ``layers``: which (default: up to
    six log-spaced measured layers, 0 and the last included); a layer that was not
    measured with the full spectrum is replaced by the nearest one below it, one past
    the deepest run is a PlotError.
    ``theory_overlay`` adds exp(l (lambda_i - lambda_1)) for vanilla Gaussian linear
    networks (the Lyapunov spectrum; dashed). Returns the figure."""
    _, Figure = _mpl()
    with curves.opened(source, select) as runs:
        curves.check_layers(runs, "layers", layers)
        groups = group_runs(runs)
        if not groups:
            raise PlotError("no runs with measured rows to plot")
        if len(groups) > max_panels:
            raise PlotError(f"{len(groups)} configurations: select at most {max_panels} "
                            "(e.g. --select norm=bn)")
        n = len(groups)
        cols = min(n, 3 if n <= 9 else 4)
        rows = math.ceil(n / cols)
        fig = fig or Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (label, members) in zip(axes, groups.items(), strict=False):
            _spectrum_panel(ax, label, members, layers, theory_overlay)
        for ax in axes[n:]:
            ax.set_visible(False)
    return fig


def _spectrum_panel(ax, label, members, layers, theory_overlay):
    run = members[0]
    tier = np.asarray(getattr(run, "tier", np.ones(len(run.layer), np.int64)))
    full = np.asarray(run.layer)[tier == 1]
    if layers is None:
        picks = np.unique(np.rint(np.geomspace(1, max(full[-1], 1), 5)).astype(int))
        wanted = [0, *picks.tolist()]
    else:
        wanted = list(layers)
    chosen = []
    for w in wanted:
        i = np.searchsorted(full, w, side="right") - 1
        if i >= 0 and full[i] not in chosen:
            chosen.append(int(full[i]))
    colors = _colors(len(chosen)) if len(chosen) <= 10 else None
    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps["viridis"]
    for j, layer in enumerate(chosen):
        spectra = []
        for r in members:
            rows = np.flatnonzero(np.asarray(r.layer) == layer)
            if rows.size:
                s = np.asarray(r.spectrum[rows[0]], dtype=float)
                s = s[np.isfinite(s)]
                if s.size and s[0] > 0:
                    spectra.append(s / s[0])
        if not spectra:
            continue
        k = min(s.size for s in spectra)
        with np.errstate(divide="ignore"), curves.quiet():
            logs = np.log(np.array([s[:k] for s in spectra]))
            logs[~np.isfinite(logs)] = np.nan
            geo = np.exp(np.nanmean(logs, axis=0))
        color = colors[j] if colors else cmap(j / max(len(chosen) - 1, 1))
        idx = np.arange(1, k + 1)
        ax.plot(idx, geo, color=color, marker=".", ms=3, lw=1.2, label=f"layer {layer}")
        net = run.network
        d = curves.constant_width(net)
        if (theory_overlay and layer > 0 and curves.is_vanilla_linear(net)
                and net.init == "gaussian"):
            lam = theory.lyapunov_exponents(d, net.weight_gain)[:k]
            pred = np.exp(layer * (lam - lam[0]))
            keep = pred > 1e-12
            ax.plot(idx[keep], pred[keep], color=color, ls="--", lw=0.9)
    ax.set_yscale("log")
    ax.set_xlabel("index $i$")
    ax.set_ylabel("$s_i / s_1$")
    note = " (dashed: $e^{\\ell(\\lambda_i-\\lambda_1)}$, asymptotic)"
    shown = theory_overlay and curves.is_vanilla_linear(run.network)
    ax.set_title(label + (note if shown else ""), fontsize="medium")
    ax.legend(fontsize="x-small")
    ax.grid(True, which="major", alpha=0.3)


# One call for the command line ---------------------------------------------------------


def figure(source, kind: str = "depth", measure: str = "soft_rank", *, theory: bool = False,
           at=None, average=None, layers=None, select: dict | None = None,
           title: str | None = None, tangent: int | None = None):
    """The figure ``fastrank plot`` draws: ``kind`` is ``depth``, ``width`` or ``spectrum``
    (``tangent``: the one tangent of a tangent measure to draw, None for all)."""
    if kind not in KINDS:
        raise PlotError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")
    if measure not in MEASURES:
        raise PlotError(f"unknown measure {measure!r}: choose one of {', '.join(MEASURES)}")
    with curves.opened(source, select) as runs:
        if not runs:
            raise PlotError("no runs with measured rows"
                            + (" match the selection" if select else ""))
        if kind == "spectrum":
            fig = plot_spectra(runs, layers, theory_overlay=theory)
            if title:
                fig.suptitle(title)
            return fig
        if kind == "width":
            ax = plot_width(runs, measure, at=at, average=average, theory_overlay=theory,
                            title=title, tangent=tangent)
        else:
            ax = plot_depth(runs, measure, theory_overlay=theory, title=title,
                            tangent=tangent)
    return ax.figure


def save(fig, path) -> None:
    """Write ``fig`` to ``path``: .png (150 dpi), .pdf or .svg, headless."""
    import os

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise PlotError(f"unsupported figure format {suffix or path!r}: use .png, .pdf or .svg")
    fig.savefig(path, dpi=150)


__all__ = ["figure", "save", "plot_depth", "plot_width", "plot_spectra", "group_runs",
           "width_values", "PlotError", "MEASURES", "KINDS"]

