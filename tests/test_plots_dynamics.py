"""Smoke tests for transformer_dynamics.plots.dynamics (chapter 7): the panels draw what they are given, gaps
where a sublayer was not measured, one colour per reference."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from transformer_dynamics.plots import dynamics as P

rng = np.random.default_rng(0)
S = 12


def _measure(n=5):
    v = rng.uniform(0.4, 0.9, size=(n, S))
    v[:, 4:8] = np.nan                                   # the middle third: not measured
    return v


def test_measure_grid_leaves_the_unmeasured_sublayers_out():
    labels = {m: [f"s{i}" for i in range(S)] for m in ("a", "b")}
    fig = P.measure_grid({m: {"trained": _measure(), "random init": _measure()} for m in labels}, labels=labels,
                         ylabel="rotation dominance", title="rotation dominance")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    line = fig.axes[0].get_lines()[0]                    # the trained model's attention sublayers (even s)
    assert np.isnan(line.get_ydata()).sum() == 2         # s = 4 and 6 drawn as a gap, not joined
    assert line.get_color() == P.REFERENCE_COLORS["trained"]
    plt.close(fig)


def test_by_reference_exponents_and_recovery_panels():
    fig = P.plot_by_reference({"trained": rng.uniform(0, 0.2, 8), "random init": rng.uniform(0.8, 1, 24)},
                              ylabel="effective rank / D", threshold=0.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "random init"]
    assert any(np.allclose(line.get_ydata(), 0.5) for line in ax.get_lines())        # the threshold
    plt.close(fig)
    names = ["first", "early", "middle", "late", "last"]
    fig = P.plot_exponents({"trained": rng.normal(size=(6, 5))}, names=names)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    plt.close(fig)
    fig = P.plot_exponents_vs_recovery(names, rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5))
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_eigenvalue_and_jpca_panels():
    fig = P.plot_eigenvalues({"L1.attn": rng.normal(size=20) + 1j * rng.normal(size=20)})
    assert fig.axes[0].get_xlabel() == "Re (λ − 1)"
    plt.close(fig)
    Z = rng.normal(size=(10, S, 4))
    fig = P.plot_jpca_plane(Z, np.linalg.qr(rng.normal(size=(4, 2)))[0], 0.3)
    assert "ω = 0.30" in fig.axes[0].get_title()
    plt.close(fig)
    fig = P.plot_jpca_control({"trained": 0.4, "random init (seed 0)": 0.2},
                            {"trained": rng.uniform(0, 0.3, 10), "random init (seed 0)": rng.uniform(0, 0.3, 10)})
    assert len(fig.axes[0].get_xticklabels()) == 2
    plt.close(fig)


def test_benettin_convergence_panel_draws_deviation_from_the_literature():
    lengths = np.array([10.0, 100.0, 1000.0])
    estimates = np.array([[1.1, 0.9], [1.02, 0.98], [1.0, 1.0]])    # (n, n_trajectories) around known = 1
    fig = P.plot_benettin_convergence({"lengths": lengths, "estimates": estimates, "known": 1.0, "unit": "steps"},
                                      tolerance=0.02)
    ax = fig.axes[0]
    mean = [line for line in ax.get_lines() if line.get_label() == "mean"][0]
    np.testing.assert_allclose(mean.get_ydata(), [0.0, 0.0, 0.0], atol=1e-12)   # percent off the literature
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [10.0, 2.0, 0.0])
    assert ax.get_xlabel() == "length (steps)"
    plt.close(fig)
