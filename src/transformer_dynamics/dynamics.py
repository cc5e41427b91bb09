"""The residual stream's local dynamics: per-sublayer Jacobians at the last token, their spectral geometry,
finite-time Lyapunov exponents, and jPCA (beyond the paper; the questions of the authors' sequel,
arXiv 2605.14258).

**The sublayer maps.** Sublayer ``s`` of the residual stream (RS) is mapped to ``s + 1`` by one block of a
decoder layer: for even ``s = 2l`` the attention block of layer ``l`` (``x + attn(norm(x))``; Gemma 2/3 also
normalise the branch's output with ``post_attention_layernorm``), for odd ``s = 2l + 1`` its MLP block
(``x + mlp(norm(x))``; Gemma: ``post_feedforward_layernorm`` on the branch). The maps call the model's own
modules, so they are the module's real forward: :func:`check_maps` verifies that they reproduce the captured
RS.

**The frozen-context linearisation.** At the last token ``T`` of a text, attention reads the keys and
values of the earlier positions. By causality those do not depend on the last token's RS, so holding them
at their values for that text (computed once, by one forward of the text) makes ``h_T -> h_T'`` an exact
function of the last token's RS alone, and its Jacobian ``J_s = d h_{s+1} / d h_s`` is the exact last-token
Jacobian with the context fixed; products ``J_{s'} ... J_s`` are exact end-to-end last-token Jacobians with
the context fixed. ``context="single"`` is the sequel's variant: the last token's RS fed alone (it attends
only to itself, no prefix).

==========================  ====================================================================================
function                    what
==========================  ====================================================================================
:func:`frozen_context`      one forward per batch of texts: the linearisation points and the prefix's keys/values
:func:`sublayer_map`        ``f_s: (B, D) -> (B, D)``, the last token's sublayer map with the context frozen
:func:`jacobians`           ``J: (B, n, D, D)``: ``torch.func`` vjps vmapped over the output basis (MLP), one
                            backward through D copies of the state (attention: the prefix stays one matmul operand)
:func:`spectra`             eigen/singular-value measures of ``(..., D, D)`` matrices (rotation dominance,
                            Henrici departure, antisymmetric share, effective rank)
:func:`lyapunov`            top-k finite-time Lyapunov exponents of ``J_{S-1} ... J_s`` for every start ``s`` by
                            Benettin's method (products with vectors + QR), from matrices or from
                            :func:`jvp_steps` (no full matrix: any width)
:func:`jpca`                Churchland et al. (2012): skew-symmetric vs unconstrained linear dynamics on the
                            top-k PCs of the mean-centred trajectories over sublayers
:func:`local_dynamics`      all of the above for a list of texts, streamed (what chapter 7 calls)
:func:`sequel_statistic`    the sequel's claims (:data:`SEQUEL_CLAIMS`) as depth contrasts with bootstrap
                            intervals over texts, and trained-minus-random-init differences
==========================  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .capture import pad_right, record_last_token, tokenize
from .data import shuffle_token_ids
from .models import architecture, base_model, layer_modules

__all__ = [
    "CONTEXTS",
    "SEQUEL_CLAIMS",
    "Context",
    "SequelClaim",
    "bottleneck_fraction",
    "JPCAResult",
    "check_maps",
    "cumulative_products",
    "depth_contrast",
    "depth_thirds",
    "effective_rank",
    "frozen_context",
    "jacobians",
    "jpca",
    "jpca_projection",
    "jpca_shuffled",
    "jvp_steps",
    "learned_difference",
    "local_dynamics",
    "lyapunov",
    "matrix_steps",
    "random_init_model",
    "relative_exponents",
    "spectra",
    "sublayer_map",
    "sequel_statistic",
    "text_token_ids",
    "bottleneck_statistic",
    "lower_layers_exponent",
]

CONTEXTS = ("frozen", "single")


# --------------------------------------------------------------------------------------------------
# Texts and reference models
# --------------------------------------------------------------------------------------------------
def text_token_ids(tokenizer, texts: Sequence[str], *, condition: str = "original", seed: int = 0,
                   add_bos: bool = True, strip: bool = False) -> list[list[int]]:
    """Token ids of ``texts`` as capture makes them; ``condition="shuffled"``: the paper's control (BOS kept
    first, the other tokens permuted by ``default_rng(seed)``, one stream over the texts in order)."""
    if condition not in ("original", "shuffled"):
        raise ValueError(f"condition must be 'original' or 'shuffled', got {condition!r}")
    ids = tokenize(tokenizer, list(texts), add_bos=add_bos, strip=strip)
    if condition == "shuffled":
        bos = tokenizer.bos_token_id
        ids = shuffle_token_ids(ids, seed=seed, keep_first=[bos is not None and s[0] == bos for s in ids])
    return ids


def random_init_model(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A model with ``model``'s config and freshly initialised random weights (``from_config`` under
    ``torch.manual_seed(seed)``), same dtype and device, in eval mode: the reference for "learned"."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rand = AutoModelForCausalLM.from_config(model.config, dtype=param.dtype)
    rand.to(param.device).eval().requires_grad_(False)
    rand.config.use_cache = False
    return rand


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
                   pad_token_id: int = 0) -> Context:
    """One forward of the texts ``token_ids`` (right-padded batch) recording, at each text's last token, the
    RS entering every sublayer and leaving the last layer, and every layer's keys/values.

    Returns a :class:`Context` for ``B = len(token_ids)`` texts. ``mode="single"`` keeps only the RS.
    """
    if mode not in CONTEXTS:
        raise ValueError(f"mode must be one of {CONTEXTS}, got {mode!r}")
    if not token_ids or any(len(s) == 0 for s in token_ids):
        raise ValueError("need at least one text, each with at least one token")
    layers = layer_modules(model)
    n_layers = len(layers)
    param = next(model.parameters())
    input_ids, mask, last = pad_right(token_ids, pad_token_id)
    B, d = len(token_ids), model.config.hidden_size
    state = {"rows": torch.arange(B), "last": last,
             "out": torch.empty((B, 2 * n_layers, d), dtype=param.dtype)}
    kv: dict[int, tuple] = {}
    final: dict = {}
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
    handles.append(layers[-1].register_forward_hook(
        lambda mod, args, out: final.__setitem__("h", (out[0] if isinstance(out, tuple) else out)[
            torch.arange(B), last].detach())))
    try:
        with record_last_token(model, state, stop=False), torch.no_grad():
            base_model(model)(input_ids=input_ids.to(param.device), attention_mask=mask.to(param.device),
                              use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if len(kv) != n_layers:
        raise RuntimeError("the attention modules did not call cache.update: this architecture's attention "
                           "is not supported by dynamics.frozen_context")
    h = torch.cat([state["out"], final["h"][:, None].to(state["out"].dtype)], dim=1).to(param.device)
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
    rotary = base_model(model).rotary_emb
    pos = positions[:, None]
    layer_type = getattr(layer.self_attn, "layer_type", None)
    if layer_type is not None:
        try:
            return rotary(x, pos, layer_type)
        except TypeError:
            pass
    return rotary(x, pos)


def sublayer_map(model, ctx: Context, s: int, rows: slice | None = None, *, fast: bool = True
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The last token's map from sublayer ``s`` to ``s + 1`` with the context frozen: ``f(x: (B, D)) -> (B, D)``.

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
    arch = architecture(model)
    l, kind = divmod(int(s), 2)
    layer = layer_modules(model)[l]
    rows = rows if rows is not None else slice(None)
    identity = lambda y: y  # noqa: E731
    if kind == 1:
        norm = getattr(layer, arch.mlp_norm)
        post = getattr(layer, "post_feedforward_layernorm", None) or identity
        def f_mlp(x):
            y = x[:, None, :] if x.ndim == 2 else x
            out = y + post(layer.mlp(norm(y)))
            return out[:, 0] if x.ndim == 2 else out
        return f_mlp
    norm = getattr(layer, arch.attn_norm)
    post = (getattr(layer, "post_attention_layernorm", None) if arch.mlp_norm != "post_attention_layernorm"
            else None) or identity
    attn = layer.self_attn
    name = _cache_kwarg(attn)
    positions = ctx.positions[rows]
    pe = _rope(model, layer, ctx.h[rows, s][:, None], positions)
    if ctx.mode == "frozen" and fast and _fast_supported(attn):
        keys, values, mask = ctx.keys[l][rows], ctx.values[l][rows], ctx.masks[l][rows][..., :-1]
        def f_attn(x):
            y = x[:, None, :] if x.ndim == 2 else x
            out = y + post(_attend_last(attn, norm(y), pe, keys, values, mask))
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
        return x + post(out)[:, 0]
    return f


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
    import sys  # noqa: PLC0415

    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    B, R = x.shape[:2]
    hd, g = attn.head_dim, attn.num_key_value_groups
    q = attn.q_proj(x).view(B, R, -1, hd).transpose(1, 2)  # (B, H, R, hd)
    k = attn.k_proj(x).view(B, R, -1, hd).transpose(1, 2)  # (B, n_kv, R, hd)
    v = attn.v_proj(x).view(B, R, -1, hd).transpose(1, 2)
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
    return attn.o_proj(out.permute(0, 3, 1, 2, 4).reshape(B, R, -1))


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


# --------------------------------------------------------------------------------------------------
# Jacobians and Jacobian-vector products
# --------------------------------------------------------------------------------------------------
def jacobians(model, ctx: Context, sublayers: Sequence[int] | None = None, *, method: str = "auto",
              chunk_size: int | None = None, fast: bool = True) -> torch.Tensor:
    """Full last-token Jacobians ``J[b, i] = d f_s(x) / d x`` at ``x = h_s`` of text ``b``.

    sublayers: ``(n,)`` which (default: all ``2L``). method: ``"rev"`` (``torch.func.vjp``, one per output
    unit, vmapped over the ``D`` basis vectors, all texts at once: the maps act on each text's row
    separately), ``"fwd"`` (``torch.func.jvp`` over the input basis), ``"replicate"`` (the map evaluated on
    ``D`` copies of each text's state, one backward with the basis as cotangents: the prefix stays one
    operand of a batched matmul, where vmap copies it per basis vector) or ``"auto"``: replicate for
    attention sublayers on the fast path, rev otherwise. chunk_size: basis vectors per vmap chunk (bounds
    memory; None: all).
    Returns ``J: (B, n, D, D)`` (output index, input index) in the model's dtype.
    """
    if method not in ("auto", "rev", "fwd", "replicate"):
        raise ValueError(f"method must be 'auto', 'rev', 'fwd' or 'replicate', got {method!r}")
    sublayers = list(range(ctx.n_sublayers)) if sublayers is None else [int(s) for s in sublayers]
    B, D = ctx.n_texts, ctx.h.shape[-1]
    out = torch.empty((B, len(sublayers), D, D), dtype=ctx.h.dtype, device=ctx.h.device)
    eye = torch.eye(D, dtype=ctx.h.dtype, device=ctx.h.device)
    basis = eye[:, None, :].expand(D, B, D)
    for i, s in enumerate(sublayers):
        f = sublayer_map(model, ctx, s, fast=fast)
        x = ctx.h[:, s]
        how = method
        if method == "auto":
            attn_fast = s % 2 == 0 and fast and ctx.mode == "frozen" and _fast_supported(
                layer_modules(model)[s // 2].self_attn)
            how = "replicate" if attn_fast else "rev"
        if how == "replicate":
            if s % 2 == 0 and not (fast and ctx.mode == "frozen"):
                raise ValueError("method='replicate' needs the fast attention path (fast=True, frozen context)")
            with torch.enable_grad():
                X = x[:, None, :].expand(B, D, D).clone().requires_grad_(True)
                out[:, i] = torch.autograd.grad(f(X), X, grad_outputs=eye.expand(B, D, D))[0]
        elif how == "rev":
            _, vjp_fn = torch.func.vjp(f, x)
            rows = torch.func.vmap(lambda u: vjp_fn(u)[0], chunk_size=chunk_size)(basis)  # (D_out, B, D_in)
            out[:, i] = rows.permute(1, 0, 2)
        else:
            cols = torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1], chunk_size=chunk_size)(basis)
            out[:, i] = cols.permute(1, 2, 0)  # (D_in, B, D_out) -> (B, D_out, D_in)
    return out


@dataclass
class _Step:
    """One linear step ``v -> J v`` (and ``J^T v``) on batches ``(B, k, D)`` of vectors."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    apply_t: Callable[[torch.Tensor], torch.Tensor]


