"""The curves a figure draws, computed from runs (fastrank.plot draws them; nothing here
needs matplotlib): runs grouped by configuration and labelled by the options that
differ between the groups, a measure's values along a run on the rows that carry it
(one column of it: a tau of rank_tau, a tangent of the tangent measures), their mean
and band over seeds, and a measure against width at chosen layers.

Every function that takes a *source* accepts a results file path, an open
:class:`fastrank.Results`, or a list of runs or :class:`fastrank.Trajectory` objects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import numpy as np

from fastrank.measures import SCALARS
from fastrank.rows import TANGENT_MEASURES

#: Measures that exist only on full-spectrum rows (tier 1); the others also on Gram rows.
SPECTRUM_ONLY = ("numerical_rank", "effective_rank", "condition_number", "rank_tau")
#: Everything plot_depth and plot_width accept (the tangent measures: of a sweep with
#: tangents).
MEASURES = (*SCALARS, "rank_tau", "log_norm", "soft_rank_excess", *TANGENT_MEASURES)
#: Percentiles of the seeds that bound a curve's band.
BAND = (16, 84)


class PlotError(ValueError):
    """Nothing (sensible) to draw: the message says why."""


# Sources and grouping ------------------------------------------------------------------


@contextlib.contextmanager
def opened(source, select: dict | None = None):
    """Yield the list of runs of ``source`` (a path, Results, or iterable of runs)."""
    from fastrank import store

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        with store.open(source) as results:
            yield _runs_of(results, select)
        return
    yield _runs_of(source, select)


def _runs_of(source, select: dict | None) -> list:
    from fastrank.store import Results

    if isinstance(source, Results):
        runs = source.select(**select) if select else list(source)
    else:
        runs = list(source) if isinstance(source, Iterable) else [source]
        if select:
            runs = [r for r in runs if all(_matches(getattr(r.network, k, None), v)
                                            for k, v in select.items())]
    return [r for r in runs if len(r.layer)]


def _matches(value, wanted) -> bool:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return value in wanted
    return value == wanted


def _key(network, drop=()) -> tuple:
    d = network.to_dict()
    for name in drop:
        d.pop(name, None)
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items())


def group_runs(runs, drop: tuple[str, ...] = ()) -> dict:
    """Runs grouped by configuration (Network fields except ``drop``), in file order:
    {label: [runs]}, labels naming only the options that differ between groups."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault(_key(run.network, drop), []).append(run)
    keys = list(groups)
    return {label: groups[k] for label, k in zip(_labels(keys, drop), keys, strict=True)}


_SHORT = {"width": "d", "batch": "N", "depth": "L", "activation": "", "norm": ""}


def _labels(keys: list[tuple], drop=()) -> list[str]:
    """Short names: the activation/norm pair, then every other option that varies."""
    if not keys:
        return []
    dicts = [dict(k) for k in keys]
    varying = [name for name in dicts[0] if len({repr(d[name]) for d in dicts}) > 1]
    if all(d.get("batch") == d.get("width") for d in dicts):  # N = d: say d only
        varying = [name for name in varying if name != "batch"]
    labels = []
    for d in dicts:
        parts = []
        if "activation" in d and "norm" in d and (
            "activation" in varying or "norm" in varying or len(dicts) == 1
        ):
            parts.append(f"{d['activation']}/{d['norm']}")
        for name in varying:
            if name in ("activation", "norm") or name in drop:
                continue
            parts.append(_option_text(name, d[name]))
        if len(dicts) == 1 and "width" in d and "width" not in drop:
            parts.append(_option_text("width", d["width"]))
        labels.append(" ".join(parts) or "all runs")
    return labels


def _option_text(name: str, value) -> str:
    if isinstance(value, tuple):
        value = "var"
    if isinstance(value, float):
        value = "inf" if math.isinf(value) else f"{value:g}"
    short = _SHORT.get(name, name)
    return f"{short}={value}" if short else str(value)


def columns(runs, measure: str, tangent: int | None = None) -> list[tuple[int, str]]:
    """The columns of ``measure`` to draw, each with the name its lines carry: for a
    tangent measure every tangent of the runs (``tangent`` None) or that one, named
    lambda_i (jacobian_exponents, i from 1) or tangent i; for another measure its first
    column, unnamed (rank_tau: the first tau). PlotError, one line, for runs without
    tangents, a tangent they do not have, or a tangent asked of another measure."""
    if measure not in TANGENT_MEASURES:
        if tangent is not None:
            raise PlotError(f"tangent belongs to the tangent measures "
                            f"({', '.join(TANGENT_MEASURES)}), not {measure}")
        return [(0, "")]
    k = min((_tangents(run, measure).shape[1] for run in runs), default=0)
    if tangent is not None and not 0 <= tangent < k:
        raise PlotError(f"invalid tangent {tangent}: the runs carry {k} tangents, "
                        f"0 to {k - 1}")
    chosen = range(k) if tangent is None else [tangent]
    if measure == "jacobian_exponents":
        return [(j, f"$\\lambda_{{{j + 1}}}$") for j in chosen]
    return [(j, f"tangent {j}") for j in chosen]


def _tangents(run, measure: str) -> np.ndarray:
    """A run's tangent measure, (rows, K); PlotError for a run without tangents."""
    try:
        return np.asarray(getattr(run, measure), dtype=float)
    except AttributeError:
        raise PlotError(f"no {measure} to plot: the sweep ran without --tangents") from None


