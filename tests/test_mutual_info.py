"""Mutual-information estimators against closed forms and reference implementations (scipy, scikit-learn),
and the gridded KDE kernel sums against the exact ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from scipy.stats import gaussian_kde

from mi_cases import constructed_pairs

from transformer_dynamics import kernels
from transformer_dynamics import mutual_info as MI


@pytest.fixture(scope="module")
def rs():
    """A random walk over sublayers: (n_samples=200, n_sublayers=6, d_model=12), float32."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((200, 6, 12)), axis=1) + np.linspace(-3, 3, 12)
    return x.astype(np.float32)


def gaussian_pairs(n, n_units, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_units))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, n_units))
    return x, y


# -------------------------------------------------------------------------------- mutual information
def _kde_reference(x, y):
    xy = np.vstack([x, y])
    return np.mean(np.log(gaussian_kde(xy)(xy) + 1e-10) - np.log(gaussian_kde(x)(x) + 1e-10)
                   - np.log(gaussian_kde(y)(y) + 1e-10))


def test_kde_matches_scipy_reference():
    rng = np.random.default_rng(2)
    x, y = gaussian_pairs(300, 6, 0.6, seed=3)
    y[:, 1] = np.exp(y[:, 1])  # skewed
    x[:, 2] = 50 * x[:, 2] + 10  # scaled: the 1e-10 floor makes the estimate scale dependent
    y[:, 3] = np.sin(3 * x[:, 3]) + 0.1 * rng.standard_normal(300)  # nonlinear
    ref = np.array([_kde_reference(x[:, u], y[:, u]) for u in range(6)])
    for method in ("kde", "kde_exact"):
        ours = MI.mutual_information_pairs(x, y, method, compile=False)
        np.testing.assert_allclose(ours, ref, rtol=1e-3, err_msg=method)


def test_kde_compiled_kernel_matches_scipy_reference():
    x, y = gaussian_pairs(256, 4, 0.8, seed=4)
    ref = np.array([_kde_reference(x[:, u], y[:, u]) for u in range(4)])
    np.testing.assert_allclose(MI.mutual_information_pairs(x, y, "kde_exact", compile=True), ref, rtol=1e-3)


def test_mutual_information_layout_matches_pairs(rs):
    for method in MI.MI_METHODS:
        mi = MI.mutual_information(rs, method=method, units=[1, 4, 7], chunk=2)
        assert mi.shape == (5, 3)
        for t in (0, 3):
            ref = MI.mutual_information_pairs(rs[:, t, [1, 4, 7]], rs[:, t + 1, [1, 4, 7]], method=method)
            np.testing.assert_allclose(mi[t], ref, rtol=1e-6, err_msg=method)