def matrix_steps(J: torch.Tensor | np.ndarray) -> list[_Step]:
    """Steps for :func:`lyapunov` from explicit matrices ``J: (B, S, D, D)`` (or ``(S, D, D)``)."""
    J = torch.as_tensor(J)
    if J.ndim == 3:
        J = J[None]
    if J.ndim != 4 or J.shape[-1] != J.shape[-2]:
        raise ValueError(f"J must be (B, S, D, D) or (S, D, D) square matrices, got {tuple(J.shape)}")
    cast = lambda V: V.to(J.device, J.dtype)  # noqa: E731
    return [_Step(lambda V, M=J[:, t]: cast(V) @ M.mT, lambda V, M=J[:, t]: cast(V) @ M) for t in range(J.shape[1])]


def jvp_steps(model, ctx: Context, sublayers: Sequence[int] | None = None) -> list[_Step]:
    """Steps for :func:`lyapunov` by Jacobian-vector products through the model: never a full matrix.

    Each step maps ``V: (B, k, D) -> (B, k, D)`` with ``J_s`` (``torch.func.jvp``) or ``J_s^T`` (``vjp``),
    vmapped over the k vectors.
    """
    sublayers = list(range(ctx.n_sublayers)) if sublayers is None else [int(s) for s in sublayers]
    steps = []
    for s in sublayers:
        f = sublayer_map(model, ctx, s)
        x = ctx.h[:, s]

        def apply(V, f=f, x=x):
            V = V.to(x.device, x.dtype)
            return torch.func.vmap(lambda v: torch.func.jvp(f, (x,), (v,))[1], in_dims=1, out_dims=1)(V)

        def apply_t(V, f=f, x=x):
            _, vjp_fn = torch.func.vjp(f, x)
            V = V.to(x.device, x.dtype)
            return torch.func.vmap(lambda u: vjp_fn(u)[0], in_dims=1, out_dims=1)(V)
        steps.append(_Step(apply, apply_t))
    return steps


