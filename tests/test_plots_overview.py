"""plots.overview: the RS norm and the tokenisation-variant panels, alone and in a models grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from transformer_dynamics.capture import sublayer_labels  # noqa: E402
from transformer_dynamics.plots import overview  # noqa: E402
from transformer_dynamics.plots.style import grid  # noqa: E402


def _rs(n, n_layers, d, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2 * n_layers, d)).astype(np.float32)


def test_rs_norm_draws_the_mean_norm_per_condition():
    rs = {"original": _rs(5, 3, 4), "shuffled": _rs(5, 3, 4, seed=1)}
    fig = overview.rs_norm(rs, sublayer_labels(3))
    ax = fig.axes[0]
    assert ax.get_title() == "RS norm per sublayer"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.linalg.norm(rs["original"], axis=-1).mean(0), rtol=1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["original (n = 5)", "shuffled (n = 5)"]
    # the band spans the 10th to 90th percentile over samples and stays positive (log axis)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    norms = np.linalg.norm(rs["original"], axis=-1)
    assert band.min() == pytest.approx(np.percentile(norms, 10, axis=0).min(), rel=1e-5)
    assert band.max() == pytest.approx(np.percentile(norms, 90, axis=0).max(), rel=1e-5)
    assert band.min() > 0
    plt.close(fig)


def test_models_side_by_side_with_their_own_depths():
    """Two models of different depth in one grid: each panel gets its model's sublayer labels and title."""
    depth = {"a": 3, "b": 2}
    data = {("", m): {"original": _rs(4, L, 5)} for m, L in depth.items()}
    fig = grid(overview.rs_norm, data, col_kwargs={m: {"labels": sublayer_labels(L)} for m, L in depth.items()})
    assert [ax.get_title() for ax in fig.axes] == ["RS norm per sublayer — a", "RS norm per sublayer — b"]
    assert [len(ax.lines[0].get_xdata()) for ax in fig.axes] == [6, 4]
    plt.close(fig)


def test_similarity_panels_share_a_y_range():
    sims = {"a": {"v1": np.full((3, 6), 0.9), "v2": np.array([[1.0] * 6, [0.5] * 6, [0.0] * 6])},
            "b": {"v1": np.full((3, 4), 0.2)}}
    fig = grid(overview.similarity_to_reference, {("", m): s for m, s in sims.items()}, sharey=True)
    low, high = fig.axes[0].get_ylim()
    assert all(ax.get_ylim() == pytest.approx((low, high)) for ax in fig.axes)
    assert low < 0.2 and high > 0.9  # the range holds every panel's means (0.2 in b, 0.9 in a)
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), 0.5)
    plt.close(fig)
    fig = grid(overview.similarity_to_reference, {("", "a"): sims["a"]}, ylim=(0.1, 0.95))
    assert fig.axes[0].get_ylim() == pytest.approx((0.1, 0.95))  # an explicit ylim is kept
    plt.close(fig)
