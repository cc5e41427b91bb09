"""Shared plotting conventions: the book's seaborn theme (:func:`use`, applied by the first figure a panel
function makes), and the paper's colours: within-layer transitions (attn -> mlp) green, cross-layer
transitions (mlp -> next attn) blue."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

WITHIN_COLOR = "#2ca02c"  # h_l^Attn -> h_l^MLP
CROSS_COLOR = "#1f77b4"  # h_l^MLP -> h_{l+1}^Attn
TRANSITION_COLORS = {"within": WITHIN_COLOR, "cross": CROSS_COLOR}

#: The book's look: seaborn's "ticks" style (white, no grid, ticks out), matplotlib's tab10 colour cycle (so
#: the paper's green/blue stay what they are), slightly smaller type than seaborn's notebook context.
THEME = {"context": "notebook", "style": "ticks", "palette": "tab10", "font_scale": 0.85,
         "rc": {"axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
                "legend.frameon": False}}
_applied = False


def use(**overrides) -> None:
    """Apply the book's seaborn theme (:data:`THEME`, updated by ``overrides``) to every later figure.
    The panel functions call it once by themselves; call it again to change it."""
    global _applied
    sns.set_theme(**{**THEME, **overrides})
    _applied = True


def _ensure_theme() -> None:
    if not _applied:
        use()


def subplots(*args, **kwargs):
    """``plt.subplots`` under the book's theme."""
    _ensure_theme()
    return plt.subplots(*args, **kwargs)


def figure(**kwargs):
    """``plt.figure`` under the book's theme."""
    _ensure_theme()
    return plt.figure(**kwargs)


def category_colors(n: int) -> list:
    """``n`` colours of the tab10 cycle, one per model (or condition, precision), repeating after ten."""
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def fig_ax(ax=None, figsize=(5.0, 3.8)):
    """``(figure, axes)``: the given ``ax`` and its figure, or a new constrained-layout figure of ``figsize``."""
    _ensure_theme()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def sublayer_ticks(ax, n: int, labels=None, axis: str = "x", max_ticks: int = 16) -> None:
    """At most ``max_ticks`` ticks over ``n`` sublayers on ``axis``, named by ``labels`` (length ``n``) if given.

    The step between ticks is even when it is above 1, so that every tick names the same kind of sublayer
    (attn) whatever the model's depth."""
    step = max(1, int(np.ceil(n / max_ticks)))
    step += step % 2 if step > 1 else 0
    ticks = np.arange(0, n, step)
    setter = ax.set_xticks if axis == "x" else ax.set_yticks
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} sublayers")
        setter(ticks, [labels[i] for i in ticks], rotation=90 if axis == "x" else 0, fontsize=7)
    else:
        setter(ticks)


def sublayer_cmap(name: str = "viridis") -> matplotlib.colors.Colormap:
    """Colour map used to colour points by sublayer depth."""
    return matplotlib.colormaps[name]


def side_by_side(plot, data, *, width: float = 5.5, height: float = 4.2, **kwargs):
    """One panel per condition (or model), side by side.

    plot: a panel function taking ``ax=``; data: name -> the panel's first argument, or a tuple of its
    positional arguments. The name is appended to each panel's title. Returns the figure.
    """
    _ensure_theme()
    fig, axes = plt.subplots(1, len(data), figsize=(width * len(data), height), layout="constrained")
    for ax, (name, args) in zip(np.atleast_1d(axes), data.items()):
        args = args if isinstance(args, tuple) else (args,)
        plot(*args, ax=ax, **kwargs)
        ax.set_title(f"{ax.get_title()} — {name}")
    return fig


def grid(plot, data, *, row_kwargs=None, col_kwargs=None, sharey: bool = False, width: float = 5.5,
         height: float = 4.2, **kwargs):
    """One panel per (row, column) pair: rows are models, columns conditions (or any two factors).

    plot: a panel function taking ``ax=``; data: ``{(row, column): args}``, args the panel's first argument or
    a tuple of its positional arguments; row_kwargs: ``{row: {...}}`` keyword arguments for that row's panels
    only (e.g. each model's sublayer ``labels``), col_kwargs: the same per column, on top of ``kwargs`` for all;
    sharey: after drawing, give every panel the union of their y ranges (one scale to compare models on). Rows and
    columns keep the order of first appearance; a missing pair leaves its panel empty. Each panel's title gets
    " — row, column" (just the column when there is one row). Returns the figure.
    """
    _ensure_theme()
    rows = list(dict.fromkeys(r for r, _ in data))
    cols = list(dict.fromkeys(c for _, c in data))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)),
                             layout="constrained", squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            if (r, c) not in data:
                ax.set_axis_off()
                continue
            args = data[r, c]
            args = args if isinstance(args, tuple) else (args,)
            plot(*args, ax=ax, **{**kwargs, **(row_kwargs or {}).get(r, {}), **(col_kwargs or {}).get(c, {})})
            ax.set_title(f"{ax.get_title()} — {c}" if len(rows) == 1 else f"{ax.get_title()} — {r}, {c}")
    if sharey:
        drawn = [ax for ax in axes.ravel() if ax.axison]
        low = min(ax.get_ylim()[0] for ax in drawn)
        high = max(ax.get_ylim()[1] for ax in drawn)
        for ax in drawn:
            ax.set_ylim(low, high)
    return fig