# --------------------------------------------------------------------------------------------------
# Spectral geometry
# --------------------------------------------------------------------------------------------------
def effective_rank(sv: np.ndarray) -> np.ndarray:
    """Roy & Vetterli's effective rank ``exp(H(p))``, ``p = sigma / sum(sigma)``, of singular values
    ``sv: (..., D)`` -> ``(...)``. A rank-r matrix with equal singular values has effective rank r."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, sv / total, 0.0)
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
    return np.exp(h)


def spectra(J: torch.Tensor | np.ndarray, *, tol: float = 1e-6, update: bool = False, singular: bool = True,
            eigenvalues: bool = False) -> dict[str, np.ndarray]:
    """Spectral measures of square matrices ``J: (..., D, D)`` (computed in float64), each ``(...)``:

    - ``spectral_radius``: ``max |lambda|``;
    - ``rotation_dominance``: fraction of eigenvalues in complex-conjugate pairs
      (``|Im lambda| > tol * max(1, |lambda|)``);
    - ``rotation_angle``: mean ``|arg lambda|`` over the complex ones (radians; 0 if none);
    - ``departure``: Henrici's departure from normality ``sqrt(||J||_F^2 - sum |lambda|^2) / ||J||_F``
      (0 for normal matrices);
    - ``antisymmetric_share``: ``||(J - J^T) / 2||_F / ||J||_F``;
    - ``effective_rank`` (``singular=True``): :func:`effective_rank` of the singular values.

    update: also the same measures of the update ``J - I`` (suffix ``_update``; shares the eigenvalues:
    ``eig(J - I) = eig(J) - 1``) -- the residual connection's identity dominates ``J`` itself.
    eigenvalues: also ``eigenvalues: (..., D)`` complex.
    """
    A = torch.as_tensor(J).to(torch.float64)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"J must be (..., D, D) square matrices, got {tuple(A.shape)}")
    lam, sv = _decompose(A, singular)
    out = _eig_measures(A, lam, tol)
    if eigenvalues:
        out["eigenvalues"] = lam.numpy()
    if singular:
        out["effective_rank"] = effective_rank(sv.numpy())
    if update:
        eye = torch.eye(A.shape[-1], dtype=A.dtype)
        for k, v in _eig_measures(A - eye, lam - 1, tol).items():
            out[f"{k}_update"] = v
    return out


def _decompose(A: torch.Tensor, singular: bool, eig: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Eigenvalues ``(..., D)`` complex and singular values ``(..., D)`` of float64 ``A: (..., D, D)``, one
    LAPACK call per matrix spread over ``torch.get_num_threads()`` threads (LAPACK releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    flat = A.reshape(-1, *A.shape[-2:]).numpy()
    eigvals = lambda M: np.linalg.eigvals(M)  # noqa: E731
    svd = lambda M: np.linalg.svd(M, compute_uv=False)  # noqa: E731
    workers = max(1, min(torch.get_num_threads(), len(flat)))
    # one BLAS thread per matrix, the matrices in parallel: a multi-threaded OpenBLAS eig on busy cores spins
    # (measured 10x slower with 2 threads on 2 loaded cores)
    with _blas_threads(1), ThreadPoolExecutor(workers) as pool:
        lam = np.stack(list(pool.map(eigvals, flat))) if eig else None
        sv = np.stack(list(pool.map(svd, flat))) if singular else None
    lam = None if lam is None else torch.as_tensor(lam.astype(np.complex128)).reshape(*A.shape[:-1])
    return lam, (None if sv is None else torch.as_tensor(sv).reshape(*A.shape[:-1]))


@contextmanager
def _blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _eig_measures(A: torch.Tensor, lam: torch.Tensor, tol: float) -> dict[str, np.ndarray]:
    absl = lam.abs()
    complex_ = lam.imag.abs() > tol * torch.clamp(absl, min=1.0)
    fro2 = (A ** 2).sum(dim=(-2, -1))
    anti = ((A - A.mT) / 2).pow(2).sum(dim=(-2, -1)).sqrt()
    n_c = complex_.sum(-1)
    angle = torch.where(complex_, lam.angle().abs(), torch.zeros_like(absl)).sum(-1) / n_c.clamp(min=1)
    fro = fro2.sqrt()
    safe = torch.where(fro > 0, fro, torch.ones_like(fro))
    return {"spectral_radius": absl.amax(-1).numpy(),
            "rotation_dominance": complex_.double().mean(-1).numpy(),
            "rotation_angle": angle.numpy(),
            "departure": ((fro2 - (absl ** 2).sum(-1)).clamp(min=0).sqrt() / safe).numpy(),
            "antisymmetric_share": (anti / safe).numpy()}


def cumulative_products(J: torch.Tensor) -> torch.Tensor:
    """``P: (B, S, D, D)`` with ``P[:, s] = J[:, S-1] @ ... @ J[:, s]``: the end-to-end last-token Jacobian
    from sublayer ``s`` to the last layer's output, for ``J: (B, S, D, D)``."""
    P = torch.empty_like(J)
    acc = J[:, -1]
    P[:, -1] = acc
    for s in range(J.shape[1] - 2, -1, -1):
        acc = acc @ J[:, s]
        P[:, s] = acc
    return P


