"""Derivatives of the sublayer maps (:mod:`.maps`) at the last token, with the context frozen.

:func:`jacobians`: full matrices ``J: (B, n, D, D)`` (or of the update ``J - I``): one backward through ``D``
copies of the state for attention, the MLP's own structure for gated MLPs, ``torch.func`` vjps vmapped over the
output basis otherwise. :func:`matrix_steps` and
:func:`jvp_steps`: the linear steps ``V: (B, k, D) -> J V`` (and ``J^T V``) that :func:`~.exponents.lyapunov`
pushes vectors through, from explicit matrices or by Jacobian-vector products (no full matrix: any width).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import residual
from ..validation import check_positive_int
from .maps import Context, _attend_core, _attention_parts, _fast_supported, sublayer_map

__all__ = ["jacobians", "jvp_steps", "matrix_steps"]


def jacobians(model, ctx: Context, sublayers: Sequence[int] | None = None, *, method: str = "auto",
              update: bool = False, chunk_size: int | None = None, fast: bool = True) -> torch.Tensor:
    """Full last-token Jacobians ``J[b, i] = d f_s(x) / d x`` at ``x = h_s`` of text ``b``, all texts at once.

    sublayers: ``(n,)`` which (default: all ``2L``). update: the Jacobian of the block's update alone,
    ``J_s - I`` (:func:`~.maps.sublayer_map` with ``branch=True``): the same numbers without the identity's
    rounding. method:

    - ``"rev"``: ``torch.func.vjp``, one per output unit, vmapped over the ``D`` basis vectors;
    - ``"fwd"``: ``torch.func.jvp`` over the input basis;
    - ``"replicate"``: the map evaluated on ``D`` copies of each text's state and one backward with the basis as
      cotangents (the prefix stays one operand of a batched matmul, where vmap would copy it per basis vector);
    - ``"structured"``: the block's own factorisation, between the Jacobians of the norms before and after it.
      MLPs computing ``down(act(gate(y)) * up(y))`` (Llama's, Gemma's): ``W_down (a W_gate + b W_up)`` with
      ``a = act'(gate(y)) up(y)``, ``b = act(gate(y))``, one ``(D, I) @ (I, D)`` product per text where vjps take
      three. Attention on the fast path (frozen context): ``W_o M`` where ``M``'s head-``h`` rows are the
      Jacobians of that head's output with respect to its own query, key and value (``hd x hd`` blocks from one
      backward through ``g hd`` copies of the attention between the projections, q/k norms, RoPE and
      soft-capping included) times the projections' rows: ``g hd`` copies instead of ``D``, of the cheap part;
    - ``"auto"``: structured where the block allows it, else replicate for attention on the fast path, else rev.

    chunk_size: basis vectors per vmap chunk (rev, fwd; bounds memory; None: all).
    Returns ``(B, n, D, D)`` (output index, input index) in the model's dtype.
    """
    if method not in ("auto", "rev", "fwd", "replicate", "structured"):
        raise ValueError(f"method must be 'auto', 'rev', 'fwd', 'replicate' or 'structured', got {method!r}")
    chunk_size = check_positive_int(chunk_size, "chunk_size", none=True)
    sublayers = list(range(ctx.n_sublayers)) if sublayers is None else [int(s) for s in sublayers]
    B, D = ctx.n_texts, ctx.h.shape[-1]
    out = torch.empty((B, len(sublayers), D, D), dtype=ctx.h.dtype, device=ctx.h.device)
    eye = torch.eye(D, dtype=ctx.h.dtype, device=ctx.h.device)
    basis = eye[:, None, :].expand(D, B, D)
    for i, s in enumerate(sublayers):
        f = sublayer_map(model, ctx, s, fast=fast, branch=update)
        x = ctx.h[:, s]
        how = method
        if method in ("auto", "structured") and fast:
            A = _structured_mlp(model, ctx, s) if s % 2 else _structured_attention(model, ctx, s)
            if A is not None:
                out[:, i] = A if update else A + eye
                continue
            if method == "structured":
                raise ValueError(f"method='structured' needs a gated MLP (down(act(gate(y)) * up(y))) or Llama/Gemma-"
                                 f"like attention with a frozen context and g * head_dim <= D / 2; sublayer {s} has "
                                 "neither: use method='auto'")
        if method == "auto":
            attn_fast = s % 2 == 0 and fast and ctx.mode == "frozen" and _fast_supported(
                residual.of(model).layers[s // 2].self_attn)
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
    return out.detach()  # numbers, not a graph (a model with gradients on would otherwise attach one)


_MLP_ATTRS = ("gate_proj", "up_proj", "down_proj", "act_fn")


def _structured_attention(model, ctx: Context, s: int) -> torch.Tensor | None:
    """``(B, D, D)`` the Jacobian of attention sublayer ``s``'s update by its structure (see :func:`jacobians`), or
    None off the fast path or where the copies would not be fewer than half the width (``g hd > D / 2``: Gemma 3
    270M's one key/value head, where :func:`jacobians`' replicate is faster).

    In :func:`~.maps._attend_core` (the fast path's attention between the projections) head ``h = kv g + j``'s
    output depends only on its own query and on its key/value head ``kv``'s own key and value, so the Jacobian
    with respect to them is ``hd x hd`` blocks. They come from one backward through ``g hd`` copies of the state
    (``g`` query heads per key/value head): copy ``(j, r)`` carries the cotangent ``e_r`` on the ``j``-th head
    of every group, whose gradients then land on disjoint blocks.
    """
    attn, norm, post, pe = _attention_parts(model, ctx, s)
    if ctx.mode != "frozen" or not _fast_supported(attn):
        return None
    l = s // 2
    keys, values, mask = ctx.keys[l], ctx.values[l], ctx.masks[l][..., :-1]
    x = ctx.h[:, s]
    B, D = x.shape
    hd, g = attn.head_dim, attn.num_key_value_groups
    H, n_kv = attn.q_proj.weight.shape[0] // hd, attn.k_proj.weight.shape[0] // hd
    R = g * hd
    if 2 * R > D:
        return None
    heads = torch.arange(H)
    rows = (heads % g)[:, None] * hd + torch.arange(hd)                                 # (H, hd): copy of row r
    with torch.no_grad():
        y = norm(x)
        q, k, v = attn.q_proj(y), attn.k_proj(y), attn.v_proj(y)
        cot = torch.zeros((R, H, hd), dtype=x.dtype, device=x.device)
        cot[rows, heads[:, None], torch.arange(hd)] = 1.0
        with torch.enable_grad():
            Q, K, V = (t[:, None, :].expand(B, R, t.shape[-1]).clone().requires_grad_(True) for t in (q, k, v))
            out = _attend_core(attn, Q, K, V, pe, keys, values, mask)                    # (B, R, H hd)
            gq, gk, gv = torch.autograd.grad(out, (Q, K, V), grad_outputs=cot.reshape(1, R, H * hd).expand(B, -1, -1))
        groups = heads // g
        blocks = [gq.view(B, R, H, hd)[:, rows, heads[:, None]],                          # (B, H, hd, hd)
                  gk.view(B, R, n_kv, hd)[:, rows, groups[:, None]],
                  gv.view(B, R, n_kv, hd)[:, rows, groups[:, None]]]
        W = [attn.q_proj.weight.view(H, hd, D), attn.k_proj.weight.view(n_kv, hd, D)[groups],
             attn.v_proj.weight.view(n_kv, hd, D)[groups]]
        M = sum(bl @ w for bl, w in zip(blocks, W)).reshape(B, H * hd, D)
        A = attn.o_proj.weight @ M                                                       # (B, D, D)
        A = A @ torch.func.vmap(torch.func.jacrev(norm))(x)
        if post is not None:
            z = attn.o_proj(_attend_core(attn, q[:, None], k[:, None], v[:, None], pe, keys, values, mask))
            A = torch.func.vmap(torch.func.jacrev(post))(z[:, 0]) @ A
    return A


def _structured_mlp(model, ctx: Context, s: int) -> torch.Tensor | None:
    """``(B, D, D)`` the Jacobian of MLP sublayer ``s``'s update by its structure (see :func:`jacobians`), or None
    when the module is not ``down(act(gate(y)) * up(y))`` at these points (checked against its own output)."""
    layer = residual.of(model).layers[s // 2]
    mlp = layer.mlp
    if not all(hasattr(mlp, a) for a in _MLP_ATTRS):
        return None
    norm = getattr(layer, residual.of(model).architecture.mlp_norm)
    post = getattr(layer, "post_feedforward_layernorm", None)
    x = ctx.h[:, s]
    with torch.no_grad():
        y = norm(x)
        g, u = mlp.gate_proj(y), mlp.up_proj(y)
        act, slope = torch.func.jvp(mlp.act_fn, (g,), (torch.ones_like(g),))   # elementwise: act'(g) exactly
        z = mlp.down_proj(act * u)
        ref = mlp(y)
        if not torch.allclose(z, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max().clamp(min=1e-30))):
            return None
        W_g, W_u, W_d = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight   # (I, D), (I, D), (D, I)
        A = W_d @ ((slope * u)[:, :, None] * W_g + act[:, :, None] * W_u)                # (B, D, D)
        A = A @ torch.func.vmap(torch.func.jacrev(norm))(x)
        if post is not None:
            A = torch.func.vmap(torch.func.jacrev(post))(z) @ A
    return A


@dataclass
class _Step:
    """One linear step ``v -> J v`` (and ``J^T v``) on batches ``(B, k, D)`` of vectors."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    apply_t: Callable[[torch.Tensor], torch.Tensor]


def matrix_steps(J: torch.Tensor | np.ndarray) -> list[_Step]:
    """Steps for :func:`~.exponents.lyapunov` from explicit matrices ``J: (B, S, D, D)`` (or ``(S, D, D)``)."""
    J = torch.as_tensor(J)
    if J.ndim == 3:
        J = J[None]
    if J.ndim != 4 or J.shape[-1] != J.shape[-2]:
        raise ValueError(f"J must be (B, S, D, D) or (S, D, D) square matrices, got {tuple(J.shape)}")
    cast = lambda V: V.to(J.device, J.dtype)  # noqa: E731
    return [_Step(lambda V, M=J[:, t]: cast(V) @ M.mT, lambda V, M=J[:, t]: cast(V) @ M) for t in range(J.shape[1])]


def jvp_steps(model, ctx: Context, sublayers: Sequence[int] | None = None) -> list[_Step]:
    """Steps for :func:`~.exponents.lyapunov` by Jacobian-vector products through the model: never a full matrix.

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
