"""Two perturbations the paper leaves to future work (section 4): noise injection (:func:`noise_sweep`,
:func:`inject_noise`: Gaussian noise whose norm is ``scale`` times the residual stream's norm there) and activation
swap (:func:`swap_sweep`, :func:`swap`: text b's residual-stream vector written into text a's run).

Each is written at the input of a decoder layer at each text's last token; the texts run once
(:func:`~.rerun.prefix_cache`) and every perturbation is one token's forward (:func:`~.rerun.extend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import residual
from ..capture import tokenize
from ..residual import ResidualModel
from ..validation import check_number
from .layers import check_layer, following
from .rerun import check_ids, extend, prefix_cache, run_with_edit

__all__ = ["PerturbationResult", "inject_noise", "noise_sweep", "swap", "swap_sweep"]

# --------------------------------------------------------------------------------------------------
@dataclass
class PerturbationResult:
    """Distances of perturbed runs to reference runs at the sublayers from the perturbation on.

    kind: ``"noise"`` or ``"swap"``; layer: decoder layer whose input was perturbed.
    sublayers: ``(n_follow + 1,)``, from ``2 * layer`` (the perturbed point itself) to at most the last sublayer
    ``2 * n_layers - 1``.
    distance_own: ``(n_texts, n_follow + 1)`` ``||perturbed - own run|| / ||own run||`` per sublayer.
    distance_donor: swap only, ``(n_texts, n_follow + 1)`` ``||perturbed - donor's run|| / ||donor's run||``.
    distance_own_donor: swap only, ``||own run - donor's run|| / ||own run||``: how far apart the two
    unperturbed runs are (the scale against which to read the other two).
    scale: noise only, the noise norm relative to the residual stream's norm.
    """

    kind: str
    layer: int
    sublayers: np.ndarray
    distance_own: np.ndarray
    distance_donor: np.ndarray | None = None
    distance_own_donor: np.ndarray | None = None
    scale: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def recovery(self) -> np.ndarray:
        """``(n_texts,)``: distance to the own run at the last sublayer over that at the perturbed point
        (< 1: the run is pulled back towards its unperturbed trajectory)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.distance_own[:, -1] / self.distance_own[:, 0]


def _rel_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a - b|| / ||b||`` over the last axis (0/0 -> 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    num = np.linalg.norm(a - b, axis=-1)
    den = np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.where(num > 0, np.inf, 0.0))


def _check_layers(rm: ResidualModel, layers: Sequence[int]) -> list[int]:
    out = [check_layer(l, rm.n_layers) for l in layers]
    if not out:
        raise ValueError("need at least one layer")
    return out


def noise_sweep(rm: ResidualModel, tokenizer, texts: Sequence[str], *, layers: Sequence[int], scales: Sequence[float],
                seed: int = 0, n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                batch_size: int = 16) -> list[PerturbationResult]:
    """Gaussian noise at the input of each layer of ``layers`` at each text's last token, for every ``(layer,
    scale)`` (layer-major): one result per pair.

    The noise for text i is ``scale * ||h_i|| * u_i`` with ``h_i`` the residual stream there and ``u_i`` a
    uniformly random unit vector (a normalised standard normal from ``numpy.random.default_rng(seed)``; the same
    directions for every layer and scale). n_following: sublayers recorded after the perturbed one (``None``: to
    the model's last sublayer). The texts run once, ``batch_size`` at a time (:func:`prefix_cache`); every
    perturbation is one token's forward (:func:`extend`).
    Returns :class:`PerturbationResult` with ``distance_own: (n_texts, n_follow + 1)``.
    """
    scales = [float(s) for s in scales]
    if not scales or not all(np.isfinite(s) and s >= 0 for s in scales):
        raise ValueError(f"scales must be finite numbers >= 0, got {scales!r}")
    rm = residual.of(rm, tokenizer)
    layers = _check_layers(rm, layers)
    ids = check_ids(tokenize(tokenizer, list(texts), add_bos=add_bos, strip=strip))
    last = rm.n_sublayers - 1
    follow = {l: following(l, n_following, last) for l in layers}
    u = np.random.default_rng(seed).standard_normal((len(ids), rm.d_model))
    u = torch.as_tensor(u / np.linalg.norm(u, axis=1, keepdims=True), dtype=torch.float32)
    dist = {(l, s): np.empty((len(ids), len(follow[l]))) for l in layers for s in scales}
    for c0 in range(0, len(ids), batch_size):
        cache = prefix_cache(rm, ids[c0:c0 + batch_size], batch_size=batch_size)
        rows = np.arange(cache.n)
        for l in layers:
            for s in scales:
                def edit(h, idx, s=s, c0=c0):
                    return h + s * h.float().norm(dim=-1, keepdim=True) * u[torch.as_tensor(c0 + idx)]
                pert = extend(rm, cache, rows, layer=l, edit=edit, stop_after=int(follow[l][-1]),
                              batch_size=batch_size)
                dist[l, s][c0:c0 + cache.n] = _rel_dist(pert[:, follow[l]], cache.clean[:, follow[l]])
    return [PerturbationResult(kind="noise", layer=l, sublayers=follow[l], distance_own=dist[l, s], scale=s,
                               meta={"seed": seed, "n_texts": len(ids)}) for l in layers for s in scales]


