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

__all__ = ["accumulation_null", "prelayernorm_prediction", "MOVES"]

#: Whether the accumulation null can move a curve of :mod:`transformer_dynamics.robustness` (False: the null gives the
#: data's own number, so the random-init reference answers instead).
MOVES = {
    "mag": False, "mag_nomassive": False, "mag_rise_share": False, "sign": False,
    "density": True, "density_all": True, "r": True, "units_high_r": True, "cos": True, "ccos": True,
    "vel": False, "vel_nomassive": False, "norm": True, "mi": True, "rot": False, "pca": True,
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


def prelayernorm_prediction(rs) -> dict[str, np.ndarray | float]:
    """What the architecture alone predicts for a pre-LN residual stream at initialisation (Xiong et al. 2020,
    arXiv 2002.04745, Lemma 2): updates independent of the stream and of each other add their energy, so
    ``E||x_s||^2 = E||x_0||^2 (1 + s / a)`` grows linearly in depth, with ``a`` the embedding's energy over one
    update's. Then the successive cosine (and a unit's successive correlation, for zero-mean units) is
    ``sqrt((a + s) / (a + s + 1))``, the velocity is constant and the norm grows as ``sqrt(1 + s / a)``.

    rs: (n_samples, n_sublayers, d_model), a stream at initialisation from which ``a`` is measured (the mean
    squared norm at sublayer 0 over the mean squared update). -> ``{"a": float, "r", "cos": (L - 1,), "vel": (L - 1,),
    "norm": (L,)}`` on the scale of ``rs`` (the keys of :func:`transformer_dynamics.robustness.stream_curves`).
    """
    rs = check_rs(rs, min_samples=1, min_sublayers=2)
    x = rs.astype(np.float64)
    e0 = float(np.mean(np.sum(x[:, 0] ** 2, axis=1)))
    du = float(np.mean(np.sum(np.diff(x, axis=1) ** 2, axis=2)))
    if not (e0 > 0 and du > 0):
        raise ValueError("the stream has no energy at sublayer 0 or no update: nothing to predict from")
    a = e0 / du
    L = rs.shape[1]
    s = np.arange(L - 1, dtype=np.float64)
    cos = np.sqrt((a + s) / (a + s + 1))
    return {"a": a, "r": cos, "cos": cos, "vel": np.full(L - 1, np.sqrt(du)),
            "norm": np.sqrt(e0 * (1 + np.arange(L) / a))}
