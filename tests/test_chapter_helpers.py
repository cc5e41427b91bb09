"""The package helpers that chapters 2 and 4 call instead of computing in the notebook: means by transition,
thirds of the sublayers and their summaries (known answers)."""

import numpy as np
import pytest

from transformer_dynamics import metrics

nan = np.nan


def test_mean_by_transition_ignores_nan_and_splits_by_kind():
    x = np.array([[1.0, 3.0], [nan, nan], [2.0, nan], [0.0, 4.0]])  # (4 transitions, 2 units)
    out = metrics.mean_by_transition(x)
    np.testing.assert_array_equal(out["all"], [2.0, nan, 2.0, 2.0])
    np.testing.assert_array_equal(out["within"], [2.0, 2.0])
    np.testing.assert_array_equal(out["cross"], [nan, 2.0])
    np.testing.assert_array_equal(metrics.mean_by_transition(x.T, axis=0)["all"], out["all"])
    with pytest.raises(ValueError, match="2-D"):
        metrics.mean_by_transition(np.zeros(3))


def test_thirds_are_consecutive_and_near_equal():
    parts = metrics.thirds(10)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [p.size for p in metrics.thirds(60)] == [20, 20, 20]
    with pytest.raises(ValueError, match=r"must be an integer >= 3; got 2"):
        metrics.thirds(2)


def test_first_last_third_mean_median_and_trim():
    y = np.array([1.0, 2.0, 9.0, nan, 5.0, 6.0, 7.0, 8.0, 30.0])  # thirds: [0..2], [3..5], [6..8]
    assert metrics.first_last_third(y) == [4.0, 15.0]
    assert metrics.first_last_third(y, "median") == [2.0, 8.0]
    # turning angles (n - 2,) of a 9-sublayer trajectory on the sublayers' thirds, each without its last 2
    ang = np.arange(7.0)
    assert metrics.first_last_third(ang, n=9, trim=2) == [0.0, 6.0]
    assert np.isnan(metrics.first_last_third(np.array([nan, nan, nan, 1.0, 2.0, 3.0]))[0])
    with pytest.raises(ValueError, match="stat must be"):
        metrics.first_last_third(y, "max")
    with pytest.raises(ValueError, match="trim must be"):
        metrics.first_last_third(y, trim=3)
    with pytest.raises(ValueError, match="the last third"):
        metrics.first_last_third(ang, n=9, trim=1)


def test_mean_by_transition_does_not_depend_on_memory_layout():
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.random((9, 200)) * 3)
    x[0, :5] = nan
    sub = x[:, rng.choice(200, 64, replace=False)]           # not C-contiguous
    per_row = np.array([np.nanmean(row) for row in sub])
    np.testing.assert_array_equal(metrics.mean_by_transition(sub)["all"], per_row)
    np.testing.assert_array_equal(metrics.mean_by_transition(np.ascontiguousarray(sub.T), axis=0)["all"],
                                  per_row)
