"""Which layers a perturbation is written at, and which points after it are followed.

The paper perturbs Llama 3.1 8B (:data:`transformer_dynamics.paper.N_LAYERS` layers) at
:data:`~transformer_dynamics.paper.TELEPORT_LAYERS`; :func:`paper_layers` maps them to another depth by depth
fraction, :func:`depth_names` names them by depth position so that models of different depth line up, and
:func:`equal_window` gives every layer the same follow-up window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import paper
from ..validation import check_int, check_positive_int

__all__ = ["check_layer", "depth_names", "equal_window", "following", "paper_layers"]


def paper_layers(n_layers: int, layers: Sequence[int] = paper.TELEPORT_LAYERS,
                 paper_n_layers: int = paper.N_LAYERS) -> list[int]:
    """The paper's perturbed layers mapped to a model with ``n_layers`` by depth fraction:
    ``round(l / (paper_n_layers - 1) * (n_layers - 1))`` (Python's round). Duplicates (shallow models)
    are dropped, order kept. For SmolLM2 (30 layers): ``[0, 7, 14, 22, 29]``; for 32 layers the paper's own.
    """
    n_layers = check_positive_int(n_layers, "n_layers")
    paper_n_layers = check_int(paper_n_layers, "paper_n_layers", low=2)
    out: list[int] = []
    for l in layers:
        m = int(round(l / (paper_n_layers - 1) * (n_layers - 1)))
        if m not in out:
            out.append(m)
    return out


def depth_names(layers: Sequence[int]) -> list[str]:
    """Names of perturbed layers by depth position, for ledger keys and figure columns that line up across
    models of different depth (SmolLM2's layer 7 of 30 and Gemma 3's layer 4 of 18 are both ``"early"``).

    layers: ``(k,)`` distinct layer indices in increasing order (e.g. :func:`paper_layers`). Returns ``k``
    names: :data:`transformer_dynamics.paper.DEPTH_NAMES` for k <= 5 (``"first", "early", "middle", "late",
    "last"`` for the paper's five), else ``"first", "middle1", …, "middle{k-2}", "last"``.
    """
    layers = [int(l) for l in layers]
    if not layers:
        raise ValueError("need at least one layer")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct and in increasing order, got {layers}")
    k = len(layers)
    if k in paper.DEPTH_NAMES:
        return list(paper.DEPTH_NAMES[k])
    return ["first"] + [f"middle{i}" for i in range(1, k - 1)] + ["last"]


def check_layer(layer: int, n_layers: int) -> int:
    """``layer`` as an int in ``[0, n_layers)``, else a ValueError."""
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer must be an int in [0, {n_layers - 1}] (the model has {n_layers} decoder "
                         f"layers), got {layer!r}")
    return int(layer)


def following(layer: int, n_following: int | None, last: int) -> np.ndarray:
    """Points ``2l, 2l+1, …, min(2l + n_following, last)`` (``None``: to ``last``)."""
    n_following = check_positive_int(n_following, "n_following", none=True)
    start = 2 * layer
    end = last if n_following is None else min(start + int(n_following), last)
    return np.arange(start, end + 1)


def equal_window(layers: Sequence[int], n_layers: int, cap: int | None = None) -> int:
    """The follow-up window every perturbed layer gets: as many points after the perturbed point as the deepest
    layer has before the stack's output (that included), at most ``cap``. With the paper's layers (the last one the
    model's last layer): 2, one whole decoder layer (its attention and its MLP)."""
    if not len(layers):
        raise ValueError("need at least one teleport layer")
    deepest = max(check_layer(l, n_layers) for l in layers)
    w = 2 * n_layers - 2 * deepest
    if cap is not None:
        if int(cap) < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        w = min(w, int(cap))
    return w
