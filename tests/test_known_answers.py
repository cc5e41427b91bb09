"""Every dynamics estimator on a system whose answer is known (issue 28, "Known answers"): the Benettin routine
on the Lorenz flow and the Henon map (within 2 % of the literature values), the rotation count and jPCA on
rotations, the spectral measures on non-normal matrices (exact to 1e-6). Each check is shown failing on a
constructed broken case. The book's appendix (notebooks/09_known_answers.py) shows the same table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transformer_dynamics import dynamics as dy
from transformer_dynamics import phase
from transformer_dynamics.dynamics import known, systems

RELATIVE = 0.02   # issue 28: the Lorenz and Henon exponents within 2 % (relative)
EXACT = 1e-6      # issue 28: linear maps and closed forms exact to 1e-6


@pytest.fixture(scope="module")
def table():
    return known.known_answers(seed=0).set_index("key")


def _rel(estimate, value):
    return abs(estimate - value) / abs(value)


# ------------------------------------------------------------------------------------------------------------
# Benettin: the Lorenz flow and the Henon map
# ------------------------------------------------------------------------------------------------------------
def test_rk4_jacobians_are_the_derivative_of_the_rk4_step():
    rng = np.random.default_rng(0)
    x = systems.lorenz_trajectory(rng.standard_normal((3, 3)), 0.01, 500, 4).reshape(-1, 3)  # on the attractor
    h, eps, p = 0.01, 1e-6, systems.LORENZ
    J = systems.rk4_jacobians(x, h)
    fd = np.stack([(systems._rk4(x + eps * e, h, p) - systems._rk4(x - eps * e, h, p)) / (2 * eps)
                   for e in np.eye(3)], axis=-1)                    # columns: d step / d x_j
    np.testing.assert_allclose(J, fd, atol=1e-7)
    # broken: the Euler step's Jacobian I + h Df is not the RK4 step's
    euler = np.eye(3) + h * systems._lorenz_jacobian(x, **p)
    assert np.abs(euler - fd).max() > 1e-3


def test_lorenz_largest_exponent_within_2_percent(table):
    row = table.loc["lorenz_largest_exponent"]
    assert row["known"] == systems.LORENZ_LARGEST.value == 0.9056
    assert _rel(row["estimate"], row["known"]) < RELATIVE, row["estimate"]
    assert row["within"]


def test_lorenz_check_fails_on_jacobians_out_of_order():
    J, s = systems.lorenz_jacobians(0, length=40.0, n_trajectories=4)
    ok = systems.benettin_exponents(J, 1, 0, 0)[:, 0].mean() / s["h"]
    shuffled = J[:, np.random.default_rng(0).permutation(J.shape[1])]
    broken = systems.benettin_exponents(shuffled, 1, 0, 0)[:, 0].mean() / s["h"]
    assert _rel(ok, systems.LORENZ_LARGEST.value) < 0.05            # a short run, but the right sequence
    assert _rel(broken, systems.LORENZ_LARGEST.value) > RELATIVE    # the same matrices, not the flow's order


def test_henon_largest_exponent_within_2_percent(table):
    for key in ("henon_largest_exponent", "henon_largest_exponent_one_vector"):
        row = table.loc[key]
        assert row["known"] == systems.HENON_LARGEST.value == 0.41922
        assert _rel(row["estimate"], row["known"]) < RELATIVE, (key, row["estimate"])


def test_henon_check_fails_on_jacobians_out_of_order():
    J, _ = systems.henon_jacobians_along(0, length=3000)
    broken = systems.benettin_exponents(J[:, np.random.default_rng(0).permutation(J.shape[1])], 1, 0, 0)[:, 0].mean()
    assert _rel(broken, systems.HENON_LARGEST.value) > RELATIVE
    # the reversed order is a product of the same length with the same exponents in the limit
    assert _rel(systems.benettin_exponents(J[:, ::-1], 1, 0, 0)[:, 0].mean(), systems.HENON_LARGEST.value) < RELATIVE


def test_exponent_sums_are_the_log_determinant(table):
    assert abs(table.loc["henon_exponent_sum", "error"]) < EXACT
    assert table.loc["henon_exponent_sum", "known"] == math.log(0.3)
    # Lorenz: the sum over k = D equals the mean log|det J_t| to rounding (the triangular factor keeps the
    # small singular values), and the flow's divergence -(sigma + 1 + beta) to the RK4 error at h = 0.01
    J, s = systems.lorenz_jacobians(0, length=30.0, n_trajectories=2)
    lam = systems.benettin_exponents(J, 3, 0, 0).sum(-1)
    np.testing.assert_allclose(lam, np.log(np.abs(np.linalg.det(J))).mean(1), atol=1e-12)
    assert _rel(table.loc["lorenz_exponent_sum", "estimate"], -(10 + 1 + 8 / 3)) < 1e-4
    # broken: the singular values of the explicit product (P = J_n ... J_1, one float64 matrix) lose the
    # small one to rounding, and their logs no longer sum to the log-determinant
    P = np.eye(3)
    for M in J[0]:
        P = M @ P
    explicit = dy.product_measures(P[None], J.shape[1], k=3)["exponents"].sum()
    assert abs(explicit - np.log(np.abs(np.linalg.det(J[0]))).mean()) > EXACT


def test_benettin_running_converges_and_checks_lengths():
    J, _ = systems.henon_jacobians_along(0, length=400, n_trajectories=4)
    run = systems.benettin_running(J, [50, 400])
    assert run.shape == (2, 4)
    np.testing.assert_allclose(run[-1], systems.benettin_exponents(J, 1, 0, 0)[:, 0])   # the last is the full run
    with pytest.raises(ValueError, match="lengths must be in"):
        systems.benettin_running(J, [0, 401])


def test_henon_escape_is_an_error():
    with pytest.raises(ValueError, match="escaped to infinity"):
        systems.henon_trajectory(np.array([[5.0, 5.0]]), 10, 10)


# ------------------------------------------------------------------------------------------------------------
# rotations: the rotation count and jPCA
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theta", [0.05, 0.3, 2 * np.pi / 12, 1.0, np.pi / 2, 2.5, 3.1])
@pytest.mark.parametrize("n", [4, 5, 17, 64, 301])
def test_rotation_count_of_a_cosine_is_the_closed_form(theta, n):
    for phi in (0.0, 0.4, 2.0, -1.3):
        a = 1.7 * np.cos(theta * np.arange(n) + phi) - 0.3
        got = float(phase.count_rotations(a))
        assert abs(got - known.rotation_count_of_cosine(theta, n, phi)) < EXACT, (theta, n, phi)
        # about -theta T / 2 pi, within about one turn (the ellipse and the ends)
        assert abs(got + theta * (n - 1) / (2 * np.pi)) < 1.5


def test_rotation_count_closed_form_catches_what_it_should():
    theta, n, phi = 0.3, 64, 0.4
    a = np.cos(theta * np.arange(n) + phi)
    want = known.rotation_count_of_cosine(theta, n, phi)
    # the naive theta T / 2 pi is not what the activation-gradient count returns
    assert abs(abs(want) - theta * (n - 1) / (2 * np.pi)) > EXACT
    # a portrait with second-order ends (numpy.gradient(edge_order=2)) counts differently: the closed form
    # pins down the package's one-sided ends
    other = phase._rotations_xy(a, np.gradient(a, edge_order=2))
    assert abs(other - want) > EXACT
    # the rotation number: R / T -> -theta / 2 pi
    long = float(phase.count_rotations(np.cos(theta * np.arange(20001) + phi)))
    assert abs(long / 20000 + theta / (2 * np.pi)) < 1e-4
    with pytest.raises(ValueError, match="0 < theta < pi"):
        known.rotation_count_of_cosine(3.5, 10)


def test_rotations_per_unit_of_a_rotation_map(table):
    for mode in ("mean", "per_sample"):
        assert abs(table.loc[f"rotations_per_unit_{mode}", "error"]) < EXACT
    for key in table.index[table.index.str.startswith("rotation_count_theta")]:
        assert abs(table.loc[key, "error"]) < EXACT
    # broken: the stream with its sublayer order reversed is a different input with the same count (phase
    # docstring); its units' closed form uses the reversed phases, not the original ones
    rs, thetas, phases = known._rotation_map_stream(0)
    T = rs.shape[1]
    rev = np.asarray(phase.rotations_per_unit(rs[:, ::-1].copy(), mode="per_sample"))
    np.testing.assert_allclose(rev, np.asarray(phase.rotations_per_unit(rs, mode="per_sample")), atol=EXACT)
    wrong = np.stack([known._unit_counts(thetas, T, p + 0.1) for p in phases]).mean(0)
    assert np.abs(rev - wrong).max() > EXACT


def test_jpca_of_a_skew_symmetric_flow(table):
    for key in ("jpca_ratio", "jpca_r2_skew", "jpca_frequency_1", "jpca_frequency_2", "jpca_plane_1",
                "jpca_plane_2"):
        assert abs(table.loc[key, "error"]) < EXACT, key
    # frequencies are 2 tan(omega dt / 2), not omega dt: the naive value fails the check
    assert abs(table.loc["jpca_frequency_1", "estimate"] - 2.0 * 0.25) > EXACT


def test_jpca_check_fails_with_unequal_unit_scaling():
    # the default soft normalisation rescales each unit by its own range: the step is then no longer
    # orthogonal in the scaled units and the skew-symmetric fit no longer exact
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((10, 2)))[0]
    t = np.arange(16)
    ph = rng.uniform(0, 2 * np.pi, (24, 1))
    rs = np.stack([np.cos(0.5 * t + ph), np.sin(0.5 * t + ph)], -1) @ U.T
    assert abs(dy.jpca(rs, k=2, soft_norm=None).ratio - 1) < EXACT
    assert abs(dy.jpca(rs, k=2, soft_norm=5.0).ratio - 1) > EXACT


# ------------------------------------------------------------------------------------------------------------
# spectra of non-normal matrices and their products
# ------------------------------------------------------------------------------------------------------------
def test_spectral_measures_are_their_closed_forms(table):
    keys = [k for k in table.index if k.startswith(("spectra_", "transient_"))]
    assert len(keys) >= 20
    for key in keys:
        assert abs(table.loc[key, "error"]) < EXACT, (key, table.loc[key, "error"])
    # the transient: both eigenvalues decay, yet ||exp(tA)|| peaks above 1 (non-normality)
    assert table.loc["transient_peak", "known"] > 2.5


def test_spectral_closed_forms_fail_on_a_normal_matrix_with_the_same_eigenvalues():
    # diag(-1, -2) has A's eigenvalues but is normal: departure 0 and no transient
    st = dy.spectra(np.diag([-1.0, -2.0])[None])
    assert st["departure"][0] < EXACT and abs(st["departure"][0] - 10 / math.sqrt(105)) > EXACT
    sv = known.transient_growth(0.0, np.linspace(0.05, 5, 100))
    assert sv[:, 0].max() <= 1.0                                      # no transient growth without a


def test_product_measures_are_chapter_7s_cumulative_measures():
    rng = np.random.default_rng(2)
    J = torch.as_tensor(np.eye(5) + 0.4 * rng.standard_normal((3, 4, 5, 5)))
    P = dy.cumulative_products(J)
    pm = dy.product_measures(P[:, 1], 3, k=2)
    sv = torch.linalg.svdvals(P[:, 1]).numpy()
    np.testing.assert_allclose(pm["exponents"], np.log(sv[:, :2]) / 3, rtol=1e-12)
    np.testing.assert_allclose(pm["cumulative_growth"], np.sqrt((sv ** 2).sum(-1) / 5), rtol=1e-12)
    np.testing.assert_allclose(pm["cumulative_effective_rank"], dy.effective_rank(sv), rtol=1e-12)
    # per-row step counts
    pm2 = dy.product_measures(P[:, 1], np.array([3, 3, 6]), k=2)
    np.testing.assert_allclose(pm2["exponents"][2], pm["exponents"][2] / 2, rtol=1e-12)


def test_known_answers_table(table):
    assert table["within"].all(), table.loc[~table["within"], ["estimate", "known", "error"]]
    assert {"label", "estimator", "system", "quantity", "estimate", "known", "error", "relative error", "tolerance",
            "relative", "setup", "source"} <= set(table.columns)
    chaotic = table["relative"]
    assert set(table.index[chaotic]) >= {"lorenz_largest_exponent", "henon_largest_exponent"}
    assert (table.loc[chaotic, "tolerance"] == RELATIVE).all()
    assert (table.loc[~chaotic, "tolerance"] == EXACT).all()
    assert table.loc["lorenz_largest_exponent", "source"].startswith("J. C. Sprott")
    shown = known.summary_table(table.reset_index())
    assert list(shown.columns) == ["estimate", "known", "error", "tolerance"]
    assert len(shown) == len(table) and shown["error"].str.endswith("✓").all()
    assert shown.loc[("lyapunov", "Lorenz: λ₁"), "tolerance"] == "2 %"
    broken = table.reset_index().assign(estimate=lambda d: d["known"] * 1.5, within=False)
    assert known.summary_table(broken)["error"].str.endswith("✗").all()
