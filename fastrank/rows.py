"""Measured rows on their way from the depth loop to memory or a results file: one
measured layer (Row), and consecutive measured layers of one run as arrays (Rows).

The depth loop hands out Rows blocks, a stretch of layers at a time: at small widths a
sweep measures tens of thousands of layers, and a Python object per layer and per
consumer cost more than computing them. A Row is what a block holds at one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastrank.measures import SCALARS

#: The rows' measures of a run that carries tangents (fastrank.tangents), (K,) a row.
TANGENT_MEASURES = ("tangent_log_norm", "jacobian_exponents")


@dataclass
class Row:
    """Measurements of one layer: its spectrum, log-norm and every derived measure."""

    layer: int
    spectrum: np.ndarray  # float64 singular values, descending, min(d, N) of them
    log_norm: float  # log ||H_layer||_F of the un-rescaled network
    measures: dict  # measures.SCALARS by name, "rank_tau": int64 (len(taus),), and with
    # tangents "tangent_log_norm" and "jacobian_exponents": float64 (K,)
    tier: int = 1  # 1: full spectrum; 0: Gram tier only (spectrum empty, see measures)


@dataclass
class Rows:
    """Consecutive measured layers of one run, as arrays with one entry per row.

    ``spectrum`` is (m, k), NaN where a row has fewer than k values (Gram-tier rows have
    none); ``measures`` maps every name of fastrank.measures.SCALARS to (m,),
    ``rank_tau`` to int64 (m, len(taus)) and, where the run carries tangents,
    ``tangent_log_norm`` and ``jacobian_exponents`` to float64 (m, K).
    """

    layer: np.ndarray  # int64 (m,)
    spectrum: np.ndarray  # float64 (m, k)
    log_norm: np.ndarray  # float64 (m,)
    measures: dict
    tier: np.ndarray  # int64 (m,)

    def __len__(self) -> int:
        return len(self.layer)

    def __getitem__(self, rows: slice) -> Rows:
        """The rows ``rows`` (a slice) as a block of their own."""
        return Rows(self.layer[rows], self.spectrum[rows], self.log_norm[rows],
                    {name: v[rows] for name, v in self.measures.items()}, self.tier[rows])

    def __iter__(self):
        """Row by row (a Row's spectrum without the NaN padding)."""
        for j in range(len(self)):
            s = self.spectrum[j]
            measures = {name: self.measures[name][j].item() for name in SCALARS}
            measures.update({name: v[j] for name, v in self.measures.items()
                             if name not in SCALARS})
            yield Row(int(self.layer[j]), s[~np.isnan(s)], float(self.log_norm[j]), measures,
                      int(self.tier[j]))

    def spectra(self, k: int) -> np.ndarray:
        """The singular values as ``k`` columns: NaN-padded, or cut (only NaN padding may
        lie past ``k``); the block's own array when it has ``k`` already."""
        if self.spectrum.shape[1] == k:
            return self.spectrum
        out = np.full((len(self), k), np.nan)
        kept = min(self.spectrum.shape[1], k)
        out[:, :kept] = self.spectrum[:, :kept]
        return out

    @classmethod
    def of(cls, rows: list[Row]) -> Rows:
        """Single rows stacked into a block."""
        k = max((np.size(r.spectrum) for r in rows), default=0)
        spectrum = np.full((len(rows), k), np.nan)
        for j, r in enumerate(rows):
            s = np.asarray(r.spectrum, np.float64).ravel()
            spectrum[j, : s.size] = s
        measures = {name: np.array([r.measures[name] for r in rows], np.float64)
                    for name in SCALARS}
        measures["numerical_rank"] = measures["numerical_rank"].astype(np.int64)
        measures["rank_tau"] = (np.array([np.asarray(r.measures["rank_tau"], np.int64)
                                          for r in rows], np.int64).reshape(len(rows), -1)
                                if rows else np.empty((0, 0), np.int64))
        for name in TANGENT_MEASURES:
            if rows and name in rows[0].measures:
                measures[name] = np.array([r.measures[name] for r in rows], np.float64)
        return cls(np.array([r.layer for r in rows], np.int64), spectrum,
                   np.array([r.log_norm for r in rows], np.float64), measures,
                   np.array([r.tier for r in rows], np.int64))

    @classmethod
    def concat(cls, blocks: list[Rows]) -> Rows:
        """Blocks one after another (spectra NaN-padded to the widest)."""
        if len(blocks) == 1:
            return blocks[0]
        k = max(b.spectrum.shape[1] for b in blocks)
        return cls(np.concatenate([b.layer for b in blocks]),
                   np.concatenate([b.spectra(k) for b in blocks]),
                   np.concatenate([b.log_norm for b in blocks]),
                   {name: np.concatenate([b.measures[name] for b in blocks])
                    for name in blocks[0].measures},
                   np.concatenate([b.tier for b in blocks]))
