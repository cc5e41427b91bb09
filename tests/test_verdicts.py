"""Verdicts from bootstrap replicates: the interval rule, its p-value, Benjamini-Hochberg, the references."""

import numpy as np
import pytest

from transformer_dynamics import verdicts
from transformer_dynamics.verdicts import Evidence


def ev(value, reps, claim="r_increases_within", reading="median", run="trained", recentred=False, **extra):
    return Evidence(claim, reading, run, value, np.asarray(reps, dtype=float), 100, recentred, extra)


def test_decide_holds_fails_undecided_and_undefined():
    rng = np.random.default_rng(0)
    assert verdicts.decide(ev(0.5, 0.5 + 0.1 * rng.normal(size=1000)))["verdict"] == "holds"
    assert verdicts.decide(ev(-0.5, -0.5 + 0.1 * rng.normal(size=1000)))["verdict"] == "fails"
    assert verdicts.decide(ev(0.05, 0.05 + 0.1 * rng.normal(size=1000)))["verdict"] == "undecided"
    d = verdicts.decide(ev(np.nan, rng.normal(size=100)))
    assert d["verdict"] == "undecided" and d["reason"] == "value undefined"
    reps = rng.normal(size=100) + 3
    reps[:20] = np.nan                                      # 80 % defined: too few
    assert "too few defined" in verdicts.decide(ev(3.0, reps))["reason"]
    # a "<" claim: the side flips
    assert verdicts.decide(ev(-0.5, -0.5 + 0.1 * rng.normal(size=1000), claim="cae_straighten",
                              reading="mean"))["verdict"] == "holds"


def test_p_value_continues_below_the_resamples_floor():
    rng = np.random.default_rng(3)
    far = verdicts.decide(ev(5.0, 5.0 + 0.1 * rng.normal(size=200)))
    near = verdicts.decide(ev(0.4, 0.4 + 0.1 * rng.normal(size=200)))
    assert far["p"] < 1e-6 < near["p"] < 2 / 201 and far["verdict"] == near["verdict"] == "holds"


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    for shift in np.linspace(-0.4, 0.4, 41):
        d = verdicts.decide(ev(shift, shift + 0.1 * rng.normal(size=2000)))
        assert (d["p"] < 0.05) == (d["verdict"] != "undecided") or abs(d["p"] - 0.05) < 0.01


def test_recentred_interval_keeps_the_spread_around_the_value():
    reps = np.full(1000, 2.0) + np.linspace(-0.1, 0.1, 1000)   # shifted by +2 relative to the value 0
    d = verdicts.decide(ev(0.0, reps, recentred=True))
    assert d["low"] == pytest.approx(-0.095, abs=1e-3) and d["high"] == pytest.approx(0.095, abs=1e-3)
    assert d["verdict"] == "undecided"


def test_premise():
    e = Evidence("mi_drop_at_cross", "kde", "trained", 0.5, np.full(100, 0.5), 100)
    assert verdicts.decide(e, premise="fails")["reason"] == "premise mi_early_drop fails"
    assert verdicts.decide(e, premise="holds")["verdict"] == "holds"


def test_benjamini_hochberg_known_values():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    q = verdicts.benjamini_hochberg(p)
    # sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.02, 0.04, 0.04
    assert np.allclose(q[:4], [0.02, 0.04, 0.04, 0.02]) and np.isnan(q[4])
    q, v = verdicts.corrected(["holds", "fails", "holds", "undecided", None], [0.01, 0.04, 0.03, 0.5, np.nan])
    assert np.allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5])           # 0.04 * 4/3 and 0.03 * 4/3 -> 0.0533
    assert v == ["holds", "undecided", "undecided", "undecided", None]
    q, v = verdicts.corrected(["holds"] * 10, [0.04] * 10)
    assert v == ["holds"] * 10                               # 10 p-values of 0.04: all stand (q = 0.04)
    q, v = verdicts.corrected(["holds"] + ["undecided"] * 9, [0.04] + [0.9] * 9)
    assert v[0] == "undecided"                               # one 0.04 among 10: q = 0.4


