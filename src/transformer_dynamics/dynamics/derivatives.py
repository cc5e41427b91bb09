"""Derivatives of the sublayer maps (:mod:`.maps`) at the last token, with the context frozen.

:func:`jacobians`: full matrices ``J: (B, n, D, D)`` (``torch.func`` vjps vmapped over the output basis, or one
backward through ``D`` copies of the state for attention on the fast path). :func:`matrix_steps` and
:func:`jvp_steps`: the linear steps ``V: (B, k, D) -> J V`` (and ``J^T V``) that :func:`~.exponents.lyapunov`
pushes vectors through, from explicit matrices or by Jacobian-vector products (no full matrix: any width).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models import layer_modules
from ..validation import check_positive_int
from .maps import Context, _fast_supported, sublayer_map

__all__ = ["jacobians", "jvp_steps", "matrix_steps"]


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
    chunk_size = check_positive_int(chunk_size, "chunk_size", none=True)
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
