"""``fastrank info FILE``: what a results file holds, run by run, even mid-sweep."""

from __future__ import annotations

import json

import click

from fastrank.cli import InputError, cli, open_results


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--summary", is_flag=True, help="Only the per-configuration summary.")
@click.option("--check", is_flag=True,
              help="Also verify every row of every run against its checksum (exit 2 if any fails).")
def info(path, summary, check):
    """List the runs of a results file with status and final rank measures."""
    from fastrank.store import DamagedFile

    results = open_results(path)
    with results:
        try:
            _describe(path, results, summary)
            damaged = results.damaged() if check else []
        except DamagedFile as exc:
            raise InputError(str(exc)) from None
    if damaged:
        raise InputError(f"{path} is damaged: {'; '.join(damaged)}")
    if check:
        click.echo(f"\nchecksums: every committed row of the {len(results)} runs reads back "
                   "as written")


def _describe(path, results, summary: bool) -> None:
    """The header, the runs table (unless ``summary``) and the summary table."""
    from fastrank.report import runs_table, summary_table

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
