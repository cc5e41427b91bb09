"""Perturbing the residual stream (paper section 2.8, Figure 4 D) and two perturbations the paper leaves to
future work (section 4): noise injection and activation swapping.

Every perturbation is written at the **input of decoder layer** ``l`` (the residual stream entering the
layer: sublayer ``2l``, the paper's "input to the attention layer") at each text's last real token, by a
forward pre-hook on ``layer_modules(model)[l]``; the residual stream is then recorded at every sublayer by
:func:`transformer_dynamics.capture.record_last_token`. The hook fires before the layer's own norms, so the
recorded sublayer ``2l`` is the written vector, and sublayers before ``2l`` are untouched.

- :func:`teleport`: the paper's experiment. A grid of points ``z`` in the plane of the first two principal
  components is mapped back with ``x = z V[:, :2]^T + mu`` and written at layer ``l`` of a fixed prompt
  (one batched forward pass, one row per grid point). The next ``n_following`` sublayers are projected on
  the same two components and compared with the unperturbed (control) run of the prompt.
- :func:`inject_noise`: Gaussian noise whose norm is ``scale`` times the residual stream's norm there.
- :func:`swap`: text b's residual-stream vector written into text a's run.

Layers are mapped from the paper's Llama 3.1 8B (32 layers; perturbed at 0, 7, 15, 23, 31) to another depth
by :func:`paper_layers`: ``round(l / 31 * (n_layers - 1))``.

Sublayers past the model's last one do not exist: "the next ``n_following`` sublayers" is clipped at
``2 * n_layers - 1``, so a perturbation at the last layer is followed by one sublayer only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .arrays import check_rs
from .capture import StopForward, batches, record_last_token, tokenize
from .models import architecture, layer_modules
from .reduce.pca import PCA
from .validation import check_allocation, check_int, check_number, check_positive_int, check_seed

__all__ = [
    "DEFAULT_PROMPT",
    "DEPTH_NAMES",
    "PAPER_LAYERS",
    "PAPER_N_LAYERS",
    "PerturbationResult",
    "TeleportResult",
    "compare_layers",
    "depth_names",
    "grid_range",
    "inject_noise",
    "noise_sweep",
    "make_grid",
    "paper_layers",
    "project",
    "run_with_edit",
    "swap",
    "swap_sweep",
    "teleport",
    "unproject",
]

DEFAULT_PROMPT = "I'm sorry, Dave. I'm afraid I can't do that."
#: The layers the paper perturbs in Llama 3.1 8B, and that model's depth.
PAPER_LAYERS = (0, 7, 15, 23, 31)
PAPER_N_LAYERS = 32

# An edit receives the residual stream at the rows' last tokens, ``h: (B, d_model)``, and the indices of
# those rows' texts in the caller's list, ``idx: (B,)``; it returns the vectors to write, ``(B, d_model)``.
Edit = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Layers, grids and the PCA plane
# --------------------------------------------------------------------------------------------------
def paper_layers(n_layers: int, layers: Sequence[int] = PAPER_LAYERS, paper_n_layers: int = PAPER_N_LAYERS
                 ) -> list[int]:
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


def check_layer(layer: int, n_layers: int) -> int:
    """``layer`` as an int in ``[0, n_layers)``, else a ValueError."""
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer must be an int in [0, {n_layers - 1}] (the model has {n_layers} decoder "
                         f"layers), got {layer!r}")
    return int(layer)


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


def unproject(pca: Any, z: np.ndarray) -> np.ndarray:
    """The paper's inverse map ``x = z V[:, :2]^T + mu``: ``z: (..., 2)`` -> ``(..., d_model)`` (float64).
    Uses only the first two components, whatever the PCA keeps."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[-1] != 2:
        raise ValueError(f"z must have 2 coordinates (PC1, PC2) on its last axis, got shape {z.shape}")
    return _plane(pca).inverse_transform(z)


# --------------------------------------------------------------------------------------------------
# The batched forward with an edit at one layer's input
# --------------------------------------------------------------------------------------------------
def _d_model(model) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


