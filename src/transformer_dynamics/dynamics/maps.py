"""The last token's sublayer maps with the context frozen: what the Jacobians differentiate.

Sublayer ``s`` of the residual stream (RS) is mapped to ``s + 1`` by one block of a decoder layer: for even
``s = 2l`` the attention block of layer ``l`` (``x + attn(norm(x))``; Gemma 2/3 also normalise the branch's
output with ``post_attention_layernorm``), for odd ``s = 2l + 1`` its MLP block (``x + mlp(norm(x))``; Gemma:
``post_feedforward_layernorm`` on the branch). The maps call the model's own modules; :func:`check_maps`
verifies that they reproduce the captured RS.

At the last token ``T`` attention reads the keys and values of the earlier positions, which by causality do
not depend on the last token's RS: :func:`frozen_context` records them (one forward per batch of texts), so
``f_s: (B, D) -> (B, D)`` (:func:`sublayer_map`) is an exact function of the last token's RS alone.
``mode="single"`` is the sequel's variant: the last token's RS fed alone (no prefix).

Also the input of chapter 7: :func:`text_token_ids` (token ids as capture makes them, original or shuffled).
The random-init references are :func:`transformer_dynamics.random_init.random_init_model`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import residual
from ..capture import forward_until_stop, pad_right, recording, tokenize
from ..data import shuffle_token_ids
from ..validation import check_seed

__all__ = ["CONTEXTS", "Context", "check_maps", "frozen_context", "sublayer_map", "text_token_ids"]

CONTEXTS = ("frozen", "single")


def text_token_ids(tokenizer, texts: Sequence[str], *, condition: str = "original", seed: int = 0,
                   add_bos: bool = True, strip: bool = False) -> list[list[int]]:
    """Token ids of ``texts`` as capture makes them; ``condition="shuffled"``: the paper's control (BOS kept
    first, the other tokens permuted by ``default_rng(seed)``, one stream over the texts in order)."""
    if condition not in ("original", "shuffled"):
        raise ValueError(f"condition must be 'original' or 'shuffled', got {condition!r}")
    seed = check_seed(seed)
    ids = tokenize(tokenizer, list(texts), add_bos=add_bos, strip=strip)
    if condition == "shuffled":
        bos = tokenizer.bos_token_id
        ids = shuffle_token_ids(ids, seed=seed, keep_first=[bos is not None and s[0] == bos for s in ids])
    return ids


# --------------------------------------------------------------------------------------------------
# The frozen context and the sublayer maps
# --------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What one forward of a batch of texts leaves for the last-token sublayer maps.

    h: ``(B, 2L + 1, D)`` the RS at each text's last token, sublayers ``0 … 2L - 1`` and the last layer's
    output (``2L``): the linearisation points. keys / values: per layer ``(B, n_kv_heads, T, head_dim)``,
    the keys (position-encoded, as the attention stores them) and values of every position of the padded
    batch; masks: per layer ``(B, 1, 1, T + 1)`` additive (0 or -inf), which of them (and, last, the new
    token itself) the last token attends to. positions: ``(B,)`` the last token's position.
    mode: ``"frozen"`` or ``"single"`` (no prefix: keys/values/masks unused).
    """

    h: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    masks: list[torch.Tensor]
    positions: torch.Tensor
    mode: str = "frozen"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_texts(self) -> int:
        return self.h.shape[0]

    @property
    def n_sublayers(self) -> int:
        return self.h.shape[1] - 1


class _Recorder:
    """A stand-in for a transformers Cache that records the keys/values an attention module computes."""

    def __init__(self, store: dict, layer: int):
        self.store, self.layer = store, layer

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        self.store[self.layer] = (key_states.detach(), value_states.detach())
        return key_states, value_states


