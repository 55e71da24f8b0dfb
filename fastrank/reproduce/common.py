"""What every claim module shares: the records of a claim and of its outcome, the
verdict wording, the theory-agreement rule, number and Markdown formatting, and the
figure helpers. Nothing here knows a particular claim."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrank.spec import Sweep

#: agreement with a theory prediction: |measured - predicted| < Z standard errors
#: (one rule for every claim that compares with theory, and for the report's summary)
Z = 4.0


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (docs/reproduction.md) and its recipe: the sweep (a file
    in examples/), the quick-scale overrides, the thresholds of its verdict (``limits``,
    a frozen dataclass of the claim's module), the analysis that measures, judges and
    draws it, and the criterion text written from the same ``limits``."""

    number: int
    title: str
    config: str
    quick: dict
    limits: Any
    analyse: Callable[[Any, Outcome, Path], None]
    criterion: Callable[[Any], str]

    def criterion_text(self) -> str:
        """The report's criterion sentence, from the thresholds the verdict uses."""
        return self.criterion(self.limits)


@dataclass
class SummaryRow:
    """One line of the summary table."""

    claim: int
    configuration: str
    measured: str
    theory: str
    verdict: str


@dataclass
class Outcome:
    """What one claim's reproduction produced."""

    claim: Claim
    sweep: Sweep
    results: Path
    seconds: float
    rows: list[SummaryRow] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # Markdown blocks
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    reproduced: bool = True


def verdict(ok: bool, note: str = "") -> str:
    """The verdict cell: reproduced or not, with an optional note in parentheses."""
    text = "**reproduced**" if ok else "**not reproduced**"
    return f"{text} ({note})" if note else text


# Numbers and tables --------------------------------------------------------------------


def num(x: float | None, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, exponent form when tiny or huge."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


def sci(x: float) -> str:
    """A threshold such as 1e-9 as written in prose: ``1e-9``, not ``1e-09``."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def percent(fraction: float) -> str:
    """0.15 as ``15 %``."""
    return f"{fraction * 100:g} %"


def mean_sd(values, digits: int = 3) -> str:
    """Mean ± standard deviation over seeds (non-finite values left out)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "n/a"
    if v.size == 1:
        return num(v[0], digits)
    return f"{num(v.mean(), digits)} ± {num(v.std(ddof=1), 2)}"


def estimate(value: float, se: float) -> str:
    """A fitted value ± its standard error."""
    return f"{value:.4g} ± {se:.2g}"


def md_row(cells) -> str:
    """One Markdown table line ('|' inside cells escaped)."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def md_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    return "\n".join([md_row(headers), "|" + "---|" * len(headers), *map(md_row, rows)])


def range_text(values) -> str:
    """``8..64`` for several values, ``8`` for one."""
    values = sorted(set(values))
    if len(values) == 1:
        return str(values[0])
    return f"{values[0]}..{values[-1]}"


def seeds_text(runs) -> str:
    """``1 seed`` or ``N seeds``."""
    return f"{len(runs)} seed{'s' if len(runs) != 1 else ''}"


def config_text(sweep: Sweep) -> str:
    """One line naming a sweep: activations, norms, width, batch, depth, seeds."""
    nets = sweep.networks()
    acts = sorted({n.activation for n in nets})
    norms = sorted({n.norm for n in nets})
    widths = [n.width for n in nets if isinstance(n.width, int)]
    batch = ("N = d" if all(n.batch == n.width for n in nets)
             else f"N = {range_text([n.batch for n in nets])}")
    return ", ".join(["/".join(acts) + ", norm " + "/".join(norms),
                      f"d = {range_text(widths)}", batch,
                      f"L = {range_text([n.depth for n in nets])}",
                      f"{len(sweep.seeds)} seeds"])


# Figures -------------------------------------------------------------------------------


def new_figure(ncols: int, width: float = 5.2, height: float = 4.0):
    """A headless figure with one row of ``ncols`` panels: (figure, flat axes)."""
    from fastrank.plot import _mpl

    _, Figure = _mpl()
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False).ravel()


def save_figure(fig, fig_dir: Path, name: str, caption: str, outcome: Outcome) -> None:
    """Write ``fig`` as ``fig_dir/name`` and list it, with its caption, in the outcome."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_dir / name, dpi=110)
    outcome.figures.append((name, caption))
