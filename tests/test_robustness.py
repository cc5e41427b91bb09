"""robustness: headline numbers on constructed arrays with known answers, bootstrap, N-dependence, precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transformer_dynamics import bootstrap, claims, metrics, phase, robustness


def _orthonormal_columns(n: int, k: int, rng) -> np.ndarray:
    """(n, k) orthonormal columns, each centred (they span centred vectors): exact sample variances and zero
    sample covariances."""
    a = rng.standard_normal((n, k))
    q, _ = np.linalg.qr(a - a.mean(0))
    return q


@pytest.fixture(scope="module")
def rs_random():
    rng = np.random.default_rng(0)
    n, L, D = 40, 14, 16
    base = rng.standard_normal((n, 1, D))
    drift = np.cumsum(rng.standard_normal((n, L, D)) * 0.3, axis=1)
    # every unit oscillates over the sublayers (its own phase): clear rotations of the mean trajectory
    osc = 2.0 * np.cos(1.1 * np.arange(L)[:, None] + rng.uniform(0, 2 * np.pi, D)[None, :])
    return (base + drift + osc[None] + np.linspace(0, 3, L)[None, :, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# headline numbers with known answers
# ----------------------------------------------------------------------------------------------------------
def test_r_headlines_known_answer():
    """Within-layer transitions: an exact affine copy (r = 1); cross-layer: a fresh independent draw."""
    rng = np.random.default_rng(1)
    n, L, D = 3000, 8, 6
    rs = np.empty((n, L, D))
    for s in range(0, L, 2):
        x = rng.standard_normal((n, D))
        rs[:, s] = x
        rs[:, s + 1] = 2.0 * x + 1.0          # sublayer 2l -> 2l+1 (within) : r = 1
    c = robustness.curves(rs, groups=("r",))
    w, x = metrics.split_transitions(c["r_median"])
    np.testing.assert_allclose(w, 1.0, atol=1e-9)
    assert np.all(np.abs(x) < 0.1)             # independent draws: r ~ N(0, 1/sqrt(n))
    h = robustness.headlines_from_curves(c)
    assert h["r_first"] == pytest.approx(1.0)
    assert h["r_within_above_cross"] == 1.0
    assert h["r_first_transition"] == pytest.approx(1.0) and h["r_first_each_kind"] < 0.1


def test_cos_and_velocity_known_answer():
    """Fixed vectors per sublayer: cosines and speeds are closed forms."""
    L, D, n = 14, 4, 5
    t = np.arange(L, dtype=np.float64)
    # direction of sublayer s: angle phi_s in the (e0, e1) plane; magnitude s^3 + 1
    phi = np.where(t % 2 == 0, 0.0, 0.3)       # within: 0 -> 0.3 ; cross: 0.3 -> 0
    phi = phi + 0.1 * t
    mag = t ** 3 + 1.0
    v = np.zeros((L, D))
    v[:, 0], v[:, 1] = mag * np.cos(phi), mag * np.sin(phi)
    rs = np.broadcast_to(v, (n, L, D)).copy()
    c = robustness.curves(rs, groups=("cos", "vel"))
    np.testing.assert_allclose(c["cos_mean"], np.cos(np.diff(phi)), rtol=1e-12)
    np.testing.assert_allclose(c["vel_mean"], np.linalg.norm(np.diff(v, axis=0), axis=1), rtol=1e-12)
    h = robustness.headlines_from_curves(c)
    # within steps turn by 0.4 rad, cross steps by -0.2 rad: cos(0.2) > cos(0.4), so cross is more similar
    assert h["cos_within"] == pytest.approx(np.cos(0.4))
    assert h["cos_cross"] == pytest.approx(np.cos(0.2))
    assert h["cos_within_above_cross"] == 0.0
    # speeds grow like s^2: the steepest increase is in the last third for both kinds
    assert h["vel_steepest_third_within"] == 3.0 and h["vel_steepest_third_cross"] == 3.0


def test_mi_headlines_known_drop():
    """mi_drop and the cross-layer test on a given MI curve."""
    mi = np.array([2.0, 1.9, 1.0, 0.95, 0.9, 0.85, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6])  # 12 transitions
    h = robustness.headlines_from_curves({"mi_mean": mi})
    assert h["mi_first"] == 2.0
    assert h["mi_min_early"] == pytest.approx(0.95)         # first third: max(4, 12 // 3) = 4 transitions
    assert h["mi_drop"] == pytest.approx(1 - 0.95 / 2.0)
    assert h["mi_steepest_drop_cross"] == 0.0               # the big drop is into t = 2 (within)
    mi2 = mi.copy()
    mi2[1], mi2[2] = 1.0, 0.98                                # now the big drop is into t = 1 (cross)
    assert robustness.headlines_from_curves({"mi_mean": mi2})["mi_steepest_drop_cross"] == 1.0


def test_mi_curve_matches_metrics(rs_random):
    c = robustness.curves(rs_random, groups=("mi",), mi_units=[0, 3, 5], mi_method="gcmi")
    ref = metrics.mutual_information(rs_random, "gcmi", units=[0, 3, 5]).mean(1)
    np.testing.assert_allclose(c["mi_mean"], ref)


def test_rotation_headlines_match_phase(rs_random):
    c = robustness.curves(rs_random, groups=("rot",), n_shuffles=20, seed=3)
    obs = phase.rotations_per_unit(rs_random, "mean")
    null = phase.null_per_unit(rs_random, "mean", 20, seed=3)
    h = robustness.headlines_from_curves(c)
    assert h["rot_mean_abs"] == pytest.approx(np.abs(obs).mean())
    assert h["rot_null_mean_abs"] == pytest.approx(np.abs(null).mean())
    assert h["rot_minus_null"] == pytest.approx(np.abs(obs).mean() - np.abs(null).mean())


def test_pca_headlines_known_dimensions():
    """Axis-aligned design: the last third of the sublayers varies along e6 (largest global variance), the
    middle third along e4, e5 (equal), the first third along e0..e3 (equal, smallest). The global components
    are then e6, {e4, e5}, {e0..e3}, so sublayers need 1, 3 and 3 + 4 = 7 of them for 90% (3 of 4 equal
    directions give 75%)."""
    rng = np.random.default_rng(2)
    n, L, D = 60, 9, 10
    rs = np.zeros((n, L, D))
    for s in range(L):
        dims, scale = ([0, 1, 2, 3], 1.0) if s < 3 else (([4, 5], 3.0) if s < 6 else ([6], 10.0))
        rs[:, s, dims] = _orthonormal_columns(n, len(dims), rng) * scale
    c = robustness.curves(rs, groups=("pca",), variance=0.9)
    np.testing.assert_array_equal(c["sublayer_pcs"], [7, 7, 7, 3, 3, 3, 1, 1, 1])
    h = robustness.headlines_from_curves(c)
    assert h["pcs_first_third"] == 7.0 and h["pcs_last_third"] == 1.0
    assert h["pcs_last_minus_first"] == -6.0
    # global variances 300 (e6), 2 x 27, 4 x 3 over 366: 90% needs e6, e4, e5 (354 / 366 = 0.967) -> 3
    assert h["pcs_total"] == 3.0
    np.testing.assert_allclose(c["ev_ratio"].sum(), 1.0)


def test_headline_numbers_keys_and_order(rs_random):
    h = robustness.headline_numbers(rs_random, mi_units=4, mi_method="gcmi", n_shuffles=10)
    assert list(h) == [k for k in robustness.STATISTICS if k in h]
    assert set(h) == set(robustness.STATISTICS)
    assert all(isinstance(v, float) for v in h.values())


def test_bad_input():
    with pytest.raises(ValueError, match="n_samples, n_sublayers"):
        robustness.headline_numbers(np.zeros((4, 6)))
    with pytest.raises(ValueError, match="groups"):
        robustness.curves(np.zeros((8, 8, 3)), groups=("nope",))
    with pytest.raises(ValueError, match="precision"):
        robustness.precision_kwargs("int3")
    assert robustness.precision_kwargs("4bit") == {"dtype": "float32", "quantization": "4bit"}
    assert robustness.precision_kwargs("bfloat16") == {"dtype": "bfloat16", "quantization": None}


def test_relative_depth():
    np.testing.assert_allclose(robustness.relative_depth(4), [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(robustness.relative_depth(3, transitions=True), [0.125, 0.375, 0.625])


# ----------------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------------
def test_recentred_interval(rs_random):
    """Keys flagged resample_biased: percentile interval of the replicates shifted by estimate - median."""
    df, reps = robustness.bootstrap_headlines(rs_random, 30, 1, groups=("pca",), n_boot_slow=12, return_samples=True)
    r = reps["pcs_total"]
    lo, hi = np.nanquantile(r, [0.025, 0.975])
    shift = df.loc["pcs_total", "estimate"] - np.nanmedian(r)
    assert df.loc["pcs_total", "low"] == pytest.approx(lo + shift)
    assert df.loc["pcs_total", "high"] == pytest.approx(hi + shift)
    assert r.size == 12


def test_fast_bootstrap_equals_recomputation(rs_random):
    """The vectorised replicates equal the headline numbers recomputed on the resampled texts."""
    n_boot, seed = 6, 4
    df, reps = robustness.bootstrap_headlines(rs_random, n_boot, seed, groups=("r", "cos", "vel", "rot"),
                                           n_shuffles=0, return_samples=True)
    idx = bootstrap.bootstrap_indices(rs_random.shape[0], n_boot, seed)
    for b in range(n_boot):
        h = robustness.headline_numbers(rs_random[idx[b]], groups=("r", "cos", "vel", "rot"), n_shuffles=0)
        for k, v in h.items():
            assert reps[k][b] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), k


def test_fast_replicates_do_not_depend_on_the_batch(rs_random):
    """The resamples per matrix product (bootstrap.batch_rows: up to 500) change the speed, not the replicates."""
    from transformer_dynamics.robustness import resampling

    counts = bootstrap.bootstrap_counts(rs_random.shape[0], 23, 1)
    groups = ("mean", "r", "cos", "vel", "rot")
    auto = resampling._fast_replicates(rs_random, counts, groups)
    for b in (1, 7):
        small = resampling._fast_replicates(rs_random, counts, groups, batch=b)
        for k in auto:
            np.testing.assert_allclose(small[k], auto[k], rtol=1e-12, atol=1e-12, err_msg=k)
    assert bootstrap.batch_rows(5 * 576) == 500 and bootstrap.batch_rows(64 * 4096) == 64


def test_bootstrap_ci_contains_estimate(rs_random):
    df = robustness.bootstrap_headlines(rs_random, 200, 0, mi_units=4, mi_method="gcmi", n_shuffles=10,
                                     n_boot_slow=20)
    assert isinstance(df, pd.DataFrame)
    assert set(df.index) == set(robustness.STATISTICS)
    for k in ["r_first", "r_last", "cos_within", "cos_cross", "rot_mean_abs", "mi_first"]:
        row = df.loc[k]
        assert row.low <= row.estimate <= row.high, k
        assert row.low < row.high, k
    assert df.loc["r_last", "n_boot"] == 200 and df.loc["mi_first", "n_boot"] == 20
    assert df.loc["r_last", "interval"] == "percentile" and df.loc["mi_first", "interval"] == "recentred"
    est = robustness.headline_numbers(rs_random, mi_units=4, mi_method="gcmi", n_shuffles=10)
    for k, v in est.items():
        assert df.loc[k, "estimate"] == pytest.approx(v, nan_ok=True)


# ----------------------------------------------------------------------------------------------------------
# N-dependence
# ----------------------------------------------------------------------------------------------------------
def test_nested_subsamples():
    subs = robustness.nested_subsamples(50, [10, 20, 50], seed=1)
    assert [s.size for s in subs] == [10, 20, 50]
    assert set(subs[0]) <= set(subs[1]) <= set(subs[2])
    np.testing.assert_array_equal(subs[2], np.arange(50))
    with pytest.raises(ValueError, match="between 1"):
        robustness.nested_subsamples(50, [10, 60])


def test_n_dependence_shape_and_full(rs_random):
    kw = dict(groups=("r", "cos", "vel", "rot"), n_shuffles=0)
    df = robustness.n_dependence(rs_random, [40, 10, 20], seed=0, **kw)
    assert list(df.index) == [10, 20, 40]
    full = robustness.headline_numbers(rs_random, **kw)
    assert list(df.columns) == list(full)
    for k, v in full.items():                  # N = all texts is the full array (order does not matter)
        assert df.loc[40, k] == pytest.approx(v, rel=1e-6), k
    sub = robustness.nested_subsamples(40, [10, 20, 40], seed=0)[0]
    assert df.loc[10, "r_last"] == pytest.approx(robustness.headline_numbers(rs_random[sub], **kw)["r_last"])


# ----------------------------------------------------------------------------------------------------------
# precision
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------
def test_plots_return_figures(rs_random):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from transformer_dynamics.plots import robustness as pc

    kw = dict(mi_units=4, mi_method="gcmi", n_shuffles=5)
    cur = {"a": robustness.curves(rs_random, **kw), "b": robustness.curves(rs_random[:, :12], **kw)}
    fig = pc.plot_successive_r(cur)
    ax = fig.axes[0]
    assert len(ax.lines) == 4                                  # 2 models x (within, cross)
    x = ax.lines[0].get_xdata()                                # model a, within: transitions 0, 2, 4 ...
    np.testing.assert_allclose(x, robustness.relative_depth(13, transitions=True)[::2])
    for f in (pc.plot_cosine, pc.plot_velocity, pc.plot_mutual_information, pc.plot_rotations,
              pc.plot_cumulative_ev):
        assert isinstance(f(cur), Figure)
    boot = robustness.bootstrap_headlines(rs_random, 20, 0, n_boot_slow=3, **kw)
    fig = pc.plot_headline_intervals({"a": boot, "b": boot}, keys=["r_first", "rot_mean_abs"])
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    nd = robustness.n_dependence(rs_random, [10, 40], groups=("r", "cos"))
    assert isinstance(pc.plot_n_dependence(nd, intervals=boot), Figure)
    assert isinstance(pc.plot_relative_error({"bf16": np.full(14, 1e-3)}), Figure)
    with pytest.raises(ValueError, match="missing"):
        pc.plot_cumulative_ev({"a": {"r_median": np.zeros(3)}})
    plt.close("all")


# ----------------------------------------------------------------------------------------------------------
# claims: evidence, verdicts, robustness lines
# ----------------------------------------------------------------------------------------------------------
def _stream(n=80, L=14, D=12, seed=0, constant_first=False):
    """A stream whose units keep their identity over the sublayers (high successive r) and grow with depth."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, D))
    noise = rng.standard_normal((n, L, D)) * 0.05
    rs = x * np.linspace(1.0, 3.0, L)[None, :, None] + noise
    if constant_first:
        rs[:, 0] = 1.0                       # every text ends in the same token: sublayer 0 is constant
    return rs.astype(np.float32)


