"""Perturbing the residual stream (paper section 2.8, Figure 4 D) and two perturbations the paper leaves to
future work (section 4): noise injection and activation swapping.

Every perturbation is written at the **input of decoder layer** ``l`` (the residual stream entering the
layer: sublayer ``2l``, the paper's "input to the attention layer") at each text's last real token; the
residual stream is then read at every later point. A run's *points* are its ``2 * n_layers`` sublayers
(:func:`transformer_dynamics.capture.record_last_token`) and, as point ``2 * n_layers``, the decoder stack's
output (the residual stream after the last layer).

**Perturbed runs reuse the clean run's keys and values.** Only the last token is edited, and attention is
causal, so no earlier token changes: :func:`prefix_cache` runs each text once, unperturbed, keeping every
layer's attention keys and values of the tokens before the last (and the clean run at the last token);
:func:`extend` then runs one token per perturbation, from layer ``l`` on only, its attention reading the cached
prefix. The values equal a full rerun of the edited texts (:func:`run_with_edit`, the reference) to float
round-off (tested on Llama and Gemma 3, sliding windows included). A teleport grid of 100 points costs 100
one-token forwards through the layers it needs instead of 100 reruns of the prompt.

- :func:`teleport`: the paper's experiment for one prompt and one layer. A grid of points ``z`` in the plane of
  the first two principal components is mapped back with ``x = z V[:, :2]^T + mu`` and written at layer ``l``.
- :func:`teleport_sweep`: the teleport over many prompts (the sampling unit) at every teleport layer, with an
  **equal follow-up window** for every layer (:func:`equal_window`), reduced to per-prompt curves
  ``(n_prompts, n_layers)``: :data:`CURVES`. :func:`teleport_runs` does it for the trained model and its
  random initialisations (:mod:`transformer_dynamics.random_init`), each in its own PCA plane.
- :func:`noise_sweep` / :func:`inject_noise`: Gaussian noise whose norm is ``scale`` times the residual stream's
  norm there. :func:`swap_sweep` / :func:`swap`: text b's residual-stream vector written into text a's run.

Layers are mapped from the paper's Llama 3.1 8B (32 layers; perturbed at 0, 7, 15, 23, 31) to another depth
by :func:`paper_layers`: ``round(l / 31 * (n_layers - 1))``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .capture import StopForward, batches, can_pack, record_last_token, tokenize, use_attention
from .models import architecture, base_model, layer_modules
from .reduce.pca import PCA
from .validation import check_allocation, check_int, check_number, check_positive_int, check_seed

__all__ = [
    "CURVES",
    "DEFAULT_PROMPT",
    "DEPTH_NAMES",
    "PAPER_LAYERS",
    "PAPER_N_LAYERS",
    "PerturbationResult",
    "PrefixCache",
    "TeleportResult",
    "TeleportSweep",
    "controls_spread",
    "depth_names",
    "equal_window",
    "extend",
    "grid_range",
    "inject_noise",
    "make_grid",
    "n_points",
    "noise_sweep",
    "paper_layers",
    "plane_and_grid",
    "prefix_cache",
    "project",
    "run_with_edit",
    "swap",
    "swap_sweep",
    "teleport",
    "teleport_runs",
    "teleport_sweep",
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


def plane_and_grid(rs: np.ndarray, grid_n: int, q: Sequence[float] = (1.0, 99.0), *, chunk: int = 256
                   ) -> tuple[PCA, np.ndarray, tuple[float, float]]:
    """The paper's PCA plane and teleport grid for one residual stream ``rs: (n_samples, n_sublayers, d_model)``:
    a 2-component PCA fitted on every sublayer vector of every text (section 2.8), and a ``grid_n x grid_n`` grid
    over the ``q`` percentiles of the projected trajectories (both coordinates pooled: a square grid).
    -> ``(pca, grid (grid_n ** 2, 2), (r_min, r_max))``. The projection runs ``chunk`` texts at a time."""
    rs = np.asarray(rs)
    if rs.ndim != 3 or rs.shape[0] < 2:
        raise ValueError(f"rs must be (n_samples >= 2, n_sublayers, d_model), got shape {rs.shape}")
    pca = PCA(n_components=2).fit(rs)
    z = np.concatenate([project(pca, rs[i:i + chunk]) for i in range(0, rs.shape[0], int(chunk))])
    r_min, r_max = grid_range(z, tuple(q))
    return pca, make_grid(r_min, r_max, grid_n), (r_min, r_max)


# --------------------------------------------------------------------------------------------------
# Points of a run, and the full rerun with an edit at one layer's input (the reference)
# --------------------------------------------------------------------------------------------------
def _d_model(model) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


def n_points(model) -> int:
    """``2 * n_layers + 1``: the sublayers and the stack's output."""
    return 2 * len(layer_modules(model)) + 1


