"""Smoke and content tests of chapters 6 and 8's panels (transformer_dynamics.plots.robustness and
transformer_dynamics.plots.verdicts) on small streams and constructed verdict rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from transformer_dynamics import robustness, verdicts  # noqa: E402
from transformer_dynamics.plots import robustness as P  # noqa: E402
from transformer_dynamics.plots import verdicts as V  # noqa: E402
from transformer_dynamics.plots.style import side_by_side  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def curves():
    rng = np.random.default_rng(0)
    out = {}
    for label, (n, L, D) in {"a": (30, 10, 12), "b": (30, 14, 16)}.items():
        rs = np.cumsum(rng.standard_normal((n, L, D)), axis=1).astype(np.float32)
        out[label] = robustness.stream_curves(rs, ("mean", "r", "cos", "vel", "mi", "rot", "pca"),
                                              mi_units=np.arange(4), mi_methods=("gcmi",), n_shuffles=5,
                                              pca_components=8)
    return out


def test_relative_depth():
    np.testing.assert_allclose(P.relative_depth(4), [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(P.relative_depth(3, transitions=True), [0.125, 0.375, 0.625])
    with pytest.raises(ValueError):
        P.relative_depth(0)


def test_depth_profiles_draw_each_model_on_relative_depth(curves):
    fig = P.plot_successive_r(curves)
    ax = fig.axes[0]
    assert len(ax.lines) == 4                              # 2 models x within / cross
    x = np.concatenate([ln.get_xdata() for ln in ax.lines])
    assert 0 < x.min() and x.max() < 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), curves["a"]["r"][0::2])
    for f in (P.plot_cosine, P.plot_velocity, P.plot_magnitude, P.plot_pcs, P.plot_rotations,
              P.plot_rotation_exceed, P.plot_cumulative_ev):
        assert isinstance(f(curves), Figure)
    assert isinstance(P.plot_mutual_information(curves, method="gcmi"), Figure)
    assert isinstance(side_by_side(P.plot_cosine, {"original": curves, "shuffled": curves}, centred=True), Figure)
    with pytest.raises(ValueError, match="mi:kde"):
        P.plot_mutual_information(curves)                  # only gcmi was computed


def test_rotation_bars_are_per_sublayer(curves):
    ax = P.plot_rotations(curves).axes[0]
    first = ax.patches[0].get_height()
    assert first == pytest.approx(curves["a"]["rot_abs"] / curves["a"]["mag"].size)
    with pytest.raises(ValueError, match="per_sublayer"):
        P.plot_rotations({"a": {"rot_abs": 1.0}})


def _ev(claim, value, width, n, reading=None):
    from transformer_dynamics import claims

    reps = np.full(51, np.nan) if not np.isfinite(value) else value + np.linspace(-width, width, 51)
    return verdicts.Evidence(claim, reading or claims.get(claim).headline, "trained", value, reps, n)


@pytest.fixture()
def frame():
    runs = {("m", "headline", "h"): [_ev("r_early", 0.9, 0.01, 500), _ev("units_high_r", 0.9, 0.01, 500),
                                     _ev("r_early", 0.9, 0.01, 500, "first_transition")],
            ("m", "last token", "rows as given"): [_ev("r_early", 0.5, 0.01, 500),
                                                   _ev("units_high_r", 0.9, 0.01, 500),
                                                   _ev("r_early", np.nan, 0, 500, "first_transition")],
            ("m", "N", "50"): [_ev("r_early", 0.9, 0.5, 50), _ev("units_high_r", 0.9, 0.01, 50),
                               _ev("r_early", 0.9, 0.5, 50, "first_transition")]}
    return robustness.choice_frame(runs)


def test_verdict_grid_marks_flips_lost_power_and_references(frame):
    changes = robustness.setting_changes(frame)
    fig = V.plot_verdict_grid(changes, model="m")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "headline" and labels[-1] == "other reading 1"
    marks = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    row = {k.split(" [")[0]: i for i, k in enumerate(t.get_text() for t in ax.get_yticklabels())}
    assert ax.get_yticklabels()[row["r_early"]].get_text() == "r_early [first_transition]"
    col = {lab: j for j, lab in enumerate(labels)}
    assert marks[row["r_early"], col["last token: rows as given"]] == "F"
    assert marks[row["r_early"], col["N: 50"]] == "↓"
    assert (row["units_high_r"], col["N: 50"]) not in marks
    with pytest.raises(ValueError, match="no rows for model"):
        V.plot_verdict_grid(changes, model="other")


def test_claim_intervals_and_n_dependence(frame):
    head = frame[frame["choice"] == "headline"]
    fig = V.plot_claim_intervals({"x": head, "y": head})
    assert [a.get_title() for a in fig.axes[:2]] == ["r_early", "units_high_r"]
    # the threshold drawn in each panel is the registry's
    assert any(np.allclose(ln.get_ydata(), 0.8) for ln in fig.axes[0].lines)
    nd = pd.DataFrame({"r_early": [0.7, 0.85, 0.9]}, index=pd.Index([10, 50, 100], name="n"))
    fig = V.plot_n_dependence(nd, intervals=head)
    assert len(fig.axes[0].patches) == 1                 # the interval band
    with pytest.raises(ValueError, match="empty"):
        V.plot_n_dependence(nd.iloc[:0])


def test_n_dependence_per_model(frame):
    head = frame[frame["choice"] == "headline"]
    nd = pd.DataFrame({"r_early": [0.7, 0.85, 0.9]}, index=pd.Index([10, 50, 100], name="n"))
    fig = V.plot_n_dependence({"m1": nd, "m2": nd + 0.01}, intervals={"m1": head, "m2": head})
    ax = fig.axes[0]
    assert len([ln for ln in ax.lines if len(ln.get_xdata()) == 3]) == 2 and len(ax.patches) == 2


def test_panels_with_no_defined_value_say_so(frame):
    nd = pd.DataFrame({"r_early": [np.nan, np.nan]}, index=pd.Index([10, 50], name="n"))
    ax = V.plot_n_dependence(nd).axes[0]
    assert [t.get_text() for t in ax.texts] == ["undefined"]
    head = frame[frame["choice"] == "headline"].assign(value=np.nan)
    assert [t.get_text() for t in V.plot_claim_intervals({"x": head}).axes[0].texts] == ["undefined"]


def test_plot_learning_draws_every_reference():
    rng = np.random.default_rng(0)
    curves = {k: {"r": rng.random(11), "cos": rng.random(11), "vel": rng.random(11), "norm": rng.random(12)}
              for k in ("trained", "random init", "permuted weights")}
    for key in ("r", "cos", "norm", "vel"):
        fig = P.plot_learning(curves, key=key)
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert sorted(labels) == sorted(curves), key
        plt.close(fig)
    with pytest.raises(ValueError, match="key must be one of"):
        P.plot_learning(curves, key="mi")


def test_verdict_grids_one_figure_one_grid_per_model(frame):
    """One figure for every model (the book numbers one figure per cell): each model's grid as its own."""
    changes = robustness.setting_changes(frame)
    two = pd.concat([changes, changes.assign(model="m2")], ignore_index=True)
    fig = V.plot_verdict_grids(two, ["m", "m2"])
    assert len(fig.axes) == 2
    one = V.plot_verdict_grid(changes, model="m").axes[0]
    for ax, m in zip(fig.axes, ["m", "m2"]):
        assert ax.get_title().startswith(f"{m}:")
        assert [t.get_text() for t in ax.texts] == [t.get_text() for t in one.texts]
