"""Shared plotting conventions: the paper colours within-layer transitions (attn -> mlp) green and
cross-layer transitions (mlp -> next attn) blue."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

WITHIN_COLOR = "#2ca02c"  # h_l^Attn -> h_l^MLP
CROSS_COLOR = "#1f77b4"  # h_l^MLP -> h_{l+1}^Attn
TRANSITION_COLORS = {"within": WITHIN_COLOR, "cross": CROSS_COLOR}


def sublayer_cmap(name: str = "viridis") -> matplotlib.colors.Colormap:
    """Colour map used to colour points by sublayer depth."""
    return matplotlib.colormaps[name]


def side_by_side(plot, data, *, width: float = 5.5, height: float = 4.2, **kwargs):
    """One panel per condition (or model), side by side.

    plot: a panel function taking ``ax=``; data: name -> the panel's first argument, or a tuple of its
    positional arguments. The name is appended to each panel's title. Returns the figure.
    """
    fig, axes = plt.subplots(1, len(data), figsize=(width * len(data), height), layout="constrained")
    for ax, (name, args) in zip(np.atleast_1d(axes), data.items()):
        args = args if isinstance(args, tuple) else (args,)
        plot(*args, ax=ax, **kwargs)
        ax.set_title(f"{ax.get_title()} — {name}")
    return fig
