"""The ``fastrank`` command: a click group (fastrank.cli.group) with one module per
subcommand, each registering itself on the group when imported here.

Every error ends the command with one line on stderr, never a traceback: bad input
(options, files, a results file that does not read) exits 2; an error of the machine
(the OS, HDF5, numpy: out of memory, an I/O error) exits 1. ``--debug`` or
FASTRANK_DEBUG=1 shows the traceback instead. Heavy imports happen inside the commands
so ``--help`` is instant.
"""

from __future__ import annotations

import sys

from fastrank import blas, preflight
from fastrank.cli.group import InputError, cli, fail, main

try:  # under a small memory limit numpy's OpenBLAS would fail in its own words
    preflight.check_startup()
except preflight.Refused as exc:
    sys.exit(fail(str(exc), 2))
with blas.loading_at_one_thread():  # numpy loads with the subcommands: see fastrank.blas
    from fastrank.cli import bench, env, info, plot, reproduce, sweep  # noqa: E402, F401  (subcommands register themselves)

__all__ = ["cli", "main", "InputError", "env", "info", "sweep"]
