"""``fastrank sweep``: run the product of option lists over seeds into one HDF5 file."""

from __future__ import annotations

import collections
import math
import os
import sys
import time
from pathlib import Path

import click

from fastrank import options, spec
from fastrank.cli.group import InputError, cli, open_results
from fastrank.version import GPU_INSTALL_HINT, install_hint

DEFAULT_OUTPUT = "fastrank-sweep.h5"

GRID_HELP = {
    "width": "Width d of every layer, e.g. 32,64 or 8-256:x2.",
    "depth": "Number of layers.",
    "batch": "Batch size N.  [default: the width]",
    "activation": f"Activation: {', '.join(spec.ACTIVATIONS)}.",
    "norm": f"Normalisation: {', '.join(spec.NORMS)}.",
    "order": f"Order of norm and activation: {', '.join(spec.ORDERS)}.",
    "gamma": "Residual strength gamma of H <- norm((I + gamma W) H); inf = plain network. "
    "Numbers or a list of them (no ranges).",
    "init": f"Weight distribution: {', '.join(spec.INITS)}.",
    "gain": "Weight variance in units of 1/d_in; numbers or a list of them (no ranges).  "
    "[default: 2 for relu, else 1]",
    "dtype": "Arithmetic: float32 or float64.",
    "input": "Input batch: gaussian, orthogonal, sklearn:digits, FILE.npy or FILE.h5:DATASET "
    "(samples x features; float32, float64, or float16 and integers, converted exactly).",
    "input_dim": "Rows of a gaussian/orthogonal input.  [default: the width]",
    "eps": "Epsilon (> 0) of the normalisations; numbers or a list of them (no ranges).",
}


def grid_default(name: str) -> str | None:
    """The default of a grid option as its text, from options.DEFAULTS or else the
    Network field's; None where it depends on other options (batch, gain, input_dim)."""
    if name in options.DEFAULTS:
        return options.DEFAULTS[name]
    value = getattr(spec.Network, name)
    return None if value is None else str(value)


def _grid_options(f):
    for name in reversed(options.GRID_PARSERS):
        default = grid_default(name)
        f = click.option(f"--{name.replace('_', '-')}", name, metavar="LIST", help=GRID_HELP[name],
                         default=default, show_default=default is not None)(f)
    return f


#: Options whose shown default is only what the sweep gets when neither the command line
#: nor --config gives a value: their value is dropped when it is click's default.
_CONFIGURABLE = (*options.GRID_PARSERS, *options.OTHER_KEYS)


@cli.command()
@_grid_options
@click.option("--seed", metavar="LIST", default=options.DEFAULTS["seed"], show_default=True,
              help="Seeds, e.g. 0-9 or 1,5,7.")
@click.option("--every", type=int, metavar="K", default=spec.Schedule.every, show_default=True,
              help="Measure every K layers (0: off).")
@click.option("--log", type=int, metavar="M", default=spec.Schedule.log, show_default=True,
              help="Also measure M log-spaced layers (0: off).")
@click.option("--layers", metavar="LIST", help="Also measure these layers.  [default: none]")
@click.option(
    "--cheap-every",
    "cheap_every",
    type=int,
    metavar="K",
    help="Gram-tier measures (soft/stable rank, orthogonality gap, log-norm) every K layers.  "
    "[default: off]",
)
@click.option("--method", type=click.Choice(spec.METHODS), default="auto", show_default=True,
              help="Spectrum: auto (float64 Gram for float32, SVD for float64), gram or svd.")
@click.option("--tau", metavar="LIST", default="0.1", show_default=True,
              help="Thresholds of rank_tau; numbers or a list of them (no ranges).")
@click.option("--tangents", type=int, metavar="K", default=0, show_default=True,
              help="Tangent directions pushed through every layer's Jacobian: their log "
              "growth and the Jacobians' K leading Lyapunov exponents at every measured "
              "layer (0: off).")
@click.option("--qr-every", "qr_every", type=int, metavar="N", default=1, show_default=True,
              help="Re-orthonormalise the tangents every N layers.")
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
    help=f"Results file.  [default: a new {DEFAULT_OUTPUT}, or {Path(DEFAULT_OUTPUT).stem}-1"
    f"{Path(DEFAULT_OUTPUT).suffix}, ...]",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option(
    "--resume", is_flag=True, help="Continue the sweep in the output file (start it if missing)."
)
@click.option(
    "--gpu",
    is_flag=True,
    help=f"Run on a CUDA device (CuPy: {GPU_INSTALL_HINT}).",
)
@click.option("--device", type=int, metavar="N", help="CUDA device index for --gpu.  [default: 0]")
@click.option("--gpu-batch", "gpu_batch", type=int, metavar="N",
              help="Most seeds of a network simulated at once on the device with --gpu.  "
              "[default: as many as its free memory holds]")
