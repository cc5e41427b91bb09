"""robustness: the curves behind the claims (full data and resamples), the evidence and verdicts against the
references, nested subsamples, precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transformer_dynamics import bootstrap, metrics, mutual_info, nulls, robustness, verdicts
from transformer_dynamics.robustness.curves import CurveOptions, rs_curves


@pytest.fixture(scope="module")
def rs_random():
    rng = np.random.default_rng(0)
    n, L, D = 40, 14, 16
    base = rng.standard_normal((n, 1, D))
    drift = np.cumsum(rng.standard_normal((n, L, D)) * 0.3, axis=1)
    # every unit oscillates over the sublayers (its own phase): clear rotations of the mean trajectory
    osc = 2.0 * np.cos(1.1 * np.arange(L)[:, None] + rng.uniform(0, 2 * np.pi, D)[None, :])
    return (base + drift + osc[None] + np.linspace(0, 3, L)[None, :, None]).astype(np.float32)


def _stream(n=80, L=14, D=12, seed=0, constant_first=False):
    """A stream whose units keep their identity over the sublayers (high successive r) and grow with depth."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, D))
    noise = rng.standard_normal((n, L, D)) * 0.05
    rs = x * np.linspace(1.0, 3.0, L)[None, :, None] + noise
    if constant_first:
        rs[:, 0] = 1.0                       # every text ends in the same token: sublayer 0 is constant
    return rs.astype(np.float32)


