"""Figure 1 metrics against closed forms and reference implementations (numpy, scipy, scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_dynamics import arrays as A
from transformer_dynamics import metrics as M
from transformer_dynamics import mutual_info as MI


@pytest.fixture(scope="module")
def rs():
    """A random walk over sublayers: (n_samples=200, n_sublayers=6, d_model=12), float32."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((200, 6, 12)), axis=1) + np.linspace(-3, 3, 12)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------- means
def test_mean_and_order(rs):
    mean = M.mean_activations(rs)
    assert mean.shape == (6, 12)
    np.testing.assert_allclose(mean, rs.astype(np.float64).mean(0), rtol=1e-6)
    order = M.unit_order(rs)
    assert order.shape == (12,)
    assert np.all(np.diff(mean[-1, order]) >= 0)
    assert sorted(order.tolist()) == list(range(12))


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="n_samples, n_sublayers, d_model"):
        M.mean_activations(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="sublayers"):
        M.successive_correlation(np.zeros((5, 1, 3)))
    with pytest.raises(ValueError, match="method"):
        MI.mutual_information(np.zeros((10, 3, 2)), method="binning")


# --------------------------------------------------------------------------------------- correlation
def test_successive_correlation_matches_corrcoef(rs):
    r = M.successive_correlation(rs)
    assert r.shape == (5, 12)
    for t, u in [(0, 0), (2, 5), (4, 11)]:
        ref = np.corrcoef(rs[:, t, u], rs[:, t + 1, u])[0, 1]
        assert r[t, u] == pytest.approx(ref, abs=1e-6)


def test_constant_unit_gives_nan_not_error(rs):
    x = rs.copy()
    x[:, 2, 3] = 7.0
    r = M.successive_correlation(x)
    assert np.isnan(r[1, 3]) and np.isnan(r[2, 3])
    assert np.isfinite(np.delete(r, 3, axis=1)).all()
    p = M.pairwise_correlation(x)
    assert np.isnan(p).sum() == 5  # the 5 pairs that involve sublayer 2, unit 3
    for method in MI.MI_METHODS:
        mi = MI.mutual_information(x[:, :, :5], method=method)
        assert np.isnan(mi[1, 3]) and np.isnan(mi[2, 3]), method
        assert np.isfinite(mi[:, :3]).all(), method


def test_pairwise_correlation(rs):
    p = M.pairwise_correlation(rs, max_samples=7)  # several chunks of samples
    li, mi = M.pair_indices(6)
    assert p.shape == (15, 12) and li.size == 15
    full = np.stack([np.corrcoef(rs[:, :, u].T) for u in range(12)], axis=-1)  # (6, 6, 12)
    np.testing.assert_allclose(p, full[li, mi], atol=1e-6)
    succ = M.successive_correlation(rs)
    adjacent = mi == li + 1
    np.testing.assert_allclose(p[adjacent], succ, atol=1e-10)


def test_correlation_histogram_matches_numpy(rs):
    p = M.pairwise_correlation(rs)
    density, edges = M.correlation_histogram(p, bins=10)
    assert density.shape == (12, 10) and edges.shape == (11,)
    for u in (0, 7):
        ref, ref_edges = np.histogram(p[:, u], bins=10, range=(0, 1), density=True)
        np.testing.assert_allclose(edges, ref_edges)
        np.testing.assert_allclose(density[u], ref, atol=1e-12)
    np.testing.assert_allclose(density.sum(1) * 0.1, 1.0)


# ---------------------------------------------------------------------------------- cosine, velocity
def test_cosine_and_velocity(rs):
    cos = M.cosine_similarity(rs)
    vel = M.velocity(rs)
    assert cos.shape == vel.shape == (200, 5)
    a, b = rs[3, 1].astype(np.float64), rs[3, 2].astype(np.float64)
    assert cos[3, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)
    assert vel[3, 1] == pytest.approx(np.linalg.norm(b - a), rel=1e-9)
    assert np.all(np.abs(cos) <= 1 + 1e-12)


