"""Tests for transformer_dynamics.phase (Figure 2: portraits, rotation counts, shuffle nulls)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from transformer_dynamics import phase as P


def _count_xy(x, y, atol=0.0):
    """The tangent-turning count of a given 2-D polyline (the core of every rotation count)."""
    return P._rotations_xy(np.asarray(x, dtype=float), np.asarray(y, dtype=float), atol)


def _reference_count(x: np.ndarray, y: np.ndarray) -> float:
    """Plain one-curve implementation of the methods' formula with numpy.unwrap."""
    theta = np.arctan2(np.diff(y), np.diff(x))
    return float(np.sum(np.diff(np.unwrap(theta))) / (2 * np.pi))


def _circle(k: float, m: int, ccw: bool = True):
    t = np.linspace(0.0, 1.0, m)
    return np.cos(2 * np.pi * k * t), (1 if ccw else -1) * np.sin(2 * np.pi * k * t)


# ------------------------------------------------------------------------------------------------
# portraits
# ------------------------------------------------------------------------------------------------
def test_portrait_matches_numpy_gradient():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5, 17))
    x, y = P.phase_portrait(a)
    g = np.gradient(a, axis=-1)
    np.testing.assert_allclose(x, a - a[..., :1])
    np.testing.assert_allclose(y, g - g[..., :1])
    assert np.all(x[..., 0] == 0) and np.all(y[..., 0] == 0)


def test_count_matches_portrait_and_reference():
    rng = np.random.default_rng(1)
    a = np.cumsum(rng.standard_normal((40, 64)), axis=-1)
    x, y = P.phase_portrait(a)
    ref = np.array([_reference_count(xi, yi) for xi, yi in zip(x, y)])
    np.testing.assert_allclose(P.count_rotations(a), ref, atol=1e-9)
    np.testing.assert_allclose(_count_xy(x, y), ref, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# known answers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_circle_closed_form(k):
    # m points on k counter-clockwise turns: m-1 chords whose angles advance by 2*pi*k/(m-1) each, so
    # the m-2 angle changes sum to exactly k (m-2)/(m-1) turns.
    m = 101
    x, y = _circle(k, m)
    assert _count_xy(x, y) == pytest.approx(k * (m - 2) / (m - 1), abs=1e-9)
    # reversing the direction flips the sign; a clockwise circle counts negative
    assert _count_xy(x[::-1], y[::-1]) == pytest.approx(-k * (m - 2) / (m - 1), abs=1e-9)
    xc, yc = _circle(k, m, ccw=False)
    assert _count_xy(xc, yc) == pytest.approx(-k * (m - 2) / (m - 1), abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_oscillation_turns_clockwise_k_times(k):
    # a = sin(w l) over k full periods: the portrait (sin, ~w cos) is an ellipse run clockwise k times
    # (where the gradient is positive the activation grows), so R = -k up to the two one-sided ends.
    n = 257
    lin = np.arange(n)
    a = np.sin(2 * np.pi * k * lin / (n - 1))
    assert P.count_rotations(a) == pytest.approx(-k, abs=0.05)
    # an outward spiral (growing amplitude, as the paper describes) turns the same number of times
    assert P.count_rotations((1 + lin / 50) * a) == pytest.approx(-k, abs=0.1)
    # negating the activation rotates the portrait by pi: same count; reversing the sublayers reflects
    # the portrait and reverses its direction: the same count again
    assert P.count_rotations(-a) == pytest.approx(P.count_rotations(a), abs=1e-9)
    assert P.count_rotations(a[::-1]) == pytest.approx(P.count_rotations(a), abs=1e-9)


def test_lines_and_constants_do_not_rotate():
    lin = np.arange(64.0)
    assert P.count_rotations(3 * lin + 2) == 0
    assert P.count_rotations(np.full(64, 1.5)) == 0  # no defined tangent at all
    # a parabola's portrait is a single smooth arc: less than a quarter turn
    assert abs(P.count_rotations(lin**2)) < 0.25


def test_zero_length_steps_are_skipped():
    x, y = _circle(2, 60)
    r = _count_xy(x, y)
    # repeat every point (each repeat is a zero-length tangent step), including the first
    r_rep = _count_xy(np.repeat(x, 3), np.repeat(y, 3))
    assert r_rep == pytest.approx(r, abs=1e-9)
    # atol merges tiny steps: jitter of 1e-12 on the repeats does not add turning
    xj = np.repeat(x, 2) + np.tile([0.0, 1e-12], 60)
    assert _count_xy(xj, np.repeat(y, 2), atol=1e-9) == pytest.approx(r, abs=1e-6)


def test_broadcasting_dtype_and_torch():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 4, 20)).astype(np.float32)
    r = P.count_rotations(a)
    assert r.shape == (2, 3, 4) and r.dtype == np.float32
    np.testing.assert_allclose(r.reshape(-1), P.count_rotations(a.reshape(-1, 20)))
    np.testing.assert_allclose(r[1, 2, 3], P.count_rotations(a[1, 2, 3]))
    rt = P.count_rotations(torch.from_numpy(a))
    assert isinstance(rt, torch.Tensor) and rt.shape == (2, 3, 4)
    np.testing.assert_allclose(rt.numpy(), r)