def inject_noise(rm: ResidualModel, tokenizer, texts: Sequence[str], *, layer: int, scale: float, seed: int = 0,
                 n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                 batch_size: int = 16) -> PerturbationResult:
    """:func:`noise_sweep` at one layer and one scale."""
    scale = check_number(scale, "scale", low=0)
    return noise_sweep(rm, tokenizer, texts, layers=[layer], scales=[scale], seed=seed, n_following=n_following,
                       add_bos=add_bos, strip=strip, batch_size=batch_size)[0]


def swap_sweep(rm: ResidualModel, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layers: Sequence[int],
               n_following: int | None = None, add_bos: bool = True, strip: bool = False,
               batch_size: int = 16) -> list[PerturbationResult]:
    """Text b's residual stream entering each layer of ``layers`` (last token) written into text a's run at its last
    token: one result per layer.

    texts_a, texts_b: equally many texts, paired by position (a_i receives b_i's vector).
    Reports, from sublayer ``2 * layer`` on, the perturbed run's distance to a's own unperturbed run and to
    b's (the donor's) run, each relative to that run's norm: does the context (a) pull the trajectory back,
    or does it follow the vector it was given (b)? Both lists run once (:func:`prefix_cache`); every swap is one
    token's forward (:func:`extend`).
    """
    texts_a, texts_b = list(texts_a), list(texts_b)
    if len(texts_a) != len(texts_b) or not texts_a:
        raise ValueError(f"texts_a and texts_b must be equally many (paired) and non-empty, got "
                         f"{len(texts_a)} and {len(texts_b)}")
    rm = residual.of(rm, tokenizer)
    layers = _check_layers(rm, layers)
    ids_a = check_ids(tokenize(tokenizer, texts_a, add_bos=add_bos, strip=strip))
    ids_b = ids_a if texts_b == texts_a else check_ids(tokenize(tokenizer, texts_b, add_bos=add_bos, strip=strip))
    last = rm.n_sublayers - 1
    follow = {l: following(l, n_following, last) for l in layers}
    n = len(ids_a)
    own = {l: np.empty((n, len(follow[l]))) for l in layers}
    donor = {l: np.empty((n, len(follow[l]))) for l in layers}
    apart = {l: np.empty((n, len(follow[l]))) for l in layers}
    for c0 in range(0, n, batch_size):
        cache = prefix_cache(rm, ids_a[c0:c0 + batch_size], batch_size=batch_size)
        b = cache.clean if ids_b is ids_a else run_with_edit(rm, ids_b[c0:c0 + batch_size],
                                                              batch_size=batch_size)
        rows = np.arange(cache.n)
        for l in layers:
            f = follow[l]
            pert = extend(rm, cache, rows, layer=l, vectors=b[:, 2 * l], stop_after=int(f[-1]),
                          batch_size=batch_size)
            own[l][c0:c0 + cache.n] = _rel_dist(pert[:, f], cache.clean[:, f])
            donor[l][c0:c0 + cache.n] = _rel_dist(pert[:, f], b[:, f])
            apart[l][c0:c0 + cache.n] = _rel_dist(b[:, f], cache.clean[:, f])
    return [PerturbationResult(kind="swap", layer=l, sublayers=follow[l], distance_own=own[l],
                               distance_donor=donor[l], distance_own_donor=apart[l], meta={"n_texts": n})
            for l in layers]


def swap(rm: ResidualModel, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layer: int,
         n_following: int | None = None, add_bos: bool = True, strip: bool = False,
         batch_size: int = 16) -> PerturbationResult:
    """:func:`swap_sweep` at one layer."""
    return swap_sweep(rm, tokenizer, texts_a, texts_b, layers=[layer], n_following=n_following, add_bos=add_bos,
                      strip=strip, batch_size=batch_size)[0]
