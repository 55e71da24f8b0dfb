"""``fastrank info FILE``: what a results file holds, run by run, even mid-sweep."""

from __future__ import annotations

import json

import click

from fastrank.cli import cli, open_results


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--summary", is_flag=True, help="Only the per-configuration summary.")
def info(path, summary):
    """List the runs of a results file with status and final rank measures."""
    from fastrank.report import runs_table, summary_table

    results = open_results(path)
    with results:
        attrs = results.attrs
        statuses = [str(s) for s in results.runs["status"]]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        click.echo(
            f"{path}: fastrank results format {attrs['format_version']}, "
            f"written by fastrank {attrs['fastrank_version']} on {attrs['created']}"
        )
        click.echo(f"{len(results)} runs: {counts}")
        click.echo(
            f"schedule: {json.dumps(results.sweep.schedule.to_dict())}, "
            f"method {results.sweep.method}, taus {list(results.sweep.taus)}\n"
        )
        if not summary:
            click.echo(runs_table(results) + "\n")
        click.echo(summary_table(results))
