"""calibration: the claim registry on constructed residual streams whose right answer is known (issue 23).

For every residual-stream claim and reading: false decisions on the nulls at most 2 alpha (depth autocorrelation up to
phi = 0.9, a per-text scale varying over depth, one outlier text of 200, values at their threshold, the random walk's
"beyond the null"), and power at least 0.8 after Benjamini-Hochberg for planted effects.

Binomial arithmetic (checked in test_simulations_tell_2_alpha_from_4_alpha): with S = 100 simulations per null, "at
most 2 alpha S = 10 false decisions" passes a rule whose false-decision rate is alpha = 0.05 with probability
P(X <= 10 | 100, 0.05) = 0.989, and one at 4 alpha = 0.2 with probability P(X <= 10 | 100, 0.2) = 0.006. The
claims recomputed per resample (slow) run S = 60: "at most 6" passes alpha with probability 0.97 and 4 alpha with
0.03. With 40 planted simulations, "at least 32 decided" passes a rule of power 0.95 with probability 0.9999 and
one of power 0.6 with probability 0.006.

The fast core runs the claims whose curves are means over texts (magnitude, r, cosine, velocity: vectorised over
the resamples) on every null; the claims recomputed per resample (MI, rotations, PCA) and the effect sizes of the
real SmolLM2 are in the tests marked slow. A claim that cannot meet the bar today is marked as an expected failure
(strict: the mark must go when its statistic is fixed), with the rates measured here; the lead decides the fix.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from conftest import record_claim
from transformer_dynamics import calibration as cal
from transformer_dynamics import claims, ledger, robustness
from transformer_dynamics.robustness.curves import FAST, group_of

ALPHA = claims.ALPHA
S_NULL = 100          # simulations per null
S_SLOW = 60           # ... of the claims recomputed per resample (slow tests)
S_POWER = 40          # planted simulations
MIN_DECIDED = 32      # of S_POWER: power >= 0.8
WORKERS = 2

SETTINGS = cal.Settings(n=200, n_sims=S_NULL, n_sims_slow=S_NULL, n_sims_power=S_POWER, n_boot=200,
                        n_boot_slow=50, n_shuffles=16, n_pilot=24, seed=0)
SLOW_SETTINGS = dataclasses.replace(SETTINGS, n_sims=S_SLOW, n_sims_slow=S_SLOW)
FAST_SETTINGS = dataclasses.replace(SETTINGS, n_pilot=12)      # effects planted at Z_MAX: a rough size will do


def _fast(pair) -> bool:
    return all(group_of(k) in FAST for k in claims.get(pair[0]).reading(pair[1]).keys)


PAIRS = robustness.rs_readings()
FAST_PAIRS = [p for p in PAIRS if _fast(p)]
SLOW_PAIRS = [p for p in PAIRS if not _fast(p)]
FAST_KEYS = list(dict.fromkeys(k for k, _ in FAST_PAIRS))
SLOW_KEYS = list(dict.fromkeys(k for k, _ in SLOW_PAIRS))

#: Claims that do not meet the bar: (claim, reading) -> what the calibration measured (issue 23; the fix belongs in
#: the statistic or the curves, never in this bar). Empty: every claim and reading meets it.
KNOWN_FALSE: dict[tuple[str, str], str] = {}
KNOWN_LOW_POWER: dict[tuple[str, str], str] = {}


def _marked(pairs, known):
    return [pytest.param(p, id=f"{p[0]}:{p[1]}", marks=pytest.mark.xfail(strict=True, reason=known[p])) if p in known
            else pytest.param(p, id=f"{p[0]}:{p[1]}") for p in pairs]


def _false_counts(c: cal.Calibration, pair) -> pd.DataFrame:
    r = cal.rates(c)
    return r[(r["kind"] == "false") & (r["claim"] == pair[0]) & (r["reading"] == pair[1])]


def _assert_calibrated(c: cal.Calibration, pair):
    f = _false_counts(c, pair)
    assert len(f), f"{pair} was judged on no null"
    bad = f[f["events"] > 2 * ALPHA * f["sims"]]
    assert bad.empty, "false decisions above 2 alpha:\n" + bad[["scenario", "truth", "events", "sims"]].to_string()


def _assert_powerful(c: cal.Calibration, pair):
    r = cal.rates(c)
    p = r[(r["kind"] == "power") & (r["claim"] == pair[0]) & (r["reading"] == pair[1])]
    plan = c.plan[(c.plan["claim"] == pair[0]) & (c.plan["reading"] == pair[1])]
    assert len(plan) and bool(plan["reached"].iloc[0]), f"{pair}: the planted effect was not reached:\n{plan}"
    assert len(p) == 1 and p["sims"].iloc[0] == S_POWER
    z = plan["z_planted"].iloc[0]
    assert p["events"].iloc[0] >= MIN_DECIDED * p["sims"].iloc[0] / S_POWER, \
        f"{pair}: power {p['rate'].iloc[0]:.2f} after Benjamini-Hochberg (planted z = {z:.2f})"


# ----------------------------------------------------------------------------------------------------------
# the constructions
# ----------------------------------------------------------------------------------------------------------
def test_simulations_tell_2_alpha_from_4_alpha():
    cut = int(2 * ALPHA * S_NULL)
    assert binom.cdf(cut, S_NULL, ALPHA) > 0.98 and binom.cdf(cut, S_NULL, 4 * ALPHA) < 0.01
    cut = int(2 * ALPHA * S_SLOW)
    assert binom.cdf(cut, S_SLOW, ALPHA) > 0.96 and binom.cdf(cut, S_SLOW, 4 * ALPHA) < 0.035
    assert binom.sf(MIN_DECIDED - 1, S_POWER, 0.95) > 0.99 and binom.sf(MIN_DECIDED - 1, S_POWER, 0.6) < 0.01


def test_stationary_stream_is_stationary_with_r_phi_kappa():
    rs = cal.stationary(20000, 8, 4, phi=0.9, seed=1).astype(np.float64)
    mean, var = rs.mean(0), rs.var(0)
    assert np.abs(mean - mean[:1]).max() < 0.03                                  # nothing moves over depth
    assert np.abs(var / var.mean(0) - 1).max() < 0.05
    assert np.abs(rs.mean((0, 1))).min() > 0.4                                  # nonzero means
    x = rs - rs.mean(0)
    r = (x[:, 1:] * x[:, :-1]).mean(0) / np.sqrt(var[1:] * var[:-1])
    np.testing.assert_allclose(r, 0.9 * cal.scale_correlation(), atol=0.01)
    scale = np.sqrt((x ** 2).mean(2))                                          # the per-text scale moves slowly
    assert 0.5 < np.corrcoef(scale[:, 0], scale[:, 1])[0, 1] < 0.99


def test_random_walk_and_outlier():
    rs = cal.random_walk(20000, 10, 3, seed=2).astype(np.float64)
    np.testing.assert_allclose(rs.var(0).mean(1), 1 + 0.3 * np.arange(10), rtol=0.05)
    base = cal.stationary(200, 8, 4, seed=3)
    out = cal.with_outlier(base, seed=3)
    np.testing.assert_array_equal(out[1:], base[1:])
    dev = out[0] - base.mean((0, 1))
    assert np.all(np.sign(dev[:, 0]) == np.sign(dev[0, 0]) * np.array([1, 1, -1, -1, 1, 1, -1, -1]))
    assert np.abs(dev[-1]).min() > 10 * base.std()                              # strong, and growing with depth


def test_mechanisms_sit_at_the_threshold_and_move_the_value():
    """At amplitude 0 an at-threshold mechanism's population value is the claim's threshold; the value increases
    with the amplitude. (A mechanism that moved the wrong way would plant the opposite effect.)"""
    st = cal.Settings()
    for pair in FAST_PAIRS:
        m = cal.MECHANISMS[pair]
        L, D = cal.run._shape(pair, st)
        v = [cal.run._value_of(cal.streams._plant(m.name, a, 2000, L, D, 5), pair, st, 5)
             for a in (m.lo / 2, 0.0, m.hi / 2)]
        assert v[0] < v[2], (pair, v)
        if m.at_threshold:
            assert abs(v[1] - claims.get(pair[0]).threshold) < 0.03, (pair, v)


def test_simulated_streams_leave_nothing_in_the_evidence_store(tmp_path, monkeypatch):
    """A calibration's streams are drawn and thrown away: their evidence is not stored (it had been, thousands of
    entries a run, pruned again at the next package source)."""
    monkeypatch.setenv("TRANSFORMER_DYNAMICS_CACHE", str(tmp_path))
    walk = [n for n in cal.NULLS if n.kind == "walk"]
    st = dataclasses.replace(SETTINGS, n=40, n_sims=2, n_sims_slow=2, n_boot=20, n_boot_slow=4)
    run = cal.calibrate(st, keys=["r_early"], nulls=walk, power=False, workers=1)
    assert isinstance(run, cal.Calibration)
    assert not (tmp_path / "evidence").exists(), sorted(p.name for p in tmp_path.iterdir())


def test_null_truth():
    pairs = [("r_early", "first_each_kind"), ("magnitude_increases", "mean_abs"), ("mi_early_drop", "kde"),
             ("rotations_beat_null", "points")]
    t = cal.null_truth(cal.Null("x", "stationary", 0.9), pairs)
    assert t == {pairs[0]: "holds", pairs[1]: "null", pairs[2]: "fails", pairs[3]: "fails"}
    assert cal.null_truth(cal.Null("x", "stationary", 0.5), pairs)[pairs[0]] == "fails"
    assert cal.null_truth(cal.Null("w", "walk"), pairs) == {}
    assert cal.null_truth(cal.Null("t", "threshold", claim="r_early"), pairs) == {pairs[0]: "null"}
    with pytest.raises(ValueError, match="at least 26"):
        cal.Settings(shape_mi=(12, 8))


# ----------------------------------------------------------------------------------------------------------
# effect sizes
# ----------------------------------------------------------------------------------------------------------
def test_effect_sizes_read_the_chapter_ledgers(tmp_path):
    led = ledger.Ledger("02_activation_statistics", directory=tmp_path)
    record_claim(led, "r_increases_cross", 0.5, ci=(0.45, 0.55), model="m")
    record_claim(led, "r_early", 0.7, ci=(0.6, 0.8), model="m", reading="first_transition")
    record_claim(led, "r_increases_cross", -0.5, ci=(-0.6, -0.4), model="m", condition="shuffled")   # a control
    record_claim(led, "cae_straighten", -1.0, ci=(-2.0, 0.0), model="m")                            # not "rs"
    s = cal.effect_sizes(directory=tmp_path).set_index(["claim", "reading"])
    assert list(s.index) == [("r_increases_cross", "median"), ("r_early", "first_transition")]
    se = 0.2 / (2 * 1.959963984540054)
    assert s.loc[("r_increases_cross", "median"), "z"] == pytest.approx(0.5 / (se / 2))
    assert s.loc[("r_early", "first_transition"), "z"] == pytest.approx(-0.1 / se)
    planted = cal.planted_sizes(s.reset_index(), [("r_increases_cross", "median"), ("r_early", "first_transition")])
    assert planted == {("r_increases_cross", "median"): cal.Z_MAX,                # capped
                       ("r_early", "first_transition"): pytest.approx(-0.1 / se)}


def test_effect_sizes_inside_a_book_build_read_the_finished_chapters(tmp_path):
    """While chapter 10 runs in a book build it records into <out>/ledger/.partial/<profile>/<stem>; the sizes are
    the finished chapters' in <out>/ledger/<profile> (read from its own folder, every effect was planted at Z_MAX)."""
    book = tmp_path / "ledger" / "ci"
    record_claim(ledger.Ledger("02_activation_statistics", directory=book), "r_increases_cross", 0.5,
                 ci=(0.45, 0.55), model="m")
    running = tmp_path / "ledger" / ".partial" / "ci" / "10_calibration"
    running.mkdir(parents=True)
    assert ledger.book_directory(running) == book and ledger.book_directory(book) == book
    assert list(cal.effect_sizes(directory=running)["claim"]) == ["r_increases_cross"]