def test_bad_input():
    with pytest.raises(ValueError, match="n_sublayers >= 3"):
        P.count_rotations(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        P.count_rotations(np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(ValueError, match="n_shuffles"):
        P.shuffle_null(np.zeros((2, 5)), n_shuffles=0)
    with pytest.raises(ValueError, match="what"):
        P.shuffle_null(np.zeros((2, 5)), n_shuffles=2, what="layers")
    with pytest.raises(ValueError, match="mode"):
        P.rotations_per_unit(np.zeros((2, 5, 3)), mode="median")
    with pytest.raises(ValueError, match="n_samples, n_sublayers, d_model"):
        P.rotations_per_unit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="null must have shape"):
        P.rotation_summary(np.zeros(3), np.zeros((10, 4)))


# ------------------------------------------------------------------------------------------------
# the shuffle null
# ------------------------------------------------------------------------------------------------
def test_null_shape_and_determinism():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 5, 16)).astype(np.float32)
    n1 = P.shuffle_null(a, n_shuffles=37, seed=7, n_jobs=1)
    assert n1.shape == (37, 2, 5)
    np.testing.assert_array_equal(n1, P.shuffle_null(a, n_shuffles=37, seed=7, n_jobs=2))
    assert not np.array_equal(n1, P.shuffle_null(a, n_shuffles=37, seed=8))
    # the first shuffles do not depend on how many are drawn
    np.testing.assert_array_equal(n1[:16], P.shuffle_null(a, n_shuffles=16, seed=7))
    # each trajectory gets its own permutations: identical trajectories get different null values
    same = np.broadcast_to(a[0, 0], (6, 16))
    ns = P.shuffle_null(same, n_shuffles=20)
    assert not np.allclose(ns[:, 0], ns[:, 1])


@pytest.mark.parametrize("what", ["sublayers", "points"])
def test_null_draws_uniform_permutations(what):
    # With 4 sublayers there are 24 orders; the null's values must be the counts of those orders, each
    # order drawn with probability 1/24.
    a = np.array([0.3, -1.2, 2.0, 0.7])
    g = np.gradient(a)
    counts = []
    for p in itertools.permutations(range(4)):
        p = np.array(p)
        counts.append(P.count_rotations(a[p]) if what == "sublayers" else _count_xy(a[p], g[p]))
    counts = np.round(np.array(counts), 9)
    values, expected = np.unique(counts, return_counts=True)
    n_sh = 4800
    null = np.round(P.shuffle_null(a, n_shuffles=n_sh, seed=0, what=what), 9)
    assert set(np.unique(null)) <= set(values)
    observed = np.array([(null == v).sum() for v in values])
    expected = expected / 24 * n_sh
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 40  # df <= 23; P(chi2 > 40) < 0.02 even at the largest df


def test_points_null_is_centred_and_sublayer_null_is_not():
    n = 64
    lin = np.arange(n)
    rot = np.sin(2 * np.pi * 5 * lin / (n - 1))  # a pure rotation: R = -5
    null = P.shuffle_null(rot, n_shuffles=2000, seed=1, what="points")
    se = null.std() / np.sqrt(null.size)
    assert abs(null.mean()) < 4 * se
    # the literal null (permute activations, recompute the gradient) of the same rotation turns *more*
    # (clockwise) than the rotation itself: shuffled sequences are rough, and roughness turns clockwise
    sub_rot = P.shuffle_null(rot, n_shuffles=200, seed=1, what="sublayers")
    assert sub_rot.mean() < P.count_rotations(rot) - 5
    # i.i.d. noise: the activation-gradient plane itself turns clockwise (E[g_l da_l] = var / 2 > 0)
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((200, n))
    sub = P.shuffle_null(noise, n_shuffles=50, seed=2, what="sublayers")
    assert sub.mean() < -10
    assert P.count_rotations(noise).mean() < -10


# ------------------------------------------------------------------------------------------------
# residual-stream helpers
# ------------------------------------------------------------------------------------------------
def _rs(seed=5, S=12, n=10, D=7):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((S, n, D)), axis=1).astype(np.float32)


