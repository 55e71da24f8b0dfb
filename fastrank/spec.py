"""What to simulate: validated, frozen descriptions of a network and of a sweep, whose
measurement schedule is a :class:`Schedule` (fastrank.schedule, re-exported here).
Option text is parsed into their values by fastrank.options.

Every invalid value raises :class:`SpecError` with one line that names the option
and what it accepts, so the CLI can print it as it is. The docstrings of Network and
Sweep are the public reference (docs/api.md is generated from them).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fastrank import codes, inputs
from fastrank.errors import SpecError
from fastrank.schedule import Schedule
from fastrank.validate import choice, listed, number, positive_int

ACTIVATIONS = tuple(codes.ACTIVATIONS)
NORMS = tuple(codes.NORMS)
ORDERS = ("norm-act", "act-norm")
INITS = ("gaussian", "uniform", "orthogonal")
DTYPES = ("float32", "float64")
METHODS = ("auto", "gram", "svd")

#: Activations f with f(a x) = a f(x) for a > 0: their networks can be rescaled freely.
HOMOGENEOUS = ("linear", "relu")
#: Default weight variance in units of 1/d_in, chosen to preserve the signal's scale.
DEFAULT_GAIN = {"linear": 1.0, "relu": 2.0, "tanh": 1.0}


@dataclass(frozen=True)
class Network:
    """One random network: ``H <- act(norm(W H))`` repeated ``depth`` times.

    H is the representation of a batch, features x samples (d x N), starting from the
    input H_0; every layer draws a fresh random weight matrix W (see
    :func:`fastrank.weights`). A Network only describes the architecture: it is frozen,
    hashable and validated when built (an invalid value raises :class:`SpecError` at
    once), and with a seed it fixes every number of a run (:func:`fastrank.simulate`).
    Its fields are the options of a sweep's grid (:class:`Sweep`) and of the command
    line.

    Parameters
    ----------
    width : int or tuple of int
        Output width d of every layer, or a per-layer tuple of output widths (length
        ``depth``; a tuple of equal widths is stored as the one number).
    depth : int
        Number of layers L.
    batch : int, optional
        Batch size N, the columns of H; defaults to the input dimension (N = d, as in
        the paper).
    activation : {"linear", "relu", "tanh"}
        The nonlinearity.
    norm : {"none", "bn", "bn-rms", "ln"}
        The normalisation: ``bn`` is torch's BatchNorm1d in training mode (each feature
        centred and scaled over the batch), ``bn-rms`` the paper's BN (each feature to
        unit mean square, no centring), ``ln`` layer norm (each sample over the
        features).
    order : {"norm-act", "act-norm"}
        ``norm-act`` normalises before the activation (Linear -> BN -> ReLU),
        ``act-norm`` after it.
    gamma : float
        ``inf`` (default) for the plain chain; a finite ``gamma`` > 0 makes the residual
        chain ``H <- norm((I + gamma W) H)``, which needs a constant width.
    init : {"gaussian", "uniform", "orthogonal"}
        The weight distribution (see :func:`fastrank.weights`).
    gain : float, optional
        Weight variance in units of 1/d_in; default 2 for ReLU (He), else 1, the values
        that preserve the signal's scale.
    dtype : {"float32", "float64"}
        Precision of H and the weights (measures are computed in float64 either way).
    input : str or path
        H_0: ``gaussian`` (i.i.d. standard normal), ``orthogonal`` (orthogonal rows or
        columns, scaled to the Gaussian's norm), a file holding a (samples, features)
        array, ``FILE.npy`` or ``FILE.h5:DATASET`` (its first ``batch`` samples are the
        batch; float32 or float64, or float16 or integers, converted exactly to
        ``dtype``), or a data set shipped with scikit-learn, ``sklearn:digits``
        (standardised; needs the ``data`` extra).
    input_dim : int, optional
        Rows of a random input (default: the first width); a file's features set it.
    eps : float
        The epsilon (> 0) the normalisations add to the variance (or mean square).

    Raises
    ------
    SpecError
        When a value is out of range or the combination is invalid.

    Examples
    --------
    >>> import fastrank
    >>> net = fastrank.Network(width=64, depth=1000, activation="relu", norm="bn")
    >>> net.label()
    'relu/bn d=64 N=64 L=1000'
    >>> net.batch, net.weight_gain  # N = d and He's gain by default
    (64, 2.0)
    >>> fastrank.Network(width=(16, 8, 8), depth=3).widths  # per-layer widths
    (16, 8, 8)
    >>> fastrank.Network(width=8, norm="batch")
    Traceback (most recent call last):
        ...
    fastrank.errors.SpecError: invalid norm 'batch': choose one of none, bn, bn-rms, ln
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
        set_(self, "depth", positive_int("depth", self.depth))
        if isinstance(self.width, (list, tuple)):
            widths = tuple(positive_int("width", w) for w in self.width)
            if len(widths) != self.depth:
                raise SpecError(
                    f"invalid width: a per-layer list needs depth={self.depth} entries, "
                    f"got {len(widths)}"
                )
            set_(self, "width", widths if len(set(widths)) > 1 else widths[0])
        else:
            set_(self, "width", positive_int("width", self.width))
        choice("activation", self.activation, ACTIVATIONS)
        choice("norm", self.norm, NORMS)
        choice("order", self.order, ORDERS)
        choice("init", self.init, INITS)
        choice("dtype", self.dtype, DTYPES)
        set_(self, "gamma", number("gamma", self.gamma, positive=True, allow_inf=True))
        if self.gain is not None:
            set_(self, "gain", number("gain", self.gain, positive=True))
        set_(self, "eps", number("eps", self.eps, positive=True))  # 0: BN of equal values is 0/0
        if isinstance(self.input, os.PathLike):
            set_(self, "input", os.fspath(self.input))
        if not isinstance(self.input, str) or not self.input:
            raise SpecError(f"invalid input {self.input!r}: choose gaussian, orthogonal or a file")
        if self.input not in inputs.RANDOM_INPUTS:
            path, _ = inputs.input_path(self.input)
            if (inputs.named_input(self.input) is None
                    and path.suffix not in (".npy", ".h5", ".hdf5")):
                raise SpecError(
                    f"invalid input {self.input!r}: choose gaussian, orthogonal, "
                    "FILE.npy, FILE.h5:DATASET or sklearn:digits"
                )
            if self.input_dim is not None:
                raise SpecError("invalid input_dim: it is set by the input array's features")
        if self.input_dim is not None:
            set_(self, "input_dim", positive_int("input_dim", self.input_dim))
        in_dim = None
        if self.batch is None or self.residual:
            try:
                in_dim = self.in_dim
            except SpecError:  # a stored network's input file that has moved since
                if not _REBUILDING.get():
                    raise
        batch = in_dim if self.batch is None else self.batch
        if batch is not None:
            set_(self, "batch", positive_int("batch", batch))
        # each layer's input width against its output width
        if self.residual and in_dim is not None and any(
            a != b for a, b in zip((in_dim, *self.widths), self.widths, strict=False)
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
        """Rows of the input H_0 (its dimension): ``input_dim``, else the input array's
        features, else the first width."""
        if self.input_dim is not None:
            return self.input_dim
        if self.input in inputs.RANDOM_INPUTS:
            return self.width if isinstance(self.width, int) else self.width[0]
        return inputs.input_array_shape(self.input)[1]

    @property
    def residual(self) -> bool:
        """Whether this is the residual chain ``H <- norm((I + gamma W) H)`` (finite gamma)."""
        return not math.isinf(self.gamma)

    def features(self, layer: int) -> int:
        """Rows of H at ``layer`` (0 = the input): its width, or the input dimension.

        Examples
        --------
        >>> import fastrank
        >>> net = fastrank.Network(width=(64, 32), input_dim=10, depth=2)
        >>> [net.features(layer) for layer in range(3)]
        [10, 64, 32]
        """
        return self.widths[layer - 1] if layer else self.in_dim

    @property
    def weight_gain(self) -> float:
        """The weight variance in units of 1/d_in in use: ``gain``, else the activation's
        default (2 for relu, 1 otherwise)."""
        return self.gain if self.gain is not None else DEFAULT_GAIN[self.activation]

    @property
    def rescaled(self) -> bool:
        """Whether H is rescaled to unit norm after every layer: unnormalised linear and
        ReLU networks are (so no depth overflows); ``log_norm`` keeps the true norm."""
        return self.norm == "none" and self.activation in HOMOGENEOUS

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (a per-layer width as a list), as results files
        store them; :meth:`from_dict` turns it back into the same Network.

        Examples
        --------
        >>> import fastrank
        >>> net = fastrank.Network(width=16, depth=100, norm="bn")
        >>> d = net.to_dict()
        >>> d["width"], d["norm"], d["gain"]
        (16, 'bn', None)
        >>> fastrank.Network.from_dict(d) == net
        True
        """
        d = dataclasses.asdict(self)
        if isinstance(self.width, tuple):
            d["width"] = list(self.width)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        """The Network of a dict written by :meth:`to_dict` (validated like the constructor,
        except against an input array's file that has moved since)."""
        d = dict(d)
        if isinstance(d.get("width"), list):
            d["width"] = tuple(d["width"])
        with _rebuilding():
            return cls(**d)

    def label(self, show: Iterable[str] = ()) -> str:
        """Short human name of the configuration, e.g. ``relu/bn d=64 N=64 L=1000``, plus
        ``name=value`` for each option of ``show`` it leaves out (those that vary in a
        sweep: see :func:`varying`), so that no two configurations of a sweep share one.

        Examples
        --------
        >>> import fastrank
        >>> net = fastrank.Network(width=32, depth=500, activation="tanh", gamma=0.5)
        >>> net.label()
        'tanh/none d=32 N=32 L=500 gamma=0.5'
        >>> net.label(show=("dtype", "gain"))
        'tanh/none d=32 N=32 L=500 gamma=0.5 dtype=float32 gain=1'
        """
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


#: Options of a Network that a sweep may vary, in the order runs are laid out.
GRID_OPTIONS = tuple(f.name for f in dataclasses.fields(Network))
#: Options that Network.label shows only when asked to (when they vary).
LABEL_EXTRAS = ("order", "dtype", "gain", "input", "input_dim", "eps")
#: Most runs one sweep may hold: beyond it the list of runs alone would not fit in memory.
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

    What :func:`fastrank.sweep` runs into one results file, and what the file records
    (``Results.sweep``), so that a killed sweep can be resumed. Every combination is
    validated when the Sweep is built, so a bad value fails before the first run, not
    halfway through. Runs are laid out networks first (the grid's options varying in
    the order given, the last fastest) and seeds innermost.

    Parameters
    ----------
    grid : dict
        Network option name (see :class:`Network`) -> list or tuple of values (a single
        value stands for a one-value list); options left out take the Network default.
    seeds : iterable of int
        The seeds (0 <= seed < 2**64) every network is run with.
    schedule : Schedule
        The layers to measure (default: every 10 and 50 log-spaced ones).
    method : {"auto", "gram", "svd"}
        How spectra are computed: ``auto`` is the float64 Gram matrix for float32
        networks and SVD for float64 ones (``gram`` cannot resolve float64's rank
        tolerance, so it is refused with float64).
    taus : tuple of float
        Thresholds of ``rank_tau``, each strictly between 0 and 1.
    tangents : int
        Tangent directions carried through every layer's Jacobian beside H
        (fastrank.tangents): their log growth (``tangent_log_norm``) and the running
        estimate of the leading Lyapunov exponents of the Jacobians' product
        (``jacobian_exponents``) at every measured layer; 0 (the default) for none.
    qr_every : int
        Layers between re-orthonormalisations of the tangents (QR; with 2 or more).

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [32, 64], "norm": ["none", "bn"]},
    ...                        seeds=range(3))
    >>> sweep.n_runs
    12
    >>> [net.label() for net in sweep.networks()]
    ['linear/none d=32 N=32 L=1000', 'linear/bn d=32 N=32 L=1000',
     'linear/none d=64 N=64 L=1000', 'linear/bn d=64 N=64 L=1000']
    >>> fastrank.Sweep(grid={"widht": [8]})
    Traceback (most recent call last):
        ...
    fastrank.errors.SpecError: unknown option 'widht': choose one of width, depth, ...
    """

    grid: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    schedule: Schedule = Schedule()
    method: str = "auto"
    taus: tuple[float, ...] = (0.1,)
    tangents: int = 0
    qr_every: int = 1

    def __post_init__(self):
        if not isinstance(self.grid, Mapping):
            raise SpecError(f"invalid grid {self.grid!r}: a dict of option name -> values")
        if not isinstance(self.schedule, Schedule):
            raise SpecError(f"invalid schedule {self.schedule!r}: a fastrank.Schedule")
        grid = {}
        for name, values in self.grid.items():
            if name not in GRID_OPTIONS:
                raise SpecError(f"unknown option {name!r}: choose one of {', '.join(GRID_OPTIONS)}")
            given = values if isinstance(values, (list, tuple)) else (values,)
            values = tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in given)
            if not values:
                raise SpecError(f"invalid {name}: the list of values is empty")
            grid[name] = values
        object.__setattr__(self, "grid", grid)
        seeds = tuple(positive_int("seed", s, minimum=0) for s in listed("seed", self.seeds))
        if not seeds:
            raise SpecError("invalid seed: the list of seeds is empty")
        if any(s >= 2**64 for s in seeds):
            raise SpecError("invalid seed: seeds must be below 2**64")
        object.__setattr__(self, "seeds", seeds)
        choice("method", self.method, METHODS)
        taus = tuple(number("tau", t) for t in listed("tau", self.taus))
        if not taus:
            raise SpecError("invalid tau: the list of thresholds is empty")
        if any(not 0 < t < 1 for t in taus):
            raise SpecError(f"invalid tau {list(taus)}: each must lie strictly between 0 and 1")
        object.__setattr__(self, "taus", taus)
        object.__setattr__(self, "tangents", positive_int("tangents", self.tangents, minimum=0))
        object.__setattr__(self, "qr_every", positive_int("qr-every", self.qr_every))
        if self.n_runs > MAX_RUNS:
            raise SpecError(f"invalid sweep: {self.n_runs:,} runs (the option lists' "
                            f"product times the seeds); one file holds at most {MAX_RUNS:,}")
        networks = self.networks()  # every combination validated now, not halfway through
        for net in networks if self.tangents else ():  # in_dim may read an input file
            if self.tangents > net.in_dim * net.batch:
                raise SpecError(f"invalid tangents {self.tangents}: more directions than the "
                                f"{net.in_dim * net.batch} entries of the input of "
                                f"{net.label()}")
        if not _REBUILDING.get():  # files written before repeats were refused still open
            _refuse_repeat("seed", seeds)
            _refuse_repeat("tau", taus)
            _refuse_same_networks(grid, networks)
        if self.method == "gram" and "float64" in grid.get("dtype", ()):
            raise SpecError(
                "invalid method 'gram' with dtype float64: a Gram matrix squares the "
                "singular values, so it cannot resolve float64's rank tolerance; use svd "
                "or auto")

    @property
    def n_runs(self) -> int:
        """Number of runs, ``len(self.runs())``, without building them."""
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    def networks(self) -> list[Network]:
        """Every combination of the grid's values as a Network, in file order."""
        names = list(self.grid)
        return [Network(**dict(zip(names, combo, strict=True)))
                for combo in itertools.product(*self.grid.values())]

    def runs(self) -> list[tuple[Network, int]]:
        """Every (network, seed) pair, seeds innermost: the runs of the results file, in order.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"norm": ["none", "bn"]}, seeds=(0, 1))
        >>> [(net.norm, seed) for net, seed in sweep.runs()]
        [('none', 0), ('none', 1), ('bn', 0), ('bn', 1)]
        """
        return [(net, seed) for net in self.networks() for seed in self.seeds]

    def to_dict(self) -> dict:
        """The sweep as a JSON-ready dict (grid, seeds, schedule, method, taus, and the
        tangents where there are any), as results files store it; :meth:`from_dict`
        inverts it."""
        grid = {k: [list(v) if isinstance(v, tuple) else v for v in vs]
                for k, vs in self.grid.items()}
        tangents = {"tangents": self.tangents, "qr_every": self.qr_every} if self.tangents else {}
        return {
            "grid": grid,
            "seeds": list(self.seeds),
            "schedule": self.schedule.to_dict(),
            "method": self.method,
            "taus": list(self.taus),
            **tangents,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sweep:
        """The Sweep of a dict written by :meth:`to_dict` (validated like the constructor,
        except against input array files that have moved since, and for values listed twice,
        which older versions accepted)."""
        grid = {k: tuple(tuple(v) if isinstance(v, list) else v for v in vs)
                for k, vs in d["grid"].items()}
        with _rebuilding():
            return cls(grid=grid, seeds=tuple(d["seeds"]),
                       schedule=Schedule.from_dict(d["schedule"]), method=d["method"],
                       taus=tuple(d["taus"]), tangents=d.get("tangents", 0),
                       qr_every=d.get("qr_every", 1))


#: True while from_dict rebuilds a network or sweep a results file stored: its input
#: array files may have moved since (the file is still read), and values listed twice
#: were accepted before they were refused.
_REBUILDING = contextvars.ContextVar("rebuilding", default=False)


@contextlib.contextmanager
def _rebuilding():
    token = _REBUILDING.set(True)
    try:
        yield
    finally:
        _REBUILDING.reset(token)


def _refuse_repeat(option: str, values: tuple) -> None:
    """Refuse a value listed twice: it would make the same runs (or rank_tau column) twice."""
    seen = set()
    for value in values:
        if value in seen:
            raise _listed_twice(option, value)
        seen.add(value)


def _listed_twice(option: str, value) -> SpecError:
    return SpecError(f"invalid {option} {value!r}: listed twice (list each value once)")


def _refuse_same_networks(grid: dict, networks: list[Network]) -> None:
    """Refuse a grid two of whose combinations are one network (product order): a value
    listed twice, or two values that build the same network, such as a width and a
    per-layer width of that width throughout."""
    first: dict[Network, int] = {}
    for i, net in enumerate(networks):
        j = first.setdefault(net, i)
        if j == i:
            continue
        where = np.unravel_index([j, i], [len(values) for values in grid.values()])
        for (name, values), (a, b) in zip(grid.items(), where, strict=True):
            if a != b:
                if values[a] == values[b]:
                    raise _listed_twice(name, values[a])
                raise SpecError(f"invalid {name} {values[a]!r} and {values[b]!r}: the same "
                                f"network ({net.label()}); list it once")