def test_planted_sizes_take_the_weaker_model_and_skip_disagreement():
    sizes = pd.DataFrame({"model": ["a", "b", "a", "b"], "claim": ["r_increases_cross"] * 2 + ["cos_increases"] * 2,
                          "reading": ["median", "median", "raw", "raw"], "z": [3.0, 5.0, 4.0, -4.0]})
    pairs = [("r_increases_cross", "median"), ("cos_increases", "raw"), ("vel_increases", "cross")]
    assert cal.planted_sizes(sizes, pairs) == {("r_increases_cross", "median"): 3.0}
    assert cal.planted_sizes(sizes, pairs, model="b") == {("r_increases_cross", "median"): 5.0,
                                                          ("cos_increases", "raw"): -4.0}
    default = cal.planted_sizes(None, [("pcs_fewer_later", "own")])
    assert default == {("pcs_fewer_later", "own"): cal.Z_MAX}                    # the claim's side: ">"


def test_binomial_interval():
    lo, hi = cal.binomial_interval(np.array([0, 5, 100]), np.array([100, 100, 100]))
    assert lo[0] == 0 and hi[2] == 1
    assert lo[1] == pytest.approx(0.01643, abs=1e-4) and hi[1] == pytest.approx(0.11284, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------
# the fast core: claims whose curves are means over texts
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast_run():
    return cal.calibrate(FAST_SETTINGS, keys=FAST_KEYS, workers=WORKERS)


@pytest.mark.parametrize("pair", _marked(FAST_PAIRS, KNOWN_FALSE))
def test_false_decisions_at_most_2_alpha(fast_run, pair):
    _assert_calibrated(fast_run, pair)


def test_every_null_was_run(fast_run):
    scen = set(fast_run.rows["scenario"])
    assert {"stationary phi=0", "stationary phi=0.5", "stationary phi=0.9", "one outlier text", "random walk",
            "at threshold: r_early", "planted"} <= scen
    n = fast_run.rows[fast_run.rows["scenario"] != "planted"].groupby(["scenario", "claim", "reading"]).size()
    assert set(n) == {S_NULL}


def test_beyond_the_null_is_judged_on_the_random_walk(fast_run):
    walk = fast_run.rows[fast_run.rows["scenario"] == "random walk"]
    assert set(walk["verdict"]) <= {"beyond", "not beyond"} and len(walk)
    moved = {(k, r) for k, r in zip(walk["claim"], walk["reading"])}
    assert ("r_early", "first_each_kind") in moved and ("magnitude_increases", "mean_abs") not in moved


@pytest.mark.parametrize("pair", _marked(FAST_PAIRS, KNOWN_LOW_POWER))
def test_power_of_a_planted_effect(fast_run, pair):
    """Every effect planted at Z_MAX standard errors on the claim's side is decided after Benjamini-Hochberg over
    the readings of one simulation: a rule that is almost always undecided fails here."""
    _assert_powerful(fast_run, pair)


def test_a_rule_that_ignores_the_uncertainty_is_caught(fast_run):
    """The check itself: deciding from the side of the point estimate alone fails it on the nulls."""
    rows = fast_run.rows.copy()
    null = rows["scenario"].str.startswith("stationary")
    thr = rows["claim"].map(lambda k: claims.get(k).threshold)
    supports = np.where(rows["claim"].map(lambda k: claims.get(k).test) == ">", rows["value"] > thr,
                        rows["value"] < thr)
    rows.loc[null, "verdict"] = np.where(supports, "holds", "fails")[null]
    naive = cal.Calibration(rows, fast_run.truth, fast_run.plan, fast_run.settings)
    r = cal.rates(naive)
    assert (r[(r["kind"] == "false") & r["scenario"].str.startswith("stationary")]["rate"] > 2 * ALPHA).any()
    undecided = rows.assign(verdict_bh="undecided")
    r = cal.rates(cal.Calibration(undecided, fast_run.truth, fast_run.plan, fast_run.settings))
    assert (r[r["kind"] == "power"]["rate"] == 0).all()


def test_table_and_worst(fast_run):
    t = cal.table(fast_run)
    assert [tuple(x) for x in t[["claim", "reading"]].to_numpy()] == FAST_PAIRS
    assert {"worst", "worst_low", "worst_high", "worst_on", "sims", "power", "power_sims", "planted_z"} <= set(t)
    w = cal.worst(fast_run)
    assert w["rate"] == pytest.approx(t["worst"].max())
    assert w["low"] <= w["rate"] <= w["high"] and w["sims"] == S_NULL
    book = cal.book_table(fast_run)
    assert len(book) == len(t) and book["worst"].equals(t["worst"])
    assert (book["stationary"] <= book["worst"]).all() and (book["power sims"] == S_POWER).all()
    md = cal.markdown(book)
    assert md.count("\n") == len(book) + 1 and "nan" not in md and "<NA>" not in md
    s = cal.summary(fast_run)
    assert s["worst"] == w and s["readings"] == len(FAST_PAIRS) and s["strong"] == len(FAST_PAIRS)
    # the book's list of claims above 2 alpha is this file's list of expected failures
    assert set(s["above_2_alpha"]) == {f"{k}:{r}" for k, r in KNOWN_FALSE if (k, r) in FAST_PAIRS}
    line = cal.summary_sentence(s)
    assert f"**{w['rate']:.2f}**" in line and f"of {len(FAST_PAIRS)} claim readings" in line and "nan" not in line


# ----------------------------------------------------------------------------------------------------------
# slow: the claims recomputed per resample, and the trained model's effect sizes
# ----------------------------------------------------------------------------------------------------------
#: The nulls of the slow tier: the depth autocorrelation at its strongest (phi = 0.9: smooth curves over depth, the
#: case a rule that treats layers as exchangeable gets wrong most often), the outlier, the thresholds and the random
#: walk. phi = 0 and 0.5 run for the fast claims above, and for every claim in the book's calibration appendix
#: (chapter 10), which runs every null; here they would double the tier's time (the PCA and MI recomputed per
#: half-sample) within the test budget.
SLOW_NULLS = tuple(n for n in cal.NULLS if n.kind != "stationary" or n.phi >= 0.9)


@pytest.fixture(scope="module")
def slow_run():
    return cal.calibrate(SLOW_SETTINGS, keys=SLOW_KEYS, nulls=SLOW_NULLS, power=False, workers=WORKERS)


@pytest.mark.slow
def test_slow_tier_keeps_the_hardest_nulls():
    names = {n.name for n in SLOW_NULLS}
    assert {"stationary phi=0.9", "one outlier text", "random walk"} <= names
    assert {n.name for n in cal.NULLS if n.kind == "threshold"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("pair", _marked(SLOW_PAIRS, KNOWN_FALSE))
def test_slow_claims_false_decisions_at_most_2_alpha(slow_run, pair):
    _assert_calibrated(slow_run, pair)


@pytest.fixture(scope="module")
def smollm2_sizes(model_cache_dir, wikitext_dir):
    """Every residual-stream claim's size on the real SmolLM2 (96 texts of the offline capture)."""
    from transformer_dynamics import pipeline  # noqa: PLC0415

    rs = pipeline.residual_stream("smollm2-135m", n=96, seed=0, cache_dir=model_cache_dir, data_dir=wikitext_dir,
                                  progress=False)
    ev = robustness.claim_evidence(rs, n_boot=200, n_boot_slow=50, mi_units=64, n_shuffles=16, pca_components=50)
    return cal.sizes_from_evidence(ev, "smollm2-135m")


@pytest.fixture(scope="module")
def trained_power(smollm2_sizes):
    """Planted at SmolLM2's sizes where SmolLM2 shows an effect of at least Z_POWER standard errors (a smaller one
    is not expected to be decided), except the fast claims whose effect reaches Z_MAX: planted at Z_MAX, those are
    test_power_of_a_planted_effect's simulations already."""
    z = smollm2_sizes["z"].astype(float).abs()
    pairs = list(zip(smollm2_sizes["claim"], smollm2_sizes["reading"]))
    done = np.array([p in FAST_PAIRS for p in pairs]) & (z >= cal.Z_MAX).to_numpy()
    strong = smollm2_sizes[(z >= cal.Z_POWER).to_numpy() & ~done]
    return cal.calibrate(SETTINGS, sizes=strong, nulls=(), workers=WORKERS)




def _at_trained_size(plan: pd.DataFrame) -> list[tuple[str, str]]:
    """The pairs whose power at SmolLM2's size is checked: SmolLM2 shows an effect of at least Z_POWER standard
    errors there and the claim's mechanism plants it (a smaller effect is not expected to be decided)."""
    plan = plan.set_index(["claim", "reading"])
    return [p for p in PAIRS if p in plan.index and abs(plan.loc[p, "z"]) >= cal.Z_POWER
            and abs(plan.loc[p, "z_planted"]) >= cal.Z_POWER]


@pytest.mark.slow
def test_power_at_the_trained_model_s_effect_sizes(trained_power):
    """Every claim whose effect on SmolLM2 is at least Z_POWER standard errors is decided at that size (planted in a
    constructed stream) in at least MIN_DECIDED of S_POWER simulations, after Benjamini-Hochberg."""
    pairs = _at_trained_size(trained_power.plan)
    assert pairs, "no claim shows an effect of Z_POWER standard errors on SmolLM2 outside the fast tier's"
    failed = []
    for pair in pairs:
        if pair in KNOWN_LOW_POWER:
            continue
        try:
            _assert_powerful(trained_power, pair)
        except AssertionError as e:
            failed.append(str(e).splitlines()[0])
    assert not failed, "low power at SmolLM2's effect sizes:\n" + "\n".join(failed)
