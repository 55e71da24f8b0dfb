"""The click group of the ``fastrank`` command and what its subcommands share: the error
boundary (one line, exit 2 for input errors, 1 for the machine's), :class:`InputError`
and :func:`open_results`. The subcommands register themselves on :data:`cli` when
fastrank.cli imports them."""

from __future__ import annotations

import os
import sys

import click

from fastrank import blas
from fastrank.version import __version__


class InputError(click.ClickException):
    """A problem with what the user asked for: one line, exit status 2."""

    exit_code = 2


class FastrankGroup(click.Group):
    """The error boundary: usage and input errors in one line, exit 2 (click's default
    prints the usage block); errors of the machine in one line, exit 1; Ctrl-C exits 130
    with a hint; no command at all shows the help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(
                args, prog_name or "fastrank", complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            code = 0
        except click.ClickException as exc:
            code = fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("fastrank: interrupted", err=True)
            code = 130
        except (OSError, RuntimeError, MemoryError, ValueError, ImportError) as exc:
            if os.environ.get("FASTRANK_DEBUG") == "1":
                raise
            code = _fail_on(exc)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> int:
    from fastrank.errors import one_line

    click.echo(f"fastrank: error: {one_line(message)}", err=True)
    return code


def _fail_on(exc: Exception) -> int:
    """One line for an exception no command turned into an InputError: exit 2 for
    fastrank's own input errors (a bad option value, a damaged results file, a refused
    output, ...) and for what a memory limit kept out (naming the limit), 1 for errors
    of the machine; other ValueErrors are bugs: re-raised."""
    from fastrank.errors import one_line
    from fastrank.lock import WriterLocked
    from fastrank.preflight import Refused, under_limit
    from fastrank.spec import SpecError
    from fastrank.store import DamagedFile, SweepMismatch, WriteFailed

    if isinstance(exc, (SpecError, DamagedFile, Refused, SweepMismatch, WriterLocked,
                        WriteFailed)):
        return fail(str(exc), 2)
    if limit := under_limit(exc):  # a library, a kernel or an array that a limit kept out
        return fail(f"{one_line(exc, typed=True)} under {limit}: raise it", 2)
    if isinstance(exc, ValueError):
        raise exc
    if isinstance(exc, MemoryError):
        return fail(f"out of memory ({one_line(exc, typed=True)}); --debug shows where", 1)
    return fail(f"{one_line(exc, typed=True)} (--debug shows the traceback)", 1)


@click.group(cls=FastrankGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="fastrank")
@click.option("--debug", is_flag=True,
              help="Show the traceback of an error (also FASTRANK_DEBUG=1).")
def cli(debug):
    """Rank collapse in very deep random networks, simulated fast and streamed to HDF5."""
    if debug:
        os.environ["FASTRANK_DEBUG"] = "1"
    if click.get_current_context().invoked_subcommand in REPORTS_THREADS:
        blas.restore()


def main():
    """Console-script entry point."""
    cli()


def open_results(path: str):
    """fastrank.open(path), with a missing or foreign file, or no path, as an input error."""
    from fastrank import store

    if not path:
        raise InputError("no results file given (an empty path)")
    try:
        return store.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except store.DamagedFile as exc:
        raise InputError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable fastrank results file ({exc})") from None


#: Commands that report or benchmark the thread pools (the rest start BLAS at one thread).
REPORTS_THREADS = ("bench", "env")
