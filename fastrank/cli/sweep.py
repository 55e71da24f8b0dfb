"""``fastrank sweep``: run the product of option lists over seeds into one HDF5 file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fastrank import options, spec
from fastrank.cli import InputError, cli

DEFAULT_OUTPUT = "fastrank-sweep.h5"

GRID_HELP = {
    "width": "Width d of every layer, e.g. 32,64 or 8-256:x2.",
    "depth": "Number of layers.",
    "batch": "Batch size N (default: the width).",
    "activation": f"Activation: {', '.join(spec.ACTIVATIONS)}.",
    "norm": f"Normalisation: {', '.join(spec.NORMS)}.",
    "order": f"Order of norm and activation: {', '.join(spec.ORDERS)}.",
    "gamma": "Residual strength gamma of H <- norm((I + gamma W) H); inf = plain network.",
    "init": f"Weight distribution: {', '.join(spec.INITS)}.",
    "gain": "Weight variance in units of 1/d_in (default 2 for relu, else 1).",
    "dtype": "Arithmetic: float32 or float64.",
    "input": "Input batch: gaussian, orthogonal, sklearn:digits, FILE.npy or FILE.h5:DATASET "
    "(samples x features).",
    "input_dim": "Rows of a gaussian/orthogonal input (default: the width).",
    "eps": "Epsilon of the normalisations (default 1e-5).",
}


def _grid_options(f):
    for name in reversed(options.GRID_PARSERS):
        f = click.option(f"--{name.replace('_', '-')}", name, metavar="LIST", help=GRID_HELP[name])(
            f
        )
    return f


@cli.command()
@_grid_options
@click.option("--seed", metavar="LIST", help="Seeds, e.g. 0-9 (default 0-3).")
@click.option("--every", type=int, metavar="K", help="Measure every K layers (0: off; default 10).")
@click.option(
    "--log", type=int, metavar="M", help="Also measure M log-spaced layers (0: off; default 50)."
)
@click.option("--layers", metavar="LIST", help="Also measure these layers.")
@click.option(
    "--cheap-every",
    "cheap_every",
    type=int,
    metavar="K",
    help="Gram-tier measures (soft/stable rank, orthogonality gap, log-norm) every K layers.",
)
@click.option(
    "--method", type=click.Choice(spec.METHODS), help="Spectrum: auto (default), gram or svd."
)
@click.option("--tau", metavar="LIST", help="Thresholds of rank_tau (default 0.1).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file of options; the command line wins.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help=f"Results file (default: a new {DEFAULT_OUTPUT}).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option(
    "--resume", is_flag=True, help="Continue the sweep in the output file (start it if missing)."
)
@click.option(
    "--gpu",
    is_flag=True,
    help="Run on a CUDA device (CuPy: pip install fastrank[gpu-cuda12] or [gpu-cuda13]).",
)
@click.option("--device", type=int, metavar="N", help="CUDA device index for --gpu (default 0).")
@click.option(
    "--commit-every",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Commit rows to the file this often (and at each run's end): a kill loses at most "
    "this much work.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def sweep(config_path, output, overwrite, resume, quiet, gpu, device, commit_every, **values):
    """Simulate every combination of the options' values, for every seed.

    Every option takes a list (32,64) or a range (0-9, 0-100:10, 8-256:x2). With no
    options: linear and ReLU networks, with and without batch norm, d = N = 32, 1000
    layers, seeds 0-3.
    """
    from fastrank import store
    from fastrank.lock import WriterLocked
    from fastrank.runner import fill, open_writer

    given = {k: v for k, v in values.items() if v is not None}
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    if config_path:
        given = {**_config(config_path), **given}
    if resume and not output:
        raise InputError("--resume needs -o FILE, the sweep to continue")
    path = Path(output) if output else _fresh_path(DEFAULT_OUTPUT)
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name too long
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if exists and not (overwrite or resume):
        raise InputError(
            f"{path} exists: pass --overwrite to replace it or --resume to continue it"
        )
    backend = _backend(gpu, device)
    try:
        # Resuming with no options at all continues whatever sweep the file holds.
        wanted = None if (resume and exists and not given) else options.build_sweep(given)
        writer = open_writer(path, wanted, overwrite=overwrite, resume=resume, backend=backend)
    except (spec.SpecError, ValueError, FileExistsError, WriterLocked) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # no such folder, read-only, name too long, disk full, ...
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not (quiet or gpu):
        from fastrank.kernels.cpu import compiled_before

        if not compiled_before():
            click.echo("fastrank: compiling the kernels for this machine (once, about 20 s)",
                       err=True)
    bar = _Progress(quiet)
    try:
        with writer:
            fill(writer, backend, progress=bar.update, on_start=bar.start,
                 commit_every=commit_every)
    except store.WriteFailed as exc:  # disk full, file size limit: one line
        raise InputError(str(exc)) from None
    bar.finish()
    if not quiet:
        from fastrank.report import summary_table

        with store.open(path) as results:
            click.echo(summary_table(results))
        click.echo(f"\nResults in {path}  (fastrank info {path}; fastrank.open({str(path)!r}))")


def _backend(gpu: bool, device: int | None):
    """The CPU backend, or with --gpu the GPU one (an unusable device is an input error)."""
    from fastrank.backends.base import get_backend

    if not gpu:
        if device is not None:
            raise InputError("--device needs --gpu")
        return get_backend("cpu")
    if device is not None and device < 0:
        raise InputError(f"invalid --device {device}: must be an integer >= 0")
    from fastrank.gpu import GPUUnavailable

    try:
        return get_backend("gpu", device=device or 0)
    except GPUUnavailable as exc:
        raise InputError(f"--gpu: {exc}") from None


def _config(path: str) -> dict:
    try:
        return options.read_config(path)
    except spec.SpecError as exc:
        raise InputError(str(exc)) from None


def _fresh_path(name: str) -> Path:
    """``name`` if free, else the first free ``stem-1.h5``, ``stem-2.h5``, ..."""
    path, n = Path(name), 0
    while path.exists():
        n += 1
        path = Path(f"{Path(name).stem}-{n}{Path(name).suffix}")
    return path


class _Progress:
    """A click progress bar over layers, on stderr (silent with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def start(self, total_layers: int):
        if not self.quiet:
            self.bar = click.progressbar(
                length=total_layers,
                label="layers",
                file=sys.stderr,
                show_eta=True,
                show_percent=True,
            )
            self.bar.__enter__()

    def update(self, layers: int):
        if self.bar is not None:
            self.bar.update(layers)

    def finish(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
