"""The depth loop: push H through the layers of one network on a backend, rescale
unnormalised homogeneous networks with a float64 log-norm, and hand out a Row of
measurements at every scheduled layer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fastrank import measures
from fastrank.backends import get_backend
from fastrank.backends.base import Backend
from fastrank.codes import REASONS, VANISHED
from fastrank.spec import Network, Schedule

#: Every 10 layers and 50 log-spaced ones (Schedule's defaults); frozen, so shareable.
DEFAULT_SCHEDULE = Schedule()


@dataclass
class Row:
    """Measurements of one layer: its spectrum, log-norm and every derived measure."""

    layer: int
    spectrum: np.ndarray  # float64 singular values, descending, min(d, N) of them
    log_norm: float  # log ||H_layer||_F of the un-rescaled network
    measures: dict  # measures.SCALARS by name, plus "rank_tau": int64 array (len(taus),)
    tier: int = 1  # 1: full spectrum; 0: Gram tier only (spectrum empty, see measures)


class RunFailed(Exception):
    """A run whose representation stopped being usable (non-finite or all zero).

    Raised by :func:`iter_rows`, kept in :attr:`Trajectory.failure` by :func:`simulate`,
    and recorded as a failed run (with the reason) by a sweep, which goes on.

    Parameters
    ----------
    layer : int
        The first layer at which H was non-finite or zero.
    reason : str
        Why, in words (fastrank.codes.REASONS).

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=8, depth=3000, activation="tanh", gain=0.5)
    >>> traj = fastrank.simulate(net, 0, fastrank.Schedule(every=None, log=None))
    >>> traj.failure.reason[:49]
    'the representation underflowed to zero in float32'
    """

    def __init__(self, layer: int, reason: str):
        super().__init__(f"layer {layer}: {reason}")
        self.layer = layer
        self.reason = reason


def failure_reason(code: int, network: Network) -> str:
    """The words for a failure code (fastrank.codes.REASONS), naming the cause where the
    network makes it plain: an unnormalised network that is not rescaled (tanh is not
    homogeneous) and vanished has underflowed, its norm shrinking every layer."""
    if code == VANISHED and network.norm == "none" and not network.rescaled:
        return (f"the representation underflowed to zero in {network.dtype}: an "
                f"unnormalised {network.activation} network is not rescaled (it is not "
                f"homogeneous), so with gain {network.weight_gain:g} its norm can shrink "
                "every layer until nothing is left")
    return REASONS[code]


def resolve_method(method: str, dtype: str) -> str:
    """``auto`` -> float64 Gram for float32 networks, SVD for float64 ones (whose rank
    tolerance lies below what a Gram matrix resolves)."""
    if method == "auto":
        return "gram" if dtype == "float32" else "svd"
    return method


def iter_batch(
    network: Network,
    seeds,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Iterator[tuple[int, Row | RunFailed]]:
    """Run several seeds of one network together; yield (seed index, Row) at each
    scheduled layer, seed by seed, and (seed index, RunFailed) once for a seed whose H
    turned non-finite or zero (it yields nothing after that).

    Memory is that of two layers per seed whatever the depth. Unnormalised linear/ReLU
    networks are rescaled to unit Frobenius norm after every layer (and the input), the
    log of each factor summed in float64, so any depth neither overflows nor underflows.
    """
    backend = backend or get_backend("cpu")
    method = resolve_method(method, network.dtype)
    batch = backend.start(network, seeds)
    reported: set[int] = set()
    points, tiers = schedule.points(network.depth), schedule.tiers(network.depth)
    for point, tier in zip(points, tiers, strict=True):
        if point:
            backend.advance(batch, int(point), method if tier else None)
        live = []
        for i in range(len(batch.seeds)):
            if i in reported:
                continue
            if batch.failed_layer[i] >= 0:
                reported.add(i)
                yield i, RunFailed(int(batch.failed_layer[i]),
                                   failure_reason(int(batch.reason[i]), network))
            else:
                live.append(i)
        if not live:
            continue
        if tier:  # the spectra and measures of every live seed at once
            shape = (network.widths[point - 1] if point else network.in_dim, network.batch)
            spectra = backend.spectra(batch, live, method)
            measured = measures.all_measures(spectra, shape, network.dtype, taus)
            for j, i in enumerate(live):
                values = {name: v[j] for name, v in measured.items()}
                yield i, Row(int(point), spectra[j], float(batch.log_norm[i]), values, 1)
        else:
            for i in live:
                stats = backend.gram_stats(batch, i)
                values = measures.gram_measures(*stats, network.batch, len(taus))
                yield i, Row(int(point), np.empty(0), float(batch.log_norm[i]), values, 0)


def iter_rows(
    network: Network,
    seed: int = 0,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Iterator[Row]:
    """The Rows of one seed; raises RunFailed where the network stops."""
    for _, item in iter_batch(network, [seed], schedule, method, taus, backend):
        if isinstance(item, RunFailed):
            raise item
        yield item


@dataclass
class Trajectory:
    """The measurements of one run, as arrays with one entry per measured layer.

    Every measure of fastrank.measures.SCALARS is an attribute as well
    (``traj.soft_rank``, ``traj.numerical_rank``, ...).

    Parameters
    ----------
    network : Network
        The architecture that ran.
    seed : int
        Its seed.
    layer : numpy.ndarray
        int64 (m,): the measured layers, 0 being the input.
    spectrum : numpy.ndarray
        float64 (m, k): singular values at each measured layer, descending, NaN where a
        layer has fewer (Gram-tier rows have none).
    log_norm : numpy.ndarray
        float64 (m,): log ||H||_F of the network without rescaling.
    rank_tau : numpy.ndarray
        int64 (m, len(taus)).
    tier : numpy.ndarray
        int64 (m,): 1 where the full spectrum was computed, 0 for the Gram tier only.
    measures : dict
        Measure name -> float64 (m,) array.
    failure : RunFailed or None
        Why and where the run stopped early, if it did.

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=16, depth=100, activation="relu", norm="bn")
    >>> traj = fastrank.simulate(net, 0, fastrank.Schedule(every=50, log=None))
    >>> traj.layer.tolist(), traj.spectrum.shape
    ([0, 50, 100], (3, 16))
    >>> bool(traj.soft_rank[-1] > 1.0) and traj.failure is None
    True
    """

    network: Network
    seed: int
    layer: np.ndarray
    spectrum: np.ndarray  # (layers, k), NaN-padded where a layer has fewer values
    log_norm: np.ndarray
    rank_tau: np.ndarray  # (layers, len(taus))
    tier: np.ndarray  # (layers,): 1 full spectrum, 0 Gram tier only
    measures: dict  # measures.SCALARS name -> array
    failure: RunFailed | None = None

    def __getattr__(self, name):
        try:
            return self.__dict__["measures"][name]
        except KeyError:
            raise AttributeError(name) from None


def simulate_many(
    network: Network,
    seeds,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> list[Trajectory]:
    """Run several seeds of one network together and collect their measurements.

    The seeds run side by side (one per thread on the CPU, all at once on a GPU) and give
    exactly the numbers each would give alone. A failed run keeps its earlier rows.

    Parameters
    ----------
    network : Network
        The architecture.
    seeds : iterable of int
        One run per seed.
    schedule : Schedule
        The layers to measure (default: every 10 and 50 log-spaced ones).
    method : {"auto", "gram", "svd"}
        How spectra are computed: ``auto`` is the float64 Gram matrix for float32
        networks and LAPACK's SVD for float64 ones.
    taus : tuple of float
        Thresholds of ``rank_tau``.
    backend : Backend, optional
        Where to run: ``fastrank.backends.get_backend("cpu")`` (default) or
        ``"gpu"``.

    Returns
    -------
    list of Trajectory
        One per seed, in the order of ``seeds``.

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=16, depth=200, activation="relu", norm="bn")
    >>> runs = fastrank.simulate_many(net, seeds=range(4))
    >>> [t.seed for t in runs], int(runs[0].layer[-1])
    ([0, 1, 2, 3], 200)
    """
    seeds = [int(s) for s in seeds]
    rows: list[list[Row]] = [[] for _ in seeds]
    failures: list[RunFailed | None] = [None] * len(seeds)
    for i, item in iter_batch(network, seeds, schedule, method, taus, backend):
        if isinstance(item, RunFailed):
            failures[i] = item
        else:
            rows[i].append(item)
    return [_trajectory(network, s, r, f, len(taus))
            for s, r, f in zip(seeds, rows, failures, strict=True)]


def simulate(
    network: Network,
    seed: int = 0,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Trajectory:
    """Run one network and collect its measurements in memory.

    For interactive use; a sweep (:func:`fastrank.sweep`) streams its rows to a results
    file instead. A failed run keeps the rows before it (``traj.failure`` says why).

    Parameters
    ----------
    network : Network
        The architecture.
    seed : int
        Seeds the weights and the input; the numbers depend on nothing else (not the
        thread count, the device or the other seeds run beside it).
    schedule : Schedule
        The layers to measure (default: every 10 and 50 log-spaced ones).
    method : {"auto", "gram", "svd"}
        How spectra are computed (see :func:`simulate_many`).
    taus : tuple of float
        Thresholds of ``rank_tau``.
    backend : Backend, optional
        Where to run (default the CPU).

    Returns
    -------
    Trajectory

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=32, depth=500, activation="linear")
    >>> traj = fastrank.simulate(net, seed=0)
    >>> round(float(traj.soft_rank[-1]), 3)  # a deep linear network collapses to rank 1
    1.0
    """
    return simulate_many(network, [seed], schedule, method, taus, backend)[0]


def _trajectory(network, seed, rows: list[Row], failure, n_taus: int) -> Trajectory:
    k = max((r.spectrum.size for r in rows), default=0)
    spectrum = np.full((len(rows), k), np.nan)
    for i, r in enumerate(rows):
        spectrum[i, : r.spectrum.size] = r.spectrum
    return Trajectory(
        network=network,
        seed=seed,
        layer=np.array([r.layer for r in rows], dtype=np.int64),
        spectrum=spectrum,
        log_norm=np.array([r.log_norm for r in rows]),
        rank_tau=np.array([r.measures["rank_tau"] for r in rows], dtype=np.int64).reshape(
            len(rows), n_taus
        ),
        tier=np.array([r.tier for r in rows], dtype=np.int64),
        measures={m: np.array([r.measures[m] for r in rows]) for m in measures.SCALARS},
        failure=failure,
    )