class _Frozen:
    """A Cache stand-in that prepends fixed prefix keys/values to the new token's, without mutating."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        keys = self.keys.expand(key_states.shape[0], *self.keys.shape[1:])
        values = self.values.expand(value_states.shape[0], *self.values.shape[1:])
        return torch.cat([keys, key_states], dim=2), torch.cat([values, value_states], dim=2)


def _cache_kwarg(attn: torch.nn.Module) -> str:
    import inspect  # noqa: PLC0415

    params = inspect.signature(attn.forward).parameters
    return "past_key_values" if "past_key_values" in params and "cache" not in params else "cache"


def frozen_context(model, token_ids: Sequence[Sequence[int]], *, mode: str = "frozen",
                   pad_token_id: int | None = None) -> Context:
    """One forward of the texts ``token_ids`` (right-padded batch) recording, at each text's last token, the
    RS entering every sublayer and leaving the last layer (capture's hooks: :func:`~..capture.recording`), and
    every layer's keys/values.

    model: its :class:`~transformer_dynamics.residual.ResidualModel` (whose pad id pads the batch), or the model as
    loaded with ``pad_token_id`` (default 0). Returns a :class:`Context` for ``B = len(token_ids)`` texts.
    ``mode="single"`` keeps only the RS.
    """
    if mode not in CONTEXTS:
        raise ValueError(f"mode must be one of {CONTEXTS}, got {mode!r}")
    if not token_ids or any(len(s) == 0 for s in token_ids):
        raise ValueError("need at least one text, each with at least one token")
    rm = residual.of(model, pad_id=pad_token_id)
    layers, n_layers = rm.layers, rm.n_layers
    param = next(rm.model.parameters())
    input_ids, mask, last = pad_right(token_ids, rm.pad_id)
    B = len(token_ids)
    out = torch.empty((B, rm.n_points, rm.d_model), dtype=param.dtype)
    kv: dict[int, tuple] = {}
    handles = []
    for l, layer in enumerate(layers):
        attn = layer.self_attn
        name = _cache_kwarg(attn)

        def pre(module, args, kwargs, l=l, name=name):
            kwargs = dict(kwargs)
            kwargs.pop("past_key_values" if name == "cache" else "cache", None)
            kwargs[name] = _Recorder(kv, l)
            return args, kwargs
        handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with recording(rm, torch.arange(B), last, out), torch.no_grad():
            forward_until_stop(rm, input_ids=input_ids.to(param.device), attention_mask=mask.to(param.device))
    finally:
        for h in handles:
            h.remove()
    if len(kv) != n_layers:
        raise RuntimeError("the attention modules did not call cache.update: this architecture's attention "
                           "is not supported by dynamics.frozen_context")
    h = out.to(param.device)
    positions = last.to(param.device)
    keys, values, masks = [], [], []
    if mode == "frozen":
        T = input_ids.shape[1]
        j = torch.arange(T, device=param.device)
        for l, layer in enumerate(layers):
            k, v = kv[l]
            window = getattr(layer.self_attn, "sliding_window", None)
            allowed = j[None, :] < positions[:, None]
            if window is not None:
                allowed &= j[None, :] > positions[:, None] - int(window)
            allowed = torch.cat([allowed, torch.ones((B, 1), dtype=torch.bool, device=param.device)], dim=1)
            m = torch.zeros(allowed.shape, dtype=param.dtype, device=param.device)
            m = m.masked_fill(~allowed, torch.finfo(param.dtype).min)[:, None, None, :]
            keys.append(k)
            values.append(v)
            masks.append(m)
    return Context(h=h, keys=keys, values=values, masks=masks, positions=positions, mode=mode,
                   meta={"n_layers": n_layers, "lengths": (last + 1).tolist()})


def _rope(model, layer: torch.nn.Module, x: torch.Tensor, positions: torch.Tensor):
    """``(cos, sin)`` for the last tokens at ``positions: (B,)`` as this layer's attention expects them."""
    rotary = residual.of(model).base.rotary_emb
    pos = positions[:, None]
    layer_type = getattr(layer.self_attn, "layer_type", None)
    if layer_type is not None:
        try:
            return rotary(x, pos, layer_type)
        except TypeError:
            pass
    return rotary(x, pos)


def sublayer_map(model, ctx: Context, s: int, rows: slice | None = None, *, fast: bool = True,
                 branch: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The last token's map from sublayer ``s`` to ``s + 1`` with the context frozen: ``f(x: (B, D)) -> (B, D)``;
    ``branch=True``: the block's update alone, ``f(x) - x`` (its Jacobian is ``J_s - I`` to full relative
    precision, where ``J_s`` itself would carry the identity's rounding).

    x may also be ``(B, R, D)``: R independent copies per text (the fast path and the MLP; used by
    ``jacobians(method="replicate")``).

    Even ``s = 2l``: ``x + post(attn(norm(x)))`` with the prefix's keys/values of layer ``l`` and the last
    token's RoPE position; odd ``s``: ``x + post(mlp(norm(x)))``; ``post`` is the identity or (Gemma 2/3) the
    branch's output norm. rows: a slice of the context's texts (B is its length). fast: for Llama/Gemma-like
    attention, the same arithmetic with the prefix as a constant operand (:func:`_attend_last`, several times
    faster under vmap); else (or ``False``) the module itself is called with the prefix as its cache.
    """
    n_sub = ctx.n_sublayers
    if not 0 <= int(s) < n_sub:
        raise ValueError(f"sublayer must be in [0, {n_sub - 1}], got {s}")
    arch = residual.of(model).architecture
    l, kind = divmod(int(s), 2)
    layer = residual.of(model).layers[l]
    rows = rows if rows is not None else slice(None)
    identity = lambda y: y  # noqa: E731
    if kind == 1:
        norm = getattr(layer, arch.mlp_norm)
        post = getattr(layer, "post_feedforward_layernorm", None) or identity
        def f_mlp(x):
            y = x[:, None, :] if x.ndim == 2 else x
            out = post(layer.mlp(norm(y)))
            out = out if branch else y + out
            return out[:, 0] if x.ndim == 2 else out
        return f_mlp
    attn, norm, post, pe = _attention_parts(model, ctx, s, rows)
    post = post or identity
    name = _cache_kwarg(attn)
    if ctx.mode == "frozen" and fast and _fast_supported(attn):
        keys, values, mask = ctx.keys[l][rows], ctx.values[l][rows], ctx.masks[l][rows][..., :-1]
        def f_attn(x):
            y = x[:, None, :] if x.ndim == 2 else x
            out = post(_attend_last(attn, norm(y), pe, keys, values, mask))
            out = out if branch else y + out
            return out[:, 0] if x.ndim == 2 else out
        return f_attn
    if ctx.mode == "frozen":
        cache = _Frozen(ctx.keys[l][rows], ctx.values[l][rows])
        mask = ctx.masks[l][rows]
    else:
        cache, mask = None, None

    def f(x):
        with _eager(attn):
            out = attn(hidden_states=norm(x[:, None, :]), position_embeddings=pe, attention_mask=mask,
                       **{name: cache})
        out = out[0] if isinstance(out, tuple) else out
        return post(out)[:, 0] if branch else x + post(out)[:, 0]
    return f


def _attention_parts(model, ctx: Context, s: int, rows: slice | None = None):
    """``(attn, norm, post, pe)`` of attention sublayer ``s = 2l``: the attention module, the norm before it, the
    norm after its output (Gemma 2/3's ``post_attention_layernorm``; None where there is none) and the RoPE
    ``(cos, sin)`` at the last tokens of ``rows`` of the context's texts."""
    rm = residual.of(model)
    arch, layer = rm.architecture, rm.layers[int(s) // 2]
    rows = rows if rows is not None else slice(None)
    post = (getattr(layer, "post_attention_layernorm", None) if arch.mlp_norm != "post_attention_layernorm"
            else None)
    pe = _rope(model, layer, ctx.h[rows, s][:, None], ctx.positions[rows])
    return layer.self_attn, getattr(layer, arch.attn_norm), post, pe


_FAST_ATTRS = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling", "num_key_value_groups")


def _fast_supported(attn: torch.nn.Module) -> bool:
    import sys  # noqa: PLC0415

    module = sys.modules.get(type(attn).__module__)
    return all(hasattr(attn, a) for a in _FAST_ATTRS) and hasattr(module, "apply_rotary_pos_emb")


def _attend_last(attn, x: torch.Tensor, pe, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                 ) -> torch.Tensor:
    """The attention output of the last token, ``x: (B, R, D)`` (normed; R independent copies of it, e.g. one
    per basis vector), against frozen prefix ``keys, values: (B, n_kv, T, hd)`` (``mask: (B, 1, 1, T)``
    additive) and each copy's own key/value, with the module's weights. Returns ``(B, R, D)``.

    The same arithmetic as transformers' eager attention (q/k norms where the module has them, RoPE at the
    last token's position, scaling, optional logit soft-capping, softmax in at least float32), but with the
    query heads (and copies) grouped under their key/value head and the prefix scored apart from the copies'
    own keys: the prefix is a constant operand of one batched matmul, never copied per copy or per vmapped
    basis vector.
    """
    return attn.o_proj(_attend_core(attn, attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), pe, keys, values, mask))


def _attend_core(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe, keys: torch.Tensor,
                 values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`_attend_last` between the projections: from the last token's projected query, key and value
    ``q: (B, R, H hd)``, ``k, v: (B, R, n_kv hd)`` to the heads' outputs ``(B, R, H hd)`` before ``o_proj``."""
    import sys  # noqa: PLC0415

    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    B, R = q.shape[:2]
    hd, g = attn.head_dim, attn.num_key_value_groups
    q = q.view(B, R, -1, hd).transpose(1, 2)  # (B, H, R, hd)
    k = k.view(B, R, -1, hd).transpose(1, 2)  # (B, n_kv, R, hd)
    v = v.view(B, R, -1, hd).transpose(1, 2)
    if getattr(attn, "q_norm", None) is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = pe
    q, k = rope(q, k, cos, sin)
    n_kv, T = k.shape[1], keys.shape[2]
    q = q.reshape(B, n_kv, g, R, hd)  # query head h reads key/value head h // g
    prefix = (q.reshape(B, n_kv, g * R, hd) @ keys.transpose(-1, -2)).view(B, n_kv, g, R, T)
    own = (q * k[:, :, None]).sum(-1, keepdim=True)  # (B, n_kv, g, R, 1)
    scores = torch.cat([prefix, own], dim=-1) * attn.scaling
    softcap = getattr(attn, "attn_logit_softcapping", None)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = torch.cat([scores[..., :-1] + mask[:, :, :, None, :], scores[..., -1:]], dim=-1)
    w = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    out = (w[..., :-1].reshape(B, n_kv, g * R, T) @ values).view(B, n_kv, g, R, hd) + w[..., -1:] * v[:, :, None]
    return out.permute(0, 3, 1, 2, 4).reshape(B, R, -1)


@contextmanager
def _eager(attn: torch.nn.Module):
    """Run ``attn`` with the eager (plain matmul + softmax) attention: torch's fused SDPA kernels have no
    forward-mode derivative and no vmap rule for their backward on CPU."""
    config = attn.config
    before = config._attn_implementation
    if before == "eager":
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


def check_maps(model, ctx: Context, *, fast: bool = True) -> np.ndarray:
    """``(n_sublayers,)`` max over texts of ``||f_s(h_s) - h_{s+1}|| / ||h_{s+1}||``: how well the sublayer
    maps reproduce the captured RS (float32 rounding: ~1e-6; a wrong map: order 1). Frozen context only."""
    if ctx.mode != "frozen":
        raise ValueError("check_maps needs a frozen context (the single-token map is a different function)")
    err = []
    with torch.no_grad():
        for s in range(ctx.n_sublayers):
            y = sublayer_map(model, ctx, s, fast=fast)(ctx.h[:, s])
            ref = ctx.h[:, s + 1]
            err.append(((y - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item())
    return np.asarray(err)
