"""The ``fastrank`` command: a click group with one module per subcommand.

Input errors end the command with exit status 2 and one line on stderr, never a
traceback; heavy imports happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import sys

import click

from fastrank.version import __version__


class InputError(click.ClickException):
    """A problem with what the user asked for: one line, exit status 2."""

    exit_code = 2


class FastrankGroup(click.Group):
    """Prints every usage or input error as one line and exits 2 (click's default
    prints the usage block); Ctrl-C exits 130 with a hint."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(
                args, prog_name or "fastrank", complete_var, standalone_mode=False, **extra
            )
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            click.echo(f"fastrank: error: {message}", err=True)
            code = exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("fastrank: interrupted", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=FastrankGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="fastrank")
def cli():
    """Rank collapse in very deep random networks, simulated fast and streamed to HDF5."""


def main():
    """Console-script entry point."""
    cli()


def open_results(path: str):
    """fastrank.open(path), with a missing or foreign file as an input error."""
    from fastrank import store

    try:
        return store.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable fastrank results file ({exc})") from None


from fastrank.cli import bench, env, info, plot, reproduce, sweep  # noqa: E402, F401  (subcommands register themselves)

__all__ = ["cli", "main", "InputError", "env", "info", "sweep"]