def test_constant_first_sublayer_gives_undefined_not_fails():
    rs = _stream(constant_first=True)
    ev = robustness.claim_evidence(rs, n_boot=50, n_boot_slow=2, groups=("r",), seed=1)
    first = ev[(ev["claim"] == "r_early") & (ev["reading"] == "first_transition")].iloc[0]
    assert np.isnan(first["value"])
    v = robustness.verdict_table(ev.assign(model="m", choice="baseline", setting="-"))
    row = v[(v["claim"] == "r_early") & (v["reading"] == "first_transition")].iloc[0]
    assert row["verdict"] == "undecided" and row["reason"] == "value undefined"
    # the headline reading (first of each kind) is defined and high here
    head = v[(v["claim"] == "r_early") & (v["reading"] == "first_each_kind")].iloc[0]
    assert head["value"] > 0.9 and head["verdict"] == "holds"


def test_monotone_stream_gives_positive_trends():
    ev = robustness.claim_evidence(_stream(), n_boot=50, n_boot_slow=2, groups=("mean", "r"), seed=1)
    v = robustness.verdict_table(ev.assign(model="m", choice="baseline", setting="-")).set_index("claim")
    assert v.loc["magnitude_increases", "value"] > 0.9 and v.loc["magnitude_increases", "verdict"] == "holds"
    assert v.loc["sign_preserved", "verdict"] == "holds"


