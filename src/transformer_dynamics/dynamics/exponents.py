"""Finite-time Lyapunov exponents of products of sublayer Jacobians, by Benettin's method.

:func:`lyapunov`: the top-``k`` exponents ``(B, n_starts, k)`` of ``P_s = J_{S-1} ... J_s`` from every start
``s``, pushing ``k`` vectors through the steps of :mod:`.derivatives` and re-orthonormalising by QR.
:func:`relative_exponents`: the same relative to the growth of the RS norm itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..validation import check_int, check_positive_int, check_seed

if TYPE_CHECKING:
    from .derivatives import _Step

__all__ = ["lyapunov", "relative_exponents"]


def _ortho(seed: int, B: int, D: int, k: int) -> torch.Tensor:
    """``(B, k, D)`` float64: k random orthonormal vectors per text."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn((B, D, k), generator=g, dtype=torch.float64))[0].mT


def lyapunov(steps: Sequence[_Step], k: int = 10, *, starts: Sequence[int] | None = None, n_iter: int = 3,
             oversample: int | None = None, seed: int = 0, n_texts: int | None = None,
             d_model: int | None = None) -> np.ndarray:
    """Top-``k`` finite-time Lyapunov exponents of ``P_s = J_{S-1} ... J_s`` from every start ``s``.

    steps: ``S`` linear steps (:func:`~.derivatives.matrix_steps` or :func:`~.derivatives.jvp_steps`), each
    acting on ``(B, k, D)``.
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

    Range: the accumulated factor is one float64 matrix, rescaled as a whole, so exponent ``i`` is resolved
    while ``n (lambda_1 - lambda_i)`` stays below about 700 (the smallest float64 is ``e^-708``; beyond it
    the exponent comes out ``-inf``). Within that range the triangular factor keeps the small singular values
    to relative accuracy (the exponents of 30 time units of the Lorenz flow, ``n (lambda_1 - lambda_3)`` about
    470, sum to the mean log-determinant to 1e-16); the largest exponent has no such limit. Chapter 7's
    products (``n <= 2L`` sublayers) are far inside. Checked on systems with known answers in
    :mod:`.known`.
    """
    S = len(steps)
    n_iter, seed = check_int(n_iter, "n_iter", low=0), check_seed(seed)
    oversample = check_int(oversample, "oversample", low=0, none=True)
    k = check_positive_int(k, "k")
    starts = list(range(S)) if starts is None else [check_int(s, "starts[]", low=0, high=S - 1) for s in starts]
    if any(not 0 <= s < S for s in starts):
        raise ValueError(f"starts must be in [0, {S - 1}]")
    if n_texts is None or d_model is None:
        raise ValueError("pass n_texts and d_model (the shape of the vectors the steps act on)")
    n_texts, d_model = check_positive_int(n_texts, "n_texts"), check_positive_int(d_model, "d_model")
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
