"""Everything of chapter 7 for a list of texts, streamed: :func:`local_dynamics` (one model on many texts), and
what the chapter reads off its :class:`LocalDynamics`: :func:`predicted_recovery`, :func:`by_reference` (runs
pooled per reference for the figures), :func:`picked_eigenvalues`, :func:`runs_table`, :func:`benettin_check`.

Per batch of texts: the frozen context (:mod:`.maps`), the update Jacobians ``A_s = J_s - I`` from the last
sublayer down (:mod:`.derivatives`), the spectra of the requested sublayers (:mod:`.spectral`), and the products
``J_{S-1} ... J_s`` where the exponents and the bottleneck need them; a :class:`LocalDynamics` of ``(B, ...)``
arrays out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
import numpy as np
import pandas as pd
import torch

from .derivatives import jacobians
from .exponents import relative_exponents
from .maps import check_maps, frozen_context
from .spectral import MEASURES, _decompose, effective_rank, update_spectra
from .. import residual
from ..validation import check_positive_int

__all__ = ["LocalDynamics", "REFERENCE_LABELS", "benettin_check", "by_reference", "local_dynamics",
           "picked_eigenvalues", "predicted_recovery", "runs_table"]

#: How the figures name a run ``(run, condition)``: by the run's kind (seeds pooled) and the texts' condition.
REFERENCE_LABELS = {("trained", "original"): "trained", ("trained", "shuffled"): "trained, shuffled texts",
                    ("default", "original"): "random init", ("matched", "original"): "random init (matched)"}

_SPECTRAL_KEYS = tuple(m + suffix for m in MEASURES for suffix in ("", "_update"))


@dataclass
class LocalDynamics:
    """Chapter 7's measures of one model on ``B`` texts (``S`` sublayers, width ``D``).

    per_text: ``{key: (B, ...)}``:

    - the keys of :func:`~.spectral.update_spectra` (e.g. ``rotation_dominance``, ``departure_update``):
      ``(B, S)``, NaN off ``sublayers``; ``eigenvalues``: ``(B, len(sublayers), D)`` complex, of the updates
      ``J_s - I`` (only with ``keep_eigenvalues``);
    - ``bottleneck_fraction``: ``(B,)`` the effective rank of the end-to-end last-token Jacobian
      ``J_{S-1} ... J_0`` over D (NaN without ``bottleneck``);
    - ``exponents``: ``(B, len(starts), k)`` the top-k finite-time Lyapunov exponents ``log sigma_i(P_s) / (S - s)``
      of ``P_s = J_{S-1} ... J_s``, exact from the products' singular values; ``growth_to_last``:
      ``(B, len(starts))`` ``||J_{S-2} ... J_s||_F / sqrt(D)``, the mean gain of a random unit perturbation at ``s``
      by the last recorded sublayer ``S - 1`` (NaN for ``s = S - 1``); ``top_exponent``, ``top_relative_exponent``:
      ``(B, len(starts))`` the top exponent, and the same minus the RS's own log-norm growth rate
      (:func:`~.exponents.relative_exponents`);
    - ``norms``: ``(B, S + 1)`` the RS norm at each sublayer and after the last.

    sublayers: ``(m,)`` where spectra were computed; starts: ``(n_starts,)`` the exponents' start sublayers;
    map_error: ``(S,)`` :func:`~.maps.check_maps` (largest over the batches; empty for the single-token context);
    seconds: wall time.
    """

    per_text: dict[str, np.ndarray]
    sublayers: np.ndarray
    starts: np.ndarray
    n_sublayers: int
    d_model: int
    map_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seconds: float = float("nan")

    def __getitem__(self, key: str) -> np.ndarray:
        return self.per_text[key]

    def __contains__(self, key: str) -> bool:
        return key in self.per_text

    @property
    def n_texts(self) -> int:
        return int(self.per_text["norms"].shape[0])


def _sorted_unique(values: Iterable[int] | None, S: int, name: str) -> np.ndarray:
    out = np.unique(np.asarray(list(values if values is not None else []), dtype=np.int64))
    if out.size and (out[0] < 0 or out[-1] >= S):
        raise ValueError(f"{name} must be sublayers in [0, {S - 1}], got {out.tolist()}")
    return out


def local_dynamics(model, token_ids: Sequence[Sequence[int]], *, sublayers: Iterable[int] | None = None,
                   starts: Iterable[int] = (), bottleneck: bool = True, k: int = 10, batch_size: int = 8,
                   context: str = "frozen", pad_token_id: int | None = None, keep_eigenvalues: bool = False,
                   precision: str = "double", method: str = "auto", progress: bool = False) -> LocalDynamics:
    """Chapter 7's measures for ``B = len(token_ids)`` texts, streamed: per batch of ``batch_size`` texts the update
    Jacobians ``A_s = J_s - I`` (all texts of the batch at once, :func:`~.derivatives.jacobians`) are computed from
    the last sublayer down, summarised and dropped, so at most three ``(batch, D, D)`` matrices per text are held.

    sublayers: where the spectra are computed (None: every sublayer; the claims need the early and late thirds,
    :func:`~.evidence.claim_sublayers`); starts: the exponents' start sublayers; bottleneck: the end-to-end
    product's effective rank. Jacobians are computed only where these need them: the spectra's sublayers, and
    every sublayer from the lowest start (0 with the bottleneck) up when there are products to take.
    precision: of the eigenvalues (:func:`~.spectral.update_spectra`; ``"single"`` halves their time but moves the
    rotation dominance: a close pair of real eigenvalues of a float32 Jacobian may split into a complex pair under
    float32 rounding, and the book's measures are float64's); method: :func:`~.derivatives.jacobians`'s.
    model: its :class:`~transformer_dynamics.residual.ResidualModel`, or the model as loaded with ``pad_token_id``
    (default 0). Returns a :class:`LocalDynamics`.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    t0 = time.perf_counter()
    token_ids = [list(t) for t in token_ids]
    n = len(token_ids)
    if n < 1:
        raise ValueError("need at least one text")
    batch_size, k = check_positive_int(batch_size, "batch_size"), check_positive_int(k, "k")
    model = residual.of(model, pad_id=pad_token_id)  # resolved once for every batch
    chunks, errors = [], []
    bar = tqdm(total=n, desc="jacobians", unit="text", disable=not progress)
    spectral = starts_ = None
    for b0 in range(0, n, batch_size):
        ctx = frozen_context(model, token_ids[b0:b0 + batch_size], mode=context)
        S, D, B = ctx.n_sublayers, ctx.h.shape[-1], ctx.n_texts
        spectral = _sorted_unique(range(S) if sublayers is None else sublayers, S, "sublayers")
        starts_ = _sorted_unique(starts, S, "starts")
        if context == "frozen":
            errors.append(check_maps(model, ctx))
        chunks.append(_batch(model, ctx, spectral, starts_, bottleneck, min(k, D), keep_eigenvalues, precision,
                             method))
        bar.update(B)
    bar.close()
    per_text = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    return LocalDynamics(per_text=per_text, sublayers=spectral, starts=starts_, n_sublayers=S, d_model=D,
                         map_error=np.max(errors, axis=0) if errors else np.zeros(0),
                         seconds=time.perf_counter() - t0)


