"""One run of a results file (:class:`Run`): its spec, its status and the arrays of its
committed rows, read through the :class:`fastrank.store.reader.Results` that made it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from fastrank.errors import one_line
from fastrank.measures import SCALARS
from fastrank.spec import Network
from fastrank.store import schema
from fastrank.store.layout import run_status
from fastrank.store.opening import DAMAGE, DamagedFile, damage_as
from fastrank.version import install_hint

if TYPE_CHECKING:
    from fastrank.store.reader import Results


class NoTangents(AttributeError):
    """A tangent measure (``tangent_log_norm``, ``jacobian_exponents``) asked of a run
    whose sweep ran without tangents (``--tangents``). An AttributeError, so that
    ``hasattr(run, "jacobian_exponents")`` says whether a run has them."""


def _measure_property(name: str, doc: str) -> property:
    """A read-only property of Run that returns ``run.measure(name)``, documented by
    ``doc`` (the getter carries it, so help() and the API page show it)."""

    def get(self) -> np.ndarray:
        return self.measure(name)

    get.__name__ = get.__qualname__ = name
    get.__doc__ = doc
    return property(get)


class Run:
    """One (network, seed) run: its spec, status and the arrays of its committed rows.

    Got from a :class:`Results` (``results[i]``, iteration, ``results.select``), not
    built directly. Arrays have one entry per committed row (a measured layer, see
    :class:`fastrank.Schedule`), are read on first access and kept until
    :meth:`refresh`. Every measure is a property (``run.soft_rank``,
    ``run.condition_number``, ...; ``run.jacobian_exponents`` where the sweep ran with
    tangents); :meth:`measure` reads one by name.

    Attributes
    ----------
    id : str
        The run's name, its index zero-padded to 5 digits (``"00042"``).
    index : int
        Its position in the file.
    network : Network
        The architecture that ran.
    seed : int
        Its seed.
    label : str
        Short name of its configuration (:meth:`fastrank.Network.label`).
    rows : int
        Committed rows, as of the last refresh.
    expected_rows : int
        Rows of the complete run.
    failed_layer : int or None
        The layer at which the run failed (non-finite or zero H, or a spectrum the GPU
        eigensolver did not converge on), else None.
    failure : str
        Why it failed, in words ("" if it did not).
    taus : numpy.ndarray
        The thresholds of ``rank_tau``.

    Examples
    --------
    >>> import fastrank
    >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20], "norm": ["none", "bn"]},
    ...                        seeds=(0, 1))
    >>> results = fastrank.open(fastrank.sweep(sweep, "runs.h5"))
    >>> run = results[2]
    >>> run
    <fastrank.Run 00002 linear/bn d=8 N=8 L=20 seed=0: complete, 21/21 rows>
    >>> run.network.norm, run.seed, run.status, run.failed_layer
    ('bn', 0, 'complete', None)
    >>> run.layer[:5], run.spectrum.shape, run.rank_tau.shape
    (array([0, 1, 2, 3, 4]), (21, 8), (21, 1))
    >>> round(float(run.soft_rank[-1]), 2), round(float(results[0].soft_rank[-1]), 2)
    (2.19, 1.07)
    >>> results.close()
    """

    def __init__(self, results: Results, index: int):
        self._results, self.index, self.id = results, index, schema.run_id(index)
        c = results._columns
        try:
            self.network = Network.from_dict(json.loads(schema.text(c["network"][index])))
        except (*DAMAGE, TypeError, ValueError) as exc:
            raise DamagedFile(f"{results.path}: run {self.id}: its network does not read back "
                              f"({type(exc).__name__}: {one_line(exc)})") from None
        self.seed, self.label = int(c["seed"][index]), schema.text(c["label"][index])
        self.expected_rows = int(c["expected_rows"][index])
        self.taus = results._layout.taus
        self._load()

    def refresh(self) -> None:
        """Re-read the status and drop cached arrays, to see newly committed rows."""
        self._results._read_status()
        self._load()

    def _load(self) -> None:
        """Status from the Results' last reading; cached arrays dropped."""
        self._arrays: dict[str, np.ndarray] = {}
        r, i = self._results, self.index
        self.rows, failed_layer = int(r._rows[i]), int(r._failed_layer[i])
        self.failure = r._failure[i]
        self.failed_layer = failed_layer if failed_layer >= 0 else None

    @property
    def status(self) -> str:
        """``pending``, ``running`` (some rows), ``complete`` or ``failed``."""
        return run_status(self.rows, self.expected_rows, self.failed_layer is not None)

    def measure(self, name: str) -> np.ndarray:
        """Committed rows of dataset ``name``: layer, spectrum, log_norm, rank_tau, tier, a
        scalar measure (soft_rank, ...) or, where the sweep ran with tangents,
        tangent_log_norm or jacobian_exponents; KeyError for another name, NoTangents (an
        AttributeError) for a tangent measure of a sweep without, DamagedFile when the
        data do not read back as written (checksum). Gram-tier rows (tier 0) have no
        spectrum: -1 for the integer measures, NaN for the others that need one.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20]},
        ...                        schedule=fastrank.Schedule(every=10, log=None, cheap_every=5))
        >>> with fastrank.open(fastrank.sweep(sweep, "measure.h5")) as results:
        ...     run = results[0]
        ...     print(run.measure("layer"), run.measure("tier"), run.measure("numerical_rank"))
        [ 0  5 10 15 20] [1 0 1 0 1] [ 8 -1  7 -1  5]
        """
        names = schema.row_datasets(self._results.sweep)
        if name not in names:
            if name in schema.TANGENT_DATASETS:
                raise NoTangents(f"{self._results.path} has no {name}: its sweep ran without "
                                 "--tangents")
            raise KeyError(f"unknown measure {name!r}: choose from {', '.join(names)}")
        if name not in self._arrays:
            if not self._results._f.id.valid:
                raise ValueError(f"{self._results.path} is closed: run {self.id} cannot read "
                                 f"{name} (read it before closing, or open the file again)")
            r = self._results
            with damage_as(f"{r.path}: run {self.id}: {name} does not read back as written"):
                self._arrays[name] = r._read(lambda: r._layout.read(self.index, name, self.rows))
        return self._arrays[name]

    layer = _measure_property("layer", "The measured layer of each row, int64 (rows,); 0 is "
                              "the input.")
    spectrum = _measure_property(
        "spectrum", "Singular values of H at each row, descending, float64 (rows, k); NaN "
                    "where a row has fewer (Gram-tier rows have none).")
    log_norm = _measure_property(
        "log_norm", "log ||H||_F of the un-rescaled network at each row, float64 (rows,).")
    rank_tau = _measure_property(
        "rank_tau", "Number of eigenvalues of H H^T above tau times their mean, int64 "
                    "(rows, len(taus)); -1 on Gram-tier rows.")
    tier = _measure_property(
        "tier", "Per row, int64: 1 for the full spectrum, 0 for the Gram tier only.")
    tangent_log_norm = _measure_property(
        "tangent_log_norm", "Log growth of each of the sweep's K tangents through the "
                            "layers' Jacobians (with QR, the sums of log |R_ii|), float64 "
                            "(rows, K); NoTangents (an AttributeError) for a sweep without "
                            "tangents.")
    jacobian_exponents = _measure_property(
        "jacobian_exponents", "Running estimate of the K leading Lyapunov exponents of the "
                              "product of the layers' Jacobians (tangent_log_norm / layer), "
                              "float64 (rows, K), NaN at layer 0; NoTangents (an "
                              "AttributeError) for a sweep without tangents.")

    def to_xarray(self):
        """This run as an xarray.Dataset (dims layer, sv, tau, and tangent where the sweep
        ran with tangents) of its committed rows (also while the file is written); integer
        measures' missing values are NaN. Needs xarray.

        Examples
        --------
        >>> import fastrank
        >>> sweep = fastrank.Sweep(grid={"width": [8], "depth": [20]})
        >>> with fastrank.open(fastrank.sweep(sweep, "run_xarray.h5")) as results:
        ...     ds = results[0].to_xarray()
        >>> dict(ds.sizes), ds.attrs["label"]
        ({'layer': 21, 'sv': 8, 'tau': 1}, 'linear/none d=8 N=8 L=20')
        >>> float(ds.soft_rank.sel(layer=0).round(2))
        4.06
        """
        try:
            import xarray
        except ImportError:
            raise ImportError(f"Run.to_xarray needs xarray: {install_hint('analysis')}") from None
        sweep = self._results.sweep
        data = {name: (schema.dims(name, "layer"), schema.missing_as_nan(name, self.measure(name)),
                       {"long_name": schema.LONG_NAMES[name][0]})
                for name in schema.row_datasets(sweep) if name != "layer"}
        coords = {"layer": self.layer, "tau": self.taus,
                  **({"tangent": np.arange(sweep.tangents)} if sweep.tangents else {})}
        return xarray.Dataset(data, coords=coords,
                              attrs={"run": self.id, "label": self.label, "seed": self.seed})

    def __repr__(self) -> str:
        rows = f"{self.rows}/{self.expected_rows} rows"
        return f"<fastrank.Run {self.id} {self.label} seed={self.seed}: {self.status}, {rows}>"


#: The scalar measures a Gram-tier row lacks and what it holds instead, for the
#: docstrings of Run's measure properties (fastrank.measures.gram_measures).
_GRAM_TIER_MISSING = {"numerical_rank": "; -1 on Gram-tier rows",
                      "effective_rank": "; NaN on Gram-tier rows",
                      "condition_number": "; NaN on Gram-tier rows"}
for _name in SCALARS:  # run.soft_rank, ..., run.condition_number
    setattr(Run, _name, _measure_property(_name, (
        f"``{_name}`` of each row ({schema.LONG_NAMES[_name][0]}), "
        f"{'int64' if _name in schema.INT_DATASETS else 'float64'} (rows,)"
        f"{_GRAM_TIER_MISSING.get(_name, '')}.")))
del _name
