"""Tests for transformer_dynamics.arrays: the one input check and the within/cross transition rule."""

import warnings

import numpy as np
import pytest
import torch

from transformer_dynamics import arrays as A


def test_check_rs_returns_one_float_array():
    x = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    out = A.check_rs(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 3, 4)
    f64 = np.zeros((2, 3, 4))
    assert A.check_rs(f64) is f64  # nothing to change: no copy
    t = A.check_rs(torch.ones(2, 3, 4, dtype=torch.float64))
    assert isinstance(t, np.ndarray) and t.dtype == np.float64


def test_check_rs_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"n_samples, n_sublayers, d_model.*rs\[None\]"):
        A.check_rs(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2 sublayers"):
        A.check_rs(np.zeros((3, 1, 4)), min_sublayers=2)
    with pytest.raises(ValueError, match="at least 4 samples"):
        A.check_rs(np.zeros((3, 2, 4)), min_samples=4)
    with pytest.raises(ValueError, match="numeric"):
        A.check_rs(np.array([[["a"]]]))
    bad = np.zeros((2, 3, 4))
    bad[1, 2, 3] = np.inf
    A.check_rs(bad)  # finite is opt-in
    with pytest.raises(ValueError, match="NaN or inf"):
        A.check_rs(bad, finite=True)


def test_rs_shape_reads_nothing():
    class Store:  # a lazy store: only a shape and read()
        shape = (5, 6, 7)

        def read(self, a, b):  # pragma: no cover - must not be called
            raise AssertionError("read")

    assert A.rs_shape(Store()) == (5, 6, 7)
    with pytest.raises(ValueError, match="empty axis"):
        A.rs_shape(np.zeros((2, 3, 0)))
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        A.rs_shape([1, 2, 3])
    with pytest.raises(ValueError, match="got shape None"):
        A.rs_shape(3.0)


def test_transition_masks_and_split():
    np.testing.assert_array_equal(A.within_mask(5), [True, False, True, False, True])
    np.testing.assert_array_equal(A.cross_mask(5), [False, True, False, True, False])
    np.testing.assert_array_equal(A.transition_kind(4), ["within", "cross", "within"])
    x = np.arange(10).reshape(2, 5)
    w, c = A.split_transitions(x)
    np.testing.assert_array_equal(w, x[:, 0::2])
    np.testing.assert_array_equal(c, x[:, 1::2])
    w0, c0 = A.split_transitions(x.T, axis=0)
    np.testing.assert_array_equal(w0, x.T[0::2])
    with pytest.raises(ValueError, match="at least 2 sublayers"):
        A.transition_kind(1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(9,), (50, 7), (51, 6, 5)])
def test_nanmedian_equals_numpys_slice_by_slice(dtype, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.2] = np.nan          # some slices with NaN, most without
    if x.ndim > 1:
        x[0] = np.nan                            # and all-NaN slices
    for axis in range(-1, x.ndim):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(x, axis=axis)
        with warnings.catch_warnings():
            warnings.simplefilter("error")       # quiet
            got = A.nanmedian(x, axis)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
