"""The depth loop: push H through the layers of one network on a backend, rescale
unnormalised homogeneous networks with a float64 log-norm, and hand out the
measurements of the scheduled layers, a stretch of them at a time (fastrank.rows)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fastrank import measures, tuning
from fastrank.backends import get_backend
from fastrank.backends.base import Backend, Stretch
from fastrank.codes import REASONS, VANISHED
from fastrank.rows import Row, Rows
from fastrank.spec import Network, Schedule

#: Every 10 layers and 50 log-spaced ones (Schedule's defaults); frozen, so shareable.
DEFAULT_SCHEDULE = Schedule()


class RunFailed(Exception):
    """A run whose representation stopped being usable (non-finite or all zero), or whose
    spectrum an eigensolver did not converge on (the GPU's).

    Raised by :func:`iter_rows`, kept in :attr:`Trajectory.failure` by :func:`simulate`,
    and recorded as a failed run (with the reason) by a sweep, which goes on.

    Parameters
    ----------
    layer : int
        The first layer at which H was non-finite or zero (or could not be measured).
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
    *,
    tangents: int = 0,
    qr_every: int = 1,
) -> Iterator[tuple[int, Rows | RunFailed]]:
    """Run several seeds of one network together; yield (seed index, Rows) for each
    stretch of scheduled layers, seed by seed, and (seed index, RunFailed) once for a
    seed that stopped, after its last rows (nothing after that).

    A stretch is as many measured layers as take about tuning.STRETCH_S (one at first,
    with the input's row, doubling while they take less): the backend runs a whole
    stretch in one call where it can, and the rows of a stretch are measured in one
    compiled pass (on a GPU, on the device, the stretch's rows copied to the host while
    the next stretch runs: one stretch is in flight while the previous one is handed
    out). A seed whose H turned non-finite or zero, or whose spectrum's eigensolver did
    not converge, stops there. Memory is that of two layers per seed whatever the depth.
    Unnormalised linear/ReLU networks are rescaled to unit Frobenius norm after every
    layer (and the input), the log of each factor summed in float64, so any depth
    neither overflows nor underflows. With ``tangents`` > 0, every row also holds the
    tangents' log growth and the running estimate of the Jacobians' leading Lyapunov
    exponents (fastrank.tangents; re-orthonormalised every ``qr_every`` layers).
    """
    backend = backend or get_backend("cpu")
    method = resolve_method(method, network.dtype)
    batch = backend.start(network, seeds, tangents=tangents, qr_every=qr_every)
    reported = np.zeros(len(batch.seeds), bool)
    points, tiers = schedule.points(network.depth), schedule.tiers(network.depth)
    size, at = 1, 0
    pending = None  # the stretch measuring while the next one is started
    while at < len(points) or pending is not None:
        started = None
        if at < len(points) and tiers[at]:
            end = at + 1
            # the input's row rides along with the first stretch: it runs no layer
            last = at + size + int(points[at] == 0)
            while end < min(len(points), last) and tiers[end]:
                end += 1
            started = (points[at:end], time.perf_counter(),
                       backend.measure_stretch(batch, points[at:end], method, taus))
            at = end
        if pending is not None:
            stretch_points, began, collect = pending
            stretch = collect()
            size = _next_size(size, time.perf_counter() - began, stretch.spectra[0].nbytes)
            blocks = _full_tier(network, stretch_points, stretch, taus)
            yield from _with_failures(network, blocks, stretch.failed_layer, stretch.reason,
                                      reported)
        pending = started
        if started is None and at < len(points):  # a Gram-tier point, once nothing is pending
            blocks = _gram_tier(network, batch, backend, int(points[at]), len(taus))
            at += 1
            yield from _with_failures(network, blocks, batch.failed_layer, batch.reason,
                                      reported)