# --------------------------------------------------------------------------------------------------
# Finite-time Lyapunov exponents (Benettin)
# --------------------------------------------------------------------------------------------------
def _ortho(seed: int, B: int, D: int, k: int) -> torch.Tensor:
    """``(B, k, D)`` float64: k random orthonormal vectors per text."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn((B, D, k), generator=g, dtype=torch.float64))[0].mT


def lyapunov(steps: Sequence[_Step], k: int = 10, *, starts: Sequence[int] | None = None, n_iter: int = 3,
             oversample: int | None = None, seed: int = 0, n_texts: int | None = None,
             d_model: int | None = None) -> np.ndarray:
    """Top-``k`` finite-time Lyapunov exponents of ``P_s = J_{S-1} ... J_s`` from every start ``s``.

    steps: ``S`` linear steps (:func:`matrix_steps` or :func:`jvp_steps`), each acting on ``(B, k, D)``.
    Benettin's method: k orthonormal vectors are pushed through the steps and re-orthonormalised by QR
    after each; the growth is read from the triangular factors (``lambda_i = (1 / n) log sigma_i`` of their
    product, per sublayer over the ``n = S - s`` steps, natural log; on a converged subspace this is the
    textbook ``(1 / n) sum log |R_ii|``). ``n_iter`` rounds of subspace iteration first (forward through
    ``J``, back through ``J^T``) turn
    the random start into the top-k right singular subspace of ``P_s``, so that the exponents are
    ``log(sigma_i(P_s)) / n`` (``n_iter=0``: the textbook single pass from random vectors); the iteration
    carries ``k + oversample`` vectors (default ``oversample = k``), so it converges at the rate of
    ``sigma_{k + oversample} / sigma_k`` rather than ``sigma_{k+1} / sigma_k``.
    Returns ``(B, len(starts), k)`` float64, each row in decreasing order. Negative: perturbations shrink.
    """
    S = len(steps)
    starts = list(range(S)) if starts is None else [int(s) for s in starts]
    if any(not 0 <= s < S for s in starts):
        raise ValueError(f"starts must be in [0, {S - 1}]")
    if n_texts is None or d_model is None:
        raise ValueError("pass n_texts and d_model (the shape of the vectors the steps act on)")
    if not 1 <= k <= d_model:
        raise ValueError(f"k must be in [1, {d_model}], got {k}")
    dtype = torch.float64
    kk = min(d_model, k + (k if oversample is None else int(oversample)))
    out = np.empty((n_texts, len(starts), k))
    for i, s in enumerate(starts):
        Q = _ortho(seed + s, n_texts, d_model, kk)
        for _ in range(n_iter):
            for t in range(s, S):
                Q = torch.linalg.qr(_apply(steps[t].apply, Q).mT)[0].mT
            for t in range(S - 1, s - 1, -1):
                Q = torch.linalg.qr(_apply(steps[t].apply_t, Q).mT)[0].mT
        # last pass: accumulate the triangular factors, P_s Q = Q_n (R_n ... R_1), rescaled as they grow
        R_acc = torch.eye(kk, dtype=dtype).expand(n_texts, kk, kk)
        log_scale = torch.zeros(n_texts, dtype=dtype)
        for t in range(s, S):
            Qn, R = torch.linalg.qr(_apply(steps[t].apply, Q).mT)
            R_acc = R @ R_acc
            c = torch.linalg.matrix_norm(R_acc).clamp(min=1e-300)
            R_acc = R_acc / c[:, None, None]
            log_scale += torch.log(c)
            Q = Qn.mT
        # Rayleigh-Ritz: the singular values of P_s Q are those of the accumulated factor
        sv = torch.linalg.svdvals(R_acc)[:, :k]
        lam = ((torch.log(sv) + log_scale[:, None]) / (S - s)).numpy()
        out[:, i] = -np.sort(-lam, axis=-1)[:, :k]
    return out


def _apply(fn, Q: torch.Tensor) -> torch.Tensor:
    """Apply a step (in its own dtype and device) to float64 CPU vectors, returning float64 CPU vectors."""
    return fn(Q).to("cpu", torch.float64)


def relative_exponents(exponents: np.ndarray, norms: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """Exponents relative to the growth of the RS itself: ``lambda - (1 / n) log(||h_S|| / ||h_s||)``.

    exponents: ``(B, n_starts, k)`` from :func:`lyapunov`; norms: ``(B, S + 1)`` the RS norm at each sublayer
    and after the last; starts: ``(n_starts,)``. Negative: a perturbation shrinks relative to the state
    (chapter 5 measures recovery in relative distance).
    """
    norms = np.asarray(norms, dtype=np.float64)
    S = norms.shape[1] - 1
    starts = np.asarray(starts)
    growth = np.log(norms[:, -1:] / norms[:, starts]) / (S - starts)  # (B, n_starts)
    return np.asarray(exponents) - growth[..., None]


# --------------------------------------------------------------------------------------------------
# jPCA
# --------------------------------------------------------------------------------------------------
@dataclass
class JPCAResult:
    """jPCA of trajectories. r2_skew / r2_full: fraction of the variance of ``dX`` explained by the best
    skew-symmetric / unconstrained ``M`` (``dX = X M``); ratio = r2_skew / r2_full. planes: ``(n_planes, k, 2)``
    orthonormal bases of the rotational planes (in PC coordinates), fastest first; frequencies:
    ``(n_planes,)`` radians per sublayer; components: ``(k, D)`` the PCs; explained: ``(k,)`` their variance
    ratio; M_skew, M_full: ``(k, k)``."""

    r2_skew: float
    r2_full: float
    ratio: float
    planes: np.ndarray
    frequencies: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    M_skew: np.ndarray
    M_full: np.ndarray


def _skew_basis(k: int) -> np.ndarray:
    """``(k(k-1)/2, k, k)`` basis of skew-symmetric matrices."""
    iu = np.triu_indices(k, 1)
    H = np.zeros((len(iu[0]), k, k))
    H[np.arange(len(iu[0])), iu[0], iu[1]] = 1.0
    H[np.arange(len(iu[0])), iu[1], iu[0]] = -1.0
    return H


def _fit_dynamics(X: np.ndarray, dX: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Least squares ``dX ~ X M`` for ``X, dX: (n, k)``: (M_skew, M_full, r2_skew, r2_full)."""
    M_full = np.linalg.lstsq(X, dX, rcond=None)[0]
    H = _skew_basis(X.shape[1])
    design = np.einsum("nk,pkj->pnj", X, H).reshape(len(H), -1).T
    m = np.linalg.lstsq(design, dX.ravel(), rcond=None)[0]
    M_skew = np.einsum("p,pkj->kj", m, H)
    tot = ((dX - dX.mean(0)) ** 2).sum()
    r2 = lambda M: 1.0 - ((dX - X @ M) ** 2).sum() / tot  # noqa: E731
    return M_skew, M_full, float(r2(M_skew)), float(r2(M_full))


