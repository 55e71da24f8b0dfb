"""What to simulate: validated, frozen descriptions of a network, a measurement
schedule and a sweep, and the parsing of option values written on the command line
or in a TOML file.

Every invalid value raises :class:`SpecError` with one line that names the option
and what it accepts, so the CLI can print it as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastrank import codes

ACTIVATIONS = tuple(codes.ACTIVATIONS)
NORMS = tuple(codes.NORMS)
ORDERS = ("norm-act", "act-norm")
INITS = ("gaussian", "uniform", "orthogonal")
DTYPES = ("float32", "float64")
INPUTS = ("gaussian", "orthogonal")
METHODS = ("auto", "gram", "svd")

#: Activations f with f(a x) = a f(x) for a > 0: their networks can be rescaled freely.
HOMOGENEOUS = ("linear", "relu")
#: Default weight variance in units of 1/d_in, chosen to preserve the signal's scale.
DEFAULT_GAIN = {"linear": 1.0, "relu": 2.0, "tanh": 1.0}


class SpecError(ValueError):
    """An option has a value fastrank cannot use; the message names both."""


def _choice(option: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise SpecError(f"invalid {option} {value!r}: choose one of {', '.join(allowed)}")
    return value


def _positive_int(option: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpecError(f"invalid {option} {value!r}: must be an integer >= {minimum}")
    return int(value)


def _number(option: str, value, *, positive: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise SpecError(f"invalid {option} {value!r}: must be a number")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise SpecError(f"invalid {option} {value!r}: must be a finite number")
    if positive and value <= 0:
        raise SpecError(f"invalid {option} {value!r}: must be > 0")
    return value


def input_path(spec: str) -> tuple[Path, str | None]:
    """Split an input array spec ``file.npy`` or ``file.h5:dataset`` into path and dataset."""
    path, _, dataset = spec.partition(":") if re.search(r"\.(h5|hdf5):", spec) else (spec, "", "")
    return Path(path), (dataset or None)


#: Real data sets that ship inside scikit-learn (no download), usable as the input
#: ``sklearn:NAME`` (needs the ``data`` extra); standardised per feature, see
#: fastrank.init.load_input_array. digits: 1797 8x8 images, 64 features.
SKLEARN_INPUTS = ("digits", "iris", "wine", "breast_cancer")


def named_input(spec: str) -> str | None:
    """The data set name of an input spec ``sklearn:NAME``, else None (SpecError for an
    unknown name)."""
    if not spec.startswith("sklearn:"):
        return None
    name = spec[len("sklearn:"):]
    if name not in SKLEARN_INPUTS:
        raise SpecError(
            f"invalid input {spec!r}: scikit-learn data sets are "
            + ", ".join(f"sklearn:{n}" for n in SKLEARN_INPUTS)
        )
    return name


@dataclass(frozen=True)
class Network:
    """One random network: ``H <- act(norm(W H))`` repeated ``depth`` times.

    ``width`` is one number or a per-layer tuple of output widths (length ``depth``).
    ``input`` is ``gaussian``, ``orthogonal``, a path to an array of shape
    (samples, features): ``file.npy`` or ``file.h5:dataset``, or a data set shipped with
    scikit-learn, ``sklearn:digits`` (standardised); its first ``batch`` samples are the
    batch. ``batch`` defaults to the input dimension (N = d, as in the paper).
    ``gamma`` < inf makes the residual chain ``H <- norm((I + gamma W) H)``.
    ``gain`` is the weight variance in units of 1/d_in (default: 2 for ReLU, else 1).
    """

    width: int | tuple[int, ...] = 32
    depth: int = 1000
    batch: int | None = None
    activation: str = "linear"
    norm: str = "none"
    order: str = "norm-act"
    gamma: float = math.inf
    init: str = "gaussian"
    gain: float | None = None
    dtype: str = "float32"
    input: str = "gaussian"
    input_dim: int | None = None
    eps: float = 1e-5

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "depth", _positive_int("depth", self.depth))
        if isinstance(self.width, (list, tuple)):
            widths = tuple(_positive_int("width", w) for w in self.width)
            if len(widths) != self.depth:
                raise SpecError(
                    f"invalid width: a per-layer list needs depth={self.depth} entries, "
                    f"got {len(widths)}"
                )
            set_(self, "width", widths if len(set(widths)) > 1 else widths[0])
        else:
            set_(self, "width", _positive_int("width", self.width))
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("norm", self.norm, NORMS)
        _choice("order", self.order, ORDERS)
        _choice("init", self.init, INITS)
        _choice("dtype", self.dtype, DTYPES)
        set_(self, "gamma", _number("gamma", self.gamma, positive=True, allow_inf=True))
        if self.gain is not None:
            set_(self, "gain", _number("gain", self.gain, positive=True))
        set_(self, "eps", _number("eps", self.eps))
        if self.eps < 0:
            raise SpecError(f"invalid eps {self.eps!r}: must be >= 0")
        if not isinstance(self.input, str) or not self.input:
            raise SpecError(f"invalid input {self.input!r}: choose gaussian, orthogonal or a file")
        if self.input not in INPUTS:
            path, _ = input_path(self.input)
            if named_input(self.input) is None and path.suffix not in (".npy", ".h5", ".hdf5"):
                raise SpecError(
                    f"invalid input {self.input!r}: choose gaussian, orthogonal, "
                    "FILE.npy, FILE.h5:DATASET or sklearn:digits"
                )
            if self.input_dim is not None:
                raise SpecError("invalid input_dim: it is set by the input array's features")
        if self.input_dim is not None:
            set_(self, "input_dim", _positive_int("input_dim", self.input_dim))
        set_(self, "batch", _positive_int("batch", self.in_dim if self.batch is None else self.batch))
        if self.residual and any(
            a != b for a, b in zip((self.in_dim, *self.widths), self.widths)
        ):
            raise SpecError("invalid gamma: a residual chain (gamma < inf) needs a constant width")

    # Derived properties -------------------------------------------------------------
    @functools.cached_property
    def widths(self) -> tuple[int, ...]:
        """Output width of each layer 1..depth (built once: per-layer callers at depth
        50,000 would otherwise rebuild a 50,000-long tuple on every call)."""
        if isinstance(self.width, tuple):
            return self.width
        return (self.width,) * self.depth

    @property
    def in_dim(self) -> int:
        """Rows of the input H_0: input_dim, else the array's features, else the first width."""
        if self.input_dim is not None:
            return self.input_dim
        if self.input in INPUTS:
            return self.width if isinstance(self.width, int) else self.width[0]
        from fastrank.init import input_array_shape

        return input_array_shape(self.input)[1]

    @property
    def residual(self) -> bool:
        return not math.isinf(self.gamma)

    @property
    def weight_gain(self) -> float:
        return self.gain if self.gain is not None else DEFAULT_GAIN[self.activation]

    @property
    def rescaled(self) -> bool:
        """Unnormalised homogeneous networks are rescaled to unit norm after every layer."""
        return self.norm == "none" and self.activation in HOMOGENEOUS

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.width, tuple):
            d["width"] = list(self.width)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        d = dict(d)
        if isinstance(d.get("width"), list):
            d["width"] = tuple(d["width"])
        return cls(**d)

    def label(self, show: Iterable[str] = ()) -> str:
        """Short human name of the configuration, e.g. ``relu/bn d=64 N=64 L=1000``, plus
        ``name=value`` for each option of ``show`` it leaves out (those that vary in a
        sweep: see :func:`varying`), so that no two configurations of a sweep share one."""
        width = self.width if isinstance(self.width, int) else "var"
        text = f"{self.activation}/{self.norm} d={width} N={self.batch} L={self.depth}"
        if self.residual:
            text += f" gamma={self.gamma:g}"
        if self.init != "gaussian":
            text += f" {self.init}"
        for name in LABEL_EXTRAS:
            if name in show:
                value = {"gain": self.weight_gain, "input_dim": self.in_dim}.get(
                    name, getattr(self, name))
                text += f" {name}={value:g}" if isinstance(value, float) else f" {name}={value}"
        return text


