"""``fastrank reproduce``: run the paper's claims (examples/claim*.toml) and write a report."""

from __future__ import annotations

import click

from fastrank.cli.group import InputError, cli


@cli.command()
@click.option("--scale", type=click.Choice(("quick", "full")), default="quick", show_default=True,
              help="quick: CI-sized (fewer seeds, widths, layers); full: the examples as written.")
@click.option("--claims", metavar="LIST", help="Only these claims, e.g. 1,4 or 1-3 (default: all).")
@click.option("--doc", type=click.Path(dir_okay=False), default="reproduction.md",
              show_default=True, help="Markdown report to write; figures go to figures/ beside it.")
@click.option("--results", "results_dir", type=click.Path(file_okay=False),
              default="fastrank-reproduce", show_default=True,
              help="Folder of the sweeps' results files (claimN-SCALE.h5), resumed when present.")
@click.option("--examples", type=click.Path(file_okay=False, exists=True),
              help="Folder of the claim configs (default: the source tree's examples/).")
@click.option("--overwrite", is_flag=True, help="Recompute the sweeps instead of resuming them.")
def reproduce(scale, claims, doc, results_dir, examples, overwrite):
    """Reproduce the claims of the paper: run their sweeps, measure each claim with its
    theory, and write a Markdown report with a summary table and figures."""
    from fastrank import options, spec
    from fastrank.reproduce import reproduce as run

    try:
        numbers = options.parse_ints("claims", claims) if claims else None
    except spec.SpecError as exc:
        raise InputError(str(exc)) from None
    try:
        outcomes = run(scale, numbers, doc=doc, results_dir=results_dir, overwrite=overwrite,
                       examples=examples, log=lambda line: click.echo(line, err=True))
    except (ValueError, FileNotFoundError, spec.SpecError) as exc:
        raise InputError(str(exc)) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    failed = [o.claim.number for o in outcomes if not o.reproduced]
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} claims reproduced"
               + (f"; not reproduced: {', '.join(map(str, failed))}" if failed else "")
               + f" (report: {doc})")
