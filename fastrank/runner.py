"""The sweep runner: every (network, seed) of a Sweep streamed into one results file,
fresh or resumed, with a progress callback. Failed runs are recorded and the sweep
goes on; an interrupted sweep resumes where its file left off."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from fastrank import store
from fastrank.backends.base import Backend, get_backend
from fastrank.propagate import RunFailed, iter_batch
from fastrank.spec import Sweep
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
    must equal ``sweep`` unless ``sweep`` is None). A missing file is started afresh."""
    path = Path(path)
    if resume and path.exists():
        writer = store.Writer.resume(path)
        if sweep is not None and writer.sweep != sweep:
            differ = [k for k, v in sweep.to_dict().items() if writer.sweep.to_dict()[k] != v]
            writer.close()
            raise ValueError(
                f"{path} holds a different sweep (differs in: {', '.join(differ)}); "
                "resume it without grid options or write to another file"
            )
        return writer
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
) -> Path:
    """Run ``sweep`` into the results file ``path`` and return the path.

    With ``resume``, an existing file is continued (``sweep`` may then be None: the
    file's own). See :func:`fill` for the callbacks.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    with open_writer(path, sweep, overwrite=overwrite, resume=resume, backend=backend) as writer:
        fill(writer, backend, progress=progress, on_start=on_start)
    return Path(path)


def fill(
    writer: store.Writer,
    backend: Backend,
    *,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> None:
    """Simulate every pending run of an open results file into it.

    ``on_start(total_layers)`` is called once with the layers left to simulate, then
    ``progress(layers)`` after each stored row with the layers it advanced. Runs already
    complete (or failed) are skipped; incomplete ones start again from layer 0, so a
    resumed sweep gives exactly the numbers of an uninterrupted one.
    """
    sweep = writer.sweep
    runs = sweep.runs()
    pending = writer.pending()
    if on_start:
        on_start(sum(runs[i][0].depth for i in pending))
    by_network: dict = {}
    for index in pending:  # seeds of one network run together (one per thread)
        by_network.setdefault(runs[index][0], []).append(index)
    groups = [(net, idx[i : i + backend.max_batch(net)]) for net, idx in by_network.items()
              for i in range(0, len(idx), backend.max_batch(net))]
    for network, indices in groups:
        done = dict.fromkeys(indices, 0)
        seeds = [runs[i][1] for i in indices]
        for i, item in iter_batch(network, seeds, sweep.schedule, sweep.method, sweep.taus,
                                  backend):
            index = indices[i]
            if isinstance(item, RunFailed):
                writer.fail(index, item.layer, item.reason)
                advanced, done[index] = network.depth - done[index], network.depth
            else:
                writer.append(index, item)
                advanced, done[index] = item.layer - done[index], item.layer
            if progress:
                progress(advanced)
