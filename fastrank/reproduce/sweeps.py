"""A claim's sweep at a scale, and running it into its results file: the TOML of
examples/ read as ``fastrank sweep --config`` reads it, the quick overrides applied, and
the file resumed when it holds exactly that sweep (recomputed when the config changed)."""

from __future__ import annotations

import time
from pathlib import Path

from fastrank.reproduce.common import Claim
from fastrank.spec import Sweep

SCALES = ("quick", "full")


def check_scale(scale: str) -> None:
    """Raise ValueError unless ``scale`` is one of SCALES."""
    if scale not in SCALES:
        raise ValueError(f"invalid scale {scale!r}: choose quick or full")


def examples_dir() -> Path:
    """The claim configs: examples/ of the source tree, installed as fastrank.examples."""
    from importlib.resources import files

    path = Path(str(files("fastrank.examples")))
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no examples folder; pass --examples DIR")
    return path


def claim_sweep(claim: Claim, scale: str = "full", examples: Path | None = None) -> Sweep:
    """The Sweep of a claim at a scale: its TOML file read as `fastrank sweep --config`
    reads it, with the quick overrides applied for ``scale='quick'``."""
    from fastrank.options import build_sweep, read_config

    check_scale(scale)
    values = read_config(str(Path(examples or examples_dir()) / claim.config))
    if scale == "quick":
        values.update(claim.quick)
    return build_sweep(values)


def run_claim(claim: Claim, scale: str, results_dir: Path, *, overwrite: bool = False,
              examples: Path | None = None) -> tuple[Sweep, Path, float]:
    """Run (or resume) a claim's sweep into ``results_dir/claimN-SCALE.h5``:
    (sweep, path, seconds)."""
    from fastrank.runner import run_sweep

    sweep = claim_sweep(claim, scale, examples)
    path = Path(results_dir) / f"claim{claim.number}-{scale}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        overwrite = not _holds(path, sweep)  # the config changed since: recompute
    start = time.perf_counter()
    run_sweep(sweep, path, overwrite=overwrite, resume=not overwrite)
    return sweep, path, time.perf_counter() - start


def _holds(path: Path, sweep: Sweep) -> bool:
    """Whether the results file at ``path`` is (a part of) exactly this sweep."""
    from fastrank import store

    try:
        with store.open(path) as results:
            return results.sweep == sweep
    except (OSError, ValueError):
        return False