def _stationary(n=100, L=18, D=16, phi=0.9, seed=0, outlier=False):
    """No trend over depth: AR(1) over the sublayers from its stationary start, a slowly varying per-text scale."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, L, D))
    x[:, 0] = rng.normal(size=(n, D))
    for s in range(1, L):
        x[:, s] = phi * x[:, s - 1] + np.sqrt(1 - phi ** 2) * rng.normal(size=(n, D))
    scale = np.exp(np.cumsum(rng.normal(scale=0.05, size=(n, L)), axis=1))
    x = x * scale[:, :, None] + 1.0
    if outlier:
        x[0] *= np.linspace(1, 30, L)[:, None]            # one text that grows with depth
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# curves
# ----------------------------------------------------------------------------------------------------------
def test_fast_replicates_equal_recomputation_on_the_resample(rs_random):
    opts = CurveOptions(massive=np.array([3]), mi_units=np.arange(4), seed=0)
    groups = ("mean", "r", "cos", "vel")
    cv = rs_curves(rs_random, groups, opts, n_boot=5, seed=7)
    reps = cv.boot
    assert cv.half == {}                                       # no slow group: no half-samples
    # leave-one-out: text 4 out
    without = rs_curves(np.delete(rs_random, 4, axis=0), groups, opts).full
    for k in ("r", "cos", "vel", "mag", "density"):
        np.testing.assert_allclose(cv.jack[k][4], without[k][0], rtol=1e-6, atol=1e-9, err_msg=k)
    idx = bootstrap.bootstrap_indices(rs_random.shape[0], 5, seed=7)
    for b in (0, 3):
        full_b = rs_curves(rs_random[idx[b]], groups, opts).full
        for k in ("mag", "mag_nomassive", "mag_rise_share", "sign", "density", "density_all", "r", "units_high_r",
                  "cos", "vel", "vel_nomassive"):
            np.testing.assert_allclose(reps[k][b], full_b[k][0], rtol=1e-6, atol=1e-9, err_msg=k)


def test_slow_curves_come_from_half_samples_with_every_group(rs_random):
    opts = CurveOptions(mi_units=np.arange(4), mi_methods=("gcmi",), n_shuffles=5, pca_components=8, seed=0)
    cv = rs_curves(rs_random, ("r", "mi", "rot", "pca"), opts, n_boot=6, n_boot_slow=3, seed=3)
    reps, half = cv.boot, cv.half
    assert reps["r"].shape[0] == 6 and "rot_abs" not in reps                 # bootstrap: the fast groups only
    assert half["rot_abs"].shape == (3,) and half["pcs"].shape == (3, rs_random.shape[1]) and "r" in half
    idx = bootstrap.half_samples(rs_random.shape[0], 3, seed=3)[1]
    assert len(idx) == len(set(idx)) == rs_random.shape[0] // 2              # without replacement
    full_b = rs_curves(rs_random[idx], ("r", "rot", "pca"), opts).full
    assert half["rot_abs"][1] == pytest.approx(full_b["rot_abs"][0])
    np.testing.assert_allclose(half["pcs"][1], full_b["pcs"][0])
    np.testing.assert_allclose(half["r"][1], full_b["r"][0])
    # on half-samples only the MI's early window is computed (the claims read only it)
    assert np.isnan(half["mi:gcmi"][0, -1]) and np.isfinite(half["mi:gcmi"][0, 0])


def test_stream_curves_match_the_metrics(rs_random):
    c = robustness.stream_curves(rs_random, ("r", "vel", "mi"), mi_units=np.arange(4), mi_methods=("gcmi",))
    np.testing.assert_allclose(c["r"], metrics.median_by_transition(metrics.successive_correlation(rs_random))["all"])
    np.testing.assert_allclose(c["vel"], metrics.velocity(rs_random).mean(0), rtol=1e-6)
    mi = mutual_info.mutual_information(rs_random, "gcmi", units=np.arange(4)).mean(1)
    np.testing.assert_allclose(c["mi:gcmi"], mi, rtol=1e-6)


def test_curve_groups_and_bad_input():
    with pytest.raises(ValueError, match="unknown curve groups"):
        rs_curves(_stream(), ("nope",), CurveOptions())
    with pytest.raises(ValueError, match="need at least"):
        robustness.claim_evidence(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="not from a residual stream"):
        robustness.claim_evidence(_stream(), ["cae_straighten"])


# ----------------------------------------------------------------------------------------------------------
# the accumulation null
# ----------------------------------------------------------------------------------------------------------
def test_accumulation_null_keeps_means_and_update_norms(rs_random):
    null = nulls.accumulation_null(rs_random, seed=1)
    assert null.shape == rs_random.shape and null.dtype == np.float32
    np.testing.assert_allclose(null.mean(0), rs_random.mean(0), atol=1e-4)
    np.testing.assert_array_equal(null[:, 0], rs_random[:, 0])
    d_null = np.sort(np.linalg.norm(np.diff(null.astype(np.float64), axis=1), axis=2), axis=0)
    d_data = np.sort(np.linalg.norm(np.diff(rs_random.astype(np.float64), axis=1), axis=2), axis=0)
    np.testing.assert_allclose(d_null, d_data, rtol=1e-4)
    assert not np.allclose(null, rs_random)


def test_null_reports_the_data_s_number_where_it_cannot_move_it(rs_random):
    null = nulls.accumulation_null(rs_random, seed=1)
    a = {e.claim: e for e in robustness.claim_evidence(rs_random, ["magnitude_increases", "vel_increases",
                                                                   "r_increases_cross"], n_boot=0)}
    b = {e.claim: e for e in robustness.claim_evidence(null, ["magnitude_increases", "vel_increases",
                                                              "r_increases_cross"], n_boot=0)}
    assert b["magnitude_increases"].value == pytest.approx(a["magnitude_increases"].value, rel=1e-4)
    assert b["vel_increases"].value == pytest.approx(a["vel_increases"].value, rel=1e-4)
    assert not a["magnitude_increases"].extra["null_moves"] and a["r_increases_cross"].extra["null_moves"]


# ----------------------------------------------------------------------------------------------------------
# evidence and verdicts on streams whose answer is known
# ----------------------------------------------------------------------------------------------------------
TRENDS = ["r_increases_within", "r_increases_cross", "r_within_above_cross", "magnitude_increases",
          "cos_increases", "cos_within_above_cross", "vel_increases", "vel_cross_above_within", "density_increases"]


def test_growing_stream_decides_its_trends():
    ev = robustness.claim_evidence(_stream(), ["magnitude_increases", "r_early", "units_high_r"], n_boot=200)
    v = {(e.claim, e.reading): verdicts.decide(e)["verdict"] for e in ev}
    assert v["magnitude_increases", "mean_abs"] == "holds"
    assert v["r_early", "first_each_kind"] == "holds" and v["units_high_r", "median"] == "holds"


def test_stationary_stream_decides_no_trend_and_one_text_decides_nothing():
    for outlier in (False, True):
        ev = robustness.claim_evidence(_stationary(outlier=outlier), TRENDS, n_boot=300, seed=2)
        decided = [(e.claim, e.reading) for e in ev if verdicts.decide(e)["verdict"] != "undecided"]
        assert len(decided) <= 1, (outlier, decided)


def test_constant_first_sublayer_gives_undefined_not_fails():
    ev = robustness.claim_evidence(_stream(constant_first=True), ["r_early"], n_boot=50)
    first = {e.reading: e for e in ev}
    assert np.isnan(first["first_transition"].value)
    assert verdicts.decide(first["first_transition"])["reason"] == "value undefined"
    assert verdicts.decide(first["first_each_kind"])["verdict"] == "holds"


def test_stream_verdicts_against_the_null_and_random_init():
    rs = _stream()
    refs = {f"default:{s}": _stationary(n=40, L=14, D=12, phi=0.5, seed=s) for s in range(3)}
    table, ev = robustness.stream_verdicts(rs, refs, ["r_early", "magnitude_increases"], n_boot=200, workers=1,
                                           cache_dir=False)
    row = table.set_index(["claim", "reading"])
    assert set(e.run for e in ev) == {"trained", "null", "default:0", "default:1", "default:2"}
    assert row.loc[("r_early", "first_each_kind"), "line"] == "holds, beyond the null and random init"
    assert row.loc[("magnitude_increases", "mean_abs"), "refs"]["null"]["beyond"] is None   # the null keeps it
    # references only on the headline readings
    assert "default" not in row.loc[("r_early", "first_transition"), "refs"]
    frame = robustness.evidence_frame(ev, model="m")
    assert {"run", "verdict", "model"} <= set(frame.columns) and len(frame) == len(ev)


def test_random_walk_holds_but_so_does_the_null():
    """Residual accumulation alone gives high, rising correlations: the line must say so."""
    rng = np.random.default_rng(0)
    rs = np.cumsum(rng.normal(size=(150, 16, 24)) * np.r_[1, np.full(15, 0.55)][None, :, None], axis=1)
    table, _ = robustness.stream_verdicts(rs.astype(np.float32), {}, ["r_early", "r_increases_cross"], n_boot=300,
                                          workers=1, cache_dir=False)
    assert set(table.loc[table["reading"].isin(["first_each_kind", "median"]), "line"]) == {
        "holds, but so does the null"}


def test_claim_evidence_runs_side_by_side_equal_one_by_one():
    runs = {"a": _stream(seed=1), "b": _stream(seed=2)}
    kw = dict(keys=["r_early", "vel_increases"], n_boot=50)
    side = robustness.claim_evidence_runs(runs, workers=2, cache_dir=False, **kw)
    alone = robustness.claim_evidence_runs(runs, workers=1, cache_dir=False, **kw)
    for k in runs:
        for x, y in zip(side[k], alone[k]):
            assert (x.claim, x.reading) == (y.claim, y.reading) and x.value == y.value
            np.testing.assert_array_equal(x.replicates, y.replicates)


def _same_evidence(a, b):
    assert [(e.claim, e.reading, e.run, e.n, e.recentred, e.extra) for e in a] == \
        [(e.claim, e.reading, e.run, e.n, e.recentred, e.extra) for e in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal([x.value], [y.value])
        np.testing.assert_array_equal(x.replicates, y.replicates)
        assert (x.jackknife is None) == (y.jackknife is None)
        if x.jackknife is not None:
            np.testing.assert_array_equal(x.jackknife, y.jackknife)


def test_evidence_is_stored_and_read_back_unless_its_inputs_change(tmp_path, monkeypatch):
    from transformer_dynamics.robustness import evidence as ev_mod

    runs = {"a": _stream(seed=1), "null": _stream(seed=2)}
    kw = dict(keys=["r_early", "vel_increases", "mi_early_drop"], n_boot=40, n_boot_slow=8, workers=1,
              cache_dir=tmp_path)
    first = robustness.claim_evidence_runs(runs, **kw)
    assert any(e.jackknife is not None for e in first["a"])
    computed = []
    real = ev_mod._evidence_job
    monkeypatch.setattr(ev_mod, "_evidence_job", lambda rs, kwargs: computed.append(kwargs) or real(rs, kwargs))
    again = robustness.claim_evidence_runs(runs, **kw)
    assert computed == []                                      # read back, nothing computed
    for k in runs:
        _same_evidence(first[k], again[k])
    fewer = robustness.claim_evidence_runs(runs, **{**kw, "keys": ["vel_increases"], "n_shuffles": 7})
    assert computed == []                                      # a subset, and an option its curves do not read
    _same_evidence([e for e in first["a"] if e.claim == "vel_increases"], fewer["a"])
    robustness.claim_evidence_runs({"a": runs["a"]}, **{**kw, "keys": ["r_early", "cos_within_above_cross"]})
    assert [c["keys"] for c in computed] == [["cos_within_above_cross"]]   # only the claim not stored
    robustness.claim_evidence_runs(runs, **{**kw, "seed": 1})  # another seed: computed afresh
    assert len(computed) == 3
    changed = {"a": runs["a"].copy()}
    changed["a"][3, 2, 1] += 1e-3                              # one value of the stream
    robustness.claim_evidence_runs(changed, **kw)
    assert len(computed) == 4
    monkeypatch.setattr("transformer_dynamics.robustness.stored.package_source_hash", lambda: "f" * 64)
    robustness.claim_evidence_runs({"a": runs["a"]}, **kw)     # another package source
    assert len(computed) == 5
    robustness.claim_evidence_runs({"a": runs["a"]}, **{**kw, "cache_dir": False})
    assert len(computed) == 6


def test_a_reading_s_evidence_depends_only_on_what_its_key_holds():
    """What lets a reading be stored alone: its evidence is the same whichever claims are computed beside it, and
    whatever the options its key leaves out (those of curves it does not read)."""
    from transformer_dynamics.robustness import stored

    rs = np.cumsum(np.random.default_rng(4).normal(size=(40, 14, 16)), axis=1).astype(np.float32)
    base = dict(n_boot=20, n_boot_slow=4, mi_methods=("kde", "gcmi"), n_shuffles=4, mi_units=8)
    ref = {(e.claim, e.reading): e for e in robustness.claim_evidence(rs, None, **base)}
    for claim in sorted({c for c, _ in ref}):                  # alone
        for e in robustness.claim_evidence(rs, [claim], **base):
            _same_evidence([ref[e.claim, e.reading]], [e])
    digest = stored.stream_digest(rs)
    for change in (dict(n_shuffles=5), dict(variance=0.8), dict(pca_components=5), dict(mi_units=6),
                   dict(massive=[0]), dict(n_boot_slow=5), dict(n_boot=30)):
        kw = {**base, **change}
        kept = 0
        for e in robustness.claim_evidence(rs, None, **kw):
            if stored.pair_identity(digest, e.claim, e.reading, kw, "s") == \
                    stored.pair_identity(digest, e.claim, e.reading, base, "s"):
                _same_evidence([ref[e.claim, e.reading]], [e])
                kept += 1
        assert 0 < kept < len(ref), change


def test_evidence_of_old_package_sources_is_removed(tmp_path, monkeypatch):
    import os
    import time

    from transformer_dynamics.robustness import stored

    runs = {"a": _stream(seed=5)}
    kw = dict(keys=["vel_increases"], n_boot=20, workers=1, cache_dir=tmp_path)
    for i, src in enumerate("abcde"):
        monkeypatch.setattr(stored, "package_source_hash", lambda src=src: src * 64)
        robustness.claim_evidence_runs(runs, **kw)
        os.utime(tmp_path / "evidence" / (src * 16), (time.time() + i, time.time() + i))
    assert sorted(d.name for d in (tmp_path / "evidence").iterdir()) == [c * 16 for c in "cde"]
    computed = []
    monkeypatch.setattr("transformer_dynamics.robustness.evidence._evidence_job",
                        lambda rs, kwargs: computed.append(1) or [])
    robustness.claim_evidence_runs(runs, **kw)                 # the current source's evidence is kept
    assert computed == []


def test_a_damaged_evidence_entry_is_reported_and_computed_again(tmp_path):
    from transformer_dynamics import cache

    runs = {"a": _stream(seed=3)}
    kw = dict(keys=["r_early"], n_boot=30, workers=1, cache_dir=tmp_path)
    first = robustness.claim_evidence_runs(runs, **kw)
    state = sorted(tmp_path.glob("evidence/*/*/state.safetensors"))[0]
    data = bytearray(state.read_bytes())
    data[-5] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.warns(cache.CacheWarning, match="corrupt"):
        again = robustness.claim_evidence_runs(runs, **kw)
    _same_evidence(first["a"], again["a"])


def test_n_dependence_shape_and_full(rs_random):
    df = robustness.n_dependence(rs_random, [40, 10, 20], ["r_early", "vel_increases"], seed=0)
    assert list(df.index) == [10, 20, 40] and list(df.columns) == ["r_early", "vel_increases"]
    full = {e.claim: e.value for e in robustness.claim_evidence(rs_random, ["r_early", "vel_increases"], n_boot=0,
                                                                headline_only=True)}
    assert df.loc[40, "r_early"] == pytest.approx(full["r_early"], rel=1e-6)


def test_nested_subsamples():
    subs = robustness.nested_subsamples(50, [10, 20, 50], seed=1)
    assert [s.size for s in subs] == [10, 20, 50]
    assert set(subs[0]) <= set(subs[1]) <= set(subs[2])
    np.testing.assert_array_equal(subs[2], np.arange(50))
    with pytest.raises(ValueError, match="between 1"):
        robustness.nested_subsamples(50, [10, 60])


def test_precision_difference_identical(rs_random):
    d = robustness.precision_difference(rs_random, rs_random.copy())
    np.testing.assert_array_equal(d["rel_error"], 0.0)
    assert d["max_rel_error"] == 0.0
    assert all(v == pytest.approx(1.0) for v in d["corr"].values())


def test_precision_difference_known_error(rs_random):
    rng = np.random.default_rng(5)
    a = rs_random.astype(np.float64)
    noise = rng.standard_normal(a.shape)
    # scale the noise of each sublayer to exactly 1% of that sublayer's norm
    noise *= 0.01 * np.linalg.norm(a, axis=(0, 2))[None, :, None] / np.linalg.norm(noise, axis=(0, 2))[None, :, None]
    d = robustness.precision_difference(a, a + noise)
    np.testing.assert_allclose(d["rel_error"], 0.01, rtol=1e-9)
    assert d["corr"]["rs"] > 0.99
    with pytest.raises(ValueError, match="same texts"):
        robustness.precision_difference(a, a[:-1])


def test_headline_change():
    df = robustness.headline_change({"a": 1.0, "b": 0.0, "c": 2.0}, {"a": 1.5, "b": 0.1})
    assert list(df.index) == ["a", "b"]
    assert df.loc["a", "change"] == pytest.approx(0.5) and df.loc["a", "rel_change"] == pytest.approx(0.5)
    assert np.isnan(df.loc["b", "rel_change"])


def test_first_transitions_table():
    rs = _stream(constant_first=True)
    t = robustness.first_transitions_table({"as given": rs, "stripped": _stream()}, n_first=3, mi_units=4)
    assert list(t.columns) == ["variant", "transition", "kind", "r_median", "mi_mean"] and len(t) == 6
    g = t[t["variant"] == "as given"]
    assert np.isnan(g["r_median"].iloc[0]) and np.isfinite(g["r_median"].iloc[1])
    assert list(g["kind"]) == ["within", "cross", "within"]


def test_centred_cosine_leaves_float64_input_alone():
    """metrics._cosine centred a float64 array in place (torch .double() shares its memory): curves' centred
    cosine then zeroed the velocity computed after it."""
    rs = np.random.default_rng(0).normal(size=(6, 8, 3)) + 5.0
    before = rs.copy()
    metrics.centered_cosine_similarity(rs)
    np.testing.assert_array_equal(rs, before)


def test_shuffle_keep_last_variant():
    """The control that keeps BOS and the last token: only the order of the tokens between them changes."""
    from transformer_dynamics import data, pipeline

    ids = [[1, 10, 11, 12, 13, 14, 99], [1, 20, 98], [1, 97]]
    out = data.shuffle_token_ids(ids, seed=3, keep_last=True)
    for a, b in zip(ids, out):
        assert b[0] == a[0] and b[-1] == a[-1] and sorted(b) == sorted(a)
    assert out[0] != ids[0]                                   # the middle did move
    paper = data.shuffle_token_ids(ids, seed=3)               # the paper's control moves the last token too
    assert any(b[-1] != a[-1] for a, b in zip(ids, paper))
    assert "shuffled_keep_last" in pipeline.ALL_CONDITIONS and "shuffled_keep_last" not in pipeline.CONDITIONS
    with pytest.raises(ValueError, match="condition must be one of"):
        pipeline.residual_stream_store("smollm2-135m", n=4, condition="shuffled_all")


def test_mean_curves_resample_the_units():
    rng = np.random.default_rng(0)
    x = {"recovery": rng.normal(size=(20, 5)), "frac": rng.normal(size=20)}
    x["recovery"][3, 2] = np.nan
    full, reps = robustness.mean_curves(x, n_boot=7, seed=1)
    np.testing.assert_allclose(full["recovery"][0], np.nanmean(x["recovery"], 0))
    assert reps["recovery"].shape == (7, 5) and reps["frac"].shape == (7,)
    idx = bootstrap.bootstrap_indices(20, 7, seed=1)[4]
    np.testing.assert_allclose(reps["frac"][4], x["frac"][idx].mean())
    with pytest.raises(ValueError, match="same number of units"):
        robustness.mean_curves({"a": np.zeros(3), "b": np.zeros(4)})


def test_cae_curves_are_the_figure_s_numbers_and_resample_the_test_texts(rs_random):
    from transformer_dynamics import reduce

    res = reduce.fit_cae(rs_random, k=3, epochs=2, patience=1, seed=0, progress=False)
    x = rs_random[res.test_idx] if len(res.test_idx) >= 4 else rs_random[:8]
    full, reps = robustness.cae_curves(res, x, n_boot=5, seed=3)
    np.testing.assert_allclose(full["cae_ev"][0], reduce.explained_variance_per_sublayer_cae(res, x), rtol=1e-6)
    z = reduce.bottleneck_trajectories(res, x)
    np.testing.assert_allclose(full["cae_angle"][0], metrics.turning_angle(z.mean(0)), rtol=1e-5)
    np.testing.assert_allclose(full["cae_dist"][0], metrics.velocity(z).mean(0), rtol=1e-5)
    idx = bootstrap.bootstrap_indices(len(x), 5, seed=3)[2]
    again, _ = robustness.cae_curves(res, x[idx])
    for k in ("cae_ev", "cae_angle", "cae_dist"):
        np.testing.assert_allclose(reps[k][2], again[k][0], rtol=1e-5, atol=1e-9, err_msg=k)
    table, ev = robustness.cae_verdicts({0: (res, x), 1: (res, x)}, {"default:0": (res, x)}, n_boot=20)
    assert list(table["seeds"].iloc[0]) == [pytest.approx(full["cae_angle"].size and ev[0].value)] * 2
    assert table.loc[0, "refs"]["default"]["seeds"] == 1


# ----------------------------------------------------------------------------------------------------------
# chapter 8's lines: flips, lost power, undefined readings
# ----------------------------------------------------------------------------------------------------------
def _ev(claim, value, width, n, reading=None, run="trained"):
    """Constructed evidence: ``value`` with replicates spread evenly over +-``width`` (decided when the interval
    clears the claim's threshold)."""
    from transformer_dynamics import claims

    reading = reading or claims.get(claim).headline
    reps = np.full(201, np.nan) if not np.isfinite(value) else value + np.linspace(-width, width, 201)
    return verdicts.Evidence(claim, reading, run, value, reps, n)


def _frame(runs, references=()):
    return robustness.choice_frame({("m", c, s): ev for (c, s), ev in runs.items()}, references=references)


def _true_everywhere_with_small_n():
    """r_early = 0.812 (threshold 0.8) at every setting: decided at 1000 texts, undecided at fewer."""
    return {("headline", "strip=True, add_bos=True"): [_ev("r_early", 0.812, 0.005, 1000)],
            ("last token", "strip=False, add_bos=True"): [_ev("r_early", 0.812, 0.005, 1000)],
            ("N", "100"): [_ev("r_early", 0.812, 0.05, 100)],
            ("N", "250"): [_ev("r_early", 0.812, 0.03, 250)],
            ("N", "500"): [_ev("r_early", 0.812, 0.02, 500)],
            ("precision", "float32 (N=100)"): [_ev("r_early", 0.812, 0.05, 100)],
            ("precision", "bfloat16 (N=100)"): [_ev("r_early", 0.811, 0.05, 100)]}


def test_lines_true_everywhere_only_loses_power_and_never_blames_precision():
    lines = robustness.robustness_lines(_frame(_true_everywhere_with_small_n(),
                                               references=[("precision", "float32 (N=100)")]))
    (r,) = lines.itertuples()
    assert r.verdict == "holds" and r.status == "loses power" and r.flips == 0 and r.hinges_on == ""
    assert "hinges" not in r.line and "precision" not in r.line and "float32" not in r.line
    assert r.losses == 3 and "N = 100" in r.loses_power_at
    ch = robustness.setting_changes(_frame(_true_everywhere_with_small_n(),
                                           references=[("precision", "float32 (N=100)")]))
    by = dict(zip(ch["setting"], ch["change"]))
    assert by["float32 (N=100)"] == "reference" and by["bfloat16 (N=100)"] == "same"
    assert by["strip=False, add_bos=True"] == "same" and by["100"] == "loses power"


def test_lines_refuse_precision_compared_across_n():
    # no float32 row at the precision runs' N: comparing a 100-text row with the 1000-text headline would blame
    # precision for what N does
    with pytest.raises(ValueError, match="only the choice 'N' compares across N"):
        robustness.setting_changes(_frame(_true_everywhere_with_small_n()))


def test_lines_flip_hinges_on_its_choice_only():
    runs = {**_true_everywhere_with_small_n(),
            ("last token", "strip=False, add_bos=True"): [_ev("r_early", 0.5, 0.01, 1000)]}
    lines = robustness.robustness_lines(_frame(runs, references=[("precision", "float32 (N=100)")]))
    (r,) = lines.itertuples()
    assert r.status == "hinges" and r.hinges_on == "last token" and r.flips == 1
    assert r.line.startswith("hinges on last token") and "fails, 0.5" in r.line
    # precision at equal N flips too: then it is named
    runs[("precision", "float32 (N=100)")] = [_ev("r_early", 0.9, 0.01, 100)]
    runs[("precision", "bfloat16 (N=100)")] = [_ev("r_early", 0.7, 0.01, 100)]
    lines = robustness.robustness_lines(_frame(runs, references=[("precision", "float32 (N=100)")]))
    assert lines["hinges_on"].iloc[0] == "last token, precision"
    # a setting compared with its choice's reference names that reference
    assert "precision bfloat16 (N=100) (fails, 0.7 [0.691, 0.709]; float32 (N=100): holds)" in lines["line"].iloc[0]


def test_lines_undefined_reading_is_not_a_flip():
    nan = float("nan")
    runs = {("headline", "strip=True, add_bos=True"): [_ev("r_early", 0.9, 0.01, 200),
                                                       _ev("r_early", 0.9, 0.01, 200, "first_transition")],
            ("last token", "strip=False, add_bos=True"): [_ev("r_early", 0.9, 0.01, 200),
                                                          _ev("r_early", nan, 0.0, 200, "first_transition")]}
    lines = robustness.robustness_lines(_frame(runs)).set_index("reading")
    first = lines.loc["first_transition"]
    assert first["status"] == "robust" and first["flips"] == 0 and first["undefined"] == 1
    assert "undefined at last token strip=False" in first["line"] and "hinges" not in first["line"]
    assert lines.loc["first_each_kind", "status"] == "robust"
    # the headline itself undefined: the line says so and counts as undefined, not as a flip
    runs[("headline", "strip=True, add_bos=True")][0] = _ev("r_early", nan, 0.0, 200)
    head = robustness.robustness_lines(_frame(runs)).set_index("reading").loc["first_each_kind"]
    assert head["status"] == "undefined" and head["flips"] == 0 and head["line"].startswith("undefined")


def test_lines_premise_not_holding_is_undefined_not_lost_power():
    runs = {("headline", "h"): [_ev("mi_early_drop", 0.6, 0.01, 500), _ev("mi_drop_at_cross", 0.2, 0.01, 500)],
            ("N", "50"): [_ev("mi_early_drop", 0.6, 0.5, 50), _ev("mi_drop_at_cross", 0.2, 0.01, 50)]}
    lines = robustness.robustness_lines(_frame(runs)).set_index("claim")
    assert lines.loc["mi_early_drop", "status"] == "loses power"
    assert lines.loc["mi_drop_at_cross", "status"] == "robust"
    assert lines.loc["mi_drop_at_cross", "undefined"] == 1


def test_lines_other_readings_and_counts():
    runs = {("headline", "h"): [_ev("r_early", 0.9, 0.01, 200), _ev("r_early", 0.5, 0.01, 200, "first_transition"),
                                _ev("units_high_r", 0.9, 0.01, 200), _ev("cos_increases", 0.0, 0.1, 200)],
            ("last token", "x"): [_ev("r_early", 0.9, 0.01, 200), _ev("units_high_r", 0.9, 0.01, 200),
                                  _ev("cos_increases", 0.3, 0.1, 200)]}
    f = _frame(runs)
    f2 = f.assign(model="m2")
    lines = robustness.robustness_lines(pd.concat([f, f2], ignore_index=True))
    heads = lines[lines["headline_reading"]].set_index(["model", "claim"])
    assert heads.loc[("m", "r_early"), "status"] == "hinges"          # its other reading fails at the headline run
    assert heads.loc[("m", "r_early"), "hinges_on"] == "reading"
    assert heads.loc[("m", "units_high_r"), "status"] == "robust"
    assert heads.loc[("m", "cos_increases"), "status"] == "undecided"
    assert "decided at last token x (holds" in heads.loc[("m", "cos_increases"), "line"]
    counts = robustness.robustness_counts(lines)
    assert counts.loc["all", ["robust", "hinges", "undecided", "claims"]].tolist() == [2, 2, 2, 6]
    assert counts.loc["m", "claims"] == 3
    s = robustness.counts_sentence(counts)
    assert s.startswith("Of 6 claims × models (3 claims, 2 models), 2 are robust, 2 hinge")
    hinges = robustness.hinge_counts(lines)
    assert hinges.to_dict("index") == {"reading": {"m": 1, "m2": 1}}


def test_value_table_headline_readings_in_registry_order():
    ev = [_ev("units_high_r", 0.9, 0.01, 50), _ev("r_early", 0.9, 0.01, 50),
          _ev("r_early", 0.5, 0.01, 50, "first_transition"), _ev("cos_increases", float("nan"), 0, 50)]
    f = pd.concat([robustness.evidence_frame(ev, model=m) for m in ("a", "b")], ignore_index=True)
    t = robustness.value_table(f, "model")
    assert list(t.index.get_level_values("claim")) == ["r_early", "units_high_r", "cos_increases"]
    assert list(t.columns) == ["test", "a", "b"]
    assert t.loc[("1C", "r_early"), "a"].startswith("0.9 [") and t.loc[("1C", "r_early"), "test"] == "> 0.8"
    assert t.iloc[2]["b"] == "undefined"
    with pytest.raises(ValueError, match="lacks the columns"):
        robustness.value_table(f, "condition")


def test_a_chapter_s_claims_alone_give_chapter_8_s_numbers(rs_random):
    """Chapter 8 computes every claim of a run at once; a chapter decides only its own. Same keywords, same
    numbers: the value and every replicate."""
    kw = dict(n_boot=20, n_boot_slow=3, seed=1, mi_units=4, mi_methods=("gcmi",))
    own = robustness.claim_evidence(rs_random, ["r_early", "magnitude_increases", "mi_early_drop"], **kw)
    every = {(e.claim, e.reading): e for e in
             robustness.claim_evidence(rs_random, None, n_shuffles=5, pca_components=8, **kw)}
    for e in own:
        other = every[e.claim, e.reading]
        assert e.value == other.value or (np.isnan(e.value) and np.isnan(other.value))
        np.testing.assert_array_equal(e.replicates, other.replicates)


def test_prelayernorm_prediction_on_a_stream_of_independent_updates():
    """A stream built as Xiong et al.'s Lemma 2 assumes (independent zero-mean updates) follows its prediction."""
    rng = np.random.default_rng(0)
    n, L, D = 4000, 12, 16
    x0 = rng.normal(size=(n, 1, D)) * 2.0
    rs = np.concatenate([x0, x0 + np.cumsum(rng.normal(size=(n, L - 1, D)), axis=1)], axis=1).astype(np.float32)
    pred = nulls.prelayernorm_prediction(rs)
    assert pred["a"] == pytest.approx(4.0, rel=0.05)
    c = robustness.stream_curves(rs, ("r", "cos", "vel"))
    np.testing.assert_allclose(c["cos"], pred["cos"], atol=0.03)
    np.testing.assert_allclose(c["r"], pred["r"], atol=0.03)
    np.testing.assert_allclose(c["norm"], pred["norm"], rtol=0.05)
    with pytest.raises(ValueError, match="no energy"):
        nulls.prelayernorm_prediction(np.zeros((3, 4, 2), np.float32))


def test_reference_curves_average_each_kind_over_its_seeds():
    a, b = _stream(seed=1), _stream(seed=2)
    ref = robustness.reference_curves({"default:0": a, "default:1": b, "permuted:0": a}, ("r",))
    np.testing.assert_allclose(ref["default"]["r"], (robustness.stream_curves(a, ("r",))["r"]
                                                     + robustness.stream_curves(b, ("r",))["r"]) / 2)
    assert set(ref) == {"default", "permuted"}


def test_slow_statistics_are_left_out_for_the_outlying_texts(rs_random):
    x = rs_random.copy()
    x[7] *= 25.0                                               # one text far from the others
    assert robustness.curves.outlying_texts(x, 3)[0] == 7
    opts = CurveOptions(mi_units=np.arange(4), mi_methods=("gcmi",), n_shuffles=5, pca_components=8, seed=0)
    cv = rs_curves(x, ("rot", "pca"), opts, n_boot=4, n_boot_slow=2)
    assert np.isfinite(cv.jack["rot_abs"][7]) and np.isnan(cv.jack["rot_abs"]).sum() == len(x) - 5
    without = rs_curves(np.delete(x, 7, axis=0), ("rot", "pca"), opts).full
    assert cv.jack["rot_abs"][7] == pytest.approx(without["rot_abs"][0])
