"""Plain-text tables of a results file for the terminal: one line per run, and a
summary per configuration (final rank measures as mean +- sd over seeds; in a sweep
with tangents, the last row's first Jacobian exponent, lambda_1, too)."""

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
        parts = [c.rjust(w) if num else c.ljust(w)
                 for c, w, num in zip(r, widths, numeric, strict=True)]
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
    """The last committed row's ``name`` (its first column, for the tangents'), or NaN."""
    values = run.measure(name)
    return float(np.ravel(values[-1])[0]) if len(values) else float("nan")


def _exponent(results) -> dict:
    """{"lambda_1": "jacobian_exponents"} where the sweep ran with tangents, else {}: the
    extra final measure of the tables, by its name there."""
    return {"lambda_1": "jacobian_exponents"} if results.sweep.tangents else {}


def _labels(runs: list) -> list[str]:
    """Each run's configuration label, naming every option that varies between them (so
    that runs differing only in order, dtype, gain, input or eps are not pooled)."""
    show = varying(run.network for run in runs)
    return [run.network.label(show) for run in runs]


def _status(record: dict) -> str:
    if record["status"] != "failed":
        return record["status"]
    return (f"failed at layer {record['failed_layer']}"
            + (f": {record['failure']}" if record["failure"] else ""))


def runs_table(results) -> str:
    """One line per run: id, configuration, seed, rows, status (with a failure's reason),
    final measures."""
    extra = list(_exponent(results))
    rows = [[r["id"], r["configuration"], r["seed"], f"{r['rows']}/{r['expected_rows']}",
             _status(r), _nan(r["soft_rank"]), _nan(r["numerical_rank"]),
             *(_nan(r[name]) for name in extra)]
            for r in run_records(results)]
    headers = ["id", "configuration", "seed", "rows", "status", "soft rank", "num. rank",
               *extra]
    return format_table(headers, rows)


def summary_table(results) -> str:
    """One line per configuration: runs by status, final soft and numerical rank (and
    lambda_1) over seeds; then each reason runs failed for, with how many."""
    summary = summary_records(results)
    extra = list(_exponent(results))
    rows = [[g["configuration"], g["runs"], g["complete"], g["failed"],
             _mean_sd_text(g["soft_rank"]), _mean_sd_text(g["numerical_rank"]),
             *(_mean_sd_text(g[name]) for name in extra)]
            for g in summary["configurations"]]
    headers = ["configuration", "runs", "complete", "failed", "soft rank (last layer)",
               "num. rank (last layer)", *(f"{name} (last layer)" for name in extra)]
    failures = [f"{n} run{'s' * (n > 1)} failed: {reason}"
                for reason, n in summary["failures"].items()]
    return "\n".join([format_table(headers, rows), *(["", *failures] if failures else [])])


def run_records(results) -> list[dict]:
    """One JSON-ready dict per run, the data of :func:`runs_table`: id, configuration,
    network (its options), seed, rows, expected_rows, status, failed_layer, failure, and
    the last committed row's soft_rank and numerical_rank and, in a sweep with tangents,
    lambda_1, its first Jacobian exponent (None without a row)."""
    runs = list(results)
    extra = _exponent(results)
    return [{
        "id": run.id, "configuration": label, "network": run.network.to_dict(),
        "seed": run.seed, "rows": len(run.layer), "expected_rows": run.expected_rows,
        "status": run.status, "failed_layer": run.failed_layer, "failure": run.failure,
        "soft_rank": _none(_last(run, "soft_rank")),
        "numerical_rank": _none(_last(run, "numerical_rank")),
        **{name: _none(_last(run, measure)) for name, measure in extra.items()},
    } for run, label in zip(runs, _labels(runs), strict=True)]


def summary_records(results) -> dict:
    """The data of :func:`summary_table`, JSON-ready: ``configurations``, one dict per
    configuration (runs, complete, failed, and the final soft_rank and numerical_rank,
    and lambda_1 in a sweep with tangents, of its complete runs as ``{"mean", "sd",
    "n"}``), and ``failures``, reason -> runs."""
    runs = list(results)
    extra = _exponent(results)
    groups: dict[str, list] = defaultdict(list)
    for run, label in zip(runs, _labels(runs), strict=True):
        groups[label].append(run)
    configurations = []
    for label, members in groups.items():
        done = [r for r in members if r.status == "complete"]
        configurations.append({
            "configuration": label, "runs": len(members), "complete": len(done),
            "failed": sum(r.status == "failed" for r in members),
            "soft_rank": _mean_sd(np.array([_last(r, "soft_rank") for r in done])),
            "numerical_rank": _mean_sd(np.array([_last(r, "numerical_rank") for r in done])),
            **{name: _mean_sd(np.array([_last(r, measure) for r in done]))
               for name, measure in extra.items()},
        })
    reasons = Counter(r.failure or "no reason recorded" for r in runs if r.status == "failed")
    return {"configurations": configurations, "failures": dict(reasons)}


def _none(v: float) -> float | None:
    return None if np.isnan(v) else v


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


def _mean_sd(x: np.ndarray) -> dict:
    """Mean and sd over seeds (None where undefined or not finite: JSON has no NaN)."""
    mean = _none(float(x.mean())) if x.size else None
    sd = _none(float(x.std(ddof=1))) if x.size > 1 else None
    return {"mean": mean, "sd": sd, "n": int(x.size)}


def _mean_sd_text(m: dict) -> str:
    if m["n"] == 0:
        return "-"
    mean, sd = _nan(m["mean"]), _nan(m["sd"])
    return f"{mean:.3g} +- {sd:.2g}" if m["n"] > 1 else f"{mean:.3g}"
