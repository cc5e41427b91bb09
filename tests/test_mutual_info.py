"""Mutual-information estimators against closed forms and reference implementations (scipy, scikit-learn),
and the gridded KDE kernel sums against the exact ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from scipy.stats import gaussian_kde

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
def _hard_pairs(n=600, seed=7):
    """Constructed (x, y) columns: Gaussian, bimodal, heavy-tailed, one massive outlier, near constant
    (tiny noise), near constant with three spikes, and a sharply nonlinear pair. -> x, y: (n, 7)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, 7))
    e = rng.standard_normal((n, 7))
    x, y = g.copy(), 0.8 * g + 0.6 * e
    x[:, 1] = np.where(rng.random(n) < 0.5, -4.0, 4.0) + 0.5 * g[:, 1]
    y[:, 1] = x[:, 1] ** 2 + e[:, 1]
    x[:, 2] = rng.standard_t(1.5, n)
    y[:, 2] = x[:, 2] + rng.standard_t(1.5, n)
    x[0, 3], y[0, 3] = 400.0, -300.0  # one massive outlier
    x[:, 4] = 5.0 + 1e-6 * g[:, 4]
    y[:, 4] = 5.0 + 1e-6 * x[:, 4] * 1e6 + 1e-6 * e[:, 4]
    x[:, 5], y[:, 5] = 0.01 * g[:, 5], 0.01 * e[:, 5] + 0.01 * g[:, 5]
    x[:3, 5], y[:3, 5] = [30.0, -50.0, 80.0], [20.0, 60.0, -90.0]  # near constant with spikes
    y[:, 6] = np.sin(4 * x[:, 6]) + 0.05 * e[:, 6]
    return x, y


@pytest.fixture
def grid_always(monkeypatch):
    """Grid the sums at every N (by default only from MI.GRID_MIN_N samples)."""
    monkeypatch.setitem(MI.GRID_MIN_N, 1, 0)
    monkeypatch.setitem(MI.GRID_MIN_N, 2, 0)


def test_gridded_kde_matches_exact_on_hard_pairs(grid_always):
    x, y = _hard_pairs()
    fast = MI.mutual_information_pairs(x, y, "kde")
    exact = MI.mutual_information_pairs(x, y, "kde_exact")
    assert np.isfinite(exact).all()
    # the stated tolerance: 1e-3 relative (absolute 1e-4 nats for MI near 0)
    np.testing.assert_allclose(fast, exact, rtol=1e-3, atol=1e-4)


def test_gauss_sums_error_bound_holds_at_every_point(grid_always):
    """The run-time check bounds the error at the worst points; here the bound is checked at all points."""
    import torch

    x, y = _hard_pairs()
    xt, yt = torch.from_numpy(x.T), torch.from_numpy(y.T)
    xt, yt = xt - xt.mean(-1, keepdim=True), yt - yt.mean(-1, keepdim=True)
    for z in (xt[..., None] / xt.std(-1, keepdim=True)[..., None] / 600 ** -0.2,
              torch.stack([xt / xt.std(-1, keepdim=True), yt / yt.std(-1, keepdim=True)], -1) / 600 ** (-1 / 6)):
        fast, gridded = MI.gauss_sums(z)
        exact, _ = MI.gauss_sums(z, exact=True)
        assert gridded.sum() >= 5  # the grid served most sets, outliers included
        rel = (fast / exact - 1).abs().amax(1)
        assert (rel <= MI.GRID_CHECK_RTOL).all(), rel


def test_gauss_sums_coarse_grid_is_caught_and_summed_exactly(grid_always):
    import torch

    rng = np.random.default_rng(8)
    z = torch.from_numpy(rng.standard_normal((4, 300, 2)) * 3)
    exact, _ = MI.gauss_sums(z, exact=True)
    fast, gridded = MI.gauss_sums(z, h=2.0)  # far too coarse: trapezoid error ~ exp(-2 pi^2 tau / h^2)
    assert not gridded.any()
    np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=1e-5)
    fast, gridded = MI.gauss_sums(z, check_points=0, h=2.0)  # unchecked, the error shows
    assert gridded.all() and (fast / exact - 1).abs().max() > 1e-3


def test_every_entry_point_takes_the_fast_path(rs, grid_always):
    mi_fast = MI.mutual_information(rs, "kde", units=[0, 5])
    mi_exact = MI.mutual_information(rs, "kde_exact", units=[0, 5])
    np.testing.assert_allclose(mi_fast, mi_exact, rtol=1e-3, atol=1e-4)
