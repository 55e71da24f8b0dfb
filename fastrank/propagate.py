"""The depth loop: push H through the layers of one network on a backend, rescale
unnormalised homogeneous networks with a float64 log-norm, and hand out a Row of
measurements at every scheduled layer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fastrank import measures
from fastrank.backends.base import Backend, get_backend
from fastrank.spec import Network, Schedule


@dataclass
class Row:
    """Measurements of one layer: its spectrum, log-norm and every derived measure."""

    layer: int
    spectrum: np.ndarray  # float64 singular values, descending, min(d, N) of them
    log_norm: float  # log ||H_layer||_F of the un-rescaled network
    measures: dict  # measures.SCALARS by name, plus "rank_tau": int64 array (len(taus),)


class RunFailed(Exception):
    """The representation stopped being usable (non-finite or all zero) at ``layer``."""

    def __init__(self, layer: int, reason: str):
        super().__init__(f"layer {layer}: {reason}")
        self.layer = layer
        self.reason = reason


def resolve_method(method: str, dtype: str) -> str:
    """``auto`` -> float64 Gram for float32 networks, SVD for float64 ones (whose rank
    tolerance lies below what a Gram matrix resolves)."""
    if method == "auto":
        return "gram" if dtype == "float32" else "svd"
    return method


def iter_rows(
    network: Network,
    seed: int = 0,
    schedule: Schedule = Schedule(),
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Iterator[Row]:
    """Run one network layer by layer and yield a Row at each scheduled layer.

    Memory is that of two layers whatever the depth. Unnormalised linear/ReLU networks
    are rescaled to unit Frobenius norm after every layer (and the input), the log of
    each factor summed in float64, so that any depth neither overflows nor underflows.
    Raises RunFailed at the first layer whose H is non-finite or zero.
    """
    backend = backend or get_backend("cpu")
    method = resolve_method(method, network.dtype)
    points = schedule.points(network.depth)
    is_point = np.zeros(network.depth + 1, dtype=bool)
    is_point[points] = True
    h = backend.input(network, seed)
    log_norm = 0.0
    for layer in range(network.depth + 1):
        if layer:
            with np.errstate(over="ignore", invalid="ignore"):  # caught just below
                h, sumsq = backend.forward(network, seed, layer, h)
        else:
            sumsq = float(np.sum(np.square(np.asarray(h, dtype=np.float64))))
        if not np.isfinite(sumsq):
            raise RunFailed(layer, "non-finite values (overflow or NaN) in the representation")
        if sumsq == 0.0:
            raise RunFailed(layer, "the representation vanished (all entries zero)")
        if network.rescaled:
            log_norm += 0.5 * np.log(sumsq)
            backend.scale(h, 1.0 / np.sqrt(sumsq))
        else:
            log_norm = 0.5 * np.log(sumsq)
        if is_point[layer]:
            s = backend.spectrum(h, method)
            shape = (len(h), h.shape[1])
            yield Row(layer, s, log_norm, measures.all_measures(s, shape, network.dtype, taus))


@dataclass
class Trajectory:
    """Measurements of one run as arrays, one entry per measured layer."""

    network: Network
    seed: int
    layer: np.ndarray
    spectrum: np.ndarray  # (layers, k), NaN-padded where a layer has fewer values
    log_norm: np.ndarray
    rank_tau: np.ndarray  # (layers, len(taus))
    measures: dict  # measures.SCALARS name -> array
    failure: RunFailed | None = None

    def __getattr__(self, name):
        try:
            return self.__dict__["measures"][name]
        except KeyError:
            raise AttributeError(name) from None


def simulate(
    network: Network,
    seed: int = 0,
    schedule: Schedule = Schedule(),
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> Trajectory:
    """Run one network and collect its measurements in memory (for interactive use;
    sweeps stream rows to a file instead). A failed run keeps the rows before it."""
    rows: list[Row] = []
    failure = None
    try:
        rows.extend(iter_rows(network, seed, schedule, method, taus, backend))
    except RunFailed as exc:
        failure = exc
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
            len(rows), len(taus)
        ),
        measures={m: np.array([r.measures[m] for r in rows]) for m in measures.SCALARS},
        failure=failure,
    )


def simulate_many(
    network: Network,
    seeds,
    schedule: Schedule = Schedule(),
    method: str = "auto",
    taus: tuple[float, ...] = (0.1,),
    backend: Backend | None = None,
) -> list[Trajectory]:
    """One Trajectory per seed of the same network (the unit the backends batch)."""
    return [simulate(network, s, schedule, method, taus, backend) for s in seeds]