def test_stripping_flips_a_claim_hinges_on_strip():
    """Rows as given: sublayer 0 constant -> the literal first transition undefined (undecided); stripped:
    defined and high (holds). With first_transition as the reading, the line says 'hinges on strip'."""
    runs = []
    for choice, setting, const in (("baseline", "strip=False", True), ("strip", "True", False)):
        ev = robustness.claim_evidence(_stream(constant_first=const), n_boot=50, n_boot_slow=2, groups=("r",),
                                    seed=1)
        ev = ev[(ev["claim"] == "r_early") & (ev["reading"] == "first_transition")]
        runs.append(ev.assign(model="m", choice=choice, setting=setting, reading="first_each_kind"))
    lines = robustness.robustness_lines(robustness.verdict_table(pd.concat(runs, ignore_index=True)))
    assert len(lines) == 1
    r = lines.iloc[0]
    assert r["status"] == "hinges" and r["hinges_on"] == "strip"
    assert r["line"].startswith("hinges on strip (True: holds") and "undefined" in r["line"]


def test_robustness_table_shape_and_choices():
    rng = np.random.default_rng(3)
    runs = []
    for m in ("a", "b"):
        for choice, setting in (("baseline", "-"), ("N", "40")):
            rs = _stream(n=80 if choice == "baseline" else 40, seed=int(rng.integers(99)))
            runs.append(robustness.claim_evidence(rs, n_boot=30, n_boot_slow=2, groups=("mean", "r", "cos", "vel"),
                                               seed=0).assign(model=m, choice=choice, setting=setting))
    v = robustness.verdict_table(pd.concat(runs, ignore_index=True))
    assert set(v["verdict"]) <= set(claims.VERDICTS)
    lines = robustness.robustness_lines(v)
    # one line per (claim, model), every claim registered, every choice named exists in the runs
    assert len(lines) == len(lines[["claim", "model"]].drop_duplicates()) == 2 * v["claim"].nunique()
    assert set(lines["claim"]) <= set(claims.REGISTRY)
    for on in lines["hinges_on"]:
        assert all(c in {"N", "reading", "N & reading"} for c in on.split(", ") if c)
    assert set(lines["status"]) <= {"robust", "hinges", "undecided"}


