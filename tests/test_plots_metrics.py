"""Smoke tests of the Figure 1 panels on a small synthetic residual stream."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from transformer_dynamics import metrics as M  # noqa: E402
from transformer_dynamics import mutual_info as MI  # noqa: E402
from transformer_dynamics.plots import metrics as A  # noqa: E402
from transformer_dynamics.plots.style import CROSS_COLOR, WITHIN_COLOR  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

N_LAYERS = 3
LABELS = [f"L{l}.{k}" for l in range(N_LAYERS) for k in ("attn", "mlp")]


@pytest.fixture(scope="module")
def rs():
    rng = np.random.default_rng(0)
    return np.cumsum(rng.standard_normal((60, 2 * N_LAYERS, 16)), axis=1).astype(np.float32)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _line_colors(ax):
    return {to_rgba(line.get_color()) for line in ax.get_lines()}


def test_mean_activations(rs):
    fig = A.plot_mean_activations(M.mean_activations(rs), M.unit_order(rs), labels=LABELS)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heat map + colour bar
    img = fig.axes[0].get_images()[0].get_array()
    assert img.shape == (16, 6)  # units x sublayers
    # sorted by the last sublayer's mean: the last column increases
    assert np.all(np.diff(np.asarray(img)[:, -1]) >= 0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == LABELS


def test_successive_correlation(rs):
    r = M.successive_correlation(rs)
    fig = A.plot_successive_correlation(r, labels=LABELS)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2  # the two medians
    assert _line_colors(ax) == {to_rgba(WITHIN_COLOR), to_rgba(CROSS_COLOR)}
    within = [l for l in ax.get_lines() if to_rgba(l.get_color()) == to_rgba(WITHIN_COLOR)][0]
    np.testing.assert_allclose(within.get_ydata(), np.median(r[::2], axis=1))
    assert len(ax.collections) >= 2


def test_correlation_histogram(rs):
    density, edges = M.correlation_histogram(M.pairwise_correlation(rs), bins=10)
    fig = A.plot_correlation_histogram(density, edges)
    assert len(fig.axes) == 3  # heat map, colour bar, pooled-density twin axis
    assert fig.axes[0].get_images()[0].get_array().shape == (16, 10)
    with pytest.raises(ValueError, match="edges"):
        A.plot_correlation_histogram(density, edges[:-1])


@pytest.mark.parametrize("fn, metric", [(A.plot_cosine_similarity, M.cosine_similarity),
                                        (A.plot_velocity, M.velocity)])
def test_transition_profiles(rs, fn, metric):
    v = metric(rs)
    fig = fn(v, labels=LABELS)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.get_lines()) == 2
    assert _line_colors(ax) == {to_rgba(WITHIN_COLOR), to_rgba(CROSS_COLOR)}
    # given an ax, draws there; a mapping draws one pair of lines per entry
    fig2, axes = plt.subplots(1, 2)
    out = fn({"raw": v, "other": v * 0.5}, ax=axes[1])
    assert out is fig2 and len(axes[1].get_lines()) == 4 and len(axes[0].get_lines()) == 0


def test_mi_panels(rs):
    mi = MI.mutual_information(rs, method="gcmi")
    fig = A.plot_mi_units(mi, M.unit_order(rs))
    assert len(fig.axes) == 2 and fig.axes[0].get_images()[0].get_array().shape == (16, 5)
    fig = A.plot_mi_mean(mi, labels=LABELS)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3  # grey join + within + cross points
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), mi.mean(1))
    fig = A.plot_mi_mean({"gcmi": mi, "ksg": MI.mutual_information(rs, method="ksg")})
    assert len(fig.axes[0].get_lines()) == 6


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        A.plot_successive_correlation(np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        A.plot_mean_activations(np.zeros((6, 4)), labels=["a"])


@pytest.mark.parametrize("n_layers", [3, 15, 18, 30])
def test_ticks_name_one_kind_of_sublayer(n_layers):
    """Any depth: the tick step is even (or 1), so the sublayer axis names attn sublayers only, and the
    transition axis within-layer transitions only (16 ticks at most)."""
    labels = [f"L{l}.{k}" for l in range(n_layers) for k in ("attn", "mlp")]
    rng = np.random.default_rng(1)
    fig = A.plot_mean_activations(rng.standard_normal((2 * n_layers, 8)), labels=labels)
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert names[0] == "L0.attn" and len(names) <= 16
    assert all(name.endswith(".attn") for name in names) or names == labels
    fig = A.plot_velocity(rng.random((5, 2 * n_layers - 1)), labels=labels)
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) <= 16 and (np.all(np.asarray(ticks) % 2 == 0) or len(ticks) == 2 * n_layers - 1)


def test_undefined_transition_is_a_gap_without_warnings(rs):
    """A constant first sublayer makes the first transition NaN: drawn as a gap, no RuntimeWarning."""
    x = rs.copy()
    x[:, 0] = 1.0
    r, vel, mi = M.successive_correlation(x), M.velocity(x), MI.mutual_information(x, method="gcmi")
    r[0] = np.nan
    vel[:, 0] = np.nan
    mi[0] = np.nan
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.plot_successive_correlation(r, labels=LABELS)
        A.plot_velocity(vel, labels=LABELS)
        A.plot_mi_mean(mi, labels=LABELS)
