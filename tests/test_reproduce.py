"""fastrank.reproduce and `fastrank reproduce`: every claim config parses at both scales,
the whole pipeline (sweeps -> numbers -> figures -> Markdown) runs end to end at a
tiny scale, headless, resuming its results files on a rerun, and each claim's report
text quotes the thresholds its verdict uses."""

import dataclasses
import re

import pytest
from click.testing import CliRunner

import fastrank.reproduce as rep
from fastrank.cli import cli

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

#: Smaller than the quick scale, to keep the test in seconds: enough to exercise every
#: analysis, not to judge the claims (tests/test_claims.py, test_theory.py and
#: test_real_data.py do that).
TINY = {
    1: {"width": [8, 16], "depth": 300, "seed": "0-3"},
    2: {"depth": 2000, "seed": "0-1", "every": 500, "cheap_every": 100},
    3: {"width": [16], "depth": 300, "seed": "0-1"},
    4: {"width": "8-32:x2", "depth": 200, "seed": "0-1", "every": 100, "activation": "linear"},
    5: {"depth": 200, "seed": "0", "every": 50},
    6: {"depth": 300, "seed": "0-1", "layers": [1, 10, 100, 300]},
    7: {"width": [32, 64], "depth": 300, "seed": "0-1", "activation": "relu"},
}


def test_every_claim_config_parses_at_both_scales():
    assert [c.number for c in rep.CLAIMS] == [1, 2, 3, 4, 5, 6, 7]
    for claim in rep.CLAIMS:
        for scale in rep.SCALES:
            sweep = rep.claim_sweep(claim, scale)
            assert len(sweep.runs()) > 0
    full = rep.claim_sweep(rep.CLAIMS[1], "full")
    assert {n.depth for n in full.networks()} == {50000}  # the paper's depth
    assert {n.width for n in full.networks()} == {32}
    assert {n.input for n in rep.claim_sweep(rep.CLAIMS[5], "full").networks()} == {
        "sklearn:digits"
    }
    with pytest.raises(ValueError, match="scale"):
        rep.claim_sweep(rep.CLAIMS[0], "huge")


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(
        rep, "CLAIMS", tuple(dataclasses.replace(c, quick=TINY[c.number]) for c in rep.CLAIMS)
    )


@pytest.mark.slow
def test_reproduce_writes_the_report_and_figures(tiny, tmp_path):
    doc = tmp_path / "docs" / "reproduction.md"
    lines = []
    outcomes = rep.reproduce("quick", doc=doc, results_dir=tmp_path / "res", log=lines.append)
    assert [o.claim.number for o in outcomes] == [1, 2, 3, 4, 5, 6, 7]
    text = doc.read_text()
    summary = text.split("## Summary")[1].split("## Claim 1")[0]
    for number in range(1, 8):
        assert re.search(rf"^\| {number} \|", summary, re.M), number
        assert f"## Claim {number}" in text
    assert "2(lambda_1 - lambda_2)" in summary and "sqrt(d)" in summary
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(figures) == 9
    for name in figures:
        path = doc.parent / name
        assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    assert "examples/claim1_linear_collapse.toml" in text
    # the sanity check holds at any scale, its Jacobian exponents too
    assert outcomes[4].reproduced and "Jacobian exponent" in text
    assert "mean field at N = 8" in summary
    assert len(list((tmp_path / "res").glob("claim*-quick.h5"))) == 7
    assert any("claim 6" in line for line in lines)

    # a rerun resumes the complete files (no simulation) and rewrites the report
    again = rep.reproduce("quick", claims=[5], doc=doc, results_dir=tmp_path / "res", log=None)
    assert [o.claim.number for o in again] == [5]
    assert "## Claim 5" in doc.read_text() and "## Claim 1" not in doc.read_text()


def test_changed_config_is_recomputed(tiny, tmp_path, monkeypatch):
    rep.reproduce("quick", claims=[5], doc=tmp_path / "r.md", results_dir=tmp_path, log=None)
    changed = tuple(
        dataclasses.replace(c, quick={**c.quick, "depth": 100}) if c.number == 5 else c
        for c in rep.CLAIMS
    )
    monkeypatch.setattr(rep, "CLAIMS", changed)
    (outcome,) = rep.reproduce(
        "quick", claims=[5], doc=tmp_path / "r.md", results_dir=tmp_path, log=None
    )
    assert {n.depth for n in outcome.sweep.networks()} == {100}
    assert "L = 100" in (tmp_path / "r.md").read_text()


def test_command_line(tiny, tmp_path):
    doc = tmp_path / "out" / "r.md"
    result = CliRunner().invoke(
        cli, ["reproduce", "--claims", "5", "--doc", str(doc), "--results", str(tmp_path / "res")]
    )
    assert result.exit_code == 0, result.output
    assert "1 of 1 claims reproduced" in result.output and doc.exists()
    result = CliRunner().invoke(cli, ["reproduce", "--claims", "9", "--doc", str(doc)])
    assert result.exit_code == 2 and "unknown claims" in result.output


def _moved(value):
    """A threshold moved to a value that no default uses."""
    if isinstance(value, dict):
        return {key: _moved(v) for key, v in value.items()}
    return type(value)(value * 3)


@pytest.mark.parametrize("claim", rep.CLAIMS, ids=lambda c: f"claim{c.number}")
def test_every_threshold_is_quoted_in_the_criterion(claim):
    default = claim.criterion_text()
    for limit in dataclasses.fields(claim.limits):
        moved = dataclasses.replace(
            claim.limits, **{limit.name: _moved(getattr(claim.limits, limit.name))})
        assert dataclasses.replace(claim, limits=moved).criterion_text() != default, limit.name


def test_a_moved_threshold_moves_both_the_verdict_and_the_text(tiny, tmp_path, monkeypatch):
    doc = tmp_path / "r.md"
    (before,) = rep.reproduce("quick", claims=[5], doc=doc, results_dir=tmp_path, log=None)
    assert before.reproduced
    assert "more than 1e-3 (float32) or 1e-9 (float64)" in doc.read_text()
    strict = tuple(
        dataclasses.replace(c, limits=dataclasses.replace(
            c.limits, rounding={**c.limits.rounding, "float32": 1e-30}))
        if c.number == 5 else c
        for c in rep.CLAIMS
    )
    monkeypatch.setattr(rep, "CLAIMS", strict)
    (after,) = rep.reproduce("quick", claims=[5], doc=doc, results_dir=tmp_path, log=None)
    text = doc.read_text()
    assert not after.reproduced
    assert "Criterion: the soft rank never changes by more than 1e-30 (float32)" in text
    assert "**not reproduced** (rounding < 1e-30)" in text
    assert "**reproduced** (rounding < 1e-09)" in text  # float64 keeps its threshold