@torch.inference_mode()
def run_with_edit(model, token_ids: Sequence[Sequence[int]], *, layer: int | None = None,
                  edit: Edit | None = None, stop_after: int | None = None, batch_size: int = 64,
                  pad_token_id: int = 0) -> np.ndarray:
    """Run texts through the decoder stack, optionally editing the residual stream entering layer ``layer``
    at each text's last token, and record every sublayer there.

    token_ids: one id list per text (:func:`transformer_dynamics.capture.tokenize`); texts are length-sorted
    and right-padded into batches of ``batch_size`` (the same texts always form the same batches, so two
    runs differ only by the edit).
    edit: ``edit(h, idx) -> h_new`` with ``h: (B, d_model)`` the vectors entering layer ``layer`` at the rows'
    last tokens and ``idx: (B,)`` those rows' text indices; ``None`` runs unperturbed.
    stop_after: last sublayer needed (default the model's last); the forward stops there.
    Returns ``rs: (n_texts, 2 * n_layers, d_model)`` float32, NaN after ``stop_after``.
    """
    layers = layer_modules(model)
    n_sub = 2 * len(layers)
    if edit is not None:
        layer = check_layer(layer, len(layers))
    stop_after = check_int(n_sub - 1 if stop_after is None else stop_after, "stop_after", low=0, high=n_sub - 1)
    batch_size = check_positive_int(batch_size, "batch_size")
    pad_token_id = check_int(pad_token_id, "pad_token_id", low=0)
    ids = [list(s) for s in token_ids]
    if not ids or any(len(s) == 0 for s in ids):
        raise ValueError("need at least one text, each with at least one token")
    out = np.full((len(ids), n_sub, _d_model(model)), np.nan, dtype=np.float32)
    state: dict = {}
    handles = []

    def layer_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        rows, last = state["rows"].to(hidden.device), state["last"].to(hidden.device)
        hidden = hidden.clone()
        new = edit(hidden[rows, last], state["idx"])
        hidden[rows, last] = new.to(hidden.device, hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def stop_hook(module, args, kwargs):
        raise StopForward

    arch = architecture(model)
    try:
        with record_last_token(model, state, stop=True):
            if edit is not None:
                handles.append(layers[layer].register_forward_pre_hook(layer_hook, with_kwargs=True))
            if stop_after < n_sub - 1:  # registered after the recorder's hook on the same norm: fires after it
                norm = getattr(layers[stop_after // 2], (arch.attn_norm, arch.mlp_norm)[stop_after % 2])
                handles.append(norm.register_forward_pre_hook(stop_hook, with_kwargs=True))
            for sel, rec in batches(model, ids, state, batch_size=batch_size, pad_id=pad_token_id):
                rec[:, stop_after + 1:] = np.nan
                out[sel] = rec
    finally:
        for h in handles:
            h.remove()
    return out


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def _following(layer: int, n_following: int | None, n_sub: int) -> np.ndarray:
    """Sublayers ``2l, 2l+1, …, min(2l + n_following, n_sub - 1)`` (``None``: to the model's end)."""
    start = 2 * layer
    n_following = check_positive_int(n_following, "n_following", none=True)
    end = n_sub - 1 if n_following is None else min(start + n_following, n_sub - 1)
    return np.arange(start, end + 1)


# --------------------------------------------------------------------------------------------------
# Teleportation (Figure 4 D)
# --------------------------------------------------------------------------------------------------
@dataclass
class TeleportResult:
    """One layer's teleportation.

    layer: decoder layer whose input was replaced (sublayer ``2 * layer``).
    grid: ``(n_points, 2)`` teleport targets in (PC1, PC2).
    sublayers: ``(n_follow + 1,)`` sublayer indices ``2l … 2l + n_follow`` (clipped at the model's end).
    control: ``(n_sublayers, 2)`` the unperturbed prompt's whole trajectory in (PC1, PC2);
    control_following: ``(n_follow + 1, 2)`` its segment at ``sublayers``.
    perturbed: ``(n_points, n_follow + 1, 2)`` the teleported trajectories, starting at the teleport point.
    mse_pc: ``(n_points,)`` mean over the ``n_follow`` following sublayers and the 2 PCs of the squared
    difference to the control (the paper's MSE); mse_full: ``(n_points,)`` the same in the full
    ``d_model`` space; rel_mse_full: mse_full over the control's mean squared entry at those sublayers.
    distance_pc: ``(n_points, n_follow + 1)`` Euclidean distance to the control in the PC plane;
    rel_distance_full: ``(n_points, n_follow + 1)`` full-space distance over the control's norm.
    recovery: ``(n_points,)`` PC-plane distance at the last following sublayer over the distance at the
    teleport point (< 1: pulled back towards the control; scale-free, unlike the MSE).
    """

    layer: int
    grid: np.ndarray
    sublayers: np.ndarray
    control: np.ndarray
    control_following: np.ndarray
    perturbed: np.ndarray
    mse_pc: np.ndarray
    mse_full: np.ndarray
    rel_mse_full: np.ndarray
    distance_pc: np.ndarray
    rel_distance_full: np.ndarray
    recovery: np.ndarray
    prompt: str = DEFAULT_PROMPT

    @property
    def n_following(self) -> int:
        return len(self.sublayers) - 1

    @property
    def end_variance(self) -> float:
        """Total variance (PC1 + PC2) across grid points of where the trajectories end: the paper's
        "variance on the perturbed trajectories" (low = the grid collapses onto a common path)."""
        return float(np.var(self.perturbed[:, -1], axis=0).sum())

    @property
    def displacement(self) -> np.ndarray:
        """``(n_points, 2)``: where each trajectory ends minus where it was teleported to (the quiver arrows)."""
        return self.perturbed[:, -1] - self.perturbed[:, 0]


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


def teleport(model, tokenizer, pca: Any, *, layer: int, grid: np.ndarray, prompt: str = DEFAULT_PROMPT,
             n_following: int = 12, add_bos: bool = True, strip: bool = False, batch_size: int = 128,
             vectors: np.ndarray | None = None) -> TeleportResult:
    """Teleport the prompt's last-token residual stream entering layer ``layer`` to each grid point.

    pca: fitted PCA-like object (``mean_ (d_model,)``, ``components_ (k >= 2, d_model)``,
    ``n_features_in_``), e.g. :class:`transformer_dynamics.reduce.PCA` fitted on this model's residual
    stream. grid: ``(n_points, 2)`` targets in (PC1, PC2) (:func:`make_grid`).
    Each point becomes ``x = z V[:, :2]^T + mu`` (:func:`unproject`), written over sublayer ``2 * layer``;
    the next ``n_following`` sublayers are recorded (clipped at the model's end). The grid runs as batches
    of ``batch_size`` copies of the prompt, stopping after the last sublayer needed.
    vectors: optional ``(n_points, d_model)`` full vectors to write instead of the unprojected grid (the grid
    then only labels the points); with the control's own vector the control is reproduced exactly.
    """
    layers = layer_modules(model)
    n_sub = 2 * len(layers)
    layer = check_layer(layer, len(layers))
    batch_size = check_positive_int(batch_size, "batch_size")
    grid = _validate_grid(grid)
    d = _d_model(model)
    plane = _plane(pca, d)
    if vectors is None:
        x = plane.inverse_transform(grid)
    else:
        x = np.asarray(vectors, dtype=np.float64)
        if x.shape != (grid.shape[0], d):
            raise ValueError(f"vectors must be (n_points, d_model) = {(grid.shape[0], d)}, got {x.shape}")
    ids = tokenize(tokenizer, [prompt], add_bos=add_bos, strip=strip)[0]
    pad = _pad_id(tokenizer)
    control_rs = run_with_edit(model, [ids], pad_token_id=pad)[0].astype(np.float64)  # (n_sub, d)
    follow = _following(layer, n_following, n_sub)
    x_t = torch.as_tensor(x, dtype=torch.float32)
    edit = lambda h, idx: x_t[torch.as_tensor(idx)]  # noqa: E731
    pert = run_with_edit(model, [ids] * grid.shape[0], layer=layer, edit=edit, stop_after=int(follow[-1]),
                         batch_size=batch_size, pad_token_id=pad)[:, follow].astype(np.float64)
    ctrl_f = control_rs[follow]  # (n_follow+1, d)
    control = plane.transform(control_rs)
    z_pert = plane.transform(pert)  # (n_points, n_follow+1, 2)
    z_ctrl = control[follow]
    diff_pc = z_pert - z_ctrl
    diff_full = pert - ctrl_f
    mse_pc = np.mean(diff_pc[:, 1:] ** 2, axis=(1, 2))
    mse_full = np.mean(diff_full[:, 1:] ** 2, axis=(1, 2))
    ctrl_sq = np.mean(ctrl_f[1:] ** 2)
    distance_pc = np.linalg.norm(diff_pc, axis=-1)
    rel_distance_full = np.linalg.norm(diff_full, axis=-1) / np.linalg.norm(ctrl_f, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recovery = np.where(distance_pc[:, 0] > 0, distance_pc[:, -1] / distance_pc[:, 0], np.nan)
    return TeleportResult(layer=layer, grid=grid, sublayers=follow, control=control, control_following=z_ctrl,
                          perturbed=z_pert, mse_pc=mse_pc, mse_full=mse_full,
                          rel_mse_full=mse_full / ctrl_sq if ctrl_sq > 0 else np.full_like(mse_full, np.nan),
                          distance_pc=distance_pc, rel_distance_full=rel_distance_full, recovery=recovery,
                          prompt=prompt)


def compare_layers(results: Sequence[TeleportResult], metric: str = "mse_pc") -> dict[str, Any]:
    """The paper's claim, checked: mid-layer perturbations recover best, layer 0 and the last layer least.

    results: one :class:`TeleportResult` per layer, in depth order (at least 3). metric: a per-point
    attribute (``"mse_pc"``, ``"mse_full"``, ``"rel_mse_full"``, ``"recovery"``); lower is better recovery.
    Returns ``layers``, ``median`` (per layer, NaN ignored), ``best_layer`` (lowest median),
    ``mid_beats_first`` / ``mid_beats_last`` (every middle layer's median below the first's / last's),
    ``mid_beats_ends`` (both), ``last_worst`` (the last layer has the highest median), and the same for
    the spread of the end points: ``end_variance`` (per layer), ``mid_spread_below_ends``.
    """
    if len(results) < 3:
        raise ValueError("compare_layers needs results for at least 3 layers (first, middle, last)")
    results = sorted(results, key=lambda r: r.layer)
    med = np.array([np.nanmedian(getattr(r, metric)) for r in results])
    layers = [r.layer for r in results]
    mid = med[1:-1]
    first_ok = bool(np.all(mid < med[0]))
    last_ok = bool(np.all(mid < med[-1]))
    spread = np.array([r.end_variance for r in results]) if hasattr(results[0], "perturbed") else None
    out = {"metric": metric, "layers": layers, "median": med, "best_layer": layers[int(np.nanargmin(med))],
           "mid_beats_first": first_ok, "mid_beats_last": last_ok, "mid_beats_ends": first_ok and last_ok,
           "last_worst": bool(np.nanargmax(med) == len(med) - 1)}
    if spread is not None:
        out["end_variance"] = spread
        out["mid_spread_below_ends"] = bool(np.all(spread[1:-1] < min(spread[0], spread[-1])))
    return out


# --------------------------------------------------------------------------------------------------
# Beyond the paper: noise injection and activation swap
# --------------------------------------------------------------------------------------------------
@dataclass
class PerturbationResult:
    """Distances of perturbed runs to reference runs at the sublayers from the perturbation on.

    kind: ``"noise"`` or ``"swap"``; layer: decoder layer whose input was perturbed.
    sublayers: ``(n_follow + 1,)``, from ``2 * layer`` (the perturbed point itself).
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
    num = np.linalg.norm(a - b, axis=-1)
    den = np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.where(num > 0, np.inf, 0.0))


def inject_noise(model, tokenizer, texts: Sequence[str], *, layer: int, scale: float, seed: int = 0,
                 n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                 batch_size: int = 16, baseline: np.ndarray | None = None) -> PerturbationResult:
    """Add Gaussian noise at the input of layer ``layer`` at each text's last token.

    The noise for text i is ``scale * ||h_i|| * u_i`` with ``h_i`` the residual stream there and ``u_i`` a
    uniformly random unit vector (a normalised standard normal from ``numpy.random.default_rng(seed)``).
    n_following: sublayers recorded after the perturbed one (``None``: to the model's end).
    baseline: optional unperturbed ``rs: (n_texts, n_sublayers, d_model)`` from :func:`run_with_edit` on the
    same texts and batch size (saves a forward when several scales or layers share it).
    Returns a :class:`PerturbationResult` with ``distance_own: (n_texts, n_follow + 1)``.
    """
    scale = check_number(scale, "scale", low=0)
    seed, batch_size = check_seed(seed), check_positive_int(batch_size, "batch_size")
    layers = layer_modules(model)
    n_sub = 2 * len(layers)
    layer = check_layer(layer, len(layers))
    texts = list(texts)
    ids = tokenize(tokenizer, texts, add_bos=add_bos, strip=strip)
    pad = _pad_id(tokenizer)
    follow = _following(layer, n_following, n_sub)
    base = _baseline(model, ids, baseline, batch_size, pad)
    d = _d_model(model)
    u = np.random.default_rng(seed).standard_normal((len(ids), d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    u_t = torch.as_tensor(u, dtype=torch.float32)

    def edit(h, idx):
        noise = u_t[torch.as_tensor(idx)].to(h.device)
        return h + scale * h.float().norm(dim=-1, keepdim=True) * noise

    pert = run_with_edit(model, ids, layer=layer, edit=edit, stop_after=int(follow[-1]), batch_size=batch_size,
                         pad_token_id=pad)
    dist = _rel_dist(pert[:, follow].astype(np.float64), base[:, follow].astype(np.float64))
    return PerturbationResult(kind="noise", layer=layer, sublayers=follow, distance_own=dist, scale=float(scale),
                              meta={"seed": seed, "n_texts": len(ids)})


def _baseline(model, ids, baseline, batch_size, pad) -> np.ndarray:
    n_sub = 2 * len(layer_modules(model))
    if baseline is None:
        return run_with_edit(model, ids, batch_size=batch_size, pad_token_id=pad)
    baseline = check_rs(baseline, name="baseline")
    if baseline.shape != (len(ids), n_sub, _d_model(model)):
        raise ValueError(f"baseline must be (n_texts, n_sublayers, d_model) = {(len(ids), n_sub, _d_model(model))}, "
                         f"got {baseline.shape}")
    return baseline


def swap(model, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layer: int,
         n_following: int | None = None, add_bos: bool = True, strip: bool = False, batch_size: int = 16,
         baseline_a: np.ndarray | None = None, baseline_b: np.ndarray | None = None) -> PerturbationResult:
    """Write text b's residual stream entering layer ``layer`` (last token) into text a's run at its last token.

    texts_a, texts_b: equally many texts, paired by position (a_i receives b_i's vector).
    Reports, from sublayer ``2 * layer`` on, the perturbed run's distance to a's own unperturbed run and to
    b's (the donor's) run, each relative to that run's norm: does the context (a) pull the trajectory back,
    or does it follow the vector it was given (b)?
    baseline_a / baseline_b: optional unperturbed runs (see :func:`inject_noise`).
    """
    texts_a, texts_b = list(texts_a), list(texts_b)
    if len(texts_a) != len(texts_b) or not texts_a:
        raise ValueError(f"texts_a and texts_b must be equally many (paired) and non-empty, got "
                         f"{len(texts_a)} and {len(texts_b)}")
    layers = layer_modules(model)
    n_sub = 2 * len(layers)
    layer = check_layer(layer, len(layers))
    batch_size = check_positive_int(batch_size, "batch_size")
    ids_a = tokenize(tokenizer, texts_a, add_bos=add_bos, strip=strip)
    ids_b = tokenize(tokenizer, texts_b, add_bos=add_bos, strip=strip)
    pad = _pad_id(tokenizer)
    follow = _following(layer, n_following, n_sub)
    base_a = _baseline(model, ids_a, baseline_a, batch_size, pad)
    base_b = base_a if (baseline_b is None and texts_b == texts_a) else _baseline(model, ids_b, baseline_b,
                                                                                   batch_size, pad)
    donor = torch.as_tensor(base_b[:, 2 * layer], dtype=torch.float32)
    edit = lambda h, idx: donor[torch.as_tensor(idx)]  # noqa: E731
    pert = run_with_edit(model, ids_a, layer=layer, edit=edit, stop_after=int(follow[-1]),
                         batch_size=batch_size, pad_token_id=pad)[:, follow].astype(np.float64)
    a = base_a[:, follow].astype(np.float64)
    b = base_b[:, follow].astype(np.float64)
    return PerturbationResult(kind="swap", layer=layer, sublayers=follow, distance_own=_rel_dist(pert, a),
                              distance_donor=_rel_dist(pert, b), distance_own_donor=_rel_dist(b, a),
                              meta={"n_texts": len(ids_a)})


def noise_sweep(model, tokenizer, texts: Sequence[str], *, layers: Sequence[int], scales: Sequence[float],
                seed: int = 0, n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                batch_size: int = 16) -> list[PerturbationResult]:
    """:func:`inject_noise` for every ``(layer, scale)`` (layer-major), sharing one unperturbed run of
    ``texts`` and the noise directions (same ``seed``). Returns one result per pair."""
    seed, batch_size = check_seed(seed), check_positive_int(batch_size, "batch_size")
    scales = [check_number(s, "scales[]", low=0) for s in scales]
    ids = tokenize(tokenizer, list(texts), add_bos=add_bos, strip=strip)
    base = run_with_edit(model, ids, batch_size=batch_size, pad_token_id=_pad_id(tokenizer))
    return [inject_noise(model, tokenizer, texts, layer=l, scale=s, seed=seed, n_following=n_following,
                         add_bos=add_bos, strip=strip, batch_size=batch_size, baseline=base)
            for l in layers for s in scales]


def swap_sweep(model, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layers: Sequence[int],
               n_following: int | None = None, add_bos: bool = True, strip: bool = False,
               batch_size: int = 16) -> list[PerturbationResult]:
    """:func:`swap` at every layer of ``layers``, sharing the unperturbed runs of both text lists."""
    batch_size = check_positive_int(batch_size, "batch_size")
    pad = _pad_id(tokenizer)
    base_a = run_with_edit(model, tokenize(tokenizer, list(texts_a), add_bos=add_bos, strip=strip),
                           batch_size=batch_size, pad_token_id=pad)
    base_b = run_with_edit(model, tokenize(tokenizer, list(texts_b), add_bos=add_bos, strip=strip),
                           batch_size=batch_size, pad_token_id=pad)
    return [swap(model, tokenizer, texts_a, texts_b, layer=l, n_following=n_following, add_bos=add_bos,
                 strip=strip, batch_size=batch_size, baseline_a=base_a, baseline_b=base_b) for l in layers]


# --------------------------------------------------------------------------------------------------
# Naming perturbed layers by depth, so that models of different depth line up
# --------------------------------------------------------------------------------------------------
#: Depth-position names for k perturbed layers in depth order (k = 5: the paper's 0, 7, 15, 23, 31 of 32).
DEPTH_NAMES = {1: ("first",), 2: ("first", "last"), 3: ("first", "middle", "last"),
               4: ("first", "early", "late", "last"), 5: ("first", "early", "middle", "late", "last")}


def depth_names(layers: Sequence[int]) -> list[str]:
    """Names of perturbed layers by depth position, for ledger keys and figure columns that line up across
    models of different depth (SmolLM2's layer 7 of 30 and Gemma 3's layer 4 of 18 are both ``"early"``).

    layers: ``(k,)`` distinct layer indices in increasing order (e.g. :func:`paper_layers`). Returns ``k``
    names: :data:`DEPTH_NAMES` for k <= 5 (``"first", "early", "middle", "late", "last"`` for the paper's
    five), else ``"first", "middle1", …, "middle{k-2}", "last"``.
    """
    layers = [int(l) for l in layers]
    if not layers:
        raise ValueError("need at least one layer")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct and in increasing order, got {layers}")
    k = len(layers)
    if k in DEPTH_NAMES:
        return list(DEPTH_NAMES[k])
    return ["first"] + [f"middle{i}" for i in range(1, k - 1)] + ["last"]

