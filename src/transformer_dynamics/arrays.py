"""The small rules every analysis and plot room shares: the input check for ``rs: (n_samples, n_sublayers,
d_model)`` and which transitions are within-layer or cross-layer.

Transition ``t`` goes from sublayer ``t`` to ``t + 1``: even ``t`` (attn -> mlp of one layer) is
*within-layer*, odd ``t`` (mlp -> the next layer's attn) is *cross-layer*.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_rs", "check_units", "rs_shape", "within_mask", "cross_mask", "split_transitions", "transition_kind"]

_SHAPE_HINT = "Add the missing axis (e.g. rs[None]) or pass the full residual-stream array."


def rs_shape(rs: Any, *, min_samples: int = 1, min_sublayers: int = 1, name: str = "rs") -> tuple[int, int, int]:
    """``(n_samples, n_sublayers, d_model)`` of ``rs`` without reading it (an array, memory map, tensor, or a
    store with ``shape`` and ``read``); a ValueError naming the fix when the shape is wrong or too small."""
    shape = getattr(rs, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"{name} must be (n_samples, n_sublayers, d_model); got shape {shape}. {_SHAPE_HINT}")
    n, s, d = (int(v) for v in shape)
    if d < 1:
        raise ValueError(f"{name} has an empty axis: shape {(n, s, d)}")
    if s < max(min_sublayers, 1):
        raise ValueError(f"need at least {max(min_sublayers, 1)} sublayers; {name} has {s}")
    if n < max(min_samples, 1):
        raise ValueError(f"need at least {max(min_samples, 1)} samples (texts); {name} has {n}")
    return n, s, d


def check_rs(rs: Any, *, min_samples: int = 1, min_sublayers: int = 1, finite: bool = False,
             name: str = "rs") -> np.ndarray:
    """The one input check: ``rs`` as a numpy float array ``(n_samples, n_sublayers, d_model)``.

    Torch tensors are moved to numpy, float dtypes kept, other numeric dtypes cast to float32 (no copy when
    nothing changes). ``finite=True`` rejects NaN and inf. Errors say what to do.
    """
    if hasattr(rs, "detach"):  # a torch tensor
        rs = rs.detach().cpu().numpy()
    rs = np.asarray(rs)
    if rs.dtype == object or not (np.issubdtype(rs.dtype, np.number) or rs.dtype == bool):
        raise ValueError(f"{name} must be a numeric array; got dtype {rs.dtype}")
    if rs.ndim != 3:
        raise ValueError(f"{name} must be (n_samples, n_sublayers, d_model); got shape {rs.shape}. {_SHAPE_HINT}")
    if not np.issubdtype(rs.dtype, np.floating):
        rs = rs.astype(np.float32)
    rs_shape(rs, min_samples=min_samples, min_sublayers=min_sublayers, name=name)
    if finite and not np.isfinite(rs).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute those values first")
    return rs


def within_mask(n_transitions: int) -> np.ndarray:
    """``(n_transitions,)`` bool: True for within-layer transitions (even ``t``: attn -> mlp of one layer)."""
    return np.arange(int(n_transitions)) % 2 == 0


def cross_mask(n_transitions: int) -> np.ndarray:
    """``(n_transitions,)`` bool: True for cross-layer transitions (odd ``t``: mlp -> the next layer's attn)."""
    return ~within_mask(n_transitions)


def transition_kind(n_sublayers: int) -> np.ndarray:
    """Kind of each transition ``t -> t + 1``: ``(n_sublayers - 1,)`` str, ``"within"`` or ``"cross"``."""
    if n_sublayers < 2:
        raise ValueError(f"need at least 2 sublayers for a transition; got {n_sublayers}")
    return np.where(within_mask(n_sublayers - 1), "within", "cross")


def split_transitions(x, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(within, cross)``: the even and odd entries of ``x`` along ``axis`` (which indexes transitions
    t = 0 … n_sublayers - 2)."""
    x = np.asarray(x)
    w = within_mask(x.shape[axis])
    return np.compress(w, x, axis=axis), np.compress(~w, x, axis=axis)


def check_units(units: Any, d_model: int) -> np.ndarray:
    """``units`` as int64 indices, each in ``[0, d_model)``: a one-line error otherwise. -> (n_units,)"""
    u = np.atleast_1d(np.asarray(units))
    if u.size and not (np.issubdtype(u.dtype, np.integer) or
                       (np.issubdtype(u.dtype, np.floating) and np.isfinite(u).all() and (u == np.round(u)).all())):
        raise ValueError(f"units must be integer unit indices in [0, {d_model}); got dtype {u.dtype}: {u[:5]}")
    u = u.astype(np.int64).ravel()
    bad = u[(u < 0) | (u >= d_model)]
    if bad.size:
        raise ValueError(f"units {bad[:5].tolist()} out of range: indices must be in [0, {d_model}) (d_model)")
    return u
