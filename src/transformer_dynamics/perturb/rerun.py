"""Runs with the last token's residual stream edited at one layer's input: the full rerun (:func:`run_with_edit`,
the reference) and the one-token extension from the clean run's keys and values (:func:`prefix_cache`,
:func:`extend`), which every perturbation of this package uses.

A run's *points* are :mod:`transformer_dynamics.residual`'s: its ``2L`` sublayers and, as point ``2L``, the decoder
stack's output. Both runs record them with capture's hooks (:func:`transformer_dynamics.capture.recording`).

**Perturbed runs reuse the clean run's keys and values.** Only the last token is edited, and attention is causal,
so no earlier token changes: :func:`prefix_cache` runs each text once, unperturbed, keeping every layer's attention
keys and values of the tokens before the last (and the clean run at the last token); :func:`extend` then runs one
token per perturbation, from layer ``l`` on only, its attention reading the cached prefix. The values equal a full
rerun of the edited texts to float round-off (tested on Llama and Gemma 3, sliding windows included). A teleport
grid of 100 points costs 100 one-token forwards through the layers it needs instead of 100 reruns of the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..capture import batches, can_pack, forward_until_stop, forwards_replaced, recording, use_attention
from .. import residual
from ..residual import ResidualModel
from ..validation import check_int, check_positive_int
from .layers import check_layer

__all__ = ["Edit", "PrefixCache", "check_ids", "extend", "prefix_cache", "run_with_edit"]

# An edit receives the residual stream at the rows' last tokens, ``h: (B, d_model)``, and the indices of
# those rows' texts in the caller's list, ``idx: (B,)``; it returns the vectors to write, ``(B, d_model)``.
Edit = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


def check_ids(token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """``token_ids`` as lists, at least one text of at least one token each, else a ValueError."""
    ids = [list(s) for s in token_ids]
    if not ids or any(len(s) == 0 for s in ids):
        raise ValueError("need at least one text, each with at least one token")
    return ids


@torch.inference_mode()
def run_with_edit(rm: ResidualModel, token_ids: Sequence[Sequence[int]], *, layer: int | None = None,
                  edit: Edit | None = None, stop_after: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Run texts through the whole decoder stack, optionally editing the residual stream entering layer ``layer``
    at each text's last token, and record every point there: the full rerun that :func:`extend` reproduces.

    token_ids: one id list per text (:func:`transformer_dynamics.capture.tokenize`); texts are length-sorted
    and batched (:func:`transformer_dynamics.capture.batches`: the same texts always form the same batches).
    edit: ``edit(h, idx) -> h_new`` with ``h: (B, d_model)`` the vectors entering layer ``layer`` at the rows'
    last tokens and ``idx: (B,)`` those rows' text indices; ``None`` runs unperturbed.
    stop_after: last point needed (default the stack's output, ``2 * n_layers``); the forward stops there.
    Returns ``(n_texts, 2 * n_layers + 1, d_model)`` float32, NaN after ``stop_after``.
    """
    rm = residual.of(rm)
    n_pts = rm.n_points
    if edit is not None:
        layer = check_layer(layer, rm.n_layers)
    stop_after = check_int(n_pts - 1 if stop_after is None else stop_after, "stop_after", low=0, high=n_pts - 1)
    batch_size = check_positive_int(batch_size, "batch_size")
    ids = check_ids(token_ids)
    out = np.full((len(ids), n_pts, rm.d_model), np.nan, dtype=np.float32)
    for sel, rec in batches(rm, ids, batch_size=batch_size, points=stop_after + 1,
                            edit=None if edit is None else (layer, edit)):
        out[sel, :stop_after + 1] = rec
    return out


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

    def __init__(self, cache: PrefixCache, rows: torch.Tensor):
        self.cache, self.rows = cache, rows
        self._masks: dict = {}

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
def _kv(rm: ResidualModel, name: str, value: Any) -> Iterator[None]:
    """The model's attention switched to ``name`` with ``value`` as what it reads or fills."""
    _register_kv_attention()
    token = _KV.set(value)
    try:
        with use_attention(rm, name):
            yield
    finally:
        _KV.reset(token)


