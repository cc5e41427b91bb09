"""claims: the registry is complete, verdicts are three-valued and decided from uncertainty, premises."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from transformer_dynamics import bootstrap, claims

ROOT = Path(__file__).resolve().parents[1]


def test_registry_complete():
    assert set(claims.CONTRIBUTIONS) == {1, 2, 3, 4, 5, 6}  # 6: the sequel's claims, beyond the paper
    assert {c.contribution for c in claims.REGISTRY.values()} == {1, 2, 3, 4, 5, 6}
    assert all(c.source == "sequel" for c in claims.REGISTRY.values() if c.contribution == 6)
    paper = (ROOT.parent / "shared" / "paper" / "paper.txt")
    text = re.sub(r"\s+", " ", paper.read_text().replace("’", "'")).lower() if paper.is_file() else None
    for key, c in claims.REGISTRY.items():
        assert c.key == key and c.figure and c.quote and c.test in (">", "<", "==")
        assert c.evidence in ("interval", "p") and c.why and c.chapter
        assert c.readings and c.headline in [r.name for r in c.readings], key
        assert len({r.name for r in c.readings}) == len(c.readings)
        assert c.premise is None or c.premise in claims.REGISTRY
        module, func = c.statistic.split(".")
        import importlib
        assert hasattr(importlib.import_module(f"transformer_dynamics.{module}"), func), c.statistic
        if text is not None and c.source == "paper":  # the quote is the paper's sentence (a part of it)
            quote = re.sub(r"^\[[^\]]*\] ", "", c.quote.lower())       # "[within-layer] ..." names the part
            assert quote.split(" (")[0][:40] in text, key
        assert (ROOT / "notebooks" / f"{c.chapter}.py").is_file()


def test_interval_verdicts():
    v = claims.verdict
    assert v("r_early", 0.9, ci=(0.85, 0.95)).verdict == "holds"
    assert v("r_early", 0.5, ci=(0.4, 0.6)).verdict == "fails"
    assert v("r_early", 0.82, ci=(0.7, 0.9)).verdict == "undecided"
    # a point estimate alone never decides
    assert v("r_early", 0.99).verdict == "undecided"
    # undefined is undefined, not 0 or fails
    for value in (float("nan"), None, "nan"):
        r = v("r_early", value, ci=(0.1, 0.2))
        assert r.verdict == "undecided" and r.reason == "value undefined"
    assert v("vel_last_third", 3, ci=(3, 3)).verdict == "holds"
    assert v("vel_last_third", 3, ci=(2, 3)).verdict == "undecided"
    assert v("vel_last_third", 1, ci=(1, 2)).verdict == "fails"
    assert v("pcs_fewer_later", -3, ci=(-5, -1)).verdict == "holds"


def test_noise_trend_undecided_clear_trend_holds():
    """A trend of pure noise (shuffled sublayers of a random array) is undecided; a clear one holds."""
    rng = np.random.default_rng(0)
    rs = rng.standard_normal((200, 30, 8))
    noise_curve = rs[:, rng.permutation(30)].mean((0, 2))
    rho, p = bootstrap.trend_test(noise_curve, seed=1)
    assert claims.verdict("magnitude_increases", rho, p=p).verdict == "undecided"
    clear = np.linspace(0, 1, 30) + rng.normal(0, 0.05, 30)
    rho, p = bootstrap.trend_test(clear, seed=1)
    assert rho > 0.9 and p < 0.01
    assert claims.verdict("magnitude_increases", rho, p=p).verdict == "holds"
    assert claims.verdict("mi_early_drop", rho, p=p).verdict == "fails"   # a rise where a drop is claimed


def test_failed_premise_gives_undecided():
    ok = dict(ci=(1, 1))
    assert claims.verdict("mi_drop_at_cross", 1, premise="holds", **ok).verdict == "holds"
    for premise in ("fails", "undecided", None):
        r = claims.verdict("mi_drop_at_cross", 1, premise=premise, **ok)
        assert r.verdict == "undecided" and "premise mi_early_drop" in r.reason


def test_sign_test_and_trend_test_known():
    frac, p = bootstrap.sign_test(np.arange(10) + 1.0, np.arange(10))
    assert frac == 1.0 and p == pytest.approx(2 / 2 ** 10)
    assert np.isnan(bootstrap.trend_test([1.0, np.nan, 2.0])[0])
    rho, p = bootstrap.trend_test(np.arange(10.0)[::-1], np.arange(10.0), n_perm=2000)
    assert rho == pytest.approx(-1.0) and p < 0.01
    with pytest.raises(ValueError, match="pair up"):
        bootstrap.sign_test([1, 2], [1])


def test_unknown_claim_and_reading():
    with pytest.raises(KeyError, match="not a claim of the registry"):
        claims.verdict("nope", 1.0)
    with pytest.raises(ValueError, match="no reading"):
        claims.get("r_early").reading("last")


def test_no_notebook_decides_a_verdict():
    """Verdicts come from the registry only: no notebook passes holds= or compares a value to decide one."""
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        src = nb.read_text()
        assert "holds=" not in src, nb.name
        assert "HEADLINES" not in src and "compare." not in src, nb.name
        assert "verdict(" not in src, nb.name