def jpca_projection(rs: np.ndarray, k: int = 6, *, soft_norm: float | None = 5.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jPCA's preprocessing of ``rs: (n_samples, n_sublayers, d_model)``: optional soft normalisation of each
    unit (divide by its range + ``soft_norm`` times the median range: the RS's massive units would otherwise be
    the whole PCA), subtraction of the cross-text mean at each sublayer, projection on the top ``k`` PCs.
    Returns ``(Z: (n_samples, n_sublayers, k), components: (k, d_model), explained: (k,))``."""
    rs = np.asarray(rs, dtype=np.float64)
    if rs.ndim != 3 or rs.shape[1] < 3 or rs.shape[0] < 1:
        raise ValueError(f"rs must be (n_samples, n_sublayers >= 3, d_model), got shape {rs.shape}")
    if k < 2 or k % 2 or k > min(rs.shape[0] * rs.shape[1], rs.shape[2]):
        raise ValueError(f"k must be even (rotational planes come in pairs), >= 2 and at most the number of "
                         f"units and points; got {k}")
    if soft_norm is not None:
        flat = rs.reshape(-1, rs.shape[-1])
        span = flat.max(0) - flat.min(0)
        rs = rs / (span + soft_norm * np.median(span) + 1e-300)
    Xc = rs - rs.mean(axis=0, keepdims=True)
    n, S, D = Xc.shape
    flat = Xc.reshape(-1, D)
    _, sv, Vt = np.linalg.svd(flat, full_matrices=False)
    comps = Vt[:k]
    return (flat @ comps.T).reshape(n, S, k), comps, (sv[:k] ** 2) / (sv ** 2).sum()


def jpca(rs: np.ndarray, k: int = 6, *, soft_norm: float | None = 5.0, projected: bool = False) -> JPCAResult:
    """jPCA (Churchland et al., Nature 2012) on trajectories over sublayers.

    rs: ``(n_samples, n_sublayers, d_model)`` (texts play the role of conditions, sublayers of time), reduced by
    :func:`jpca_projection`; or, with ``projected=True``, already ``Z: (n_samples, n_sublayers, k)``.
    ``dX = Z[:, 1:] - Z[:, :-1]`` is fitted against the midpoints ``(Z[:, 1:] + Z[:, :-1]) / 2`` by an
    unconstrained and a skew-symmetric ``M`` (least squares; the skew one over the ``k(k-1)/2`` free entries).
    The rotational planes are the eigenvector pairs of ``M_skew`` (eigenvalues ``±i omega``), fastest first.
    """
    if projected:
        Z = np.asarray(rs, dtype=np.float64)
        if Z.ndim != 3 or Z.shape[1] < 3 or Z.shape[2] % 2:
            raise ValueError(f"projected Z must be (n_samples, n_sublayers >= 3, even k), got {Z.shape}")
        comps, explained = np.full((Z.shape[2], 0), np.nan), np.full(Z.shape[2], np.nan)
    else:
        Z, comps, explained = jpca_projection(rs, k, soft_norm=soft_norm)
    k = Z.shape[2]
    dX = (Z[:, 1:] - Z[:, :-1]).reshape(-1, k)
    X = ((Z[:, 1:] + Z[:, :-1]) / 2).reshape(-1, k)
    M_skew, M_full, r2s, r2f = _fit_dynamics(X, dX)
    w, V = np.linalg.eig(M_skew)
    planes, freqs = [], []
    for i in np.argsort(-w.imag):
        if w[i].imag > 1e-12:
            q, _ = np.linalg.qr(np.stack([V[:, i].real, V[:, i].imag], axis=1))
            planes.append(q)
            freqs.append(float(w[i].imag))
    return JPCAResult(r2_skew=r2s, r2_full=r2f, ratio=r2s / r2f if r2f > 0 else float("nan"),
                      planes=np.asarray(planes).reshape(-1, k, 2), frequencies=np.asarray(freqs),
                      components=comps, explained=explained, M_skew=M_skew, M_full=M_full)


def jpca_shuffled(rs: np.ndarray, k: int = 6, *, n_shuffles: int = 20, seed: int = 0,
                  soft_norm: float | None = 5.0, projected: bool = False) -> np.ndarray:
    """The layer-shuffled control: :func:`jpca`'s fits after permuting the sublayer order (one random
    permutation per shuffle, the same for every text: each text keeps its states and loses their order; the
    PCA is unchanged, so it is done once; ``projected=True``: ``rs`` is already :func:`jpca_projection`'s
    ``Z``). Returns ``(n_shuffles, 3)``: r2_skew, r2_full, ratio."""
    Z = np.asarray(rs, dtype=np.float64) if projected else jpca_projection(rs, k, soft_norm=soft_norm)[0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_shuffles):
        res = jpca(Z[:, rng.permutation(Z.shape[1])], projected=True)
        out.append((res.r2_skew, res.r2_full, res.ratio))
    return np.asarray(out).reshape(-1, 3)


# --------------------------------------------------------------------------------------------------
# Statistics the claims are decided on (bootstrap over texts)
# --------------------------------------------------------------------------------------------------
def depth_thirds(n_sublayers: int, kind: str = "all") -> dict[str, np.ndarray]:
    """Sublayer indices of the early, middle and late thirds of depth (by layer), for ``kind`` ``"attn"``
    (even), ``"mlp"`` (odd) or ``"all"``. Returns ``{"early": (n,), "middle": (n,), "late": (n,)}``."""
    if kind not in ("attn", "mlp", "all"):
        raise ValueError(f"kind must be 'attn', 'mlp' or 'all', got {kind!r}")
    s = np.arange(n_sublayers)
    s = s[s % 2 == 0] if kind == "attn" else s[s % 2 == 1] if kind == "mlp" else s
    third = np.minimum((3 * (s // 2)) // (n_sublayers // 2), 2)
    return {name: s[third == i] for i, name in enumerate(("early", "middle", "late"))}


def depth_contrast(values: np.ndarray, *, kind: str = "all", a: str = "early", b: str = "late",
                   n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` over the ``a`` third of depth minus over the ``b`` third, with a 95% percentile
    bootstrap interval over texts. values: ``(n_texts, n_sublayers)`` per-text measures (e.g. rotation
    dominance). Returns ``(estimate, low, high)``. E.g. the sequel's "early layers rotation-dominated":
    early minus late rotation dominance > 0 (the interval above 0)."""
    from .bootstrap import bootstrap  # noqa: PLC0415

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"values must be (n_texts >= 2, n_sublayers), got shape {values.shape}")
    thirds = depth_thirds(values.shape[1], kind)
    diff = values[:, thirds[a]].mean(1) - values[:, thirds[b]].mean(1)
    return bootstrap("mean", diff, n_boot=n_boot, seed=seed)