def _pass_through(hidden_states, *args, **kwargs):
    return hidden_states


@contextmanager
def _skipped(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """For the duration the decoder layers ``modules`` return their input unchanged (their work is not needed:
    the input of the first edited layer is written by a hook)."""
    with forwards_replaced(modules, lambda m: _pass_through):
        yield


def _check_attention(rm: ResidualModel) -> None:
    if not can_pack(rm):  # the same condition: every config on transformers' "sdpa", which the reuse calls
        raise ValueError("the keys-and-values reuse runs transformers' 'sdpa' attention; load the model with "
                         "attn_implementation='sdpa'")


@torch.inference_mode()
def prefix_cache(rm: ResidualModel, token_ids: Sequence[Sequence[int]], *, batch_size: int = 16) -> PrefixCache:
    """Run texts once, unperturbed, keeping what a perturbation of their last token needs (:class:`PrefixCache`):
    every layer's keys and values of the tokens before the last and the clean run at the last token.

    token_ids: one id list per text; right-padded batches of ``batch_size`` (length-sorted). Memory: ``2 *
    n_layers * n * P * n_kv_heads * head_dim`` floats for the keys and values: run long lists in chunks.
    """
    rm = residual.of(rm)
    _check_attention(rm)
    ids = check_ids(token_ids)
    n = len(ids)
    prefix = torch.tensor([len(s) - 1 for s in ids], dtype=torch.long)
    P = int(prefix.max())
    keys: list = [None] * rm.n_layers
    values: list = [None] * rm.n_layers
    clean = np.empty((n, rm.n_points, rm.d_model), dtype=np.float32)
    kept: dict = {}
    with _kv(rm, KV_RECORD, kept):
        for sel, rec in batches(rm, ids, batch_size=batch_size, points=rm.n_points, pack=False):
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
def extend(rm: ResidualModel, cache: PrefixCache, rows: Sequence[int], *, layer: int,
           vectors: np.ndarray | None = None, edit: Edit | None = None, stop_after: int | None = None,
           batch_size: int = 128) -> np.ndarray:
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
    rm = residual.of(rm)
    n_pts, d = rm.n_points, rm.d_model
    layer = check_layer(layer, rm.n_layers)
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0 or rows.min() < 0 or rows.max() >= cache.n:
        raise ValueError(f"rows must be indices of the cache's {cache.n} texts, got {rows.size} rows in "
                         f"[{rows.min(initial=0)}, {rows.max(initial=0)}]")
    if (vectors is None) == (edit is None):
        raise ValueError("pass exactly one of vectors or edit")
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
    with _skipped(list(rm.layers)[:layer]):
        for b0 in range(0, rows.size, batch_size):
            r = rows[b0:b0 + batch_size]
            rt = torch.as_tensor(r)
            x = vectors[b0:b0 + len(r)] if vectors is not None else edit(torch.as_tensor(cache.clean[r, 2 * layer]), r)
            rec = torch.empty((len(r), stop_after + 1, d), dtype=torch.float32)
            with ExitStack() as stack:
                stack.enter_context(_kv(rm, KV_EXTEND, _Extension(cache, rt)))
                stack.enter_context(recording(rm, torch.arange(len(r)), torch.zeros(len(r), dtype=torch.long), rec,
                                              edit=(layer, lambda h, x=x: x)))
                forward_until_stop(rm, input_ids=cache.last_ids[rt][:, None].to(rm.device),
                                   position_ids=cache.prefix[rt][:, None].to(rm.device))
            out[b0:b0 + len(r), 2 * layer:stop_after + 1] = rec[:, 2 * layer:].numpy()
    return out