@dataclass(frozen=True)
class Schedule:
    """Where to measure: every ``every`` layers, ``log`` log-spaced layers, and ``layers``
    get the full spectrum; every ``cheap_every`` layers (between those) get the Gram tier
    only: soft rank, stable rank, orthogonality gap and log-norm, for the price of one
    Gram product. Layer 0 (the input) and the last layer always get the full spectrum.
    """

    every: int | None = 10
    log: int | None = 50
    layers: tuple[int, ...] = ()
    cheap_every: int | None = None

    def __post_init__(self):
        if self.every is not None:
            object.__setattr__(self, "every", _positive_int("every", self.every))
        if self.log is not None:
            object.__setattr__(self, "log", _positive_int("log", self.log, minimum=0))
        layers = tuple(_positive_int("layers", x, minimum=0) for x in self.layers)
        object.__setattr__(self, "layers", layers)
        if self.cheap_every is not None:
            object.__setattr__(self, "cheap_every", _positive_int("cheap_every", self.cheap_every))

    def full_points(self, depth: int) -> np.ndarray:
        """Sorted layers that get the full spectrum."""
        bad = [x for x in self.layers if x > depth]
        if bad:
            raise SpecError(f"invalid layers {bad}: beyond depth {depth}")
        pts = {0, depth, *self.layers}
        if self.every:
            pts.update(range(0, depth + 1, self.every))
        if self.log:
            pts.update(np.rint(np.geomspace(1, depth, self.log)).astype(int).tolist())
        return np.array(sorted(pts), dtype=np.int64)

    def points(self, depth: int) -> np.ndarray:
        """Sorted distinct layers measured at all (either tier): the rows of a run."""
        full = self.full_points(depth)
        if not self.cheap_every:
            return full
        return np.union1d(full, np.arange(0, depth + 1, self.cheap_every, dtype=np.int64))

    def tiers(self, depth: int) -> np.ndarray:
        """Per row of points(depth): 1 for the full spectrum, 0 for the Gram tier only."""
        return np.isin(self.points(depth), self.full_points(depth)).astype(np.int64)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Schedule:
        return cls(d.get("every"), d.get("log"), tuple(d.get("layers", ())), d.get("cheap_every"))


