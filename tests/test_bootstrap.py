"""Bootstrap over texts: coverage of a mean with a known standard error."""

from __future__ import annotations

import numpy as np
import pytest

import transformer_dynamics.bootstrap as bs
from transformer_dynamics.bootstrap import bootstrap, bootstrap_indices


def test_mean_interval_matches_standard_error():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)  # standard error 2 / sqrt(400) = 0.1
    est, lo, hi = bootstrap("mean", x, n_boot=4000, seed=1)
    assert est == pytest.approx(x.mean())
    assert lo < est < hi
    half_width = (hi - lo) / 2
    assert half_width == pytest.approx(1.96 * x.std(ddof=1) / 20, rel=0.1)


def test_callable_agrees_with_vectorised_mean():
    rng = np.random.default_rng(1)
    rs = rng.normal(size=(200, 3, 4))
    est_v, lo_v, hi_v = bootstrap("mean", rs, n_boot=2000, seed=2)
    est_c, lo_c, hi_c = bootstrap(lambda a: a.mean(0), rs, n_boot=2000, seed=3)
    assert est_v.shape == lo_v.shape == (3, 4)
    np.testing.assert_allclose(est_v, est_c)
    np.testing.assert_allclose(lo_v, lo_c, atol=0.03)
    np.testing.assert_allclose(hi_v, hi_c, atol=0.03)


def test_coverage_of_true_mean():
    """About 95 % of intervals from independent data sets contain the true mean."""
    rng = np.random.default_rng(4)
    data = rng.exponential(1.0, size=(300, 200))  # 300 data sets of 200 texts; true mean 1
    est, lo, hi = bootstrap("mean", data.T, n_boot=2000, seed=5)
    coverage = np.mean((lo < 1.0) & (1.0 < hi))
    assert 0.9 < coverage < 0.99


def test_seed_reproducible_and_median():
    x = np.random.default_rng(6).normal(size=101)
    a = bootstrap(np.median, x, n_boot=200, seed=7)
    b = bootstrap(np.median, x, n_boot=200, seed=7)
    assert a == b and a[0] == np.median(x)
    assert bootstrap_indices(5, 3, seed=0).shape == (3, 5)


def test_bad_input():
    with pytest.raises(ValueError, match="ci"):
        bootstrap("mean", np.ones(10), ci=95)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap("mode", np.ones(10))
    with pytest.raises(ValueError, match="2 samples"):
        bootstrap("mean", np.ones(1))


def test_correlation_bootstrap_matches_generic():
    from transformer_dynamics.metrics import successive_correlation
    from transformer_dynamics.bootstrap import bootstrap_correlation

    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 20)) * np.arange(1, 21) + 50  # different scales, a large mean
    y = 0.7 * x + rng.normal(size=(150, 20)) * 5
    y[:, 3] = 1.0  # a constant unit is ignored
    fast = bootstrap_correlation(x, y, n_boot=300, seed=9, batch=64)
    slow = bootstrap(lambda a: np.nanmedian(successive_correlation(a)[0]), np.stack([x, y], 1),
                     n_boot=300, seed=9)
    np.testing.assert_allclose(fast, slow, rtol=1e-9)
    with pytest.raises(ValueError, match="reduce"):
        bootstrap_correlation(x, y, reduce="max")


def test_intervals_are_named_and_replicates_come_beside_them():
    from transformer_dynamics.bootstrap import Interval, bootstrap, bootstrap_correlation

    x = np.random.default_rng(0).normal(size=(50, 3))
    iv = bootstrap("mean", x, n_boot=100, seed=1)
    assert isinstance(iv, Interval) and np.all(iv.low <= iv.estimate) and np.all(iv.estimate <= iv.high)
    again, reps = bootstrap("mean", x, n_boot=100, seed=1, return_samples=True)
    assert reps.shape == (100, 3) and np.array_equal(again.low, iv.low)
    r = bootstrap_correlation(x[:, :2], x[:, 1:], n_boot=100, seed=1)
    assert isinstance(r, Interval) and isinstance(r.estimate, float)


def test_leave_one_out_products_equal_the_weight_matrix():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((40, 3, 5)).astype(np.float32)
    W, loo = bs.jackknife_weights(40), bs.LeaveOneOut(40)
    for x in (v, v > 0, v.astype(np.float64)):
        want = (W @ x.reshape(40, -1)).reshape((40,) + x.shape[1:])
        np.testing.assert_allclose(loo @ x, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(loo[7:19] @ x, want[7:19], rtol=1e-12, atol=1e-14)   # row blocks
    assert loo.shape == (40, 40) and loo[7:19].shape == (12, 40)
    np.testing.assert_array_equal(np.asarray(loo[3:5]), W[3:5])
    m = np.concatenate([v[:, 0], v[:, 1], v[:, 0] ** 2, v[:, 1] ** 2, v[:, 0] * v[:, 1]], axis=1)
    np.testing.assert_allclose(bs.weighted_correlation(m, loo), bs.weighted_correlation(m, W),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="texts on axis 0"):
        loo @ v[:39]


def test_leave_one_out_holds_only_the_last_array_it_multiplied():
    """A jackknife over 59 transitions multiplies 59 moment arrays; keeping each one's sums (and the array) held
    them all, 1.4 GB for a 1000-text SmolLM2 stream."""
    import weakref

    loo = bs.LeaveOneOut(30)
    a, b = np.ones((30, 4)), np.arange(60.0).reshape(30, 2)
    np.testing.assert_allclose(loo[:10] @ a, 1.0)
    ref = weakref.ref(a)
    np.testing.assert_allclose(loo[10:] @ b, (b.sum(0) - b[10:]) / 29)
    del a
    assert ref() is None                                                     # released once another came
    np.testing.assert_allclose(loo @ b, (b.sum(0) - b) / 29)
