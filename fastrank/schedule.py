"""Which layers of a run are measured, and how fully: :class:`Schedule` (public as
``fastrank.Schedule``; fastrank.spec re-exports it for the Sweep that holds one)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from fastrank.errors import SpecError
from fastrank.validate import listed, positive_int


@functools.lru_cache(maxsize=64)
def _full_points(schedule: Schedule, depth: int) -> np.ndarray:
    bad = [x for x in schedule.layers if x > depth]
    if bad:
        raise SpecError(f"invalid layers {bad}: beyond depth {depth}")
    pts = {0, depth, *schedule.layers}
    if schedule.every:
        pts.update(range(0, depth + 1, schedule.every))
    if schedule.log:
        pts.update(np.rint(np.geomspace(1, depth, schedule.log)).astype(int).tolist())
    return _read_only(np.array(sorted(pts), dtype=np.int64))


@functools.lru_cache(maxsize=64)
def _points(schedule: Schedule, depth: int) -> np.ndarray:
    full = _full_points(schedule, depth)
    if not schedule.cheap_every:
        return full
    return _read_only(np.union1d(full, np.arange(0, depth + 1, schedule.cheap_every,
                                                 dtype=np.int64)))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Schedule:
    """Which layers of a run are measured, and how fully.

    Every ``every`` layers, ``log`` log-spaced layers, and ``layers`` get the full
    spectrum and every measure; every ``cheap_every`` layers (between those) get the Gram
    tier only: soft rank, stable rank, orthogonality gap and log-norm, for the price of
    one Gram product. Layer 0 (the input) and the last layer always get the full
    spectrum. Log-spaced layers measure a deep run densely near the input, where the
    rank changes fastest, and sparsely after: the defaults give 139 rows at depth 1000.
    Frozen and validated when built.

    Parameters
    ----------
    every : int or None
        Measure every ``every`` layers (0, every, 2 every, ...); None for none.
    log : int or None
        Also measure ``log`` layers spaced evenly in log(layer) between 1 and the depth
        (rounded; duplicates merge); None or 0 for none.
    layers : tuple of int
        Also measure these layers (each at most the depth).
    cheap_every : int or None
        Also record the Gram tier every ``cheap_every`` layers; None (default) for none.

    Examples
    --------
    >>> import fastrank
    >>> fastrank.Schedule(every=25, log=None).points(100)
    array([  0,  25,  50,  75, 100])
    >>> s = fastrank.Schedule(every=None, log=5, layers=(7,), cheap_every=20)
    >>> s.points(100)
    array([  0,   1,   3,   7,  10,  20,  32,  40,  60,  80, 100])
    >>> s.tiers(100)  # 0: Gram tier only
    array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1])
    >>> len(fastrank.Schedule().points(1000))  # the default schedule
    139
    """

    every: int | None = 10
    log: int | None = 50
    layers: tuple[int, ...] = ()
    cheap_every: int | None = None

    def __post_init__(self):
        if self.every is not None:
            object.__setattr__(self, "every", positive_int("every", self.every))
        if self.log is not None:
            object.__setattr__(self, "log", positive_int("log", self.log, minimum=0))
        layers = listed("layers", self.layers)
        object.__setattr__(self, "layers", tuple(positive_int("layers", x, minimum=0)
                                                 for x in layers))
        if self.cheap_every is not None:
            object.__setattr__(self, "cheap_every", positive_int("cheap_every", self.cheap_every))

    def full_points(self, depth: int) -> np.ndarray:
        """Sorted layers (int64) of a network of ``depth`` layers that get the full
        spectrum; SpecError for ``layers`` beyond the depth. Read-only: made once per
        (schedule, depth), as a sweep asks for them in several places."""
        return _full_points(self, int(depth))

    def points(self, depth: int) -> np.ndarray:
        """Sorted distinct layers measured at all (either tier): the rows of a run
        (read-only, made once per (schedule, depth))."""
        return _points(self, int(depth))

    def tiers(self, depth: int) -> np.ndarray:
        """Per row of points(depth): 1 for the full spectrum, 0 for the Gram tier only."""
        return np.isin(self.points(depth), self.full_points(depth)).astype(np.int64)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict, as results files store them (:meth:`from_dict`
        inverts it)."""
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Schedule:
        """The Schedule of a dict written by :meth:`to_dict` (missing keys: None)."""
        return cls(d.get("every"), d.get("log"), tuple(d.get("layers", ())), d.get("cheap_every"))