def test_rotations_per_unit_modes(monkeypatch):
    rs = _rs()
    rs[:, :, 0] = 1.0  # a constant unit (no defined tangent): 0
    rs[:3, 4:7, 1] = rs[:3, 4:5, 1]  # a flat stretch (zero-length steps) inside some samples
    np.testing.assert_allclose(P.rotations_per_unit(rs, "mean"), P.count_rotations(rs.mean(0).T), rtol=1e-5)
    per = P.rotations_per_sample(rs)
    assert per.shape == (12, 7)
    np.testing.assert_allclose(per, np.stack([P.count_rotations(r.T) for r in rs]), rtol=1e-5)
    np.testing.assert_allclose(P.rotations_per_unit(rs, "per_sample"), per.mean(0), rtol=1e-5)
    assert np.all(per[:, 0] == 0)
    monkeypatch.setattr(P, "_MAX_ELEMENTS", 100)  # many chunks: same answer
    np.testing.assert_allclose(P.rotations_per_sample(rs), per, rtol=1e-6)


def test_null_per_unit_modes(monkeypatch):
    rs = _rs()
    nm = P.null_per_unit(rs, "mean", n_shuffles=20, seed=3)
    assert nm.shape == (20, 7)
    np.testing.assert_allclose(nm, P.shuffle_null(rs.mean(0).T, n_shuffles=20, seed=3), rtol=1e-6)
    # identical samples: the per-sample null applies one permutation per unit to all samples, so it
    # equals the mean-trajectory null
    same = np.broadcast_to(rs[:1], rs.shape).copy()
    np.testing.assert_allclose(P.null_per_unit(same, "per_sample", n_shuffles=20, seed=3),
                               P.null_per_unit(same, "mean", n_shuffles=20, seed=3), rtol=1e-5, atol=1e-6)
    ps = P.null_per_unit(rs, "per_sample", n_shuffles=20, seed=3, max_samples=5)
    monkeypatch.setattr(P, "_MAX_ELEMENTS", 64)  # memory chunking does not change the random stream
    np.testing.assert_allclose(P.null_per_unit(rs, "per_sample", n_shuffles=20, seed=3, max_samples=5), ps)
    assert ps.shape == (20, 7)


# ------------------------------------------------------------------------------------------------
# summaries
# ------------------------------------------------------------------------------------------------
def test_p_values_exceedance_band_summary():
    obs = np.array([5.0, 0.5, -3.0])
    null = np.array([[1.0, 1.0, 1.0], [-2.0, 0.0, 4.0], [0.5, -1.0, -1.0], [3.0, 0.2, 0.0]])
    # two-sided: #(|null| >= |obs|) = 0, 2, 1
    np.testing.assert_allclose(P.empirical_p_values(obs, null), [1 / 5, 3 / 5, 2 / 5])
    np.testing.assert_allclose(P.empirical_p_values(obs, null, "greater"), [1 / 5, 2 / 5, 5 / 5])
    np.testing.assert_allclose(P.empirical_p_values(obs, null, "less"), [5 / 5, 4 / 5, 1 / 5])
    q = np.quantile(np.abs(null), 0.9, axis=0)
    np.testing.assert_array_equal(P.exceeds_null(obs, null, 0.9), np.abs(obs) > q)
    lo, hi = P.null_band(null)
    np.testing.assert_allclose(lo, np.percentile(null, 2.5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(null, 97.5, axis=0))
    s = P.rotation_summary(obs, null, n_sublayers=10, q=0.9)
    assert s["mean"] == pytest.approx(2.5 / 3)
    assert s["mean_abs"] == pytest.approx(8.5 / 3)
    assert s["null_mean"] == pytest.approx(null.mean())
    assert s["frac_negative"] == pytest.approx(1 / 3)
    assert s["frac_exceeds"] == pytest.approx(np.mean(np.abs(obs) > q))
    assert s["frac_below"] == pytest.approx(np.mean(np.abs(obs) < np.quantile(np.abs(null), 0.1, axis=0)))
    assert s["mean_abs_per_sublayer"] == pytest.approx(8.5 / 30)


def test_reference_counts_scale_free_and_clockwise():
    rw = P.reference_counts(64, "random_walk", n=2000, seed=0)
    iid = P.reference_counts(64, "iid", n=2000, seed=0)
    assert rw.shape == (2000,)
    # the count ignores shift and scale: the reference equals a rescaled, shifted walk's count
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((2000, 64)), axis=-1)
    np.testing.assert_allclose(rw, P.count_rotations(3.0 * walk + 7.0), atol=1e-9)
    # structureless trajectories turn clockwise, i.i.d. values more than random walks
    assert iid.mean() < rw.mean() < -5
    with pytest.raises(ValueError, match="kind"):
        P.reference_counts(64, "brownian")