def _with_failures(network: Network, blocks, failed_layer, reason, reported):
    """(seed index, Rows) for each seed's block, then (seed index, RunFailed) once for a
    seed that has stopped and was not reported before."""
    for i, block in enumerate(blocks):
        if block is not None:
            yield i, block
        if failed_layer[i] >= 0 and not reported[i]:
            reported[i] = True
            yield i, RunFailed(int(failed_layer[i]),
                               failure_reason(int(reason[i]), network))


def _next_size(size: int, seconds: float, point_bytes: int) -> int:
    """Measured layers in the next stretch: doubled while a stretch takes under half of
    tuning.STRETCH_S, halved when it takes over twice that, and never holding more than
    tuning.STRETCH_BYTES of spectra."""
    if seconds < tuning.STRETCH_S / 2:
        size *= 2
    elif seconds > 2 * tuning.STRETCH_S:
        size //= 2
    return max(1, min(size, tuning.STRETCH_BYTES // max(point_bytes, 1)))


def _full_tier(network: Network, points, stretch: Stretch, taus) -> list[Rows | None]:
    """Per seed, the Rows of a stretch (None where a seed has none): a seed has a row at
    each point its log-norm was recorded (NaN after it stopped). The measures are the
    backend's, or come from one compiled pass per shape of H."""
    spectra, log_norms = stretch.spectra, stretch.log_norms
    n_points, n_seeds, k = spectra.shape
    if stretch.measures is not None:
        table = {name: values.reshape(n_points * n_seeds, *values.shape[2:])
                 for name, values in stretch.measures.items()}
    else:
        table = _host_measures(network, points, spectra, log_norms, taus)
    if stretch.tangent_logs is not None:
        table.update(_tangent_measures(np.asarray(points), stretch.tangent_logs))
    # seed-major copies, so that a seed's rows are one slice of each (a view, not a
    # gather per measure and seed: a GPU batch has a thousand seeds)
    per_seed = {name: np.ascontiguousarray(
                    values.reshape(n_points, n_seeds, *values.shape[1:]).swapaxes(0, 1))
                for name, values in table.items()}
    spectra = np.ascontiguousarray(spectra.swapaxes(0, 1))
    log_norms = np.ascontiguousarray(log_norms.T)
    rows = (~np.isnan(log_norms)).sum(axis=1)  # rows stop where a seed stopped
    layers, tiers = np.asarray(points, np.int64), np.ones(n_points, np.int64)
    return [Rows(layers[:m], spectra[i, :m], log_norms[i, :m],
                 {name: values[i, :m] for name, values in per_seed.items()}, tiers[:m])
            if m else None for i, m in enumerate(rows.tolist())]


def _tangent_measures(layers: np.ndarray, logs: np.ndarray) -> dict:
    """The tangents' rows from their log growth ``logs`` (..., K) at ``layers`` (one per
    leading entry of ``logs``): tangent_log_norm, and jacobian_exponents (the growth per
    layer; NaN at layer 0), flattened to (rows, K)."""
    k = logs.shape[-1]
    per_layer = layers.reshape(-1, *(1,) * (logs.ndim - 1)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        exponents = np.where(per_layer > 0, logs / per_layer, np.nan)
    return {"tangent_log_norm": logs.reshape(-1, k),
            "jacobian_exponents": exponents.reshape(-1, k)}


def _host_measures(network: Network, points, spectra, log_norms, taus) -> dict:
    """Every measure of a stretch's spectra, (points * seeds) values each (NaN, or -1
    for the counts, where a seed has no row), by one compiled pass per shape of H."""
    n_points, n_seeds, k = spectra.shape
    shapes = [(network.features(int(p)), network.batch) for p in points]
    flat = spectra.reshape(n_points * n_seeds, k)
    table = {name: np.full(n_points * n_seeds, np.nan) for name in measures.SCALARS}
    table["numerical_rank"] = np.full(n_points * n_seeds, -1, np.int64)
    table["rank_tau"] = np.full((n_points * n_seeds, len(taus)), -1, np.int64)
    for shape in set(shapes):
        at = np.repeat([s == shape for s in shapes], n_seeds)
        at &= ~np.isnan(log_norms.reshape(-1))
        if at.any():
            kk = min(shape)
            for name, values in measures.all_measures(flat[at, :kk], shape, network.dtype,
                                                      taus).items():
                table[name][at] = values
    return table


def _gram_tier(network: Network, batch, backend: Backend, point: int,
               n_taus: int) -> list[Rows | None]:
    """Per seed, the one Gram-tier row at ``point`` (None for a seed stopped by then)."""
    if point:
        backend.advance(batch, point)
    blocks: list[Rows | None] = [None] * len(batch.seeds)
    stats = {i: backend.gram_stats(batch, i) for i in batch.alive()}
    logs = batch.tangent_logs()
    for i in batch.alive():  # without a seed whose eigensolve did not converge here
        values = measures.gram_measures(*stats[i], network.batch, n_taus)
        if logs is not None:
            values.update({name: v[0] for name, v in
                           _tangent_measures(np.array([point]), logs[i][None]).items()})
        blocks[i] = Rows.of([Row(point, np.empty(0), float(batch.log_norm[i]), values, 0)])
    return blocks


def iter_rows(
    network: Network,
    seed: int = 0,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Iterator[Row]:
    """The measured layers of one seed, a Row each; raises RunFailed where the network
    stops."""
    for _, item in iter_batch(network, [seed], schedule, method, taus, backend):
        if isinstance(item, RunFailed):
            raise item
        yield from item


@dataclass
class Trajectory:
    """The measurements of one run, as arrays with one entry per measured layer.

    Every measure of fastrank.measures.SCALARS is an attribute as well
    (``traj.soft_rank``, ``traj.numerical_rank``, ...), and with tangents
    ``traj.tangent_log_norm`` and ``traj.jacobian_exponents``, float64 (m, K).

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
        Measure name -> float64 (m,) array ((m, K) for the tangents').
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
    *,
    tangents: int = 0,
    qr_every: int = 1,
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
    tangents : int
        Tangent directions carried through the layers' Jacobians (fastrank.tangents):
        each Trajectory then has ``tangent_log_norm`` and ``jacobian_exponents``.
    qr_every : int
        Layers between the tangents' re-orthonormalisations.

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
    blocks: list[list[Rows]] = [[] for _ in seeds]
    failures: list[RunFailed | None] = [None] * len(seeds)
    for i, item in iter_batch(network, seeds, schedule, method, taus, backend,
                              tangents=tangents, qr_every=qr_every):
        if isinstance(item, RunFailed):
            failures[i] = item
        else:
            blocks[i].append(item)
    return [_trajectory(network, s, b, f, len(taus))
            for s, b, f in zip(seeds, blocks, failures, strict=True)]


def simulate(
    network: Network,
    seed: int = 0,
    schedule: Schedule = DEFAULT_SCHEDULE,
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
    *,
    tangents: int = 0,
    qr_every: int = 1,
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
    tangents, qr_every : int
        Tangent directions and their re-orthonormalisation (see :func:`simulate_many`).

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
    return simulate_many(network, [seed], schedule, method, taus, backend,
                         tangents=tangents, qr_every=qr_every)[0]


def _trajectory(network, seed, blocks: list[Rows], failure, n_taus: int) -> Trajectory:
    rows = Rows.concat(blocks) if blocks else Rows.of([])
    return Trajectory(
        network=network,
        seed=seed,
        layer=rows.layer,
        spectrum=rows.spectrum,
        log_norm=rows.log_norm,
        rank_tau=rows.measures["rank_tau"].reshape(len(rows), n_taus),
        tier=rows.tier,
        measures={m: v for m, v in rows.measures.items() if m != "rank_tau"},
        failure=failure,
    )