#: Options of a Network that a sweep may vary, in the order runs are laid out.
GRID_OPTIONS = tuple(f.name for f in dataclasses.fields(Network))
#: Options that Network.label shows only when asked to (when they vary).
LABEL_EXTRAS = ("order", "dtype", "gain", "input", "input_dim", "eps")
#: Most values one option may list, and most runs one sweep may hold: beyond these the
#: lists alone would not fit in memory (a range is refused before it is expanded).
MAX_VALUES = 1_000_000
MAX_RUNS = 10_000_000


def varying(networks: Iterable[Network]) -> tuple[str, ...]:
    """The options whose values differ between ``networks`` (for their labels)."""
    values: dict[str, set] = {name: set() for name in GRID_OPTIONS}
    for net in networks:
        for name in GRID_OPTIONS:
            values[name].add(getattr(net, name))
    return tuple(name for name, seen in values.items() if len(seen) > 1)


@dataclass(frozen=True)
class Sweep:
    """A sweep: the product of option lists, times seeds, measured on one schedule.

    ``grid`` maps Network option names to tuples of values; options left out take the
    Network default. ``method`` picks how spectra are computed (``auto``: float64 Gram
    for float32 networks, SVD for float64 ones) and ``taus`` the thresholds of rank_tau.
    """

    grid: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    schedule: Schedule = Schedule()
    method: str = "auto"
    taus: tuple[float, ...] = (0.1,)

    def __post_init__(self):
        grid = {}
        for name, values in self.grid.items():
            if name not in GRID_OPTIONS:
                raise SpecError(f"unknown option {name!r}: choose one of {', '.join(GRID_OPTIONS)}")
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            if not values:
                raise SpecError(f"invalid {name}: the list of values is empty")
            grid[name] = values
        object.__setattr__(self, "grid", grid)
        seeds = tuple(_positive_int("seed", s, minimum=0) for s in self.seeds)
        if not seeds:
            raise SpecError("invalid seed: the list of seeds is empty")
        if any(s >= 2**64 for s in seeds):
            raise SpecError("invalid seed: seeds must be below 2**64")
        object.__setattr__(self, "seeds", seeds)
        _choice("method", self.method, METHODS)
        taus = tuple(_number("tau", t) for t in self.taus)
        if any(not 0 < t < 1 for t in taus):
            raise SpecError(f"invalid tau {list(taus)}: each must lie strictly between 0 and 1")
        object.__setattr__(self, "taus", taus)
        if self.n_runs > MAX_RUNS:
            raise SpecError(f"invalid sweep: {self.n_runs:,} runs (the option lists' "
                            f"product times the seeds); one file holds at most {MAX_RUNS:,}")
        self.networks()  # validate every combination now, not halfway through the sweep
        if self.method == "gram" and "float64" in grid.get("dtype", ()):
            raise SpecError(
                "invalid method 'gram' with dtype float64: a Gram matrix squares the "
                "singular values, so it cannot resolve float64's rank tolerance; use svd "
                "or auto")

    @property
    def n_runs(self) -> int:
        """len(self.runs()), without building them."""
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    def networks(self) -> list[Network]:
        names = list(self.grid)
        return [Network(**dict(zip(names, combo))) for combo in itertools.product(*self.grid.values())]

    def runs(self) -> list[tuple[Network, int]]:
        """Every (network, seed) pair, seeds innermost: the runs of the results file, in order."""
        return [(net, seed) for net in self.networks() for seed in self.seeds]

    def to_dict(self) -> dict:
        grid = {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in self.grid.items()}
        return {
            "grid": grid,
            "seeds": list(self.seeds),
            "schedule": self.schedule.to_dict(),
            "method": self.method,
            "taus": list(self.taus),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sweep:
        grid = {k: tuple(tuple(v) if isinstance(v, list) else v for v in vs) for k, vs in d["grid"].items()}
        return cls(
            grid=grid,
            seeds=tuple(d["seeds"]),
            schedule=Schedule.from_dict(d["schedule"]),
            method=d["method"],
            taus=tuple(d["taus"]),
        )


# Parsing of option values -------------------------------------------------------------

_INT = re.compile(r"[0-9]+")  # ASCII digits only: int() refuses most other digits
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]+)(?::(x?)([0-9]+))?")