def test_centered_cosine_removes_common_direction(rs):
    shifted = rs + 1000.0  # a huge shared mean direction makes raw cosine ~1
    assert M.cosine_similarity(shifted).min() > 0.999
    np.testing.assert_allclose(M.centered_cosine_similarity(shifted), M.centered_cosine_similarity(rs),
                               atol=1e-3)
    c = rs.astype(np.float64) - rs.mean(0)
    a, b = c[5, 0], c[5, 1]
    assert M.centered_cosine_similarity(rs)[5, 0] == pytest.approx(
        a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-6)


# --------------------------------------------------------------------------------------- transitions
def test_transitions():
    kinds = A.transition_kind(6)
    assert kinds.tolist() == ["within", "cross", "within", "cross", "within"]
    x = np.arange(10).reshape(2, 5)
    within, cross = A.split_transitions(x)
    assert within.tolist() == [[0, 2, 4], [5, 7, 9]] and cross.tolist() == [[1, 3], [6, 8]]
    w0, c0 = A.split_transitions(x.T, axis=0)
    np.testing.assert_array_equal(w0, within.T)
    np.testing.assert_array_equal(c0, cross.T)
    med = M.median_by_transition(np.array([[1.0, 2, 3], [4, 5, np.nan], [0, 0, 9]]))
    np.testing.assert_allclose(med["all"], [2, 4.5, 0])
    np.testing.assert_allclose(med["within"], [2, 0])
    np.testing.assert_allclose(med["cross"], [4.5])


def test_massive_units(rs):
    x = rs.copy()
    x[:, 3:, 4] += 500.0
    x[:, :, 9] -= 200.0
    assert M.massive_units(x).tolist() == [4, 9]
    assert M.massive_units(x, k=1).tolist() == [4]
    assert M.without_units(x, [4, 9]).shape == (200, 6, 10)
    assert M.massive_units(rs, ratio=1e6).size == 0
    idx = M.subsample_units(100, 10, seed=1)
    assert idx.size == 10 and np.all(np.diff(idx) > 0)


def test_paired_cosine_closed_form():
    from transformer_dynamics.metrics import paired_cosine

    a = np.zeros((2, 3, 4), np.float32)
    a[..., 0] = 1
    b = a.copy()
    b[1, :, 1] = 1  # 45 degrees for sample 1
    got = paired_cosine(a, b)
    np.testing.assert_allclose(got[0], 1.0)
    np.testing.assert_allclose(got[1], np.sqrt(0.5))
    with pytest.raises(ValueError, match="same shape"):
        paired_cosine(a, b[:, :2])


# ----------------------------------------------------------------------------------------------------
# trajectory statistics (moved from reduce: turning_angle; velocity is Fig 3C's successive distance)
# ----------------------------------------------------------------------------------------------------
def test_turning_angle():
    straight = np.stack([np.arange(5.0), 2 * np.arange(5.0)], -1)
    np.testing.assert_allclose(M.turning_angle(straight), 0, atol=1e-6)
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    np.testing.assert_allclose(M.turning_angle(square[None]), [[90, 90]])
    back = np.array([[0, 0], [1, 0], [0, 0]], dtype=float)
    np.testing.assert_allclose(M.turning_angle(back), [180])
    assert np.isnan(M.turning_angle(np.zeros((3, 2)))).all()


def test_velocity_is_the_successive_distance_of_a_trajectory():
    traj = np.zeros((2, 4, 2))
    traj[:, :, 0] = [0, 3, 3, 0]
    traj[:, :, 1] = [0, 4, 4, 0]
    np.testing.assert_allclose(M.velocity(traj), [[5, 0, 5]] * 2)
    with pytest.raises(ValueError):
        M.velocity(np.zeros((3, 1, 2)))