def test_ksg_matches_sklearn():
    from sklearn.feature_selection import mutual_info_regression

    x, y = gaussian_pairs(400, 5, 0.7, seed=5)
    y[:, 0] = y[:, 0] ** 3
    ours = MI.mutual_information_pairs(x, y, "ksg")
    # sklearn adds 1e-10-scale jitter; on continuous data with no near-ties the neighbour counts, hence
    # the estimates, are identical
    ref = np.array([mutual_info_regression(x[:, [u]], y[:, u], n_neighbors=3, random_state=0)[0]
                    for u in range(5)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    # the fused (compiled) counting kernel gives the same counts
    np.testing.assert_array_equal(MI.mutual_information_pairs(x, y, "ksg", compile=True), ours)


@pytest.mark.skipif(kernels.library("ksg_counts") is None, reason="no C compiler: the KSG kernel is unavailable")
@pytest.mark.parametrize("k", [1, 3, 5])
def test_ksg_kernel_counts_equal_brute_force(k):
    """The sorted sweep (ksg_counts.c) finds the same radii and counts as the O(N^2) distance matrix: the
    estimates are bit-identical, on the constructed pairs (massive outlier, heavy tails, near constant...)
    and on ties (rounded values, half the points equal, a constant unit, duplicated rows as a bootstrap
    resample makes them)."""
    import torch

    x, y = constructed_pairs(n=300, seed=3)
    rng = np.random.default_rng(4)
    extra_x, extra_y = rng.standard_normal((300, 5)), rng.standard_normal((300, 5))
    extra_x[:, 0] = np.round(extra_x[:, 0])
    extra_x[:150, 1] = 0.0
    extra_y[:, 2] = 3.0
    idx = rng.integers(0, 300, 300)
    extra_x[:, 3], extra_y[:, 3] = x[idx, 0], y[idx, 0]
    extra_y[:, 4] = np.round(2 * extra_x[:, 4]) / 2
    xt = torch.from_numpy(np.ascontiguousarray(np.hstack([x, extra_x]).T))
    yt = torch.from_numpy(np.ascontiguousarray(np.hstack([y, extra_y]).T))
    fast, brute = MI._ksg(xt, yt, k=k), MI._ksg(xt, yt, k=k, brute=True)
    np.testing.assert_array_equal(fast.numpy(), brute.numpy())
    assert np.isnan(fast.numpy()[xt.shape[0] - 3]) and np.isfinite(fast.numpy()[:7]).all()


def test_gcmi_matches_ince_formula():
    x, y = gaussian_pairs(300, 4, 0.5, seed=6)
    ours = MI.mutual_information_pairs(x, y, "gcmi")
    n = 300
    for u in range(4):  # Ince et al.'s mi_gg (entropies via Cholesky, bias-corrected), in nats
        cx = special.ndtri((np.argsort(np.argsort(x[:, u])) + 1) / (n + 1))
        cy = special.ndtri((np.argsort(np.argsort(y[:, u])) + 1) / (n + 1))
        xy = np.vstack([cx, cy])
        xy = xy - xy.mean(1, keepdims=True)
        C = xy @ xy.T / (n - 1)
        hx = np.log(np.sqrt(C[0, 0]))
        hy = np.log(np.sqrt(C[1, 1]))
        hxy = np.sum(np.log(np.diag(np.linalg.cholesky(C))))
        psi = special.psi((n - np.arange(1, 3)) / 2.0) / 2.0
        dterm = (np.log(2) - np.log(n - 1.0)) / 2.0
        hx, hy, hxy = hx - dterm - psi[0], hy - dterm - psi[0], hxy - 2 * dterm - psi.sum()
        assert ours[u] == pytest.approx(hx + hy - hxy, rel=1e-9)


@pytest.mark.parametrize("method, tol", [("kde", 0.05), ("ksg", 0.03), ("gcmi", 0.02)])
def test_mi_bivariate_gaussian_closed_form(method, tol):
    """MI = -1/2 ln(1 - rho^2). Tolerances on the mean over 16 units at N = 1000: the KDE plug-in
    (resubstitution, Scott bandwidth) is biased upwards by ~0.03 nats; KSG and GCMI are nearly unbiased."""
    means = []
    for rho in (0.0, 0.5, 0.9):
        x, y = gaussian_pairs(1000, 16, rho, seed=int(rho * 10))
        est = MI.mutual_information_pairs(x, y, method).mean()
        assert est == pytest.approx(-0.5 * np.log(1 - rho**2), abs=tol), (method, rho)
        means.append(est)
    assert means[0] < means[1] < means[2]


# ------------------------------------------------------------------------------ gridded KDE vs exact
#: The gridded sums need the C kernel, compiled at first use; without a C compiler "kde" sums exactly.
needs_kernel = pytest.mark.skipif(kernels.library("kde_grid") is None,
                                  reason="no C compiler: the grid kernel is unavailable")

def _whitened(x, y):
    """The points the KDE sums over, as mutual_info whitens them: (1-D x, 1-D y, 2-D (x, y)) as
    (B, N, d) float64 tensors, x, y: (N, B)."""
    import torch

    n = x.shape[0]
    xt, yt = torch.from_numpy(x.T), torch.from_numpy(y.T)
    xc, yc = xt - xt.mean(-1, keepdim=True), yt - yt.mean(-1, keepdim=True)
    z1 = [(c / c.std(-1, keepdim=True) / n ** -0.2)[..., None] for c in (xc, yc)]
    l11 = xc.std(-1, keepdim=True)
    l21 = (xc * yc).sum(-1, keepdim=True) / (n - 1) / l11
    a = xc / l11
    b = yc - l21 * a
    z2 = torch.stack([a, b / b.std(-1, keepdim=True)], -1) / n ** (-1 / 6)
    return (*z1, z2)


def _exact_sums64(z):
    """Exact kernel sums in float64 (the reference the bound is stated against): (B, N, d) -> (B, N)."""
    return np.exp(-0.5 * ((z[:, :, None, :] - z[:, None, :, :]) ** 2).sum(-1)).sum(-1)


def test_grid_error_bound_is_the_trapezoid_rule():
    assert MI.grid_error_bound(0.6, 1) == pytest.approx(2 * np.exp(-np.pi**2 / 0.72), rel=1e-6)
    assert MI.grid_error_bound(0.6, 2) == pytest.approx((1 + MI.grid_error_bound(0.6, 1)) ** 2 - 1)
    assert MI.grid_error_bound(0.6, 2) < 5e-6 < 1e-3 / 3  # three log densities per MI term


@needs_kernel
def test_gauss_sums_error_bound_holds_at_every_point():
    """The run-time check looks at each set's worst points only; here the stated bound is checked at every
    point of the constructed sets against float64 exact sums (slack: float32 accumulation, 2e-6)."""
    x, y = constructed_pairs()
    for z in _whitened(x, y):
        fast, gridded = MI.gauss_sums(z)
        assert gridded[np.isfinite(z.numpy()).all((1, 2))].all()  # the grid served every finite set
        ok = gridded.numpy()
        rel = np.abs(fast.numpy()[ok] / _exact_sums64(z.numpy()[ok]) - 1)
        assert rel.max() <= MI.grid_error_bound(MI.GRID_H, z.shape[-1]) + 2e-6, rel.max(1)


@needs_kernel
def test_gridded_kde_matches_exact_on_constructed_pairs():
    """The stated tolerance, 1e-3 relative to the exact estimator, on every constructed pair; the grid (not
    the exact fallback) served all of them."""
    x, y = constructed_pairs()
    exact = MI.mutual_information_pairs(x, y, "kde_exact")
    fast = MI.mutual_information_pairs(x, y, "kde")
    assert np.isfinite(exact).all()
    np.testing.assert_allclose(fast, exact, rtol=1e-3)
    import torch

    for args in ((torch.from_numpy(x.T),), (torch.from_numpy(y.T),), (torch.from_numpy(x.T), torch.from_numpy(y.T))):
        _, done = MI._grid_log_density(*args)
        assert done.all()


@needs_kernel
def test_far_points_beyond_a_small_grid_are_summed_exactly():
    """A grid capped at 60 nodes: the massive outlier (and the heavy tail's extremes) are far points, summed
    exactly, and the set stays gridded within the bound; with too many far points the set is exact."""
    import torch

    x, y = constructed_pairs()
    z = _whitened(x, y)[2][[2, 3]]  # heavy-tailed, one massive outlier
    fast, gridded = MI.gauss_sums(z, max_nodes=60, max_far=0.05)
    assert gridded.all()
    rel = np.abs(fast.numpy() / _exact_sums64(z.numpy()) - 1)
    assert rel.max() <= MI.grid_error_bound(MI.GRID_H, 2) + 2e-6
    wide = torch.cat([z[:1], 50 * z[:1]])  # half of the second set's points beyond the grid
    fast, gridded = MI.gauss_sums(wide, max_nodes=60)
    assert gridded.tolist() == [True, False]
    np.testing.assert_allclose(fast.numpy(), _exact_sums64(wide.numpy()), rtol=1e-5)


@needs_kernel
def test_gauss_sums_coarse_grid_is_caught_and_summed_exactly():
    import torch

    rng = np.random.default_rng(8)
    z = torch.from_numpy(rng.standard_normal((4, 300, 2)) * 3)
    exact = _exact_sums64(z.numpy())
    fast, gridded = MI.gauss_sums(z, h=2.0)  # far too coarse: grid_error_bound(2.0) = 0.6
    assert not gridded.any()
    np.testing.assert_allclose(fast.numpy(), exact, rtol=1e-5)
    fast, gridded = MI.gauss_sums(z, check_points=0, h=2.0)  # unchecked, the error shows
    assert gridded.all() and np.abs(fast.numpy() / exact - 1).max() > 1e-3


def test_constant_and_nonfinite_sets_give_nan():
    x, y = constructed_pairs(n=200)
    x[:, 0] = 3.0  # constant
    y[5, 1] = np.nan
    y[:, 2] = 2 * x[:, 2] + 1  # collinear: singular 2-D covariance
    for method in ("kde", "kde_exact"):
        mi = MI.mutual_information_pairs(x, y, method)
        assert np.isnan(mi[:3]).all() and np.isfinite(mi[3:]).all(), method


@needs_kernel
def test_every_entry_point_takes_the_fast_path(rs, monkeypatch):
    """"kde" never calls the exact kernel sums on ordinary data, whatever the chunk (the default chunk of
    mutual_information_pairs included), and agrees with "kde_exact"."""
    exact = {f: MI.mutual_information(rs, "kde_exact", units=[0, 5]) for f in ("mi",)}["mi"]
    pairs_exact = MI.mutual_information_pairs(rs[:, 2], rs[:, 3], "kde_exact")

    def no_exact(*args, **kwargs):
        raise AssertionError("the exact kernel sums were called")

    monkeypatch.setattr(kernels, "gauss_rowsum", no_exact)
    np.testing.assert_allclose(MI.mutual_information(rs, "kde", units=[0, 5]), exact, rtol=1e-3)
    np.testing.assert_allclose(MI.mutual_information_pairs(rs[:, 2], rs[:, 3]), pairs_exact, rtol=1e-3)
    np.testing.assert_allclose(MI.mutual_information_pairs(rs[:, 2], rs[:, 3], chunk=5), pairs_exact, rtol=1e-3)


def test_without_the_compiled_kernel_kde_is_the_exact_estimate(rs, monkeypatch):
    monkeypatch.setenv(kernels.NO_COMPILE_ENV, "1")
    np.testing.assert_array_equal(MI.mutual_information(rs, "kde", units=[1, 2]),
                                  MI.mutual_information(rs, "kde_exact", units=[1, 2]))


@needs_kernel
def test_stream_kernel_equals_the_per_set_path(rs):
    """The one C call per block of units (kde_mi_units, reading the stream in place) gives the per-set path's
    values (the implementation before it: a transposed float64 copy, one C call per batch of sets) on float32
    and float64 streams, strided views, units in any order, and units the kernel hands back (a constant
    sublayer, a NaN)."""
    v = rs.copy()
    v[:, 3, 4] = 1.5  # one constant sublayer: the kernel hands the unit back, the per-set path gives NaN there
    v[7, 0, 9] = np.nan
    units = np.array([11, 4, 0, 9, 3])
    for src in (v, v.astype(np.float64), v[:, ::-1, ::2], np.asfortranarray(v), v[::2], v.astype(np.float16)):
        us = units[units < src.shape[2]]
        old = MI._unit_mi(src[:, :, us], "kde", 3, None)
        new = MI.mutual_information(src, "kde", units=us)
        np.testing.assert_array_equal(np.isnan(new), np.isnan(old))
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-9)
    mi, done = kernels.grid_mi_units(kernels.library("kde_grid"), v, units, MI.KDE_EPS, MI.GRID_H,
                                     MI.GRID_MAX_NODES[1], MI.GRID_MAX_NODES[2], 10, MI.GRID_CHECK_POINTS,
                                     MI.GRID_CHECK_RTOL)
    assert done.tolist() == [True, False, True, False, True]  # the constant and the NaN unit handed back


def test_no_c_compiler_falls_back_to_the_exact_sums(rs, monkeypatch, tmp_path):
    """A machine without a C compiler (none on PATH, no $CC): the kernel is unavailable with a warning, and
    "kde" is the exact estimate."""
    monkeypatch.setattr(kernels, "_LIBS", {})
    monkeypatch.setenv(kernels.KERNELS_ENV, str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="no C compiler"):
        kernels.build(tmp_path)
    with pytest.warns(UserWarning, match="kde_grid is unavailable"):
        assert kernels.library("kde_grid") is None
    monkeypatch.setenv("PATH", "/nonexistent")
    np.testing.assert_array_equal(MI.mutual_information(rs, "kde", units=[1, 2]),
                                  MI.mutual_information(rs, "kde_exact", units=[1, 2]))


def test_a_failing_compiler_falls_back_too(monkeypatch, tmp_path):
    """$CC names a compiler that fails: the build raises with its message, the kernel is unavailable."""
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho broken compiler >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setattr(kernels, "_LIBS", {})
    monkeypatch.setenv(kernels.KERNELS_ENV, str(tmp_path / "k"))
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(RuntimeError, match="broken compiler"):
        kernels.build(tmp_path / "k")
    with pytest.warns(UserWarning, match="unavailable"):
        assert kernels.library("kde_grid") is None


@needs_kernel
def test_kernel_build_is_cached_per_source(tmp_path):
    lib = kernels.build(tmp_path)
    assert lib.exists() and lib.parent == tmp_path
    mtime = lib.stat().st_mtime_ns
    assert kernels.build(tmp_path) == lib and lib.stat().st_mtime_ns == mtime  # no rebuild
    assert [p.name for p in tmp_path.iterdir()] == [lib.name]  # no temporary files left


def test_gauss_sums_bad_grid_raises():
    import torch

    z = torch.zeros(1, 50, 2)
    for kwargs in ({"h": 0.0}, {"max_nodes": 10}):
        with pytest.raises(ValueError, match="grid step"):
            MI.gauss_sums(z, **kwargs)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        MI.gauss_sums(torch.zeros(1, 50, 3))


@needs_kernel
def test_threads_split_the_sets_without_changing_them(monkeypatch):
    x, y = constructed_pairs(n=300)
    x, y = np.tile(x, 4), np.tile(y, 4)  # 28 sets: split 3 ways
    one = MI.mutual_information_pairs(x, y)
    monkeypatch.setattr(kernels.torch, "get_num_threads", lambda: 3)
    np.testing.assert_array_equal(MI.mutual_information_pairs(x, y), one)


def test_max_relative_difference():
    a = np.array([1.0, 2.2, np.nan, 5.0])
    b = np.array([1.0, 2.0, 3.0, 0.0])
    assert MI.max_relative_difference(a, b) == pytest.approx(0.1)
    assert np.isnan(MI.max_relative_difference([np.nan], [1.0]))
    with pytest.raises(ValueError, match="one shape"):
        MI.max_relative_difference([1.0], [1.0, 2.0])
