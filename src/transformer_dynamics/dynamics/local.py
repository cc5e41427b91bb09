"""Everything of chapter 7 for a list of texts, streamed: :func:`local_dynamics`.

Per batch of texts: the frozen context (:mod:`.maps`), every sublayer's Jacobian from the last down
(:mod:`.derivatives`), its spectral measures and those of the cumulative products (:mod:`.spectral`), and
Benettin exponents by Jacobian-vector products (:mod:`.exponents`); a dict of ``(B, ...)`` arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .derivatives import jacobians, jvp_steps
from .exponents import lyapunov
from .maps import check_maps, frozen_context
from .spectral import product_measures, spectra
from ..validation import check_int, check_positive_int, check_seed

__all__ = ["local_dynamics"]


def local_dynamics(model, token_ids: Sequence[Sequence[int]], *, batch_size: int = 4, context: str = "frozen",
                   k: int = 10, lyapunov_starts: Sequence[int] | None = None, n_iter: int = 2,
                   cumulative: bool = True, pad_token_id: int = 0, keep_eigenvalues: bool = True,
                   chunk_size: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Jacobians of every sublayer for ``B = len(token_ids)`` texts, streamed: a batch's Jacobians are
    computed from the last sublayer down, summarised and dropped, so at most two ``(batch, D, D)`` matrices per
    text are held (the current ``J_s`` and the product ``P_s = J_{S-1} ... J_s``) at any width; chunk_size
    bounds the vmap over the D basis vectors (see :func:`~.derivatives.jacobians`).

    Returns a dict of arrays (``S = 2L`` sublayers):

    - every key of :func:`~.spectral.spectra` with ``update=True``: ``(B, S)`` per-text measures of ``J_s``;
    - ``cumulative_effective_rank``, ``cumulative_growth`` (``cumulative=True``): ``(B, S)`` the effective rank
      of ``P_s`` and ``||P_s||_F / sqrt(D)`` (the mean gain of a random unit perturbation at ``s``);
      ``exponents``: ``(B, S, k)`` the exact top-k finite-time Lyapunov exponents ``log sigma_i(P_s) / (S - s)``;
      ``growth_to_last``: ``(B, S)`` ``||J_{S-2} ... J_s||_F / sqrt(D)`` (to the last recorded sublayer, NaN at
      ``S - 1``): with the RS norms, the linear prediction of chapter 5's noise recovery;
    - ``benettin``: ``(B, n_starts, k)`` the same by :func:`~.exponents.lyapunov` from ``lyapunov_starts``
      (default: none if ``cumulative`` else every sublayer) through :func:`~.derivatives.jvp_steps`: no full
      matrix;
    - ``norms``: ``(B, S + 1)`` the RS norm at each sublayer and after the last; ``d_model``: ``(B,)`` D;
      ``map_error``: ``(S,)``
      :func:`~.maps.check_maps` (frozen context); ``eigenvalues``: ``(B, S, D)`` complex (``keep_eigenvalues``).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    token_ids = [list(t) for t in token_ids]
    B = len(token_ids)
    if B < 1:
        raise ValueError("need at least one text")
    batch_size, k = check_positive_int(batch_size, "batch_size"), check_positive_int(k, "k")
    n_iter, seed = check_int(n_iter, "n_iter", low=0), check_seed(seed)
    chunk_size = check_positive_int(chunk_size, "chunk_size", none=True)
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
                st.update(product_measures(P, S - s, k))
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
