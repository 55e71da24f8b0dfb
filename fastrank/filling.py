"""Feeding a results file: the pending runs of an open Writer simulated into it
(:func:`fill`, in this process), and :class:`Commits`, the rows on their way in, through
which a sweep in this process and one on a Dask cluster (fastrank.distributed) alike
commit their rows, threads and failures to the one writer."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastrank import store
from fastrank.backends.base import Backend
from fastrank.propagate import RunFailed, iter_batch

#: Seconds between commits of a running sweep: what a kill can lose at most.
COMMIT_EVERY_S = 1.0


def fill(
    writer: store.Writer,
    backend: Backend,
    *,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    commit_every: float = COMMIT_EVERY_S,
) -> None:
    """Simulate every pending run of an open results file into it.

    ``on_start(total_layers)`` is called once with the layers left to simulate, then
    ``progress(layers)`` after each block of rows with the layers it advanced. Runs
    already complete (or failed) are skipped; incomplete ones start again from layer 0,
    so a resumed sweep gives exactly the numbers of an uninterrupted one.

    Rows are committed in batches (:class:`Commits`): a kill loses at most the last
    ``commit_every`` seconds of rows, and a group of runs is committed when it ends.
    """
    sweep = writer.sweep
    runs = sweep.runs()
    pending = writer.pending()
    if on_start:
        on_start(sum(runs[i][0].depth for i in pending))
    by_network: dict = {}
    for index in pending:  # seeds of one network run together (one per thread)
        by_network.setdefault(runs[index][0], []).append(index)
    step = {net: backend.max_batch(net, sweep.tangents) for net in by_network}
    groups = [(net, idx[i : i + step[net]]) for net, idx in by_network.items()
              for i in range(0, len(idx), step[net])]
    commits = Commits(writer, commit_every)
    threads = backend.threads()
    for network, indices in groups:
        done = dict.fromkeys(indices, 0)
        seeds = [runs[i][1] for i in indices]
        for index in indices:
            commits.threads(index, threads)
        for i, item in iter_batch(network, seeds, sweep.schedule, sweep.method, sweep.taus,
                                  backend, tangents=sweep.tangents, qr_every=sweep.qr_every):
            index = indices[i]
            if isinstance(item, RunFailed):
                commits.fail(index, item.layer, item.reason)
                advanced, done[index] = network.depth - done[index], network.depth
            else:
                commits.add(index, item)
                last = int(item.layer[-1])
                advanced, done[index] = last - done[index], last
            if progress:
                progress(advanced)
        commits.flush()  # the group's runs end together


class Commits:
    """Rows on their way into a results file: buffered per run and committed together
    (one Writer.commit, two flushes) once ``every`` seconds have passed since the last
    commit, before a failure is recorded, when ``max_rows`` are waiting, and on
    :meth:`flush` (fill calls it when a group of runs ends). One row at a time would
    cost two flushes and a dozen resizes per row."""

    def __init__(self, writer: store.Writer, every: float = COMMIT_EVERY_S,
                 max_rows: int = 100_000):
        self.writer, self.every, self.max_rows = writer, every, max_rows
        self._rows: dict[int, list] = {}
        self._threads: dict[int, tuple[int, int]] = {}
        self._waiting = 0
        self._last = time.monotonic()

    def add(self, run: int, rows) -> None:
        """Rows of ``run`` (a fastrank.rows.Rows block) to commit."""
        self._rows.setdefault(run, []).append(rows)
        self._waiting += len(rows)
        if self._waiting >= self.max_rows or time.monotonic() - self._last >= self.every:
            self.flush()

    def threads(self, run: int, counts: tuple[int, int]) -> None:
        """Record with the run's next commit the (numba, BLAS) threads that compute it."""
        self._threads[run] = counts

    def fail(self, run: int, layer: int, reason: str) -> None:
        self.flush()
        self.writer.fail(run, layer, reason)

    def flush(self) -> None:
        if self._rows or self._threads:
            self.writer.commit(self._rows, self._threads)
        self._rows, self._threads = {}, {}
        self._waiting, self._last = 0, time.monotonic()