def test_claim_evidence_runs_side_by_side_equal_one_by_one():
    """Two worker processes give each run's claim_evidence (to round-off: one BLAS thread there), labelled with
    its key, in the order of the runs, with per-run keywords applied."""
    runs = {("a", "baseline", "-"): _stream(n=60, seed=1), ("a", "N", "30"): _stream(n=30, seed=2),
            ("b", "baseline", "-"): _stream(n=60, seed=3)}
    kw = dict(n_boot=30, n_boot_slow=2, groups=("mean", "r", "vel", "mi"), seed=0, mi_units=4)
    per_run = {("b", "baseline", "-"): {"mi_methods": ("kde", "gcmi")}}
    side = robustness.claim_evidence_runs(runs, names=("model", "choice", "setting"), per_run=per_run, workers=2,
                                          **kw)
    alone = pd.concat([robustness.claim_evidence(rs, **{**kw, **per_run.get(k, {})}).assign(
        model=k[0], choice=k[1], setting=k[2]) for k, rs in runs.items()], ignore_index=True)
    assert list(side.columns) == list(alone.columns)
    pd.testing.assert_frame_equal(side, alone, rtol=1e-9)
    assert "gcmi" in set(side.loc[side["model"] == "b", "reading"])
    with pytest.raises(ValueError, match="tuple of 3 values"):
        robustness.claim_evidence_runs({"a": runs["a", "N", "30"]}, names=("model", "choice", "setting"))


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


def test_pca_difference_undefined_when_not_reached():
    """A sublayer that needs more components than kept makes 'fewer PCs later' undefined, not 0."""
    ev = np.full(4, 0.25)
    pcs = np.array([np.inf, 2.0, 2.0, 1.0, 1.0, 1.0])
    h = robustness.headlines_from_curves({"ev_ratio": ev, "sublayer_pcs": pcs, "variance": 0.9})
    assert h["pcs_first_third"] == 3.5 and np.isnan(h["pcs_last_minus_first"])



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
