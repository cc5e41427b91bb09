"""Shared plotting conventions: the paper colours within-layer transitions (attn -> mlp) green and
cross-layer transitions (mlp -> next attn) blue."""

from __future__ import annotations

import matplotlib

WITHIN_COLOR = "#2ca02c"  # h_l^Attn -> h_l^MLP
CROSS_COLOR = "#1f77b4"  # h_l^MLP -> h_{l+1}^Attn
TRANSITION_COLORS = {"within": WITHIN_COLOR, "cross": CROSS_COLOR}


def sublayer_cmap(name: str = "viridis") -> matplotlib.colors.Colormap:
    """Colour map used to colour points by sublayer depth."""
    return matplotlib.colormaps[name]
