"""Smoke tests for transformer_dynamics.plots.reduced (Figure 3 B–D, Figure 4 A–C)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from transformer_dynamics.plots import reduced as P
from transformer_dynamics.plots.style import CROSS_COLOR, WITHIN_COLOR

rng = np.random.default_rng(0)
TRAJ = np.cumsum(rng.normal(size=(30, 10, 2)), axis=1)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _segment_colors(ax):
    cols = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 9]
    assert cols, "no 9-segment mean path drawn"
    return [matplotlib.colors.to_hex(c) for c in cols[-1].get_colors()]


def test_bottleneck_trajectory_mean_and_colours():
    fig = P.plot_bottleneck_trajectory(TRAJ)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    colors = _segment_colors(ax)
    assert colors[0::2] == [WITHIN_COLOR] * 5 and colors[1::2] == [CROSS_COLOR] * 4
    segs = [c for c in ax.collections if isinstance(c, LineCollection)][-1].get_segments()
    np.testing.assert_allclose(segs[0][0], TRAJ.mean(0)[0])
    assert P.plot_bottleneck_trajectory(TRAJ.mean(0)) is not None
    with pytest.raises(ValueError):
        P.plot_bottleneck_trajectory(np.zeros((3, 1, 2)))


def test_successive_distance_plot():
    d = np.abs(rng.normal(size=(30, 9)))
    fig = P.plot_successive_distance(d)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), d.mean(0))
    fig = P.plot_successive_distance({"original": d, "shuffled": d * 2})
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert "original" in labels and "shuffled" in labels


def test_ev_plots():
    ev = np.linspace(0.3, 0.95, 10)
    for fn in (P.plot_cae_explained_variance, P.plot_pca_explained_variance_per_sublayer,
               P.plot_explained_variance_per_sublayer):
        fig = fn(ev)
        np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), ev)
    fig = P.plot_pca_explained_variance_per_sublayer({"original": ev, "shuffled": ev / 2}, n_components=100)
    assert "100 PCs" in fig.axes[0].get_title()
    with pytest.raises(ValueError):
        P.plot_cae_explained_variance(np.zeros((2, 3)))
    clipped = ev.copy()
    clipped[:2] = [-50.0, -3.0]
    fig = P.plot_cae_explained_variance(clipped, ylim=(-1, 1.02))
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == -1
    assert np.isnan(ax.get_lines()[0].get_ydata()[:2]).all()
    np.testing.assert_allclose(ax.collections[-1].get_offsets()[:, 1], [-1, -1])  # triangles on the edge


def test_pca_trajectories_subsamples():
    fig = P.plot_pca_trajectories(TRAJ, max_samples=12)
    ax = fig.axes[0]
    grey = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 12]
    assert len(grey) == 1
    assert _segment_colors(ax)[0] == WITHIN_COLOR


def test_cumulative_ev_and_components():
    ratio = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    fig = P.plot_cumulative_explained_variance({"original": ratio, "shuffled": ratio[::-1]})
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), np.cumsum(ratio))
    fig = P.plot_components_for_variance({"a": np.array([5, 4, np.nan, 2.0]), "b": np.array([np.inf, 3, 2, 1])})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata()[1:], [3, 2, 1])
    np.testing.assert_allclose(ax.collections[-1].get_offsets(), [[0, ax.get_ylim()[1]]])