def _check_ids(token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    ids = [list(s) for s in token_ids]
    if not ids or any(len(s) == 0 for s in ids):
        raise ValueError("need at least one text, each with at least one token")
    return ids


def _stop(module, args, kwargs):
    raise StopForward


def _stop_hook(model, point: int):
    """A pre-hook raising :class:`StopForward` on the norm whose input is sublayer ``point`` (register it after the
    recorder's, so that it fires after it); None for the stack's output (the recorder stops there itself)."""
    layers = layer_modules(model)
    if point >= 2 * len(layers):
        return None
    arch = architecture(model)
    norm = getattr(layers[point // 2], (arch.attn_norm, arch.mlp_norm)[point % 2])
    return norm.register_forward_pre_hook(_stop, with_kwargs=True)


@torch.inference_mode()
def run_with_edit(model, token_ids: Sequence[Sequence[int]], *, layer: int | None = None,
                  edit: Edit | None = None, stop_after: int | None = None, batch_size: int = 64,
                  pad_token_id: int = 0) -> np.ndarray:
    """Run texts through the whole decoder stack, optionally editing the residual stream entering layer ``layer``
    at each text's last token, and record every point there: the full rerun that :func:`extend` reproduces.

    token_ids: one id list per text (:func:`transformer_dynamics.capture.tokenize`); texts are length-sorted
    and batched (:func:`transformer_dynamics.capture.batches`: the same texts always form the same batches).
    edit: ``edit(h, idx) -> h_new`` with ``h: (B, d_model)`` the vectors entering layer ``layer`` at the rows'
    last tokens and ``idx: (B,)`` those rows' text indices; ``None`` runs unperturbed.
    stop_after: last point needed (default the stack's output, ``2 * n_layers``); the forward stops there.
    Returns ``(n_texts, 2 * n_layers + 1, d_model)`` float32, NaN after ``stop_after``.
    """
    layers = layer_modules(model)
    n_pts = 2 * len(layers) + 1
    if edit is not None:
        layer = check_layer(layer, len(layers))
    stop_after = check_int(n_pts - 1 if stop_after is None else stop_after, "stop_after", low=0, high=n_pts - 1)
    batch_size = check_positive_int(batch_size, "batch_size")
    pad_token_id = check_int(pad_token_id, "pad_token_id", low=0)
    ids = _check_ids(token_ids)
    out = np.full((len(ids), n_pts, _d_model(model)), np.nan, dtype=np.float32)
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

    try:
        with record_last_token(model, state, stop=True, output=True):
            if edit is not None:
                handles.append(layers[layer].register_forward_pre_hook(layer_hook, with_kwargs=True))
            handles.append(_stop_hook(model, stop_after))
            for sel, rec in batches(model, ids, state, batch_size=batch_size, pad_id=pad_token_id, output=True):
                rec[:, stop_after + 1:] = np.nan
                out[sel] = rec
    finally:
        for h in handles:
            if h is not None:
                h.remove()
    return out


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


# --------------------------------------------------------------------------------------------------
# Perturbed runs reuse the clean run's keys and values
# --------------------------------------------------------------------------------------------------
KV_RECORD = "td_kv_record"
KV_EXTEND = "td_kv_extend"
_KV: ContextVar[Any] = ContextVar("transformer_dynamics_kv", default=None)


@dataclass
class PrefixCache:
    """The clean (unperturbed) run of ``n`` texts, kept so that a perturbation of the last token reruns only it.

    keys, values: per layer ``(n, n_kv_heads, P, head_dim)``, the attention's keys (after the rotary embedding
    and any key norm) and values of every token but the last, right-padded to ``P`` (the longest prefix);
    prefix: ``(n,)`` long, each text's number of tokens before the last (= the last token's position);
    last_ids: ``(n,)`` long, the last tokens; clean: ``(n, 2 * n_layers + 1, d_model)`` float32, the unperturbed
    run at the last token (every sublayer and the stack's output).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    prefix: torch.Tensor
    last_ids: torch.Tensor
    clean: np.ndarray

    @property
    def n(self) -> int:
        return int(self.prefix.shape[0])


class _Extension:
    """What the extending attention reads: the cache and the rows (texts) of the current batch."""

    def __init__(self, cache: PrefixCache):
        self.cache = cache
        self.rows = torch.zeros(0, dtype=torch.long)
        self._masks: dict = {}

    def set_rows(self, rows: torch.Tensor) -> None:
        self.rows, self._masks = rows, {}

    def prefix(self, layer_idx: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows.to(self.cache.keys[layer_idx].device)
        return (self.cache.keys[layer_idx].index_select(0, rows).to(device),
                self.cache.values[layer_idx].index_select(0, rows).to(device))

    def mask(self, window: int | None, device) -> torch.Tensor:
        """``(b, 1, 1, P + 1)`` bool: each row's own prefix (inside ``window`` of its position, as transformers'
        sliding window: key position > query position - window) and its own new token (the last column)."""
        key = (window, device)
        if key not in self._masks:
            plen = self.cache.prefix[self.rows][:, None]                      # (b, 1): the query's position
            pos = torch.arange(self.cache.keys[0].shape[2])[None]             # (1, P)
            ok = pos < plen
            if window is not None:
                ok = ok & (pos > plen - int(window))
            ok = torch.cat([ok, torch.ones(len(self.rows), 1, dtype=torch.bool)], 1)
            self._masks[key] = ok[:, None, None, :].to(device)
        return self._masks[key]


def _kv_record_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, keeping each layer's keys and values ``(B, n_kv_heads, T, head_dim)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: PLC0415

    _KV.get()[module.layer_idx] = (key, value)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _kv_extend_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention of one new token per row (``query: (b, H, 1, head_dim)``) over its text's cached prefix and
    itself, through transformers' sdpa attention with the mask of :meth:`_Extension.mask`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: PLC0415

    ext = _KV.get()
    window = kwargs.pop("sliding_window", None)
    kp, vp = ext.prefix(module.layer_idx, key.device)
    keys = torch.cat([kp.to(key.dtype), key], 2)
    values = torch.cat([vp.to(value.dtype), value], 2)
    return sdpa_attention_forward(module, query, keys, values, ext.mask(window, query.device), **kwargs)


def _register_kv_attention() -> None:
    from transformers import AttentionInterface  # noqa: PLC0415
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface  # noqa: PLC0415

    AttentionInterface.register(KV_RECORD, _kv_record_attention)
    AttentionMaskInterface.register(KV_RECORD, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    AttentionInterface.register(KV_EXTEND, _kv_extend_attention)
    AttentionMaskInterface.register(KV_EXTEND, lambda *args, **kwargs: None)


@contextmanager
def _kv(model, name: str, value: Any) -> Iterator[None]:
    """``model``'s attention switched to ``name`` with ``value`` as what it reads or fills."""
    _register_kv_attention()
    token = _KV.set(value)
    try:
        with use_attention(model, name):
            yield
    finally:
        _KV.reset(token)


def _pass_through(hidden_states, *args, **kwargs):
    return hidden_states


@contextmanager
def _skipped(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """For the duration the decoder layers ``modules`` return their input unchanged (their work is not needed:
    the input of the first edited layer is written by a hook)."""
    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for m in modules:
            m.forward = _pass_through
        yield
    finally:
        for m, before in zip(modules, saved):
            if before is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = before


def _check_attention(model) -> None:
    if not can_pack(model):  # the same condition: every config on transformers' "sdpa", which the reuse calls
        raise ValueError("the keys-and-values reuse runs transformers' 'sdpa' attention; load the model with "
                         "attn_implementation='sdpa'")


@torch.inference_mode()
def prefix_cache(model, token_ids: Sequence[Sequence[int]], *, batch_size: int = 16, pad_token_id: int = 0
                 ) -> PrefixCache:
    """Run texts once, unperturbed, keeping what a perturbation of their last token needs (:class:`PrefixCache`):
    every layer's keys and values of the tokens before the last and the clean run at the last token.

    token_ids: one id list per text; right-padded batches of ``batch_size`` (length-sorted). Memory: ``2 *
    n_layers * n * P * n_kv_heads * head_dim`` floats for the keys and values: run long lists in chunks.
    """
    _check_attention(model)
    ids = _check_ids(token_ids)
    layers = layer_modules(model)
    n = len(ids)
    prefix = torch.tensor([len(s) - 1 for s in ids], dtype=torch.long)
    P = int(prefix.max())
    keys: list = [None] * len(layers)
    values: list = [None] * len(layers)
    clean = np.empty((n, 2 * len(layers) + 1, _d_model(model)), dtype=np.float32)
    kept: dict = {}
    state: dict = {}
    with record_last_token(model, state, stop=True, output=True), _kv(model, KV_RECORD, kept):
        for sel, rec in batches(model, ids, state, batch_size=batch_size, pad_id=pad_token_id, pack=False,
                                output=True):
            clean[sel] = rec
            rows = torch.as_tensor(sel)
            for l, (k, v) in kept.items():
                if keys[l] is None:
                    keys[l] = k.new_zeros((n, k.shape[1], P, k.shape[3]))
                    values[l] = v.new_zeros((n, v.shape[1], P, v.shape[3]))
                t = min(k.shape[2], P)
                keys[l][rows, :, :t] = k[:, :, :t]
                values[l][rows, :, :t] = v[:, :, :t]
            kept.clear()
    if any(k is None for k in keys):
        raise RuntimeError("the recording attention did not see every layer")  # pragma: no cover
    return PrefixCache(keys, values, prefix, torch.tensor([s[-1] for s in ids], dtype=torch.long), clean)


@torch.inference_mode()
def extend(model, cache: PrefixCache, rows: Sequence[int], *, layer: int, vectors: np.ndarray | None = None,
           edit: Edit | None = None, stop_after: int | None = None, batch_size: int = 128) -> np.ndarray:
    """Perturbed runs from the clean run's keys and values: for each of ``rows`` (texts of ``cache``, repeats
    allowed), the residual stream entering layer ``layer`` at the last token is replaced, and only that token runs,
    from layer ``layer`` on, its attention reading the text's cached prefix. Equal to :func:`run_with_edit` on the
    texts to float round-off.

    vectors: ``(len(rows), d_model)`` the vectors to write; or edit: ``edit(h, idx) -> (b, d_model)`` with ``h:
    (b, d_model)`` the clean vectors entering the layer and ``idx: (b,)`` the rows' text indices. stop_after: last
    point needed (default the stack's output ``2 * n_layers``). Returns ``(len(rows), 2 * n_layers + 1,
    d_model)`` float32: the clean run before ``2 * layer``, the perturbed one from there to ``stop_after``, NaN
    after.
    """
    layers = layer_modules(model)
    n_pts = 2 * len(layers) + 1
    layer = check_layer(layer, len(layers))
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0 or rows.min() < 0 or rows.max() >= cache.n:
        raise ValueError(f"rows must be indices of the cache's {cache.n} texts, got {rows.size} rows in "
                         f"[{rows.min(initial=0)}, {rows.max(initial=0)}]")
    if (vectors is None) == (edit is None):
        raise ValueError("pass exactly one of vectors or edit")
    d = _d_model(model)
    if vectors is not None:
        vectors = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        if tuple(vectors.shape) != (rows.size, d):
            raise ValueError(f"vectors must be (len(rows), d_model) = {(rows.size, d)}, got {tuple(vectors.shape)}")
    stop_after = n_pts - 1 if stop_after is None else int(stop_after)
    if not 2 * layer <= stop_after < n_pts:
        raise ValueError(f"stop_after must be in [{2 * layer}, {n_pts - 1}], got {stop_after}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.full((rows.size, n_pts, d), np.nan, dtype=np.float32)
    out[:, :2 * layer] = cache.clean[rows, :2 * layer]
    base = base_model(model)
    device = model.get_input_embeddings().weight.device
    ext = _Extension(cache)
    state: dict = {}
    new: dict = {}

    def write(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        x = new["x"].to(hidden.device, hidden.dtype)[:, None]  # (b, 1, d)
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    handles = []
    try:
        with record_last_token(model, state, stop=True, output=True), _kv(model, KV_EXTEND, ext), \
                _skipped(list(layers)[:layer]):
            handles.append(layers[layer].register_forward_pre_hook(write, with_kwargs=True))
            handles.append(_stop_hook(model, stop_after))
            for b0 in range(0, rows.size, batch_size):
                r = rows[b0:b0 + batch_size]
                rt = torch.as_tensor(r)
                if vectors is not None:
                    new["x"] = vectors[b0:b0 + len(r)]
                else:
                    new["x"] = edit(torch.as_tensor(cache.clean[r, 2 * layer]), r)
                ext.set_rows(rt)
                state.update(rows=torch.arange(len(r)), last=torch.zeros(len(r), dtype=torch.long),
                             out=torch.empty((len(r), n_pts, d), dtype=torch.float32))
                try:
                    base(input_ids=cache.last_ids[rt][:, None].to(device),
                         position_ids=cache.prefix[rt][:, None].to(device), use_cache=False)
                except StopForward:
                    pass
                else:  # pragma: no cover
                    raise RuntimeError("the recording hooks did not reach the stopping point")
                out[b0:b0 + len(r), 2 * layer:stop_after + 1] = state["out"][:, 2 * layer:stop_after + 1].numpy()
    finally:
        for h in handles:
            if h is not None:
                h.remove()
    return out


def _following(layer: int, n_following: int | None, last: int) -> np.ndarray:
    """Points ``2l, 2l+1, …, min(2l + n_following, last)`` (``None``: to ``last``)."""
    n_following = check_positive_int(n_following, "n_following", none=True)
    start = 2 * layer
    end = last if n_following is None else min(start + int(n_following), last)
    return np.arange(start, end + 1)


def equal_window(layers: Sequence[int], n_layers: int, cap: int | None = None) -> int:
    """The follow-up window every teleport layer gets: as many points after the teleport point as the deepest
    teleport layer has before the stack's output (that included), at most ``cap``. With the paper's layers
    (the last one the model's last layer): 2, one whole decoder layer (its attention and its MLP)."""
    if not len(layers):
        raise ValueError("need at least one teleport layer")
    deepest = max(check_layer(l, n_layers) for l in layers)
    w = 2 * n_layers - 2 * deepest
    if cap is not None:
        if int(cap) < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        w = min(w, int(cap))
    return w


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

    @property
    def displacement(self) -> np.ndarray:
        """``(n_grid, 2)``: where each trajectory ends minus where it was teleported to (the quiver arrows)."""
        return self.perturbed[:, -1] - self.perturbed[:, 0]


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


def _teleport_vectors(model, pca: Any, grid: Any, vectors: np.ndarray | None) -> tuple[PCA, np.ndarray, np.ndarray]:
    grid = _validate_grid(grid)
    d = _d_model(model)
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


def teleport(model, tokenizer, pca: Any, *, layer: int, grid: np.ndarray, prompt: str = DEFAULT_PROMPT,
             n_following: int = 12, add_bos: bool = True, strip: bool = False, batch_size: int = 128,
             vectors: np.ndarray | None = None) -> TeleportResult:
    """Teleport the prompt's last-token residual stream entering layer ``layer`` to each grid point.

    pca: fitted PCA-like object (``mean_ (d_model,)``, ``components_ (k >= 2, d_model)``,
    ``n_features_in_``), e.g. :class:`transformer_dynamics.reduce.PCA` fitted on this model's residual
    stream. grid: ``(n_points, 2)`` targets in (PC1, PC2) (:func:`make_grid`).
    Each point becomes ``x = z V[:, :2]^T + mu`` (:func:`unproject`), written over point ``2 * layer``;
    the next ``n_following`` points are recorded (clipped at the stack's output). The prompt runs once
    (:func:`prefix_cache`); the grid points run as one-token forwards (:func:`extend`), ``batch_size`` at a time.
    vectors: optional ``(n_points, d_model)`` full vectors to write instead of the unprojected grid (the grid
    then only labels the points); with the control's own vector the control is reproduced.
    """
    layer = check_layer(layer, len(layer_modules(model)))
    plane, grid, x = _teleport_vectors(model, pca, grid, vectors)
    cache = prefix_cache(model, tokenize(tokenizer, [prompt], add_bos=add_bos, strip=strip),
                         pad_token_id=_pad_id(tokenizer))
    follow = _following(layer, n_following, n_points(model) - 1)
    pert = extend(model, cache, np.zeros(len(grid), dtype=np.int64), layer=layer, vectors=x,
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


def teleport_sweep(model, tokenizer, pca: Any, *, grid: np.ndarray, prompts: Sequence[str],
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
    n_layers = len(layer_modules(model))
    layers = [check_layer(l, n_layers) for l in layers]
    if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct teleport layers in increasing order, got {layers}")
    last = 2 * n_layers
    w_max = equal_window(layers, n_layers)
    window = w_max if window is None else int(window)
    if not 1 <= window <= w_max:
        raise ValueError(f"window must be in [1, {w_max}] (the deepest teleport layer, {layers[-1]}, has {w_max} "
                         f"points after it), got {window}")
    plane, grid, x = _teleport_vectors(model, pca, grid, None)
    ids = tokenize(tokenizer, prompts, add_bos=add_bos, strip=strip)
    pad = _pad_id(tokenizer)
    raw = {k: np.full((len(prompts), len(layers)), np.nan) for k in CURVES}
    clean = np.empty((len(prompts), last + 1, _d_model(model)), dtype=np.float32)
    results = []
    zeros = np.zeros(len(grid), dtype=np.int64)
    for p, seq in enumerate(ids):
        cache = prefix_cache(model, [seq], pad_token_id=pad)
        clean[p] = cache.clean[0]
        for k, l in enumerate(layers):
            figure = p == 0 and n_following is not None
            follow = _following(l, n_following, last) if figure else None
            stop = max(2 * l + window, int(follow[-1])) if figure else 2 * l + window
            pert = extend(model, cache, zeros, layer=l, vectors=x, stop_after=stop, batch_size=batch_size)
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


def _init_of(run: str) -> tuple[str, int]:
    kind, _, seed = run.partition(":")
    if not seed.isdigit():
        raise ValueError(f"run {run!r} is neither 'trained' nor a random init '<kind>:<seed>' (e.g. 'default:0')")
    return kind, int(seed)


def teleport_runs(model, tokenizer, streams: Mapping[str, np.ndarray], *, prompts: Sequence[str],
                  layers: Sequence[int], grid_n: int, percentiles: Sequence[float] = (1.0, 99.0),
                  n_prompts: int | None = None, n_reference_prompts: int | None = None, window: int | None = None,
                  n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                  batch_size: int = 128) -> dict[str, TeleportSweep]:
    """:func:`teleport_sweep` for the trained model and its random initialisations, each in its own plane.

    streams: ``{run: rs (n, n_sublayers, d_model)}`` with run ``"trained"`` (``model`` itself) or a random init
    ``"<kind>:<seed>"`` (:func:`transformer_dynamics.random_init.random_init_model`, built here, one at a time): each
    run's PCA plane and grid come from its own stream (:func:`plane_and_grid` with ``grid_n``, ``percentiles``).
    n_prompts / n_reference_prompts: how many of ``prompts`` (the first ones) the trained run / each random init
    uses (None: all / as many as the trained run). n_following: the trained run's figure (see
    :func:`teleport_sweep`). -> ``{run: TeleportSweep}``.
    """
    from . import random_init  # noqa: PLC0415

    prompts = list(prompts)
    n_trained = len(prompts) if n_prompts is None else int(n_prompts)
    n_ref = n_trained if n_reference_prompts is None else int(n_reference_prompts)
    if not 2 <= n_trained <= len(prompts) or not 2 <= n_ref <= len(prompts):
        raise ValueError(f"n_prompts and n_reference_prompts must be in [2, {len(prompts)}] (the prompts given); "
                         f"got {n_prompts} and {n_reference_prompts}")
    out = {}
    for run, rs in streams.items():
        k = n_trained if run == "trained" else n_ref
        lm = model if run == "trained" else random_init.random_init_model(model, *_init_of(run))
        pca, grid, rng = plane_and_grid(rs, grid_n, percentiles)
        out[run] = teleport_sweep(lm, tokenizer, pca, grid=grid, prompts=prompts[:k], layers=layers,
                                  window=window, n_following=n_following if run == "trained" else None,
                                  add_bos=add_bos, strip=strip, batch_size=batch_size)
        out[run].grid_range = rng
        del lm
    return out


# --------------------------------------------------------------------------------------------------
# Beyond the paper: noise injection and activation swap
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


def _check_layers(model, layers: Sequence[int]) -> list[int]:
    n_layers = len(layer_modules(model))
    out = [check_layer(l, n_layers) for l in layers]
    if not out:
        raise ValueError("need at least one layer")
    return out


def noise_sweep(model, tokenizer, texts: Sequence[str], *, layers: Sequence[int], scales: Sequence[float],
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
    layers = _check_layers(model, layers)
    ids = _check_ids(tokenize(tokenizer, list(texts), add_bos=add_bos, strip=strip))
    pad = _pad_id(tokenizer)
    last = 2 * len(layer_modules(model)) - 1
    follow = {l: _following(l, n_following, last) for l in layers}
    u = np.random.default_rng(seed).standard_normal((len(ids), _d_model(model)))
    u = torch.as_tensor(u / np.linalg.norm(u, axis=1, keepdims=True), dtype=torch.float32)
    dist = {(l, s): np.empty((len(ids), len(follow[l]))) for l in layers for s in scales}
    for c0 in range(0, len(ids), batch_size):
        cache = prefix_cache(model, ids[c0:c0 + batch_size], batch_size=batch_size, pad_token_id=pad)
        rows = np.arange(cache.n)
        for l in layers:
            for s in scales:
                def edit(h, idx, s=s, c0=c0):
                    return h + s * h.float().norm(dim=-1, keepdim=True) * u[torch.as_tensor(c0 + idx)]
                pert = extend(model, cache, rows, layer=l, edit=edit, stop_after=int(follow[l][-1]),
                              batch_size=batch_size)
                dist[l, s][c0:c0 + cache.n] = _rel_dist(pert[:, follow[l]], cache.clean[:, follow[l]])
    return [PerturbationResult(kind="noise", layer=l, sublayers=follow[l], distance_own=dist[l, s], scale=s,
                               meta={"seed": seed, "n_texts": len(ids)}) for l in layers for s in scales]


def inject_noise(model, tokenizer, texts: Sequence[str], *, layer: int, scale: float, seed: int = 0,
                 n_following: int | None = None, add_bos: bool = True, strip: bool = False,
                 batch_size: int = 16) -> PerturbationResult:
    """:func:`noise_sweep` at one layer and one scale."""
    scale = check_number(scale, "scale", low=0)
    return noise_sweep(model, tokenizer, texts, layers=[layer], scales=[scale], seed=seed, n_following=n_following,
                       add_bos=add_bos, strip=strip, batch_size=batch_size)[0]


def swap_sweep(model, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layers: Sequence[int],
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
    layers = _check_layers(model, layers)
    ids_a = _check_ids(tokenize(tokenizer, texts_a, add_bos=add_bos, strip=strip))
    ids_b = ids_a if texts_b == texts_a else _check_ids(tokenize(tokenizer, texts_b, add_bos=add_bos, strip=strip))
    pad = _pad_id(tokenizer)
    last = 2 * len(layer_modules(model)) - 1
    follow = {l: _following(l, n_following, last) for l in layers}
    n = len(ids_a)
    own = {l: np.empty((n, len(follow[l]))) for l in layers}
    donor = {l: np.empty((n, len(follow[l]))) for l in layers}
    apart = {l: np.empty((n, len(follow[l]))) for l in layers}
    for c0 in range(0, n, batch_size):
        cache = prefix_cache(model, ids_a[c0:c0 + batch_size], batch_size=batch_size, pad_token_id=pad)
        b = cache.clean if ids_b is ids_a else run_with_edit(model, ids_b[c0:c0 + batch_size],
                                                              batch_size=batch_size, pad_token_id=pad)
        rows = np.arange(cache.n)
        for l in layers:
            f = follow[l]
            pert = extend(model, cache, rows, layer=l, vectors=b[:, 2 * l], stop_after=int(f[-1]),
                          batch_size=batch_size)
            own[l][c0:c0 + cache.n] = _rel_dist(pert[:, f], cache.clean[:, f])
            donor[l][c0:c0 + cache.n] = _rel_dist(pert[:, f], b[:, f])
            apart[l][c0:c0 + cache.n] = _rel_dist(b[:, f], cache.clean[:, f])
    return [PerturbationResult(kind="swap", layer=l, sublayers=follow[l], distance_own=own[l],
                               distance_donor=donor[l], distance_own_donor=apart[l], meta={"n_texts": n})
            for l in layers]


def swap(model, tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], *, layer: int,
         n_following: int | None = None, add_bos: bool = True, strip: bool = False,
         batch_size: int = 16) -> PerturbationResult:
    """:func:`swap_sweep` at one layer."""
    return swap_sweep(model, tokenizer, texts_a, texts_b, layers=[layer], n_following=n_following, add_bos=add_bos,
                      strip=strip, batch_size=batch_size)[0]


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

