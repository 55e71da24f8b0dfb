"""``fastrank info FILE``: what a results file holds, run by run, even mid-sweep."""

from __future__ import annotations

import json
import math

import click

from fastrank.cli.group import InputError, cli, open_results


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--summary", is_flag=True, help="Only the per-configuration summary.")
@click.option("--check", is_flag=True,
              help="Also verify every row of every run against its checksum (exit 2 if any fails).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object instead of tables, for scripts: the file's header, "
              "'runs' (one object per run; left out with --summary) and 'summary'.")
def info(path, summary, check, as_json):
    """List the runs of a results file with status and final rank measures.

    With --json, stdout is one JSON object: path, format_version, fastrank_version,
    created, n_runs, status_counts, schedule, method, taus (and tangents and qr_every,
    for a sweep with tangents), runs (id, configuration, network, seed, rows,
    expected_rows, status, failed_layer, failure, soft_rank, numerical_rank and, with
    tangents, lambda_1 (the first Jacobian exponent) of the last row), summary
    (configurations: runs, complete, failed, soft_rank, numerical_rank and lambda_1 as
    mean/sd/n over complete runs; failures: reason -> runs) and, with --check, damaged
    (a list of what failed its checksum). Strict JSON: an infinite gamma is the string
    "inf".
    """
    from fastrank.store import DamagedFile

    results = open_results(path)
    with results:
        try:
            if as_json:
                doc = _document(path, results, summary)
            else:
                _describe(path, results, summary)
            damaged = results.damaged() if check else []
        except DamagedFile as exc:
            raise InputError(str(exc)) from None
    if as_json:
        if check:
            doc["damaged"] = damaged
        click.echo(json.dumps(_strict(doc), indent=2, allow_nan=False))
    if damaged:
        raise InputError(f"{path} is damaged: {'; '.join(damaged)}")
    if check and not as_json:
        click.echo(f"\nchecksums: every object and every committed row of the {len(results)} runs "
                   "read back as written")


def _document(path, results, summary: bool) -> dict:
    """What ``info`` prints, as one JSON-ready dict."""
    from fastrank.cli.tables import run_records, summary_records

    attrs = results.attrs
    statuses = [str(s) for s in results.runs["status"]]
    doc = {
        "path": str(path),
        "format_version": attrs["format_version"],
        "fastrank_version": attrs["fastrank_version"],
        "created": attrs["created"],
        "n_runs": len(results),
        "status_counts": {s: statuses.count(s) for s in dict.fromkeys(statuses)},
        "schedule": results.sweep.schedule.to_dict(),
        "method": results.sweep.method,
        "taus": list(results.sweep.taus),
        **_tangents(results.sweep),
    }
    if not summary:
        doc["runs"] = run_records(results)
    doc["summary"] = summary_records(results)
    return doc


def _tangents(sweep) -> dict:
    """The sweep's tangents and qr_every where it ran with tangents, else nothing."""
    return {"tangents": sweep.tangents, "qr_every": sweep.qr_every} if sweep.tangents else {}


def _strict(value):
    """``value`` as strict JSON values: numpy scalars and arrays (HDF5 attributes) as
    Python ones, a non-finite float as its text ("inf", as ``--gamma`` takes it)."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if hasattr(value, "tolist"):
        return _strict(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _describe(path, results, summary: bool) -> None:
    """The header, the runs table (unless ``summary``) and the summary table."""
    from fastrank.cli.tables import runs_table, summary_table

    attrs = results.attrs
    statuses = [str(s) for s in results.runs["status"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    click.echo(
        f"{path}: fastrank results format {attrs['format_version']}, "
        f"written by fastrank {attrs['fastrank_version']} on {attrs['created']}"
    )
    click.echo(f"{len(results)} runs: {counts}")
    sweep = results.sweep
    tangents = f", tangents {sweep.tangents}" if sweep.tangents else ""
    if sweep.tangents > 1:  # re-orthonormalised only with two or more
        tangents += f", qr-every {sweep.qr_every}"
    click.echo(
        f"schedule: {json.dumps(sweep.schedule.to_dict())}, "
        f"method {sweep.method}, taus {list(sweep.taus)}{tangents}\n"
    )
    if not summary:
        click.echo(runs_table(results) + "\n")
    click.echo(summary_table(results))