def parse_ints(option: str, text: str) -> list[int]:
    """``"32,64"``, ``"0-9"`` (inclusive), ``"0-100:10"`` (step) or ``"8-256:x2"`` (factor);
    at most MAX_VALUES values (counted before a range is expanded)."""
    values: list[int] = []
    for part in _split(option, text):
        if _INT.fullmatch(part):
            values.append(int(part))
            continue
        m = _INT_RANGE.fullmatch(part)
        if not m:
            raise SpecError(
                f"invalid {option} {part!r}: use integers, lists (32,64) or ranges (0-9, 8-256:x2)"
            )
        lo, hi, geometric, step = int(m[1]), int(m[2]), m[3] == "x", int(m[4] or 1)
        if hi < lo or step < 1 or (geometric and (step < 2 or lo < 1)):
            raise SpecError(f"invalid {option} range {part!r}: empty or non-increasing")
        if geometric:
            v = lo
            while v <= hi:
                values.append(v)
                v *= step
        else:
            count = (hi - lo) // step + 1
            if len(values) + count > MAX_VALUES:
                raise SpecError(f"invalid {option} {part!r}: {count:,} values; at most "
                                f"{MAX_VALUES:,} in one list")
            values.extend(range(lo, hi + 1, step))
    return values


def parse_floats(option: str, text: str) -> list[float]:
    """Comma-separated numbers; ``inf`` allowed."""
    out = []
    for part in _split(option, text):
        try:
            out.append(float(part))
        except ValueError:
            raise SpecError(f"invalid {option} {part!r}: must be a number") from None
    return out


def parse_words(option: str, text: str, allowed: Iterable[str] | None = None) -> list[str]:
    """Comma-separated names, each checked against ``allowed`` when given."""
    words = _split(option, text)
    if allowed is not None:
        for w in words:
            _choice(option, w, tuple(allowed))
    return words


def _split(option: str, text: str) -> list[str]:
    parts = [p.strip() for p in str(text).split(",")]
    if not text or any(not p for p in parts):
        raise SpecError(f"invalid {option} {text!r}: empty value in the list")
    return parts