def _batch(model, ctx, spectral: np.ndarray, starts: np.ndarray, bottleneck: bool, k: int, keep_eigenvalues: bool,
           precision: str, method: str) -> dict[str, np.ndarray]:
    """One batch's per-text arrays (see :class:`LocalDynamics`)."""
    S, D, B = ctx.n_sublayers, ctx.h.shape[-1], ctx.n_texts
    products = bool(starts.size) or bottleneck
    lowest = min([*starts.tolist(), *([0] if bottleneck else [])], default=S)
    needed = sorted(set(spectral.tolist()) | (set(range(lowest, S)) if products else set()), reverse=True)
    out = {key: np.full((B, S), np.nan) for key in _SPECTRAL_KEYS}
    if keep_eigenvalues:
        out["eigenvalues"] = np.full((B, len(spectral), D), np.nan, dtype=np.complex128)
    out["bottleneck_fraction"] = np.full(B, np.nan)
    out["exponents"] = np.full((B, len(starts), k), np.nan)
    out["growth_to_last"] = np.full((B, len(starts)), np.nan)
    column = {int(s): i for i, s in enumerate(spectral)}
    start_at = {int(s): i for i, s in enumerate(starts)}
    eye = torch.eye(D, dtype=torch.float64)
    last = Q = None          # J_{S-1}, and Q_s = J_{S-2} ... J_s (None: the empty product, at s = S - 1)
    for s in needed:
        A = jacobians(model, ctx, [s], update=True, method=method)[:, 0].cpu()
        if s in column:
            st = update_spectra(A, precision=precision, eigenvalues=keep_eigenvalues)
            for key in _SPECTRAL_KEYS:
                out[key][:, s] = st[key]
            if keep_eigenvalues:
                out["eigenvalues"][:, column[s]] = st["eigenvalues"]
        if not products or s < lowest:
            continue
        J = A.to(torch.float64) + eye
        if s == S - 1:
            last = J
        else:
            Q = J if Q is None else Q @ J
        if s in start_at or (bottleneck and s == 0):
            P = last if Q is None else last @ Q
            sv = _decompose(P, singular=True, eig=False)[1].numpy()                     # (B, D) descending
            if s in start_at:
                i = start_at[s]
                out["exponents"][:, i] = np.log(np.maximum(sv[:, :k], 1e-300)) / (S - s)
                if Q is not None:
                    out["growth_to_last"][:, i] = (Q ** 2).sum(dim=(-2, -1)).div(D).sqrt().numpy()
            if bottleneck and s == 0:
                out["bottleneck_fraction"] = effective_rank(sv) / D
    out["norms"] = ctx.h.norm(dim=-1).double().cpu().numpy()
    out["top_exponent"] = out["exponents"][:, :, 0]
    out["top_relative_exponent"] = relative_exponents(out["exponents"][:, :, :1], out["norms"], starts)[:, :, 0]
    return out


