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
                           end_distance=d[:, -1], recovery_pc=d[:, -1] / d[:, 0])


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
    results[1].recovery_pc = results[1].recovery_pc * 10  # one panel with a much wider range
    data = {("m", pos): r for pos, r in zip(("first", "middle", "last"), results)}
    fig = P.plot_teleport_grid(data)
    quivers = [c for ax in fig.axes for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 3
    norms = {(q.norm.vmin, q.norm.vmax) for q in quivers}
    assert len(norms) == 1
    lo, hi = norms.pop()
    allv = np.concatenate([r.recovery_pc for r in results])
    assert lo <= allv.min() and hi >= allv.max()
    fig = P.plot_teleport_grid(data, color_by="end_distance")
    assert len({(q.norm.vmin, q.norm.vmax) for ax in fig.axes for q in ax.collections
                if isinstance(q, Quiver)}) == 1


def test_teleport_grid_rows_are_models_one_colour_scale():
    data = {(m, pos): _teleport(l) for m, layers in (("a", (0, 3, 6)), ("b", (0, 2, 4)))
            for pos, l in zip(("first", "middle", "last"), layers)}
    data["b", "middle"].recovery_pc = data["b", "middle"].recovery_pc * 10  # one panel with a much wider range
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
    allv = np.concatenate([r.recovery_pc for r in data.values()])
    assert lo <= allv.min() and hi >= allv.max()
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1  # one colour bar for all
    assert fig.legends
    fig = P.plot_teleport_grid(data, color_by=None, show_paths=True)
    assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    with pytest.raises(ValueError):
        P.plot_teleport_grid({})


def _runs(k=5, n=6, B=50):
    per = {c: rng.lognormal(size=(n, k)) for c in P.CURVE_LABELS}
    reps = {c: rng.lognormal(size=(B, k)) for c in P.CURVE_LABELS}
    refs = {f"{kind}:{s}": ({c: rng.lognormal(size=(3, k)) for c in P.CURVE_LABELS}, None)
            for kind in ("default", "matched") for s in (0, 1)}
    return {"trained": (per, reps), **refs}


def test_teleport_curve_draws_the_mean_its_band_and_references():
    runs = _runs()
    per, reps = runs["trained"][0]["end_far"], runs["trained"][1]["end_far"]
    fig = P.plot_teleport_curve({r: (p["end_far"], None if b is None else b["end_far"]) for r, (p, b) in runs.items()},
                                curve="end_far", names=["first", "early", "middle", "late", "last"],
                                layers=[0, 7, 14, 22, 29])
    ax = fig.axes[0]
    mean = [l for l in ax.lines if l.get_label().startswith("trained")][0]
    np.testing.assert_allclose(mean.get_ydata(), per.mean(0))
    assert len([l for l in ax.lines if l.get_color() == "0.75"]) == per.shape[0]   # one thin line per prompt
    refs = [l for l in ax.lines if l.get_label().startswith("random init")]
    assert [l.get_label() for l in refs] == ["random init, default (2 seeds)", "random init, matched (2 seeds)"]
    assert ax.get_yscale() == "log"
    default = np.mean([runs[f"default:{s}"][0]["end_far"].mean(0) for s in (0, 1)], axis=0)
    np.testing.assert_allclose(refs[0].get_ydata(), default)
    assert [l for l in ax.lines if l.get_linestyle() == ":" and l.get_ydata()[0] == 1.0]   # the yardstick
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "0\nfirst"
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
    assert np.isclose(band.min(), lo.min()) and np.isclose(band.max(), hi.max())
    with pytest.raises(ValueError, match="trained"):
        P.plot_teleport_curve({"default:0": (per, None)})
    with pytest.raises(ValueError, match="names"):
        P.plot_teleport_curve({"trained": (per, None)}, names=["first"])


def test_teleport_curves_grid_rows_models_columns_curves():
    fig = P.plot_teleport_curves({"a": _runs(), "b": _runs(k=4)}, names={"a": list("vwxyz"), "b": list("wxyz")})
    assert len(fig.axes) == 2 * len(P.CURVE_LABELS)
    assert fig.axes[0].get_title() == "teleport — a, recovery"
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[1].get_yscale() == "log"   # recovery, rel_mse
    assert len(fig.axes[-1].get_xticks()) == 4


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