def test_compare_and_judge_lines():
    rng = np.random.default_rng(2)
    trained = ev(0.5, 0.5 + 0.05 * rng.normal(size=1000))
    same = [ev(0.5, 0.5 + 0.05 * rng.normal(size=1000), run=f"default:{s}") for s in range(3)]
    lower = [ev(0.1, 0.1 + 0.05 * rng.normal(size=1000), run=f"matched:{s}") for s in range(3)]
    c = verdicts.compare(trained, lower)
    assert c["beyond"] and c["diff"] == pytest.approx(0.4) and c["seeds"] == 3 and c["verdict"] == "holds"
    assert not verdicts.compare(trained, same)["beyond"]
    table = verdicts.judge([trained, *lower])
    assert table.loc[0, "line"] == "holds, beyond matched-scale random init"
    table = verdicts.judge([trained, *same, *lower])
    assert table.loc[0, "line"] == "holds, but so does random init"
    null = ev(0.5, 0.5 + 0.05 * rng.normal(size=1000), run="null")
    trained_fixed = ev(0.5, 0.5 + 0.05 * rng.normal(size=1000), null_moves=False)
    t = verdicts.judge([trained_fixed, null, *lower])
    assert t.loc[0, "line"] == "holds, beyond matched-scale random init"    # the null cannot move it: not compared
    assert t.loc[0, "refs"]["null"]["beyond"] is None
    fails = ev(-0.5, -0.5 + 0.05 * rng.normal(size=1000))
    assert verdicts.judge([fails, *lower]).loc[0, "line"] == "fails"


def test_seed_spread_enters_the_reference_interval():
    """Three seeds far apart: the pooled reference interval covers their spread, not one seed's noise."""
    refs = [ev(v, v + 0.001 * np.random.default_rng(s).normal(size=1000), run=f"default:{s}")
            for s, v in enumerate((0.0, 0.3, 0.6))]
    c = verdicts.compare(ev(0.35, np.full(1000, 0.35)), refs)
    assert c["low"] < 0.1 and c["high"] > 0.5 and not c["beyond"]


def test_a_verdict_one_text_decides_is_refused():
    """Replicates clear the threshold, but without one text the value moves back across it: undecided."""
    rng = np.random.default_rng(4)
    reps = 0.3 + 0.05 * rng.normal(size=1000)
    jack = np.full(200, 0.3)
    jack[17] = -0.05                                           # the estimate without text 17
    e = Evidence("r_increases_within", "median", "trained", 0.3, reps, 200, jackknife=jack)
    d = verdicts.decide(e)
    assert d["verdict"] == "undecided" and d["reason"].startswith("decided by one unit: without #17")
    jack[17] = 0.28                                            # a text that moves it a little: the verdict stands
    assert verdicts.decide(Evidence("r_increases_within", "median", "trained", 0.3, reps, 200,
                                    jackknife=jack))["verdict"] == "holds"
    fails = Evidence("r_increases_within", "median", "trained", -0.3, -reps, 200, jackknife=-np.where(
        np.arange(200) == 3, -0.05, 0.3))
    assert verdicts.decide(fails)["verdict"] == "undecided"     # the same on the other side


def test_rederive_keeps_what_the_interval_alone_cannot_tell():
    """A stored row is re-derived from its value and interval when rendered, but a verdict refused because one text
    decides it stays undecided (its interval alone would decide it: the ledger page showed "fails" where the
    chapter said "undecided")."""
    row = {"registry": "mi_early_drop", "value": 0.0566, "ci": [-0.0656, 0.285], "verdict": "undecided",
           "reason": "decided by one unit: without #2 the value is 0.134 and the interval [0.0119, 0.362] contains "
                     "0.333333"}
    assert verdicts.rederive(row)[0] == "undecided"
    edited = {**row, "reason": "interval [-0.0656, 0.285] contains 0.333333"}      # a hand-edited row
    assert verdicts.rederive(edited)[0] == "fails"
    assert verdicts.rederive({**row, "reason": "value undefined", "value": "nan"})[0] == "undecided"