@click.option(
    "--commit-every",
    type=click.FloatRange(min=0),
    callback=lambda ctx, param, value: _seconds(value),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Commit rows to the file this often, and when a group of runs ends (0: every "
    "stretch of layers; inf: only then): a kill loses at most this much work.",
)
@click.option("--workers", type=int, metavar="N",
              help="Run on a local Dask cluster of N worker processes, at most one per core "
              f"({install_hint('dist')}).  [default: none, this process]")
@click.option("--threads-per-worker", type=int, metavar="N",
              help="numba and BLAS threads of each Dask worker, at most its machine's cores.  "
              "[default: cores / workers]")
@click.option("--scheduler", metavar="ADDR",
              help="Run on a running Dask cluster, e.g. tcp://host:8786 (left running).")
@click.option("--scheduler-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Run on the running Dask cluster this scheduler file names.")
@click.option("--force", is_flag=True,
              help="Run even when the sweep needs more memory than is available.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@click.pass_context
def sweep(ctx, config_path, output, overwrite, resume, quiet, gpu, device, gpu_batch,
          commit_every, workers, threads_per_worker, scheduler, scheduler_file, **values):
    """Simulate every combination of the options' values, for every seed.

    Every option takes a list (32,64); integer options also take ranges (0-9,
    0-100:10, 8-256:x2), float options (gamma, gain, eps, tau) only numbers and lists.
    With no options: linear and ReLU networks, with and without batch norm, d = N = 32,
    1000 layers, seeds 0-3. The defaults shown below apply where neither the command
    line nor --config gives a value.
    """
    from fastrank import preflight, store
    from fastrank.filling import fill
    from fastrank.lock import WriterLocked
    from fastrank.runner import open_writer

    for option, value in (("-o", output), ("--config", config_path),
                          ("--scheduler", scheduler), ("--scheduler-file", scheduler_file)):
        if value is not None and not value.strip():
            raise InputError(f"invalid {option} {value!r}: empty")
    if output == "-":
        raise InputError("invalid -o '-': the results are an HDF5 file, not a stream; name one")
    force = values.pop("force")
    given = {k: v for k, v in values.items()
             if v is not None and not (k in _CONFIGURABLE and _defaulted(ctx, k))}
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    if config_path:
        given = {**_config(config_path), **given}
    if resume and not output:
        raise InputError("--resume needs -o FILE, the sweep to continue")
    path = Path(output) if output else _fresh_path(DEFAULT_OUTPUT)
    exists = os.path.lexists(path)
    # The options, then the output path, then the memory, before anything is touched.
    # Resuming with no options at all continues whatever sweep the file holds.
    wanted = None if (resume and exists and not given) else _build(given)
    _preflight(path, wanted, force, gpu=gpu,
               local=not (gpu or workers is not None or scheduler or scheduler_file))
    if exists and not (overwrite or resume):
        raise InputError(
            f"{path} exists: pass --overwrite to replace it or --resume to continue it"
        )
    if gpu_batch is not None and (not gpu or gpu_batch < 1):
        raise InputError("--gpu-batch needs --gpu" if not gpu else
                         f"invalid --gpu-batch {gpu_batch}: must be an integer >= 1")
    cluster = _cluster(workers, threads_per_worker, scheduler, scheduler_file, gpu, device,
                       gpu_batch, quiet)
    backend = cluster or _backend(gpu, device, gpu_batch)
    if not (gpu or cluster):  # numba and the BLAS libraries loaded: what they mapped
        preflight.check_limits(wanted, loaded=True)
    if resume and exists:
        _check_resumable(path, None if cluster else backend)
    if gpu and not (cluster or force):
        _check_device(wanted, path, backend)
    try:
        writer = open_writer(path, wanted, overwrite=overwrite, resume=resume, backend=backend)
    except FileExistsError:  # made since the check above: the writer's words are the API's
        raise InputError(f"{path} exists: pass --overwrite to replace it or --resume to "
                         "continue it") from None
    except (spec.SpecError, ValueError, WriterLocked, store.WriteFailed) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # no such folder, read-only, name too long, disk full, ...
        from fastrank.errors import os_reason

        raise InputError(f"cannot write {path}: {os_reason(exc)}") from None
    if not (quiet or gpu or cluster):
        from fastrank.kernels.cpu import CACHE_NOTE, compiled_before

        if not compiled_before():
            click.echo("fastrank: compiling the kernels for this machine (once, about 30 s"
                       f"{CACHE_NOTE})", err=True)
    bar = _Progress(quiet)
    try:
        try:
            # after a failed write the writer closes the file without writing; closed, it
            # keeps its lock until the summary has read the file (no other writer first)
            with writer.keep_lock():
                if cluster:
                    _fill_on(cluster, writer, bar, commit_every)
                else:
                    fill(writer, backend, progress=bar.update, on_start=bar.start,
                         commit_every=commit_every)
        except store.WriteFailed as exc:  # disk full, file size limit: one line
            raise InputError(str(writer.failure or exc)) from None
        except MemoryError as exc:  # the device's, or past the estimate of a memory limit
            if gpu and _on_device(exc):
                raise InputError(f"{exc}: lower --gpu-batch; {path} keeps the rows committed "
                                 "so far: --resume continues it") from None
            if not (limit := preflight.under_limit(exc)):
                raise
            raise InputError(f"out of memory under {limit}: raise it; {path} keeps the rows "
                             "committed so far: --resume continues it") from None
        finally:
            bar.finish()  # also on Ctrl-C: the bar gives the terminal its cursor back
        if not quiet:
            from fastrank.cli.tables import summary_table

            with store.open(path) as results:
                click.echo(summary_table(results))
            click.echo(f"\nResults in {path}  (fastrank info {path}; "
                       f"fastrank.open({str(path)!r}))")
    finally:
        writer.release_lock()


def _seconds(value: float) -> float:
    """--commit-every's value: click's FloatRange lets nan through."""
    if math.isnan(value):
        raise click.BadParameter("nan is not a number of seconds (0: commit every stretch, "
                                 "inf: only when a group of runs ends)")
    return value


def _defaulted(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` holds click's default (not given on the command line)."""
    return ctx.get_parameter_source(name) in (click.core.ParameterSource.DEFAULT,
                                              click.core.ParameterSource.DEFAULT_MAP)


def _check_device(sweep: spec.Sweep | None, path: Path, backend) -> None:
    """The device's free memory for ``sweep`` (None: the resumed file's own sweep)."""
    from fastrank import preflight

    if sweep is None:
        with open_results(path) as results:
            sweep = results.sweep
    try:
        preflight.check_device_memory(sweep, backend)
    except preflight.Refused as exc:
        raise InputError(str(exc)) from None


def _on_device(error: MemoryError) -> bool:
    from fastrank.gpu.device import DeviceOutOfMemory

    return isinstance(error, DeviceOutOfMemory)


def _backend(gpu: bool, device: int | None, gpu_batch: int | None = None):
    """The CPU backend, or with --gpu the GPU one (an unusable device is an input error)."""
    from fastrank.backends import get_backend

    if not gpu:
        if device is not None:
            raise InputError("--device needs --gpu")
        return get_backend("cpu")
    if device is not None and device < 0:
        raise InputError(f"invalid --device {device}: must be an integer >= 0")
    from fastrank.gpu import GPUUnavailable

    try:
        backend = get_backend("gpu", device=device or 0, max_batch=gpu_batch)
    except GPUUnavailable as exc:
        raise InputError(f"--gpu: {exc}") from None
    click.get_current_context().call_on_close(backend.close)  # its handles, synchronised
    return backend


def _cluster(workers, threads, scheduler, scheduler_file, gpu, device, gpu_batch, quiet):
    """The Dask cluster of --workers, --scheduler or --scheduler-file, started or reached
    and asked to build the backend before any file is touched, and closed when the
    command ends; None without those options (Dask is then never imported)."""
    if workers is None and not (scheduler or scheduler_file):
        if threads is not None:
            raise InputError("--threads-per-worker needs --workers, --scheduler or "
                             "--scheduler-file")
        return None
    for option, value in (("--workers", workers), ("--threads-per-worker", threads)):
        if value is not None and value < 1:
            raise InputError(f"invalid {option} {value}: must be an integer >= 1")
    if sum(bool(x) for x in (workers is not None, scheduler, scheduler_file)) > 1:
        raise InputError("--workers, --scheduler and --scheduler-file exclude each other")
    if device is not None and not gpu:
        raise InputError("--device needs --gpu")
    if gpu and workers is not None:
        raise InputError("--gpu with --workers: start dask-cuda's LocalCUDACluster (a worker "
                         "per GPU) and pass its address with --scheduler")
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise InputError(f"--workers and --scheduler need Dask: {install_hint('dist')}")
    from fastrank import distributed

    backend, backend_options = (("gpu", {"device": device or 0, "max_batch": gpu_batch}) if gpu
                                else ("cpu", {}))
    try:
        if workers is not None:
            cluster = distributed.Cluster.local(workers, threads, backend, backend_options)
        else:
            cluster = distributed.Cluster.connect(scheduler, scheduler_file, threads, backend,
                                                  backend_options)
        click.get_current_context().call_on_close(cluster.close)
        cluster.describe()
    except distributed.ClusterError as exc:
        raise InputError(str(exc)) from None
    if cluster.dashboard and not quiet:
        click.echo(f"fastrank: Dask dashboard at {cluster.dashboard}", err=True)
    return cluster


def _fill_on(cluster, writer, bar, commit_every) -> None:
    """Cluster.fill; a cluster lost on the way is one line (exit 1), --resume continues."""
    from fastrank.distributed import ClusterError

    try:
        cluster.fill(writer, progress=bar.update, on_start=bar.start, commit_every=commit_every)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


def _check_resumable(path: Path, backend) -> None:
    """Refuse to resume a file that does not read as a results file, in the reader's one
    line; and one line when it was started on another numba thread count than this
    process's and ``backend`` (None for a Dask cluster: its tasks' threads are their own)
    says some of its runs left to compute depend on the thread count
    (Backend.thread_invariant): those may then differ in the last bits from an
    uninterrupted sweep (docs/format.md, "Reproducibility")."""
    with open_results(path) as results:
        before = results.attrs["provenance"].get("numba_threads")
        runs, seeds = results.sweep.runs(), len(results.sweep.seeds)
        tangents = results.sweep.tangents
        pending = {runs[run.index][0] for run in results
                   if run.status not in ("complete", "failed")}
    if backend is None:
        return
    per_layer = [net for net in pending
                 if not backend.thread_invariant(net, seeds, tangents)]
    if not per_layer:
        return
    import numba

    now = numba.get_num_threads()
    if before is not None and before != now:
        others = f" and {len(per_layer) - 1} more" if len(per_layer) > 1 else ""
        click.echo(f"fastrank: warning: {path} was started on {before} threads, resumed on "
                   f"{now}: its runs of {per_layer[0].label()}{others} (split among threads) may "
                   "differ in the last bits from an uninterrupted sweep", err=True)


def _build(given: dict) -> spec.Sweep:
    try:
        return options.build_sweep(given)
    except spec.SpecError as exc:
        raise InputError(str(exc)) from None


def _preflight(path: Path, sweep: spec.Sweep | None, force: bool, local: bool,
               gpu: bool = False) -> None:
    """The output path, not an input array's file, unless ``force`` the memory ``sweep``
    needs (the host's; a ``gpu`` sweep's is the device's, checked once it is open), and
    for a sweep in this process (``local``) NUMBA_NUM_THREADS and the memory limits
    (fastrank.preflight)."""
    from fastrank import inputs, preflight

    try:
        preflight.check_output(path, sweep.n_runs if sweep else 0)
        if sweep is not None:
            inputs.check_not_output(sweep, path)
        if sweep is not None and not (force or gpu):
            preflight.check_memory(sweep)
        if local:
            preflight.share_arenas()
            preflight.check_limits(sweep)
    except (preflight.Refused, spec.SpecError) as exc:
        raise InputError(str(exc)) from None


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
    """A click progress bar over layers, on stderr (silent with --quiet), whose ETA comes
    from the layer rate of the last RATE_WINDOW_S seconds: click's own estimate averages
    from the start, so a first run's kernel compilation or a slow first network keeps
    it far off for the whole sweep."""

    RATE_WINDOW_S = 10.0

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.total = self.done = 0
        self.recent: collections.deque = collections.deque()  # (time, layers done)

    def start(self, total_layers: int):
        if not self.quiet:
            self.total = total_layers
            self.recent.append((time.monotonic(), 0))
            self.bar = click.progressbar(
                length=total_layers,
                label="layers",
                file=sys.stderr,
                show_eta=False,
                show_percent=True,
                item_show_func=lambda eta: eta,
            )
            self.bar.__enter__()

    def update(self, layers: int):
        if self.bar is not None:
            self.done += layers
            self.bar.update(layers, self._eta())

    def _eta(self) -> str | None:
        now = time.monotonic()
        self.recent.append((now, self.done))
        while len(self.recent) > 2 and now - self.recent[1][0] >= self.RATE_WINDOW_S:
            self.recent.popleft()
        then, done_then = self.recent[0]
        if now - then < 0.5 or self.done <= done_then:
            return None
        left = (self.total - self.done) * (now - then) / (self.done - done_then)
        return "ETA " + time.strftime("%H:%M:%S", time.gmtime(left))

    def finish(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
