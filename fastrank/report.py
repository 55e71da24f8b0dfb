"""Plain-text tables of a results file for the terminal: one line per run, and a
summary per configuration (final rank measures as mean +- sd over seeds)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from fastrank.spec import varying


def format_table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [headers] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if np.isnan(v) else f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def _last(run, name: str) -> float:
    values = run.measure(name)
    return float(values[-1]) if len(values) else float("nan")


def _labels(runs: list) -> list[str]:
    """Each run's configuration label, naming every option that varies between them (so
    that runs differing only in order, dtype, gain, input or eps are not pooled)."""
    show = varying(run.network for run in runs)
    return [run.network.label(show) for run in runs]


def _status(run) -> str:
    if run.status != "failed":
        return run.status
    return f"failed at layer {run.failed_layer}" + (f": {run.failure}" if run.failure else "")


def runs_table(results) -> str:
    """One line per run: id, configuration, seed, rows, status (with a failure's reason),
    final measures."""
    runs = list(results)
    rows = [[run.id, label, run.seed, f"{len(run.layer)}/{run.expected_rows}", _status(run),
             _last(run, "soft_rank"), _last(run, "numerical_rank")]
            for run, label in zip(runs, _labels(runs), strict=True)]
    headers = ["id", "configuration", "seed", "rows", "status", "soft rank", "num. rank"]
    return format_table(headers, rows)


def summary_table(results) -> str:
    """One line per configuration: runs by status, final soft and numerical rank over
    seeds; then each reason runs failed for, with how many."""
    runs = list(results)
    groups: dict[str, list] = defaultdict(list)
    for run, label in zip(runs, _labels(runs), strict=True):
        groups[label].append(run)
    rows = []
    for label, members in groups.items():
        done = [r for r in members if r.status == "complete"]
        soft = np.array([_last(r, "soft_rank") for r in done])
        num = np.array([_last(r, "numerical_rank") for r in done])
        rows.append([
            label, len(members), len(done), sum(r.status == "failed" for r in members),
            _mean_sd(soft), _mean_sd(num),
        ])
    headers = ["configuration", "runs", "complete", "failed", "soft rank (last layer)",
               "num. rank (last layer)"]
    reasons = Counter(r.failure or "no reason recorded" for r in runs if r.status == "failed")
    failures = [f"{n} run{'s' * (n > 1)} failed: {reason}" for reason, n in reasons.items()]
    return "\n".join([format_table(headers, rows), *(["", *failures] if failures else [])])


def _mean_sd(x: np.ndarray) -> str:
    if x.size == 0:
        return "-"
    return f"{x.mean():.3g} +- {x.std(ddof=1):.2g}" if x.size > 1 else f"{x[0]:.3g}"
