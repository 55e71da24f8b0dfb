"""Sweeps on a Dask cluster: ``fastrank sweep --workers N`` (a LocalCluster of N worker
processes), ``--scheduler ADDR`` / ``--scheduler-file FILE`` (a running cluster, e.g. one
dask-jobqueue started on SLURM) or ``fastrank.sweep(..., client=client)``.

The process that holds the results file stays its only writer. A task simulates one
network for a batch of seeds on a worker and sends its rows back: with its result, and
for a long task in pieces of about ``PIECE_BYTES`` through a Dask queue, so that no
message holds a deep run's whole trajectory. The writer commits rows as they arrive and
keeps a bounded number of tasks in flight, so its memory does not grow with the sweep.
A task rerun after its worker died sends its runs' rows again from layer 0; counter-based
random streams make them equal to the first copy, and the writer keeps the rows it has.

One module for one concern: the cluster handle, the task plan, the writer's receiving
side and the worker's sending side are one protocol, read together.

Imported only for a distributed sweep: the single-process path never imports Dask.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import math
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable

import distributed

from fastrank import blas, store
from fastrank.backends import get_backend
from fastrank.filling import COMMIT_EVERY_S, Commits
from fastrank.propagate import RunFailed, iter_batch
from fastrank.rows import Rows
from fastrank.spec import Network, Sweep

#: Bytes of rows a task holds before it sends them on as a piece (a task with fewer sends
#: all of its rows with its result: no queue traffic).
PIECE_BYTES = 8 << 20
#: Tasks a sweep is cut into, per Dask thread of the cluster: enough for balance and for
#: cheap reruns, few enough that the scheduler's cost per task (milliseconds) stays small.
TASKS_PER_THREAD = 4
#: Tasks in flight at most, per Dask thread (at least WINDOW_MIN): the writer submits more
#: as they complete, so neither it nor the scheduler holds the whole sweep at once.
WINDOW_PER_THREAD = 4
WINDOW_MIN = 16
#: Characters a scheduler file may hold (Dask's holds a few hundred): a larger file is
#: some other file, refused rather than read whole.
SCHEDULER_FILE_MAX = 1 << 20
#: Seconds between the writer's looks at the queue of pieces while no task completes.
POLL_S = 0.2
#: Environment of LocalCluster workers that sets numba's and BLAS's threads (Dask's
#: nanny would set the BLAS ones to 1).
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")


class ClusterError(RuntimeError):
    """The cluster cannot run the sweep: unreachable, lost, or a task killed its workers."""


class Cluster:
    """A Dask cluster as the runner sees it: where tasks go, and with which backend and
    threads they run there.

    ``client``: any ``distributed.Client``. ``backend`` (``cpu`` or ``gpu``) is built on each
    worker with ``options`` (e.g. ``{"device": 0}``); ``threads``: numba and BLAS threads
    per task (default: a host's cores / its workers' Dask threads). Made by :meth:`local`, it
    owns its LocalCluster and :meth:`close` shuts that down; otherwise close leaves the
    cluster up and only disconnects a client it made (:meth:`connect`).
    """

    def __init__(self, client, backend: str = "cpu", options: dict | None = None,
                 threads: int | None = None, *, owned=None, own_client: bool = False):
        self.client, self.backend = client, backend
        self.options, self.threads = dict(options or {}), threads
        self._owned, self._own_client = owned, own_client
        self._description: dict | None = None

    @classmethod
    def local(cls, workers: int, threads: int | None = None, backend: str = "cpu",
              options: dict | None = None) -> Cluster:
        """Start a LocalCluster of ``workers`` processes, one Dask thread each (a task's
        seeds share its process's numba threads), ``threads`` numba/BLAS threads each
        (default: this machine's cores / workers). More workers than cores, or more
        threads each than cores, are a ClusterError before anything starts: they would
        only share the cores, each process costs its own memory, and an absurd count
        started processes until the machine gave out."""
        cores = blas.cores()
        if workers > cores:
            raise ClusterError(f"cannot start {workers:,} Dask workers on this machine's "
                               f"{cores} cores: at most one worker process per core")
        _check_threads(threads, cores, "this machine")
        threads = threads or max(1, cores // workers)
        env = dict.fromkeys(THREAD_VARIABLES, str(threads))
        try:
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=logging.ERROR, env=env)
        except Exception as exc:  # ports, process limits, memory: one line for the user
            raise ClusterError(f"could not start {workers} Dask workers: {exc}") from None
        return cls(distributed.Client(cluster), backend, options, threads, owned=cluster,
                   own_client=True)

    @classmethod
    def connect(cls, address: str | None = None, scheduler_file: str | None = None,
                threads: int | None = None, backend: str = "cpu",
                options: dict | None = None) -> Cluster:
        """Connect to a running scheduler by address or scheduler file (within Dask's
        ``distributed.comm.timeouts.connect``); the cluster is left running afterwards."""
        where = address
        if scheduler_file:
            address = scheduler_address(scheduler_file)
            where = f"{address} (from {scheduler_file})"
        try:
            client = distributed.Client(address)
        except (OSError, ValueError, TypeError) as exc:  # refused, timed out, bad address
            raise ClusterError(f"cannot reach the Dask scheduler {where}: "
                               f"{' '.join(str(exc).split())}") from None
        return cls(client, backend, options, threads, own_client=True)

    @property
    def dashboard(self) -> str | None:
        """The address of Dask's dashboard of a LocalCluster this object started (None
        without bokeh, which serves its pages)."""
        if self._owned is None or importlib.util.find_spec("bokeh") is None:
            return None
        return self._owned.dashboard_link or None

    def describe(self) -> dict:
        """Provenance: a worker's backend description and the cluster's shape (asked of
        a worker once; raises ClusterError when the workers cannot build the backend, or
        when ``threads`` exceeds the cores of a worker's host)."""
        if self._description is None:
            if self.threads:
                cores = self.client.run(blas.cores)
                _check_threads(self.threads, min(cores.values(), default=self.threads),
                               "a Dask worker's host")
            future = self.client.submit(_describe, self.backend, self.options, self.threads,
                                        pure=False)
            try:
                worker = future.result()
            except Exception as exc:
                raise ClusterError(f"the Dask workers cannot run the {self.backend} backend: "
                                   f"{type(exc).__name__}: {exc}") from None
            threads = worker.pop("threads_per_task")
            self._description = {**worker, "dask": {
                "scheduler": self.client.scheduler.address,
                "workers": len(self.client.nthreads()),
                "threads_per_task": threads,
                "distributed": distributed.__version__,
            }}
        return self._description

    def fill(self, writer: store.Writer, *, progress: Callable[[int], None] | None = None,
             on_start: Callable[[int], None] | None = None,
             commit_every: float = COMMIT_EVERY_S, piece_bytes: int | None = None) -> dict:
        """Simulate every pending run of an open results file on the cluster: what
        :func:`fastrank.filling.fill` does in one process, with the same callbacks and the
        same numbers. ``piece_bytes``: see PIECE_BYTES. Returns figures of the run:
        tasks, seconds of task work, wall time, each worker's warm-up (numba compile or
        cache load), pieces streamed and rows sent twice (by reruns)."""
        piece_bytes = piece_bytes or PIECE_BYTES
        sweep = writer.sweep
        runs, pending = sweep.runs(), writer.pending()
        if on_start:
            on_start(sum(runs[i][0].depth for i in pending))
        threads = self._dask_threads()
        tasks = plan(runs, pending, TASKS_PER_THREAD * threads, min_seeds=self.threads or 1)
        receiver = _Receiver(Commits(writer, commit_every),
                             {i: runs[i][0].depth for i in pending}, progress)
        warm_up = self._warm_up(sweep, [net for net, _ in tasks])
        queue = distributed.Queue(f"fastrank-{uuid.uuid4().hex}", client=self.client)
        todo, in_flight, task_seconds, pieces = iter(tasks), set(), 0.0, 0
        started = time.perf_counter()

        def submit_more():
            room = max(WINDOW_MIN, WINDOW_PER_THREAD * self._dask_threads()) - len(in_flight)
            for network, indices in itertools.islice(todo, max(room, 0)):
                in_flight.add(self.client.submit(
                    _simulate, network, [runs[i][1] for i in indices], indices, sweep,
                    self.backend, self.options, self.threads, queue.name, piece_bytes,
                    pure=False))

        try:
            submit_more()
            while in_flight:
                try:
                    done = distributed.wait(in_flight, timeout=POLL_S,
                                            return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    done = set()
                for piece in queue.get(batch=True):  # a finished task's pieces came first
                    receiver.take(pickle.loads(piece))
                    pieces += 1
                for future in done:
                    messages, seconds = future.result()
                    receiver.take(messages)
                    task_seconds += seconds
                    in_flight.discard(future)
                if done:
                    receiver.commits.flush()  # the tasks' runs end together
                    submit_more()
        except distributed.KilledWorker as exc:
            raise ClusterError(f"Dask gave up on a task whose workers kept dying (out of "
                               f"memory?): {exc}; --resume continues the sweep") from None
        except distributed.CancelledError:
            raise ClusterError("the Dask scheduler cancelled the sweep's tasks (lost or "
                               "restarted): --resume continues the sweep") from None
        finally:
            for future in in_flight:
                future.cancel()
            with contextlib.suppress(Exception):  # the scheduler may be gone
                queue.close()
        receiver.commits.flush()
        return {"tasks": len(tasks), "task_seconds": task_seconds,
                "wall_s": time.perf_counter() - started, "dask_threads": threads,
                "warm_up_s": warm_up, "pieces": pieces, "rows_sent_twice": receiver.resent}

    def close(self) -> None:
        """Disconnect a client this object made, and shut down a LocalCluster it started."""
        if self._own_client:
            self.client.close()
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _dask_threads(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def _warm_up(self, sweep: Sweep, networks: list[Network]) -> dict[str, float | None]:
        """Compile the kernels on every worker now (or load them from numba's on-disk
        cache), all workers at once, before the first task: a depth-2 network per kind of
        kernel the sweep uses. Seconds per worker (None where a worker failed it)."""
        small = warm_up_networks(networks)
        seconds = self.client.run(_warm_up, small, sweep, self.backend, self.options,
                                  self.threads, on_error="return")
        return {w: s if isinstance(s, float) else None for w, s in seconds.items()}


def scheduler_address(path: str) -> str:
    """The scheduler's address in a Dask scheduler file (the JSON object ``dask
    scheduler --scheduler-file`` writes), read here so that a file of anything else is
    one ClusterError naming it (Dask's client tripped over it in an assertion)."""
    import json

    def refuse(why: str) -> ClusterError:
        return ClusterError(f"{path} is not a Dask scheduler file ({why})")

    if not os.path.isfile(path):
        if os.path.lexists(path):
            raise refuse("not a regular file")
        raise ClusterError(f"no scheduler file {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(SCHEDULER_FILE_MAX + 1)
    except OSError as exc:
        raise refuse(f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    if len(text) > SCHEDULER_FILE_MAX:
        raise refuse(f"more than {SCHEDULER_FILE_MAX:,} characters")
    try:
        info = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deep
        raise refuse(f"not JSON: {' '.join(str(exc).split())}") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address.strip():
        raise refuse('its JSON has no "address" of a scheduler')
    return address


def _check_threads(threads: int | None, cores: int, where: str) -> None:
    """Refuse more numba/BLAS threads per task than ``where`` has ``cores``."""
    if threads and threads > cores:
        raise ClusterError(f"cannot give each Dask worker {threads:,} threads: {where} has "
                           f"{cores} cores")


def plan(runs: list, pending: list[int], n_tasks: int,
         min_seeds: int = 1) -> list[tuple[Network, list[int]]]:
    """The tasks of a sweep's pending runs: (network, run indices), one network each, about
    ``n_tasks`` over the sweep (each network its share by runs) and at least ``min_seeds``
    runs each where the network has them (a process's numba threads take one seed each)."""
    by_network: dict = {}
    for index in pending:
        by_network.setdefault(runs[index][0], []).append(index)
    tasks = []
    for network, indices in by_network.items():
        parts = max(1, round(n_tasks * len(indices) / len(pending)))
        size = max(math.ceil(len(indices) / parts), min_seeds)
        tasks += [(network, indices[i : i + size]) for i in range(0, len(indices), size)]
    return tasks


def warm_up_networks(networks: list[Network]) -> list[Network]:
    """One depth-2 stand-in per dtype, weight distribution and width class (up to
    fastrank.tuning.SMALL_WIDTH_MAX, up to SEEDED_WIDTH_MAX, wider: each class has
    kernels of its own) of ``networks``: the narrowest of each, so that warming up costs
    little yet compiles the kernels those networks call."""
    from fastrank import tuning

    smallest: dict = {}
    for net in networks:
        widest = max(net.widths)
        key = (net.dtype, net.init,
               (widest > tuning.SMALL_WIDTH_MAX) + (widest > tuning.SEEDED_WIDTH_MAX))
        if key not in smallest or widest < max(smallest[key].widths):
            smallest[key] = net
    return [Network(**{**net.to_dict(), "depth": 2,
                       "width": net.width if isinstance(net.width, int) else net.widths[:2]})
            for net in smallest.values()]


class _Receiver:
    """Rows arriving from tasks, into a results file: each run's rows in order, rows a
    rerun task sends again dropped, progress fed per block as by the local runner."""

    def __init__(self, commits: Commits, depths: dict[int, int],
                 progress: Callable[[int], None] | None):
        self.commits, self.depths, self.progress = commits, depths, progress
        self.taken = dict.fromkeys(depths, 0)  # rows committed (or buffered) per run
        self.layer = dict.fromkeys(depths, 0)  # layer reached per run, for progress
        self.failed: set[int] = set()
        self.resent = 0

    def take(self, messages: list) -> None:
        for kind, run, *rest in messages:
            if kind == "rows":
                self._rows(run, *rest)
            elif kind == "threads":
                self.commits.threads(run, tuple(rest))
            elif run not in self.failed:
                self.failed.add(run)
                self.commits.fail(run, *rest)
                self._advance(run, self.depths[run])

    def _rows(self, run: int, start: int, rows: Rows) -> None:
        taken = self.taken[run]
        if start > taken:
            raise ClusterError(f"rows {taken}..{start - 1} of run {run} never arrived")
        new = rows[taken - start :]
        self.resent += len(rows) - len(new)
        if len(new):
            self.commits.add(run, new)
            self._advance(run, int(new.layer[-1]))
        self.taken[run] = taken + len(new)

    def _advance(self, run: int, layer: int) -> None:
        advanced, self.layer[run] = layer - self.layer[run], layer
        if self.progress and advanced > 0:
            self.progress(advanced)


# -- on the workers ---------------------------------------------------------------------


class _Outbox:
    """A task's messages on their way to the writer, ``("threads", run, numba, blas)``,
    ``("rows", run, first row, Rows)`` and ``("failed", run, layer, reason)``: sent on as
    one pickled piece through the Dask queue whenever ``limit`` bytes of rows wait; the
    rest go with the task's result."""

    def __init__(self, queue_name: str, limit: int):
        self.queue_name, self.limit = queue_name, limit
        self.rows: dict[int, tuple[int, list]] = {}  # run -> (index of its first row, blocks)
        self.sent: dict[int, int] = {}  # run -> rows handed on so far
        self.failures: list[tuple] = []
        self.notes: list[tuple] = []  # ("threads", ...), sent ahead of the rows
        self.bytes = 0
        self._queue = None

    def add(self, run: int, rows: Rows) -> None:
        self.rows.setdefault(run, (self.sent.get(run, 0), []))[1].append(rows)
        self.bytes += rows.spectrum.nbytes + 128 * len(rows)  # + the scalars, roughly
        if self.bytes >= self.limit:
            if self._queue is None:
                self._queue = distributed.Queue(self.queue_name, client=distributed.get_client())
            self._queue.put(pickle.dumps(self.rest(), protocol=pickle.HIGHEST_PROTOCOL))

    def failed(self, run: int, layer: int, reason: str) -> None:
        self.failures.append(("failed", run, layer, reason))

    def threads(self, runs: list[int], counts: tuple[int, int]) -> None:
        self.notes += [("threads", run, *counts) for run in runs]

    def rest(self) -> list[tuple]:
        """The messages not sent yet (a run's rows before its failure), and forget them."""
        messages = self.notes + [("rows", run, first, Rows.concat(blocks))
                                 for run, (first, blocks) in self.rows.items()]
        for run, (first, blocks) in self.rows.items():
            self.sent[run] = first + sum(len(b) for b in blocks)
        messages += self.failures
        self.rows, self.failures, self.notes, self.bytes = {}, [], [], 0
        return messages


def _simulate(network: Network, seeds: list[int], runs: list[int], sweep: Sweep,
              backend: str, options: dict, threads: int | None, queue_name: str,
              piece_bytes: int) -> tuple[list, float]:
    """A task: the runs ``runs`` (seeds ``seeds`` of ``network``), in batches the backend
    can hold. Returns the messages not sent as pieces and the seconds it took."""
    started = time.perf_counter()
    be = _backend(backend, options, threads)
    out = _Outbox(queue_name, piece_bytes)
    out.threads(runs, be.threads())
    step = be.max_batch(network, sweep.tangents)
    for lo in range(0, len(seeds), step):
        for i, item in iter_batch(network, seeds[lo : lo + step], sweep.schedule,
                                  sweep.method, sweep.taus, be, tangents=sweep.tangents,
                                  qr_every=sweep.qr_every):
            if isinstance(item, RunFailed):
                out.failed(runs[lo + i], item.layer, item.reason)
            else:
                out.add(runs[lo + i], item)
    return out.rest(), time.perf_counter() - started


async def _warm_up(networks: list[Network], sweep: Sweep, backend: str, options: dict,
                   threads: int | None, dask_worker=None) -> float:
    """Run by Client.run on every worker: the stand-in networks once, in a thread of its
    own (the worker's event loop keeps answering the scheduler meanwhile); seconds."""

    def run() -> float:
        started = time.perf_counter()
        be = _backend(backend, options, threads, dask_worker)
        for net in networks:
            for _ in iter_batch(net, [0], sweep.schedule, sweep.method, sweep.taus, be):
                pass
        return time.perf_counter() - started

    return await asyncio.to_thread(run)


def _describe(backend: str, options: dict, threads: int | None) -> dict:
    be = _backend(backend, options, threads)
    return {**be.describe(), "threads_per_task": _threads(threads, distributed.get_worker())}


_per_thread = threading.local()
_blas_threads: int | None = None


def _backend(name: str, options: dict, threads: int | None, worker=None):
    """This worker thread's backend (one per thread: a CPU backend keeps work buffers),
    with numba and BLAS held to ``threads`` (see :func:`_threads`) for what it runs next."""
    backends = _per_thread.__dict__.setdefault("backends", {})
    key = (name, tuple(sorted(options.items())))
    if key not in backends:
        backends[key] = get_backend(name, **options)
    _pin(_threads(threads, worker or distributed.get_worker()))
    return backends[key]


def _pin(threads: int) -> None:
    """numba's threads for this thread (numba keeps the count per thread) and BLAS's for
    the process (threadpoolctl; set again only when the count changes)."""
    global _blas_threads
    import numba

    from fastrank.kernels.cpu import start_threads

    start_threads()  # before numba's pool starts: it then waits passively (see there)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if _blas_threads != threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
        _blas_threads = threads


def _threads(threads: int | None, worker) -> int:
    """``threads``, or the cores of ``worker``'s host shared among the Dask threads of all
    workers there (several worker processes per node are the rule: one would otherwise
    take every core, as many times over as there are processes)."""
    if threads:
        return threads
    from distributed.comm import get_address_host

    host = get_address_host(worker.address)
    here = sum(n for address, n in worker.client.nthreads().items()
               if get_address_host(address) == host)
    return max(1, blas.cores() // max(here, 1))