def learned_difference(trained: np.ndarray, random: np.ndarray, *, kind: str = "all", a: str = "early",
                       b: str = "late", n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """How much more of a depth contrast the trained model has than the same architecture at random init:
    ``contrast(trained) - contrast(random)`` with a paired bootstrap over texts (the same texts in both).
    trained, random: ``(n_texts, n_sublayers)``. Returns ``(estimate, low, high)``; > 0 with the interval
    above 0: the structure is learned."""
    from .bootstrap import bootstrap  # noqa: PLC0415

    trained, random = np.asarray(trained, dtype=np.float64), np.asarray(random, dtype=np.float64)
    if trained.shape != random.shape:
        raise ValueError(f"trained and random must be the same texts: shapes {trained.shape} vs {random.shape}")
    thirds = depth_thirds(trained.shape[1], kind)
    d = lambda v: v[:, thirds[a]].mean(1) - v[:, thirds[b]].mean(1)  # noqa: E731
    return bootstrap("mean", d(trained) - d(random), n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------------
# Everything for a list of texts, streamed (what a chapter calls)
# --------------------------------------------------------------------------------------------------
def local_dynamics(model, token_ids: Sequence[Sequence[int]], *, batch_size: int = 4, context: str = "frozen",
                   k: int = 10, lyapunov_starts: Sequence[int] | None = None, n_iter: int = 2,
                   cumulative: bool = True, pad_token_id: int = 0, keep_eigenvalues: bool = True,
                   chunk_size: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Jacobians of every sublayer for ``B = len(token_ids)`` texts, streamed: a batch's Jacobians are
    computed from the last sublayer down, summarised and dropped, so at most two ``(batch, D, D)`` matrices per
    text are held (the current ``J_s`` and the product ``P_s = J_{S-1} ... J_s``) at any width; chunk_size
    bounds the vmap over the D basis vectors (see :func:`jacobians`).

    Returns a dict of arrays (``S = 2L`` sublayers):

    - every key of :func:`spectra` with ``update=True``: ``(B, S)`` per-text measures of ``J_s``;
    - ``cumulative_effective_rank``, ``cumulative_growth`` (``cumulative=True``): ``(B, S)`` the effective rank
      of ``P_s`` and ``||P_s||_F / sqrt(D)`` (the mean gain of a random unit perturbation at ``s``);
      ``exponents``: ``(B, S, k)`` the exact top-k finite-time Lyapunov exponents ``log sigma_i(P_s) / (S - s)``;
      ``growth_to_last``: ``(B, S)`` ``||J_{S-2} ... J_s||_F / sqrt(D)`` (to the last recorded sublayer, NaN at
      ``S - 1``): with the RS norms, the linear prediction of chapter 5's noise recovery;
    - ``benettin``: ``(B, n_starts, k)`` the same by :func:`lyapunov` from ``lyapunov_starts`` (default: none
      if ``cumulative`` else every sublayer) through :func:`jvp_steps`: no full matrix;
    - ``norms``: ``(B, S + 1)`` the RS norm at each sublayer and after the last; ``d_model``: ``(B,)`` D;
      ``map_error``: ``(S,)``
      :func:`check_maps` (frozen context); ``eigenvalues``: ``(B, S, D)`` complex (``keep_eigenvalues``).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    token_ids = [list(t) for t in token_ids]
    B = len(token_ids)
    if B < 1:
        raise ValueError("need at least one text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks, errors = [], []
    starts = (list(lyapunov_starts) if lyapunov_starts is not None else [] if cumulative else None)
    bar = tqdm(total=B, desc="jacobians", unit="text", disable=not progress)
    for b0 in range(0, B, batch_size):
        ctx = frozen_context(model, token_ids[b0:b0 + batch_size], mode=context, pad_token_id=pad_token_id)
        if context == "frozen":
            errors.append(check_maps(model, ctx))
        S, D = ctx.n_sublayers, ctx.h.shape[-1]
        rows: dict[str, list] = {}
        P = P_last = None
        for s in range(S - 1, -1, -1):
            J = jacobians(model, ctx, [s], chunk_size=chunk_size)[:, 0].to(torch.float64).cpu()
            st = spectra(J, update=True, eigenvalues=keep_eigenvalues)
            if cumulative:
                P = J if P is None else P @ J
                svP = _decompose(P, singular=True, eig=False)[1].numpy()
                st["cumulative_effective_rank"] = effective_rank(svP)
                st["cumulative_growth"] = np.sqrt((svP ** 2).sum(-1) / D)
                st["exponents"] = np.log(np.maximum(svP[:, :k], 1e-300)) / (S - s)
                # the product up to the last *recorded* sublayer S - 1 (where chapter 5 measures recovery)
                if s < S - 1:
                    P_last = J if P_last is None else P_last @ J
                    st["growth_to_last"] = (P_last ** 2).sum(dim=(-2, -1)).div(D).sqrt().numpy()
                else:
                    st["growth_to_last"] = np.full(J.shape[0], np.nan)
            for key, v in st.items():
                rows.setdefault(key, []).append(v)
        out = {key: np.stack(v[::-1], axis=1) for key, v in rows.items()}
        out["norms"] = ctx.h.norm(dim=-1).double().cpu().numpy()
        out["d_model"] = np.full(ctx.n_texts, D)
        if starts is None or starts:
            st_ = list(range(S)) if starts is None else starts
            out["benettin"] = lyapunov(jvp_steps(model, ctx), k=k, starts=st_, n_iter=n_iter, seed=seed,
                                       n_texts=ctx.n_texts, d_model=D)
        chunks.append(out)
        bar.update(ctx.n_texts)
    bar.close()
    result = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    if errors:
        result["map_error"] = np.max(errors, axis=0)
    return result


# --------------------------------------------------------------------------------------------------
# The sequel's claims as statistics (for the claim registry and chapter 7)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequelClaim:
    """A claim of the sequel (arXiv 2605.14258) decided by a depth contrast of a per-text measure.

    measure: a key of :func:`local_dynamics`'s result, ``(n_texts, n_sublayers)``; the statistic is the mean
    over the ``a`` third of depth minus that over the ``b`` third (:func:`depth_contrast`); sign: +1 if the
    claim says the contrast is positive, -1 if negative."""

    sentence: str
    measure: str
    a: str
    b: str
    sign: int
    registry: str  # its key in :mod:`transformer_dynamics.claims`, which decides the verdict


SEQUEL_CLAIMS: dict[str, SequelClaim] = {
    "rotation_early_minus_late": SequelClaim(
        "early layers are dominated by rotations", "rotation_dominance", "early", "late", +1,
        "dyn_rotation_early"),
    "nonnormality_early_minus_late": SequelClaim(
        "early layers are non-normal", "departure_update", "early", "late", +1,
        "dyn_nonnormal_early"),
    "antisymmetry_late_minus_early": SequelClaim(
        "late layers are near-symmetric", "antisymmetric_share_update", "late", "early", -1,
        "dyn_symmetric_late"),
}


def sequel_statistic(key: str, result: dict[str, np.ndarray], *, random: dict[str, np.ndarray] | None = None,
                     n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The statistic of :data:`SEQUEL_CLAIMS` ``key`` on one :func:`local_dynamics` result: its depth contrast
    with a 95% bootstrap interval over texts. With ``random`` (the same texts through the random-init model):
    the trained-minus-random difference of the contrast (:func:`learned_difference`, paired). Returns
    ``(estimate, low, high)``."""
    if key not in SEQUEL_CLAIMS:
        raise ValueError(f"unknown sequel claim {key!r}; one of {sorted(SEQUEL_CLAIMS)}")
    c = SEQUEL_CLAIMS[key]
    if random is None:
        return depth_contrast(result[c.measure], a=c.a, b=c.b, n_boot=n_boot, seed=seed)
    return learned_difference(result[c.measure], random[c.measure], a=c.a, b=c.b, n_boot=n_boot, seed=seed)


def bottleneck_fraction(result: dict[str, np.ndarray]) -> np.ndarray:
    """``(n_texts,)`` the effective rank of the end-to-end last-token Jacobian from sublayer 0, over D: the
    sequel's cumulative low-rank bottleneck (well below 1: perturbations are funnelled into few directions)."""
    return result["cumulative_effective_rank"][:, 0] / result["d_model"]


def bottleneck_statistic(result: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """The registry's ``dyn_bottleneck``: mean of :func:`bottleneck_fraction` over texts with a 95% bootstrap
    interval over texts. Returns ``(estimate, low, high)``."""
    from .bootstrap import bootstrap  # noqa: PLC0415

    return bootstrap("mean", bottleneck_fraction(result).astype(np.float64), n_boot=n_boot, seed=seed)


def lower_layers_exponent(result: dict[str, np.ndarray], sublayers: Sequence[int], *, n_boot: int = 1000,
                          seed: int = 0) -> tuple[float, float, float]:
    """The registry's ``attractor_lower_exponents``: the largest, over ``sublayers`` (the lower perturbed
    layers' inputs), of the median over texts of the top exponent relative to the RS's own growth
    (:func:`relative_exponents`), with a 95% percentile bootstrap interval over texts. Returns
    ``(estimate, low, high)``; below 0 with the interval: perturbations shrink relative to the state."""
    s = np.asarray(sublayers)
    rel = relative_exponents(result["exponents"][:, s, :1], result["norms"], s)[:, :, 0]  # (B, n)
    stat = lambda x: float(np.max(np.median(x, axis=0)))  # noqa: E731
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rel.shape[0], size=(n_boot, rel.shape[0]))
    reps = np.array([stat(rel[i]) for i in idx])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return stat(rel), float(lo), float(hi)