def predicted_recovery(result: LocalDynamics) -> np.ndarray:
    """``(B, n_starts)`` the noise recovery the Jacobians predict at each start ``s`` (to first order): a random unit
    direction at ``s`` grows on average by ``growth_to_last``, so the relative distance at the last recorded
    sublayer ``S - 1`` over that at ``s`` is that gain times ``||h_s|| / ||h_{S-1}||`` (chapter 5's measure)."""
    S = result.n_sublayers
    norms = result["norms"]
    return result["growth_to_last"] * norms[:, result.starts] / norms[:, [S - 1]]


def by_reference(results: Mapping[tuple[str, str], LocalDynamics], key: str) -> dict[str, np.ndarray]:
    """``{label: (n, ...)}`` the per-text array ``key`` of each reference, the seeds of a random init pooled (their
    texts stacked), labelled by :data:`REFERENCE_LABELS`. results: ``{(run, condition): LocalDynamics}``."""
    out: dict[str, list] = {}
    for (run, condition), r in results.items():
        label = REFERENCE_LABELS.get((run.split(":")[0], condition), f"{run}, {condition}")
        out.setdefault(label, []).append(r[key])
    return {label: np.concatenate(v) for label, v in out.items()}


def picked_eigenvalues(result: LocalDynamics, *, labels: Sequence[str] | None = None
                       ) -> dict[str, dict[str, np.ndarray]]:
    """The update's eigenvalues, pooled over texts, at an attention and an MLP sublayer near the middle of each
    contiguous block of measured layers (the early and the late third): ``{"attn": {label: (n * 2,)}, "mlp": ...}``
    (complex). labels: ``(S,)`` sublayer names (default ``"s<index>"``)."""
    if "eigenvalues" not in result:
        raise ValueError("no eigenvalues kept: run local_dynamics with keep_eigenvalues=True")
    layers = np.unique(result.sublayers // 2)
    blocks = np.split(layers, np.flatnonzero(np.diff(layers) > 1) + 1)
    out: dict[str, dict[str, np.ndarray]] = {"attn": {}, "mlp": {}}
    column = {int(s): i for i, s in enumerate(result.sublayers)}
    for block in blocks:
        l = int(block[len(block) // 2])
        for kind, s in (("attn", 2 * l), ("mlp", 2 * l + 1)):
            name = labels[s] if labels is not None else f"s{s}"
            out[kind][name] = result["eigenvalues"][:, column[s]].ravel()
    return out


def runs_table(results: Mapping[tuple, LocalDynamics]) -> pd.DataFrame:
    """One row per run (``results``: ``{key tuple: LocalDynamics}``, the keys become the index): texts, sublayers,
    width, sublayers with spectra, the maps' largest relative error against the captured RS, seconds."""
    rows = {key: {"texts": r.n_texts, "sublayers": r.n_sublayers, "d_model": r.d_model,
                  "sublayers with spectra": len(r.sublayers),
                  "max map error": float(r.map_error.max()) if r.map_error.size else np.nan, "seconds": r.seconds}
            for key, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def benettin_check(model, tokenizer, text: str, result: LocalDynamics, start: int, *, k: int = 10,
                   n_iter: int = 2, seed: int = 0, context: str = "frozen", add_bos: bool = True,
                   strip: bool = False) -> float:
    """The largest absolute difference between the top-``k`` exponents from ``start`` by Benettin's method through
    Jacobian-vector products only (:func:`~.exponents.lyapunov` with :func:`~.derivatives.jvp_steps`, ``n_iter``
    rounds of subspace iteration: what works at any width) and the exact ones of ``result`` for its first text,
    ``text`` (tokenised as ``result``'s, ``add_bos`` / ``strip``); ``start``: one of ``result.starts``."""
    from .derivatives import jvp_steps  # noqa: PLC0415
    from .exponents import lyapunov  # noqa: PLC0415
    from .maps import text_token_ids  # noqa: PLC0415

    if start not in result.starts:
        raise ValueError(f"start {start} is not one of the exponents' starts {result.starts.tolist()}")
    ids = text_token_ids(tokenizer, [text], add_bos=add_bos, strip=strip)
    model = residual.of(model, tokenizer)
    ctx = frozen_context(model, ids, mode=context)
    kk = min(k, result["exponents"].shape[2])
    lam = lyapunov(jvp_steps(model, ctx), k=kk, starts=[int(start)], n_iter=n_iter, seed=seed, n_texts=1,
                   d_model=ctx.h.shape[-1])[0, 0]
    exact = result["exponents"][0, int(np.flatnonzero(result.starts == start)[0]), :kk]
    return float(np.abs(lam - exact).max())
