"""Streams that keep part of a residual stream's structure and destroy the rest: what any residual stream gives.

:func:`accumulation_null` is the residual-accumulation null: each text keeps its own starting vector and
receives, at every sublayer, the update another text received there,
``h'_0 = h_0``, ``h'_{s+1} = h'_s + Delta_s[pi_s]`` with ``Delta_s = h_{s+1} - h_s`` and an independent random
permutation ``pi_s`` of the texts per sublayer. It keeps every sublayer's mean over texts and every update's
norm, and breaks the dependence of an update on the state it is added to. A statistic built on means, signs or
update norms (the mean magnitude, sign agreement, velocity, the rotations of the mean trajectory) is therefore
the same number on the null as on the data: :data:`MOVES` says, per curve, whether the null can move it.
The random-initialisation reference is the model-level counterpart (:mod:`.random_init`).
"""

from __future__ import annotations

import numpy as np

from .arrays import check_rs

__all__ = ["accumulation_null", "MOVES"]

#: Whether the accumulation null can move a curve of :mod:`.robustness` (False: the null gives the data's own
#: number, so the random-init reference answers instead).
MOVES = {
    "mag": False, "mag_nomassive": False, "mag_rise_share": False, "sign": False,
    "density": True, "density_all": True, "r": True, "units_high_r": True, "cos": True, "ccos": True,
    "vel": False, "vel_nomassive": False, "mi": True, "rot": False, "pca": True,
}


def accumulation_null(rs, seed: int = 0) -> np.ndarray:
    """The residual-accumulation null of ``rs: (n_samples, n_sublayers, d_model)`` -> the same shape, float32.

    Text ``i`` starts at its own ``rs[i, 0]`` and adds, at sublayer ``s``, the update ``rs[j, s + 1] - rs[j, s]``
    of text ``j = pi_s(i)``, one random permutation ``pi_s`` of the texts per sublayer (``seed``). Every
    sublayer's mean over texts and every update's norm are those of ``rs``.
    """
    rs = check_rs(rs, min_samples=2, min_sublayers=2)
    n, L, _ = rs.shape
    rng = np.random.default_rng(seed)
    out = np.empty(rs.shape, dtype=np.float32)
    out[:, 0] = rs[:, 0]
    state = rs[:, 0].astype(np.float64)
    for s in range(L - 1):
        perm = rng.permutation(n)
        state += rs[perm, s + 1].astype(np.float64) - rs[perm, s]
        out[:, s + 1] = state
    return out
