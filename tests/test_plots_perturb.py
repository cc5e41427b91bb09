"""Smoke tests for transformer_dynamics.plots.perturb (Figure 4 D, noise and swap)."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver

from transformer_dynamics.plots import perturb as P

rng = np.random.default_rng(0)
N_SUB = 20


def _teleport(layer, n_points=9, nf=4):
    control = np.cumsum(rng.normal(size=(N_SUB, 2)), axis=0)
    sub = np.arange(2 * layer, min(2 * layer + nf, N_SUB - 1) + 1)
    grid = rng.uniform(-3, 3, size=(n_points, 2))
    pert = grid[:, None] + np.cumsum(rng.normal(size=(n_points, len(sub), 2)), axis=1)
    pert[:, 0] = grid
    d = np.linalg.norm(pert - control[sub], axis=-1)
    return SimpleNamespace(layer=layer, grid=grid, sublayers=sub, control=control, perturbed=pert,
                           mse_pc=((pert[:, 1:] - control[sub][1:]) ** 2).mean(axis=(1, 2)),
                           recovery=d[:, -1] / d[:, 0])


def _distance(layer, kind="noise", scale=0.5, n=6):
    sub = np.arange(2 * layer, N_SUB)
    own = np.abs(rng.normal(size=(n, len(sub))))
    return SimpleNamespace(layer=layer, sublayers=sub, distance_own=own, scale=scale,
                           distance_donor=np.abs(rng.normal(size=own.shape)) if kind == "swap" else None,
                           distance_own_donor=np.abs(rng.normal(size=own.shape)) if kind == "swap" else None)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.mark.parametrize("arrow", ["end", "mean"])
def test_quiver_arrows_are_displacements(arrow):
    res = _teleport(2)
    fig = P.plot_teleport_quiver(res, arrow=arrow)
    assert isinstance(fig, Figure)
    q = [c for c in fig.axes[0].collections if isinstance(c, Quiver)][0]
    end = res.perturbed[:, -1] if arrow == "end" else res.perturbed[:, 1:].mean(1)
    np.testing.assert_allclose(q.U, (end - res.grid)[:, 0])
    np.testing.assert_allclose(q.V, (end - res.grid)[:, 1])
    np.testing.assert_allclose(q.X, res.grid[:, 0])
    # the control trajectory over all sublayers is drawn in grey
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), res.control[:, 0])
    assert "layer 2" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="arrow"):
        P.plot_teleport_quiver(res, arrow="start")


def test_teleport_panels_and_mse():
    results = [_teleport(l) for l in (0, 3, 6, 9)]
    fig = P.plot_teleport_panels(results, color_by=None, show_paths=True)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert len(visible) == 4
    fig = P.plot_teleport_panels(results, ncols=3)
    assert isinstance(fig, Figure)
    fig = P.plot_teleport_mse(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "3", "6", "9"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError):
        P.plot_teleport_panels([])


def test_noise_and_swap_plots():
    noise = [_distance(l, scale=s) for l in (0, 4, 8) for s in (0.1, 1.0)]
    fig = P.plot_noise_grid({"m": noise})
    assert len([a for a in fig.axes if "scale" in a.get_title()]) == 2
    swaps = [_distance(l, kind="swap") for l in (0, 4, 8)]
    fig = P.plot_swap_grid({"m": swaps}, x="relative")
    assert len(fig.axes) == 2
    # median line of the first layer in the left panel
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), np.median(swaps[0].distance_own, axis=0))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), np.arange(N_SUB))
    with pytest.raises(ValueError, match="donor"):
        P.plot_perturbation_distance(noise, which="donor")
    with pytest.raises(ValueError, match="which"):
        P.plot_perturbation_distance(noise, which="other")


def test_panels_share_one_colour_scale():
    results = [_teleport(l) for l in (0, 3, 6)]
    results[1].recovery = results[1].recovery * 10  # one panel with a much wider range
    fig = P.plot_teleport_panels(results)
    quivers = [c for ax in fig.axes for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 3
    norms = {(q.norm.vmin, q.norm.vmax) for q in quivers}
    assert len(norms) == 1
    lo, hi = norms.pop()
    allv = np.concatenate([r.recovery for r in results])
    assert lo <= allv.min() and hi >= allv.max()
    fig = P.plot_teleport_panels(results, color_by="mse_pc")
    assert len({(q.norm.vmin, q.norm.vmax) for ax in fig.axes for q in ax.collections
                if isinstance(q, Quiver)}) == 1


def test_teleport_grid_rows_are_models_one_colour_scale():
    data = {(m, pos): _teleport(l) for m, layers in (("a", (0, 3, 6)), ("b", (0, 2, 4)))
            for pos, l in zip(("first", "middle", "last"), layers)}
    data["b", "middle"].recovery = data["b", "middle"].recovery * 10  # one panel with a much wider range
    fig = P.plot_teleport_grid(data)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6
    titles = [ax.get_title() for ax in panels]
    assert titles[0].endswith("\na, first") and titles[-1].endswith("\nb, last")
    assert "layer 4" in titles[-1]
    quivers = [c for ax in panels for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 6
    norms = {(q.norm.vmin, q.norm.vmax) for q in quivers}
    assert len(norms) == 1
    lo, hi = norms.pop()
    allv = np.concatenate([r.recovery for r in data.values()])
    assert lo <= allv.min() and hi >= allv.max()
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1  # one colour bar for all
    assert fig.legends
    fig = P.plot_teleport_grid(data, color_by=None, show_paths=True)
    assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    with pytest.raises(ValueError):
        P.plot_teleport_grid({})


def test_teleport_mse_names():
    results = [_teleport(l) for l in (0, 3, 6)]
    fig = P.plot_teleport_mse(results, names=["first", "middle", "last"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0\nfirst", "3\nmiddle", "6\nlast"]
    with pytest.raises(ValueError, match="names"):
        P.plot_teleport_mse(results, names=["first"])


def test_noise_and_swap_grids_rows_are_models():
    noise = {m: [_distance(l, scale=s) for l in layers for s in (0.1, 1.0)]
             for m, layers in (("a", (0, 4, 8)), ("b", (0, 3, 6)))}
    fig = P.plot_noise_grid(noise)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "noise — a, scale 0.1" and titles[3] == "noise — b, scale 1"
    assert len({ax.get_ylim() for ax in fig.axes}) == 1  # one y range
    # the dotted line at the scale in each panel; the median line of the first layer of model b
    assert [l for l in fig.axes[3].lines if l.get_linestyle() == ":"][0].get_ydata()[0] == 1.0
    first_b = sorted((r for r in noise["b"] if r.scale == 0.1), key=lambda r: r.layer)[0]
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), np.median(first_b.distance_own, axis=0))
    with pytest.raises(ValueError, match="scale"):
        P.plot_noise_panel(noise["a"], scale=0.1)
    swaps = {m: [_distance(l, kind="swap") for l in layers] for m, layers in (("a", (0, 4, 8)), ("b", (0, 3)))}
    fig = P.plot_swap_grid(swaps, x="relative")
    assert len(fig.axes) == 4
    assert fig.axes[1].get_title().endswith("a, to donor's run")
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    np.testing.assert_allclose(fig.axes[3].lines[1].get_ydata(), np.median(swaps["b"][1].distance_donor, axis=0))
    # own panel: one median line and one dotted own-vs-donor line per layer
    assert len([l for l in fig.axes[2].lines if l.get_linestyle() == ":"]) == 2
    with pytest.raises(ValueError):
        P.plot_swap_grid({"a": []})
