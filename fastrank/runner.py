"""The sweep runner: every (network, seed) of a Sweep streamed into one results file,
fresh or resumed, with a progress callback. Failed runs are recorded and the sweep
goes on; an interrupted sweep resumes where its file left off."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from fastrank import filling, inputs, store
from fastrank.backends import get_backend
from fastrank.backends.base import Backend
from fastrank.spec import SpecError, Sweep
from fastrank.version import __version__


def provenance(backend: Backend) -> dict:
    """Where and with what a sweep ran: stored in the file's root attributes."""
    import h5py

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "fastrank": __version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **backend.describe(),
    }


def open_writer(path: str | Path, sweep: Sweep | None, *, overwrite=False, resume=False,
                backend: Backend) -> store.Writer:
    """A writer for ``path``: a new file, or with ``resume`` the existing one (whose sweep
    must equal ``sweep`` unless ``sweep`` is None). A missing file is started afresh.
    ``backend`` (or a fastrank.distributed.Cluster) describes where the runs compute."""
    path = Path(path)
    if resume and path.exists():
        return store.Writer.resume(path, sweep)
    if sweep is None:
        raise ValueError(f"nothing to resume: {path} does not exist")
    return store.Writer.create(path, sweep, provenance(backend), overwrite=overwrite)


def run_sweep(
    sweep: Sweep | None,
    path: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    backend: Backend | str = "cpu",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    client=None,
) -> Path:
    """Run every (network, seed) of a sweep into one results file (``fastrank.sweep``).

    The file is laid out first, then filled as the runs go, rows committed in batches
    (about once a second): a kill loses at most the last second, and ``resume``
    continues where the file left off with exactly the numbers of an uninterrupted
    sweep. A run that fails (non-finite or vanished H) is recorded with its reason and
    the sweep goes on. One process writes a file at a time (a second one is refused).

    Parameters
    ----------
    sweep : Sweep or None
        What to run; None with ``resume`` continues the file's own sweep.
    path : str or Path
        The results file (HDF5; read it with :func:`fastrank.open`).
    overwrite : bool
        Replace an existing file (otherwise FileExistsError).
    resume : bool
        Continue an existing file (its sweep must equal ``sweep``); start it if missing.
    backend : Backend or {"cpu", "gpu"}
        Where the runs compute.
    progress : callable, optional
        Called with the number of layers each new block of rows advanced (a progress
        bar).
    on_start : callable, optional
        Called once with the number of layers left to simulate.
    client : distributed.Client, optional
        Run on a Dask cluster instead (fastrank.distributed): tasks of (network, batch
        of seeds) on its workers, the backend built by name on each, this process the
        file's only writer; the same numbers as a local sweep.

    Returns
    -------
    Path
        ``path``, complete.

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [16], "depth": [200], "norm": ["none", "bn"]},
    ...                        seeds=(0, 1, 2))
    >>> path = fastrank.sweep(sweep, "sweep.h5")
    >>> with fastrank.open(path) as results:
    ...     print(len(results.runs), set(results.runs["status"].tolist()))
    6 {'complete'}
    """
    # what the command line refuses on its way to open_writer, refused before any file:
    # an empty path, the file of an input array as the output, an input no run can use
    if not str(path).strip():
        raise SpecError(f"invalid path {str(path)!r}: empty (name the results file)")
    if sweep is not None:
        inputs.check_not_output(sweep, path)
        inputs.check_inputs(sweep)
    owned = None  # a backend made here is closed here (a GPU's handles)
    if client is not None:
        from fastrank.distributed import Cluster

        backend = Cluster(client, backend if isinstance(backend, str) else backend.name)
    elif isinstance(backend, str):
        backend = owned = get_backend(backend)
    try:
        with open_writer(path, sweep, overwrite=overwrite, resume=resume,
                         backend=backend) as writer:
            if client is not None:
                backend.fill(writer, progress=progress, on_start=on_start)
            else:
                filling.fill(writer, backend, progress=progress, on_start=on_start)
    finally:
        if owned is not None:
            owned.close()
    return Path(path)
