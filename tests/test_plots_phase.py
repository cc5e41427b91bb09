"""Smoke tests of the Figure 2 panels on small synthetic trajectories."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from transformer_dynamics import phase  # noqa: E402
from transformer_dynamics.plots import phase as PP  # noqa: E402

N_SUB = 12


@pytest.fixture(scope="module")
def traj():
    rng = np.random.default_rng(0)
    return np.cumsum(rng.standard_normal((N_SUB, 20)), axis=0)  # (n_sublayers, d_model)


@pytest.fixture(scope="module")
def obs_null(traj):
    return phase.count_rotations(traj.T), phase.shuffle_null(traj.T, n_shuffles=50, what="points")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_portraits_grid(traj):
    units = [0, 3, 5, 7, 9]
    fig = PP.plot_phase_portraits(traj, units, ncols=3,
                                  labels=[f"s{i}" for i in range(N_SUB)])
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.collections and ax.get_label() != "<colorbar>"]
    assert len(panels) == len(units)
    lc = [c for c in panels[1].collections if isinstance(c, LineCollection)][0]
    segs = lc.get_segments()
    assert len(segs) == N_SUB - 1
    # the drawn path is the centred portrait of unit 3, coloured by sublayer
    x, y = phase.phase_portrait(traj[:, 3])
    np.testing.assert_allclose(segs[0][0], [x[0], y[0]])
    np.testing.assert_allclose(segs[-1][1], [x[-1], y[-1]])
    assert len(np.unique(lc.get_array())) == N_SUB - 1
    r = phase.count_rotations(traj[:, 3])
    assert f"{r:+.1f}" in panels[1].get_title()


def test_portraits_into_axes_and_errors(traj):
    fig, axes = plt.subplots(1, 2)
    assert PP.plot_phase_portraits(traj, [1, 2], axes=axes) is fig
    with pytest.raises(ValueError, match="axes"):
        PP.plot_phase_portraits(traj, [1, 2, 3], axes=axes)
    with pytest.raises(ValueError, match="units"):
        PP.plot_phase_portraits(traj, [99])
    with pytest.raises(ValueError, match="2-D"):
        PP.plot_phase_portraits(traj[:, 0])


def test_histogram(obs_null):
    obs, null = obs_null
    fig, ax = plt.subplots()
    assert PP.plot_rotation_histogram(obs, null, ax=ax) is fig
    assert len(ax.patches) > 0
    means = sorted(line.get_xdata()[0] for line in ax.get_lines())
    np.testing.assert_allclose(means, sorted([obs.mean(), null.mean()]))
    with pytest.raises(ValueError, match="null must have shape"):
        PP.plot_rotation_histogram(obs, null[:, :3])


def test_sorted_with_band(obs_null):
    obs, null = obs_null
    fig = PP.plot_rotations_sorted(obs, null)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["RS units"].get_ydata(), np.sort(obs))
    assert len(ax.collections) == 1  # the band
    lo, hi = phase.null_band(null)
    verts = ax.collections[0].get_paths()[0].vertices
    assert verts[:, 1].min() == pytest.approx(lo.min()) and verts[:, 1].max() == pytest.approx(hi.max())


def test_portraits_by_model_one_row_per_model(traj):
    rng = np.random.default_rng(1)
    other = np.cumsum(rng.standard_normal((8, 30)), axis=0)  # another depth and width
    trajs = {"m1": traj, "m2": other}
    units = {"m1": [0, 3, 5], "m2": [1, 2, 7, 29]}
    rotations = {"m1": phase.count_rotations(traj.T), "m2": phase.count_rotations(other.T)}
    fig = PP.plot_phase_portraits_by_model(trajs, units, rotations=rotations, ncols=2,
                                           labels={"m1": [f"s{i}" for i in range(N_SUB)],
                                                   "m2": [f"t{i}" for i in range(8)]}, suptitle="both")
    assert isinstance(fig, Figure) and fig.get_suptitle() == "both"
    assert [sf.get_suptitle() for sf in fig.subfigs] == ["m1", "m2"]
    for sf, name in zip(fig.subfigs, trajs):
        panels = [ax for ax in sf.axes if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.collections]
        assert len(panels) == len(units[name])
        lc = [c for c in panels[-1].collections if isinstance(c, LineCollection)][0]
        assert len(lc.get_segments()) == trajs[name].shape[0] - 1  # each model's own depth
        u = units[name][-1]
        assert f"unit {u}  R={rotations[name][u]:+.1f}" == panels[-1].get_title()
        cbar = [ax for ax in sf.axes if ax.get_label() == "<colorbar>"]
        assert len(cbar) == 1
        assert [t.get_text() for t in cbar[0].get_yticklabels()][-1] == ("s11" if name == "m1" else "t7")
    with pytest.raises(ValueError, match="no units"):
        PP.plot_phase_portraits_by_model(trajs, {"m1": [0]})
    with pytest.raises(ValueError, match="empty"):
        PP.plot_phase_portraits_by_model({}, {})
