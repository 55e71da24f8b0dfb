"""Reproduce the claims of the paper (Daneshmand, Kohler, Bach, Hofmann, Lucchi,
NeurIPS 2020, arXiv 2003.01652; docs/reproduction.md lists them): run the sweeps of
``examples/claim*.toml``, measure each claim's numbers from the results files, compare
them with fastrank.theory where there is a prediction, and write a Markdown report
with figures.

    fastrank reproduce                          # quick scale (CI-sized, ~10 s on 2 cores)
    fastrank reproduce --scale full --doc docs/reproduction.md

The TOML files are the full scale (``fastrank sweep --config examples/claimN_*.toml``
runs one of them alone); the quick scale applies the overrides in ``Claim.quick`` to
them (fewer seeds, widths and layers). Results files go to ``results_dir`` as
``claimN-SCALE.h5`` and are resumed when present (recomputed when their config
changed), so a rerun only redraws; pass ``overwrite=True`` (``--overwrite``) to
recompute anyway.

Estimators (the same as tests/test_theory.py): collapse rates and log-norm slopes are
pooled random-walk slopes over the seeds (fastrank.theory.pooled_collapse_rate,
pooled_growth) with standard errors from the theory's step variances; agreement means
|z| below ``common.Z``. Other numbers are means +- standard deviations over seeds.

Layout: one module per claim (``claimN_*.py``: its recipe, its thresholds as a
``Limits`` dataclass that both the verdict and the criterion text read, its analysis
and figures), registered in CLAIMS below; ``common`` holds what they share, ``sweeps``
runs a claim's sweep, ``markdown`` writes the report. Adding a claim is a new module
and a line in CLAIMS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastrank.reproduce import (
    claim1_linear_collapse,
    claim2_bn_linear_deep,
    claim3_relu,
    claim4_bn_width,
    claim5_orthogonal,
    claim6_digits,
    claim7_gradients,
)
from fastrank.reproduce.common import Claim, Outcome, SummaryRow, Z
from fastrank.reproduce.markdown import render
from fastrank.reproduce.sweeps import SCALES, check_scale, claim_sweep, examples_dir, run_claim

__all__ = ["CLAIMS", "SCALES", "Z", "Claim", "Outcome", "SummaryRow", "claim_sweep", "examples_dir",
           "render", "reproduce", "run_claim"]

CLAIMS: tuple[Claim, ...] = (
    claim1_linear_collapse.CLAIM,
    claim2_bn_linear_deep.CLAIM,
    claim3_relu.CLAIM,
    claim4_bn_width.CLAIM,
    claim5_orthogonal.CLAIM,
    claim6_digits.CLAIM,
    claim7_gradients.CLAIM,
)


def reproduce(scale: str = "quick", claims=None, *, doc: str | Path = "reproduction.md",
              results_dir: str | Path = "fastrank-reproduce", overwrite: bool = False,
              examples: str | Path | None = None,
              log: Callable[[str], None] | None = print) -> list[Outcome]:
    """Run the claims' sweeps at ``scale``, analyse them, and write ``doc`` (Markdown)
    with its figures in ``figures/`` beside it. Returns one Outcome per claim."""
    from fastrank import store

    check_scale(scale)
    wanted = [c for c in CLAIMS if claims is None or c.number in set(claims)]
    unknown = set(claims or ()) - {c.number for c in CLAIMS}
    if unknown:
        raise ValueError(f"unknown claims {sorted(unknown)}: choose from 1-{len(CLAIMS)}")
    doc = Path(doc)
    fig_dir = doc.parent / "figures"
    examples = Path(examples) if examples else examples_dir()
    log = log or (lambda _: None)
    start = time.perf_counter()
    outcomes = []
    for claim in wanted:
        sweep, path, seconds = run_claim(claim, scale, Path(results_dir), overwrite=overwrite,
                                         examples=examples)
        outcome = Outcome(claim, sweep, path, seconds)
        with store.open(path) as results:
            claim.analyse(results, outcome, fig_dir)
        outcomes.append(outcome)
        log(f"claim {claim.number}: {len(sweep.runs())} runs in {seconds:.1f} s -> "
            f"{'reproduced' if outcome.reproduced else 'NOT reproduced'}")
    total = time.perf_counter() - start
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(outcomes, scale, total, doc, examples))
    log(f"wrote {doc} and {sum(len(o.figures) for o in outcomes)} figures in {fig_dir} "
        f"({total:.0f} s)")
    return outcomes