def series(run, measure: str, column: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(layers, values) of a run's measure on the rows that carry it; ``column``: which
    tau of rank_tau, which tangent of a tangent measure."""
    layer = np.asarray(run.layer)
    tier = np.asarray(getattr(run, "tier", np.ones_like(layer)))
    if measure == "soft_rank_excess":
        values = np.asarray(run.soft_rank, dtype=float) - 1.0
    elif measure == "rank_tau":
        values = np.asarray(run.rank_tau, dtype=float)[:, column]
    elif measure in TANGENT_MEASURES:
        values = _tangents(run, measure)[:, column]
    elif measure == "log_norm":
        values = np.asarray(run.log_norm, dtype=float)
    elif measure in SCALARS:
        values = np.asarray(getattr(run, measure), dtype=float)
    else:
        raise PlotError(f"unknown measure {measure!r}: choose one of {', '.join(MEASURES)}")
    ok = np.isfinite(values)
    if measure in SPECTRUM_ONLY:
        ok &= tier == 1
    return layer[ok], values[ok]


def stacked(runs, measure: str, column: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(layers, values) with values (seeds x layers), NaN where a seed has no row."""
    per_run = [series(r, measure, column) for r in runs]
    layers = np.unique(np.concatenate([s[0] for s in per_run])) if per_run else np.array([])
    values = np.full((len(per_run), layers.size), np.nan)
    for i, (lay, val) in enumerate(per_run):
        values[i, np.searchsorted(layers, lay)] = val
    return layers, values


def mean_band(values: np.ndarray, geometric: bool = False):
    """Mean (geometric: of the logs, for log-scale measures) and the 16-84 percentile
    band over seeds (axis 0), ignoring NaN."""
    with np.errstate(all="ignore"), quiet():
        if geometric:
            mean = np.exp(np.nanmean(np.log(np.where(values > 0, values, np.nan)), axis=0))
        else:
            mean = np.nanmean(values, axis=0)
        lo, hi = np.nanpercentile(values, BAND, axis=0)
    return mean, lo, hi


@contextlib.contextmanager
def quiet():
    """RuntimeWarnings silenced: means and percentiles of columns some seeds lack (NaN)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def check_layers(runs, name: str, wanted) -> None:
    """Refuse layers that no run has (``name`` is the parameter): below 0, or past the
    deepest run, which drew the last layer under the number asked for, or nothing."""
    if wanted is None or not runs:
        return
    depths = {r.network.depth for r in runs}
    for layer in wanted:
        if 0 <= layer <= max(depths):
            continue
        text = "-".join(map(str, wanted)) if name == "average" else layer
        why = ("layers start at 0" if layer < 0 else
               f"{'the runs end' if len(depths) == 1 else 'the deepest run ends'} at layer "
               f"{max(depths)}")
        raise PlotError(f"invalid {name} {text}: {why}")


def constant_width(network) -> int | None:
    """The network's one width, or None for per-layer widths."""
    return network.width if isinstance(network.width, int) else None


def is_vanilla_linear(network) -> bool:
    """A plain linear chain of one width, no normalisation: theory's collapse applies."""
    return (network.activation == "linear" and network.norm == "none"
            and math.isinf(network.gamma) and network.init in ("gaussian", "orthogonal")
            and constant_width(network) is not None)


def is_bn_linear(network) -> bool:
    """A linear network of one width with batch norm: the paper's rank bound applies."""
    return (network.activation == "linear" and network.norm in ("bn", "bn-rms")
            and constant_width(network) is not None)


# Measure against width -----------------------------------------------------------------


def width_values(runs, measure: str = "soft_rank", at=None, average=None,
                 column: int = 0) -> dict:
    """Per configuration without width: {label: {"network": one of its networks,
    "curves": {layer label: (widths, per-seed values (seeds x widths))}}}.

    ``at``: layers (None: each run's last layer; a run without that layer measured
    contributes its nearest measured layer below it); ``average``: (lo, hi) to average
    each run over its rows with lo <= layer <= hi instead; ``column``: as for
    :func:`series`."""
    runs = [r for r in runs if constant_width(r.network) is not None]
    drop = ("width", "batch", "input_dim") if all(
        r.network.batch == r.network.width for r in runs) else ("width",)
    out = {}
    for label, members in group_runs(runs, drop=drop).items():
        network = members[0].network
        by_width: dict[int, list] = {}
        for r in members:
            by_width.setdefault(r.network.width, []).append(r)
        widths = np.array(sorted(by_width))
        points = [None] if at is None or average is not None else list(at)
        curves = {}
        for point in points:
            cols = []
            for w in widths:
                cols.append([_value_at(r, measure, point, average, column)
                             for r in by_width[w]])
            seeds = max(len(c) for c in cols)
            vals = np.full((seeds, widths.size), np.nan)
            for j, c in enumerate(cols):
                vals[: len(c), j] = c
            name = (f"layers {average[0]}-{average[1]}" if average is not None
                    else "last layer" if point is None else f"layer {point}")
            curves[name] = (widths, vals)
        out[label] = {"network": network, "curves": curves}
    return out


def _value_at(run, measure, point, average, column) -> float:
    layers, values = series(run, measure, column)
    if not layers.size:
        return float("nan")
    if average is not None:
        sel = (layers >= average[0]) & (layers <= average[1])
        return float(values[sel].mean()) if sel.any() else float("nan")
    if point is None:
        return float(values[-1])
    i = np.searchsorted(layers, point, side="right") - 1
    return float(values[i]) if i >= 0 else float("nan")
