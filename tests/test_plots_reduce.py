"""Smoke tests for transformer_dynamics.plots.reduce (Figure 3 B–D, Figure 4 A–C)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from transformer_dynamics.plots import reduce as P
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


def test_components_for_variance_title_labels_and_not_reached_note():
    k = np.array([np.inf, 3, 2, 1.0])
    fig = P.plot_components_for_variance({"a": k}, n_kept=50, title="global PCA", labels=["A", "B", "C", "D"])
    ax = fig.axes[0]
    assert ax.get_title() == "global PCA"
    assert ax.get_ylim()[1] == 50
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C", "D"]
    assert "not reached with 50 PCs" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig = P.plot_components_for_variance(np.array([3.0, 2, 1]), threshold=0.5)
    assert "50%" in fig.axes[0].get_title() and fig.axes[0].get_legend() is None


def test_ev_plot_sublayer_labels():
    fig = P.plot_explained_variance_per_sublayer(np.linspace(0, 1, 4), labels=["a0", "m0", "a1", "m1"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a0", "m0", "a1", "m1"]
    with pytest.raises(ValueError):
        P.plot_explained_variance_per_sublayer(np.linspace(0, 1, 4), labels=["a0"])


def test_training_history_one_run_or_several():
    h = {"train_loss": [1.0, 0.5, 0.25], "val_loss": [1.2, 0.6, 0.4]}
    fig = P.plot_training_history(h)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), h["val_loss"])
    assert ax.get_lines()[1].get_linestyle() == "--"
    fig = P.plot_training_history({"original": h, "shuffled": {"train_loss": [2.0, 1.0]}})
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert labels == ["original train", "original validation", "shuffled train"]
    assert fig.axes[0].get_lines()[0].get_color() == fig.axes[0].get_lines()[1].get_color()
    with pytest.raises(ValueError):
        P.plot_training_history({"train_loss": [[1.0]]})
