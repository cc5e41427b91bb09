"""Teleportation (paper section 2.8, Figure 4 D): the residual stream entering a layer at a prompt's last token
replaced by points of the plane of the stream's first two principal components, and the runs followed from there.

- :func:`teleport`: the paper's experiment for one prompt and one layer. A grid of points ``z`` in the plane of
  the first two principal components (:func:`make_grid`, :func:`plane_and_grid`) is mapped back with
  ``x = z V[:, :2]^T + mu`` and written at layer ``l``.
- :func:`teleport_sweep`: the teleport over many prompts (the sampling unit) at every teleport layer, with an
  **equal follow-up window** for every layer (:func:`~.layers.equal_window`), reduced to per-prompt curves
  ``(n_prompts, n_layers)``: :data:`CURVES`. :func:`teleport_runs` does it for the trained model and its
  random initialisations (:mod:`transformer_dynamics.random_init`), each in its own PCA plane.

Every prompt runs once (:func:`~.rerun.prefix_cache`); every grid point is one token's forward from its layer on
(:func:`~.rerun.extend`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .. import paper, random_init, residual
from ..capture import tokenize
from ..reduce.pca import PCA
from ..residual import ResidualModel
from ..validation import check_allocation, check_positive_int
from .layers import check_layer, equal_window, following
from .rerun import extend, prefix_cache

__all__ = ["CURVES", "DEFAULT_PROMPT", "TeleportResult", "TeleportSweep", "controls_spread", "grid_range",
           "make_grid", "TeleportPlane", "plane_and_grid", "project", "teleport", "teleport_runs", "teleport_sweep"]

DEFAULT_PROMPT = "I'm sorry, Dave. I'm afraid I can't do that."


# --------------------------------------------------------------------------------------------------
# Grids and the PCA plane
# --------------------------------------------------------------------------------------------------
def make_grid(r_min: float | Sequence[float], r_max: float | Sequence[float], n: int) -> np.ndarray:
    """``n x n`` evenly spaced points in ``[r_min, r_max]`` per principal component (paper section 2.8).

    r_min, r_max: scalars (the same range on both axes, as in the paper) or pairs ``(pc1, pc2)``.
    Returns ``grid: (n * n, 2)``, PC1 varying fastest.
    """
    n = check_positive_int(n, "n (points per axis)")
    check_allocation((n * n, 2), np.float64, what="the grid", name="n")
    lo = np.broadcast_to(np.asarray(r_min, dtype=float), (2,))
    hi = np.broadcast_to(np.asarray(r_max, dtype=float), (2,))
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi < lo):
        raise ValueError(f"need finite r_min <= r_max, got r_min={r_min!r}, r_max={r_max!r}")
    a = np.linspace(lo[0], hi[0], n)
    b = np.linspace(lo[1], hi[1], n)
    g1, g2 = np.meshgrid(a, b)
    return np.stack([g1.ravel(), g2.ravel()], axis=1)


def grid_range(z: np.ndarray, q: tuple[float, float] = (1.0, 99.0), *, per_component: bool = False
               ) -> tuple[Any, Any]:
    """A grid range from projected trajectories ``z: (..., >=2)`` (e.g. ``(n_samples, n_sublayers, 2)``):
    the ``q`` percentiles of the first two coordinates.

    per_component=False: one range for both axes (the paper's square grid), from both coordinates pooled;
    True: ``(r_min, r_max)`` as two arrays ``(2,)``, one range per axis.
    """
    z = np.asarray(z, dtype=float)
    if z.ndim < 1 or z.shape[-1] < 2 or z.size == 0:
        raise ValueError(f"z must be (..., >=2) projected trajectories, got shape {z.shape}")
    flat = z.reshape(-1, z.shape[-1])[:, :2]
    if per_component:
        lo, hi = np.percentile(flat, q, axis=0)
        return lo, hi
    lo, hi = np.percentile(flat.ravel(), q)
    return float(lo), float(hi)


def _plane(pca: Any, d_model: int | None = None) -> PCA:
    """The first two components of a fitted PCA-like object (``mean_``, ``components_``; our
    :class:`~transformer_dynamics.reduce.PCA` or scikit-learn's) as our PCA, checked against ``d_model``."""
    for attr in ("mean_", "components_"):
        if not hasattr(pca, attr):
            raise ValueError(f"pca has no {attr!r}: pass a fitted PCA (transformer_dynamics.reduce.PCA or "
                             "sklearn.decomposition.PCA)")
    mean = np.asarray(pca.mean_, dtype=np.float64)
    comps = np.asarray(pca.components_, dtype=np.float64)
    width = int(getattr(pca, "n_features_in_", mean.shape[0]))
    if comps.ndim != 2 or comps.shape[0] < 2 or comps.shape[1] != mean.shape[0]:
        raise ValueError(f"pca needs at least 2 components of width {mean.shape[0]}, got components_ {comps.shape}")
    if d_model is not None and width != d_model:
        raise ValueError(f"the PCA was fitted on vectors of width {width} but the model's d_model is {d_model}; "
                         "fit it on this model's residual stream")
    return PCA.from_components(mean, comps[:2])


def project(pca: Any, x: np.ndarray) -> np.ndarray:
    """``(x - mu) V[:, :2]``: ``x: (..., d_model)`` -> ``(..., 2)`` on the first two components (float64)."""
    return _plane(pca, np.shape(x)[-1]).transform(np.asarray(x, dtype=np.float64))



class TeleportPlane(NamedTuple):
    """A stream's teleport plane (:func:`plane_and_grid`): ``pca`` the 2-component PCA, ``grid`` the points
    ``(grid_n ** 2, 2)`` in its coordinates, ``extent`` the grid's ``(r_min, r_max)``; unpacks in that order."""

    pca: PCA
    grid: np.ndarray
    extent: tuple[float, float]


def plane_and_grid(rs: np.ndarray, grid_n: int, q: Sequence[float] = (1.0, 99.0), *, chunk: int = 256
                   ) -> TeleportPlane:
    """The paper's PCA plane and teleport grid for one residual stream ``rs: (n_samples, n_sublayers, d_model)``:
    a 2-component PCA fitted on every sublayer vector of every text (section 2.8), and a ``grid_n x grid_n`` grid
    over the ``q`` percentiles of the projected trajectories (both coordinates pooled: a square grid).
    -> :class:`TeleportPlane`. The projection runs ``chunk`` texts at a time."""
    rs = np.asarray(rs)
    if rs.ndim != 3 or rs.shape[0] < 2:
        raise ValueError(f"rs must be (n_samples >= 2, n_sublayers, d_model), got shape {rs.shape}")
    pca = PCA(n_components=2).fit(rs)
    z = np.concatenate([project(pca, rs[i:i + chunk]) for i in range(0, rs.shape[0], int(chunk))])
    r_min, r_max = grid_range(z, tuple(q))
    return TeleportPlane(pca, make_grid(r_min, r_max, grid_n), (r_min, r_max))


# --------------------------------------------------------------------------------------------------
# Teleportation (Figure 4 D)
# --------------------------------------------------------------------------------------------------
@dataclass
class TeleportResult:
    """One prompt's teleportation at one layer.

    layer: decoder layer whose input was replaced (point ``2 * layer``).
    grid: ``(n_grid, 2)`` teleport targets in (PC1, PC2).
    sublayers: ``(n_follow + 1,)`` point indices ``2l … 2l + n_follow`` (clipped at the stack's output,
    ``2 * n_layers``).
    control: ``(2 * n_layers + 1, 2)`` the unperturbed prompt's whole trajectory in (PC1, PC2);
    control_following: ``(n_follow + 1, 2)`` its segment at ``sublayers``.
    perturbed: ``(n_grid, n_follow + 1, 2)`` the teleported trajectories, starting at the teleport point.
    distance: ``(n_grid, n_follow + 1)`` Euclidean distance to the control in the full residual stream;
    distance_pc: the same in the PC plane.
    """

    layer: int
    grid: np.ndarray
    sublayers: np.ndarray
    control: np.ndarray
    control_following: np.ndarray
    perturbed: np.ndarray
    distance: np.ndarray
    distance_pc: np.ndarray
    prompt: str = DEFAULT_PROMPT

    @property
    def n_following(self) -> int:
        return len(self.sublayers) - 1

    @property
    def recovery(self) -> np.ndarray:
        """``(n_grid,)``: the full-RS distance to the control at the last following point over that at the
        teleport point (< 1: pulled back towards the control; scale-free)."""
        return _ratio(self.distance[:, -1], self.distance[:, 0])

    @property
    def recovery_pc(self) -> np.ndarray:
        """``(n_grid,)``: :attr:`recovery` in the PC plane (what the arrows of Fig 4 D show)."""
        return _ratio(self.distance_pc[:, -1], self.distance_pc[:, 0])


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / b, np.nan)


def _validate_grid(grid: Any) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[1] != 2:
        raise ValueError(f"grid must be (n_points, 2) points in (PC1, PC2), got shape {grid.shape}; "
                         "see make_grid")
    if grid.shape[0] == 0:
        raise ValueError("grid is empty: give at least one point (make_grid(r_min, r_max, n) with n >= 1)")
    if not np.all(np.isfinite(grid)):
        raise ValueError("grid has non-finite points")
    return grid


def _teleport_vectors(rm: ResidualModel, pca: Any, grid: Any, vectors: np.ndarray | None
                      ) -> tuple[PCA, np.ndarray, np.ndarray]:
    grid = _validate_grid(grid)
    d = rm.d_model
    plane = _plane(pca, d)
    if vectors is None:
        return plane, grid, plane.inverse_transform(grid)
    x = np.asarray(vectors, dtype=np.float64)
    if x.shape != (grid.shape[0], d):
        raise ValueError(f"vectors must be (n_points, d_model) = {(grid.shape[0], d)}, got {x.shape}")
    return plane, grid, x


def _result(plane: PCA, layer: int, grid: np.ndarray, pert: np.ndarray, ctrl: np.ndarray, follow: np.ndarray,
            prompt: str) -> TeleportResult:
    """A :class:`TeleportResult` from the perturbed runs ``pert: (n_grid, n_points, d)`` and the control ``ctrl:
    (n_points, d)`` at the points ``follow``."""
    p = pert[:, follow].astype(np.float64)
    c = ctrl[follow].astype(np.float64)
    control = plane.transform(ctrl.astype(np.float64))
    z = plane.transform(p)
    return TeleportResult(layer=layer, grid=grid, sublayers=follow, control=control, control_following=control[follow],
                          perturbed=z, distance=np.linalg.norm(p - c, axis=-1),
                          distance_pc=np.linalg.norm(z - control[follow], axis=-1), prompt=prompt)


def teleport(rm: ResidualModel, tokenizer, pca: Any, *, layer: int, grid: np.ndarray, prompt: str = DEFAULT_PROMPT,
             n_following: int = paper.TELEPORT_FOLLOWING, add_bos: bool = True, strip: bool = False,
             batch_size: int = 128, vectors: np.ndarray | None = None) -> TeleportResult:
    """Teleport the prompt's last-token residual stream entering layer ``layer`` to each grid point.

    rm, tokenizer: the model (:func:`transformer_dynamics.pipeline.load_model`).
    pca: fitted PCA-like object (``mean_ (d_model,)``, ``components_ (k >= 2, d_model)``,
    ``n_features_in_``), e.g. :class:`transformer_dynamics.reduce.PCA` fitted on this model's residual
    stream. grid: ``(n_points, 2)`` targets in (PC1, PC2) (:func:`make_grid`).
    Each point becomes ``x = z V[:, :2]^T + mu``, written over point ``2 * layer``; the next ``n_following``
    points (the paper's :data:`~transformer_dynamics.paper.TELEPORT_FOLLOWING`) are recorded (clipped at the stack's
    output). The prompt runs once
    (:func:`prefix_cache`); the grid points run as one-token forwards (:func:`extend`), ``batch_size`` at a time.
    vectors: optional ``(n_points, d_model)`` full vectors to write instead of the unprojected grid (the grid
    then only labels the points); with the control's own vector the control is reproduced.
    """
    rm = residual.of(rm, tokenizer)
    layer = check_layer(layer, rm.n_layers)
    plane, grid, x = _teleport_vectors(rm, pca, grid, vectors)
    cache = prefix_cache(rm, tokenize(tokenizer, [prompt], add_bos=add_bos, strip=strip))
    follow = following(layer, n_following, rm.n_points - 1)
    pert = extend(rm, cache, np.zeros(len(grid), dtype=np.int64), layer=layer, vectors=x,
                  stop_after=int(follow[-1]), batch_size=batch_size)
    return _result(plane, layer, grid, pert, cache.clean[0], follow, prompt)


#: The per-prompt curves of :func:`teleport_sweep`, each ``(n_prompts, n_layers)`` (one column per teleport
#: layer, in depth order), every one over the equal follow-up window ``W`` and in the full residual stream:
#:
#: - ``recovery``: median over the grid of the distance to the control W points after the teleport over the
#:   distance at the teleport point (< 1: pulled back);
#: - ``rel_mse``: median over the grid of the mean squared distance to the control over the W following points,
#:   over the mean of the controls' squared spread (:func:`controls_spread`) at those points;
#: - ``end_spread``: the spread of the trajectories' end points across the grid (root mean squared distance from
#:   their mean) over the controls' spread at the end point ("variance on the perturbed trajectories");
#: - ``end_far``: median over the grid of the end point's distance from the control over the controls' spread there
#:   (> 1: farther from its own unperturbed run than unperturbed texts lie from their mean).
CURVES = ("recovery", "rel_mse", "end_spread", "end_far")


def controls_spread(clean: np.ndarray) -> np.ndarray:
    """How far unperturbed runs lie from their mean at each point: ``clean: (n_texts >= 2, n_points, d_model)`` ->
    ``(n_points,)`` the root mean squared distance of a text's vector from the texts' mean vector."""
    c = np.asarray(clean, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] < 2:
        raise ValueError(f"clean must be (n_texts >= 2, n_points, d_model) unperturbed runs, got shape {c.shape}")
    return np.sqrt(((c - c.mean(0)) ** 2).sum(-1).mean(0))


def _window_raw(pert: np.ndarray, ctrl: np.ndarray, start: int, window: int) -> dict[str, float]:
    """The grid's numbers over one window, before dividing by the controls' spread: ``pert: (n_grid, n_points, d)``,
    ``ctrl: (n_points, d)``."""
    p = pert[:, start:start + window + 1].astype(np.float64)
    diff = p - ctrl[start:start + window + 1].astype(np.float64)
    dist = np.linalg.norm(diff, axis=-1)                                   # (n_grid, W + 1)
    end = p[:, -1]
    return {"recovery": float(np.nanmedian(_ratio(dist[:, -1], dist[:, 0]))),
            "rel_mse": float(np.median((dist[:, 1:] ** 2).mean(1))),
            "end_spread": float(np.sqrt(((end - end.mean(0)) ** 2).sum(-1).mean())),
            "end_far": float(np.median(dist[:, -1]))}


@dataclass
class TeleportSweep:
    """The teleport over prompts at every teleport layer (:func:`teleport_sweep`).

    layers: teleport layers in depth order; window: the equal follow-up window (points after the teleport point);
    prompts: the prompts (the sampling unit); grid: ``(n_grid, 2)``; pca: the PCA given (the plane: its first two
    components); grid_range: ``(r_min,
    r_max)`` when known; spread: ``(2 * n_layers + 1,)`` the controls' spread (:func:`controls_spread` over the
    prompts' unperturbed runs); curves: ``{name: (n_prompts, n_layers)}`` (:data:`CURVES`); results: the first
    prompt's :class:`TeleportResult` per layer over ``n_following`` points (Fig 4 D; empty when not asked for);
    seconds: wall time.
    """

    layers: list[int]
    window: int
    prompts: list[str]
    grid: np.ndarray
    pca: Any
    spread: np.ndarray
    curves: dict[str, np.ndarray]
    results: list[TeleportResult] = field(default_factory=list)
    grid_range: tuple[float, float] | None = None
    seconds: float = float("nan")

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    def means(self) -> dict[str, np.ndarray]:
        """``{curve: (n_layers,)}``: each curve's mean over the prompts (what the claims' statistics read)."""
        return {k: np.nanmean(v, axis=0) for k, v in self.curves.items()}


def teleport_sweep(rm: ResidualModel, tokenizer, pca: Any, *, grid: np.ndarray, prompts: Sequence[str],
                   layers: Sequence[int], window: int | None = None, n_following: int | None = None,
                   add_bos: bool = True, strip: bool = False, batch_size: int = 128) -> TeleportSweep:
    """The teleport over ``prompts`` at every layer of ``layers``, reduced to per-prompt curves (:data:`CURVES`).

    Every prompt runs once (:func:`prefix_cache`), then each grid point at each layer one token through the
    window's layers (:func:`extend`). window: points followed after the teleport point, the same for every layer
    (None: :func:`equal_window`, as many as the deepest layer has); n_following: also follow the first prompt over
    this many points (clipped at the stack's output) for the figure (:attr:`TeleportSweep.results`; None: no
    figure). pca, grid: as :func:`teleport`. Returns a :class:`TeleportSweep` (``curves[k]: (n_prompts,
    n_layers)``).
    """
    t0 = time.perf_counter()
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 prompts (the sampling unit), got {len(prompts)}")
    rm = residual.of(rm, tokenizer)
    n_layers = rm.n_layers
    layers = [check_layer(l, n_layers) for l in layers]
    if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct teleport layers in increasing order, got {layers}")
    last = 2 * n_layers
    w_max = equal_window(layers, n_layers)
    window = w_max if window is None else int(window)
    if not 1 <= window <= w_max:
        raise ValueError(f"window must be in [1, {w_max}] (the deepest teleport layer, {layers[-1]}, has {w_max} "
                         f"points after it), got {window}")
    plane, grid, x = _teleport_vectors(rm, pca, grid, None)
    ids = tokenize(tokenizer, prompts, add_bos=add_bos, strip=strip)
    raw = {k: np.full((len(prompts), len(layers)), np.nan) for k in CURVES}
    clean = np.empty((len(prompts), last + 1, rm.d_model), dtype=np.float32)
    results = []
    zeros = np.zeros(len(grid), dtype=np.int64)
    for p, seq in enumerate(ids):
        cache = prefix_cache(rm, [seq])
        clean[p] = cache.clean[0]
        for k, l in enumerate(layers):
            figure = p == 0 and n_following is not None
            follow = following(l, n_following, last) if figure else None
            stop = max(2 * l + window, int(follow[-1])) if figure else 2 * l + window
            pert = extend(rm, cache, zeros, layer=l, vectors=x, stop_after=stop, batch_size=batch_size)
            for name, v in _window_raw(pert, cache.clean[0], 2 * l, window).items():
                raw[name][p, k] = v
            if figure:
                results.append(_result(plane, l, grid, pert, cache.clean[0], follow, prompts[0]))
    spread = controls_spread(clean)
    start = 2 * np.asarray(layers)
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.array([np.mean(spread[s + 1:s + window + 1] ** 2) for s in start])
        curves = {"recovery": raw["recovery"], "rel_mse": raw["rel_mse"] / sq,
                  "end_spread": raw["end_spread"] / spread[start + window],
                  "end_far": raw["end_far"] / spread[start + window]}
    return TeleportSweep(layers=layers, window=window, prompts=prompts, grid=grid, pca=pca, spread=spread,
                         curves=curves, results=results, seconds=time.perf_counter() - t0)


def prompt_counts(n_given: int, n_prompts: int | None, n_reference_prompts: int | None) -> tuple[int, int]:
    """How many of ``n_given`` prompts (the first ones) the trained run and each random-init run use: ``n_prompts``
    (None: all) and ``n_reference_prompts`` (None: as many as the trained run), each at least 2 (the prompt is
    the sampling unit) -> ``(n_trained, n_reference)``."""
    n_trained = n_given if n_prompts is None else int(n_prompts)
    n_ref = n_trained if n_reference_prompts is None else int(n_reference_prompts)
    if not 2 <= n_trained <= n_given or not 2 <= n_ref <= n_given:
        raise ValueError(f"n_prompts and n_reference_prompts must be in [2, {n_given}] (the prompts given); "
                         f"got {n_prompts} and {n_reference_prompts}")
    return n_trained, n_ref


def teleport_runs(rm: ResidualModel, tokenizer, streams: Mapping[str, np.ndarray], *, prompts: Sequence[str],
                  layers: Sequence[int], grid_n: int, percentiles: Sequence[float] = (1.0, 99.0),
                  n_prompts: int | None = None, n_reference_prompts: int | None = None, window: int | None = None,
                  n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                  batch_size: int = 128) -> dict[str, TeleportSweep]:
    """:func:`teleport_sweep` for the trained model and its random initialisations, each in its own plane.

    streams: ``{run: rs (n, n_sublayers, d_model)}`` with run ``"trained"`` (``rm`` itself) or a random init
    ``"<kind>:<seed>"`` (:func:`transformer_dynamics.random_init.run_model`, built here, one at a time): each
    run's PCA plane and grid come from its own stream (:func:`plane_and_grid` with ``grid_n``, ``percentiles``).
    n_prompts / n_reference_prompts: how many of ``prompts`` (the first ones) the trained run / each random init
    uses (None: all / as many as the trained run). n_following: the trained run's figure (see
    :func:`teleport_sweep`). -> ``{run: TeleportSweep}``.
    """
    prompts = list(prompts)
    n_trained, n_ref = prompt_counts(len(prompts), n_prompts, n_reference_prompts)
    rm = residual.of(rm, tokenizer)
    out = {}
    for run, rs in streams.items():
        k = n_trained if run == "trained" else n_ref
        lm = rm if run == "trained" else residual.of(random_init.run_model(rm.model, run), tokenizer)
        plane = plane_and_grid(rs, grid_n, percentiles)
        out[run] = teleport_sweep(lm, tokenizer, plane.pca, grid=plane.grid, prompts=prompts[:k], layers=layers,
                                  window=window, n_following=n_following if run == "trained" else None,
                                  add_bos=add_bos, strip=strip, batch_size=batch_size)
        out[run].grid_range = plane.extent
        del lm
    return out

