"""``fastrank plot FILE -o fig.png``: a figure of a results file (matplotlib, headless)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from fastrank.cli.group import InputError, cli, open_results

KINDS = ("depth", "width", "spectrum")
MEASURES = ("soft_rank", "soft_rank_excess", "numerical_rank", "effective_rank", "stable_rank",
            "orthogonality_gap", "condition_number", "rank_tau", "log_norm", "tangent_log_norm",
            "jacobian_exponents")


#: Options that only some kinds of figure read: (option, its parameter, those kinds).
KIND_OPTIONS = (("--at", "at", ("width",)), ("--average", "average", ("width",)),
                ("--layers", "layers", ("spectrum",)), ("--measure", "measure", ("depth", "width")),
                ("--tangent", "tangent", ("depth", "width")))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Figure file: .png, .pdf or .svg (default: FILE's name + -KIND.png, here).")
@click.option("--kind", type=click.Choice(KINDS), default="depth", show_default=True,
              help="depth: measure against layer; width: against width at chosen layers "
                   "(log-log, fitted slope); spectrum: s_i/s_1 at chosen layers.")
@click.option("--measure", type=click.Choice(MEASURES), default="soft_rank", show_default=True,
              help="What to plot (depth and width kinds); soft_rank_excess is soft rank - 1; "
                   "tangent_log_norm and jacobian_exponents need a sweep run with --tangents "
                   "(a line per tangent).")
@click.option("--tangent", type=int, metavar="INDEX",
              help="With --measure tangent_log_norm or jacobian_exponents: only tangent INDEX, "
                   "0 to K-1 (0: the leading exponent), instead of all.")
@click.option("--theory", is_flag=True,
              help="Overlay fastrank.theory: collapse rate and log-norm slope of vanilla "
                   "networks, sqrt(d) for batch norm, Lyapunov spectra, and the predicted "
                   "Jacobian exponents (vanilla and orthogonal linear, BN linear and "
                   "ReLU) for the tangent measures.")
@click.option("--at", metavar="LIST",
              help="Width kind: layers to read, e.g. 100,1000, up to the runs' depth "
                   "(default: each run's last).")
@click.option("--average", metavar="LO-HI",
              help="Width kind: average each run over layers LO..HI instead, e.g. 500-2000, "
                   "up to the runs' depth.")
@click.option("--layers", metavar="LIST",
              help="Spectrum kind: layers to show, up to the runs' depth (default: 0, the "
                   "last and log-spaced ones).")
@click.option("--select", "selects", metavar="FIELD=VALUES", multiple=True,
              help="Only runs whose field has one of the values, e.g. norm=bn or "
                   "width=32,64 (repeatable; fields of `fastrank info`'s run table).")
@click.option("--title", help="Figure title.")
@click.option("--overwrite", is_flag=True, help="Replace an existing figure file.")
@click.pass_context
def plot(ctx, path, output, kind, measure, tangent, theory, at, average, layers, selects, title,
         overwrite):
    """Draw a figure of a results file: a measure against depth (mean over seeds with a
    16-84 % band, one line per configuration), against width, or the spectra.

    --at and --average belong to --kind width, --layers to --kind spectrum, --measure
    and --tangent to the depth and width kinds: given with another kind, they are
    refused.
    """
    from fastrank import options, spec
    from fastrank.plot import FORMATS, PlotError, figure, save

    for option, name, kinds in KIND_OPTIONS:
        given = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if given and kind not in kinds:
            raise InputError(f"{option} belongs to --kind {' or '.join(kinds)}, "
                             f"not --kind {kind}")
    if at is not None and average is not None:
        raise InputError("--at and --average exclude each other")
    if output is not None and not output.strip():
        raise InputError(f"invalid -o {output!r}: empty")
    try:
        at_layers = None if at is None else options.parse_ints("at", at)
        shown = None if layers is None else options.parse_ints("layers", layers)
        window = None if average is None else _range("average", average)
    except spec.SpecError as exc:
        raise InputError(str(exc)) from None
    results = open_results(path)
    with results:
        out = Path(output) if output is not None else Path(f"{Path(path).stem}-{kind}.png")
        if out.suffix.lower() not in FORMATS:
            raise InputError(f"unsupported figure format {out.suffix or str(out)!r}: "
                             "use .png, .pdf or .svg")
        if os.path.lexists(out):
            if not (out.is_file() and not out.is_symlink()):
                raise InputError(f"{out} exists and is not a regular file: choose another -o")
            if not overwrite:
                raise InputError(f"{out} exists: pass --overwrite to replace it")
        select = _selection(results, selects)
        try:
            fig = figure(results, kind, measure, theory=theory, at=at_layers, average=window,
                         layers=shown, select=select, title=title, tangent=tangent)
        except PlotError as exc:
            raise InputError(str(exc)) from None
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        save(fig, out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out}")


def _range(option: str, text: str) -> tuple[int, int]:
    """``LO-HI`` in ASCII digits (str.isdigit took full-width and other digits too)."""
    from fastrank.spec import SpecError

    found = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", text)
    if not found or int(found[2]) < int(found[1]):
        raise SpecError(f"invalid {option} {text!r}: use LO-HI, e.g. 500-2000")
    return int(found[1]), int(found[2])


def _selection(results, selects) -> dict:
    """``FIELD=V1,V2`` texts to {field: [values]} typed like the runs table's column."""
    table = results.runs
    out = {}
    for item in selects:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not text:
            raise InputError(f"invalid --select {item!r}: use FIELD=VALUES, e.g. norm=bn")
        if name not in table.dtype.names:
            raise InputError(f"invalid --select field {name!r}: choose from "
                             + ", ".join(table.dtype.names))
        kind = table.dtype[name].kind
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                values.append(int(part) if kind in "iu" else float(part) if kind == "f" else part)
            except ValueError:
                raise InputError(f"invalid --select {item!r}: {name} takes numbers") from None
        out[name] = values
    return out
