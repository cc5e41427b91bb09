"""plots.style: the panel grid that puts models (rows) and conditions (columns) side by side."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transformer_dynamics.plots.style import grid, side_by_side  # noqa: E402


def _panel(y, *, ax, labels=None, title="panel"):
    ax.plot(y)
    ax.set_title(title)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels)


def test_grid_rows_columns_titles_and_row_kwargs():
    data = {("smol", "original"): np.arange(4), ("smol", "shuffled"): np.arange(4),
            ("gemma", "original"): np.arange(6)}
    fig = grid(_panel, data, row_kwargs={"gemma": {"labels": list("abcdef")}}, title="r")
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["r — smol, original", "r — smol, shuffled"]
    assert axes[1, 0].get_title() == "r — gemma, original"
    assert not axes[1, 1].axison  # the missing pair is left empty
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == list("abcdef")
    assert len(axes[1, 0].lines[0].get_xdata()) == 6
    plt.close(fig)


def test_grid_with_one_row_matches_side_by_side_titles():
    data = {"original": np.arange(3), "shuffled": np.arange(3)}
    a = side_by_side(_panel, data)
    b = grid(_panel, {("m", c): v for c, v in data.items()})
    assert [ax.get_title() for ax in a.axes] == [ax.get_title() for ax in b.axes] == [
        "panel — original", "panel — shuffled"]
    plt.close("all")


def test_grid_models_as_columns_with_col_kwargs():
    data = {("", "smol"): np.arange(4), ("", "gemma"): np.arange(6)}
    fig = grid(_panel, data, col_kwargs={"gemma": {"labels": list("abcdef")}})
    assert [ax.get_title() for ax in fig.axes] == ["panel — smol", "panel — gemma"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == list("abcdef")
    plt.close(fig)


def test_grid_sharey_gives_every_panel_the_union_of_ranges():
    data = {("a", "x"): np.array([0.0, 1.0]), ("a", "y"): np.array([5.0, 9.0]), ("b", "x"): np.array([-3.0, 2.0])}
    fig = grid(_panel, data, sharey=True)
    drawn = [ax for ax in fig.axes if ax.axison]
    low, high = drawn[0].get_ylim()
    assert len(drawn) == 3 and all(ax.get_ylim() == (low, high) for ax in drawn)
    assert low <= -3.0 and high >= 9.0
    plt.close(fig)


def test_the_book_theme_is_seaborn_and_keeps_the_paper_colours():
    import matplotlib as mpl

    from transformer_dynamics.plots import style

    style.use()
    assert mpl.rcParams["axes.spines.top"] is False and mpl.rcParams["axes.spines.right"] is False
    cycle = [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]
    assert mpl.colors.to_hex(cycle[0]) == "#1f77b4"  # tab10: the paper's blue is still C0
    fig, ax = style.fig_ax()
    assert fig is ax.figure
    style.use(style="whitegrid")
    assert mpl.rcParams["axes.grid"] is True
    style.use()
    plt.close("all")
