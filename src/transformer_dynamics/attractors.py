"""Attractors measured (chapter 11): do perturbations of the residual stream shrink back towards the clean run,
how far does that hold, where does the linearisation stop predicting it, and does it matter for the next token?

Every perturbation is written at the input of one of the paper's layers (point ``p = 2l``) at the last token of a
prompt and followed over a fixed window of ``W`` points (:func:`transformer_dynamics.perturb.equal_window`: the
same for every layer, one decoder layer with the paper's layers). The runs reuse the clean run's keys and values
(:func:`~transformer_dynamics.perturb.prefix_cache`, :func:`~transformer_dynamics.perturb.extend`): one token per
perturbation, from the edited layer on.

**Sizes and distances are relative to the stream's norm**, as chapter 5's noise and chapter 7's exponents
("relative to the stream's growth"): a perturbation of size ``s`` moves the prompt's vector ``x_p`` by
``s * ||x_p|| * u`` (``u`` a unit direction); the distance of a perturbed run to its clean run at point ``q`` is
``rho_q = ||x~_q - x_q|| / ||x_q||``. Sizes run log-spaced from 0.01 to above 1 (:data:`SIZE_RANGE`), beyond the
texts' own spread (which is below the norm); :func:`perturbation_sizes` always includes the size the claims read,
:data:`~transformer_dynamics.claims.ATTRACTOR_SIZE`.

Directions (:data:`KINDS`): ``"plane"``, a random direction in the plane of the stream's first two principal
components (the teleport's kind of move, chapter 5); ``"random"``, a uniformly random direction of the whole
space (norm-matched: every kind moves by the same ``s * ||x_p||``); ``"swap"``, towards another prompt's vector
at the same point (at ``s = ||x_j - x_p|| / ||x_p||`` the perturbation *is* the activation swap).

Per perturbation (:class:`AttractorSweep`): the **recovery ratio** ``rho_{p+W} / rho_p`` (below 1: the run is
pulled back, relative to the stream) and its raw version ``||x~ - x||`` after over at; the **inward-flow
fraction**, the share of ratios below 1; **basin stability**, the share whose ``rho_{p+W}`` is within
:data:`~transformer_dynamics.claims.BASIN_TOLERANCE` (finite-time basin stability, Menck et al. 2013, with the
clean run as the attractor); the **linearisation's error** ``||D(s) - s ||x_p|| J u|| / ||s ||x_p|| J u||``, ``D(s)``
the measured displacement at the window's end and ``J u`` the follow-up map's Jacobian-vector product at the
clean point by central differences through the same one-token extension (step :data:`FD_STEP`), and the
**validity radius**, the size at which that error first exceeds :data:`LINEAR_TOLERANCE` (log-log interpolated); the
**next-token KL** ``KL(clean || perturbed)`` at the last token of perturbations run to the output, of deleting
the layer and of swapping it with its neighbour (both at the last token only, like every edit here: the earlier
tokens run the intact model). :func:`window_spectra`: the singular values of the window map's Jacobian and of
its update (``J - I``), scaled by the stream's norm (``||x_p|| / ||x_{p+W}||``), on a few texts
(:mod:`transformer_dynamics.dynamics`' Jacobians).

:func:`attractor_sweep` measures one model; :func:`attractor_runs` the trained model and its random
initialisations (:mod:`transformer_dynamics.random_init`), each in its own PCA plane. :meth:`AttractorSweep.curves`
gives the per-prompt curves the claims of source ``"attractors"`` read (:data:`CURVES`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import perturb
from .capture import tokenize
from .claims import ATTRACTOR_SIZE, BASIN_TOLERANCE
from .models import base_model, layer_modules
from .validation import check_int, check_positive_int, check_seed

__all__ = ["KINDS", "INTERVENTIONS", "CURVES", "FD_STEP", "LINEAR_TOLERANCE", "SIZE_RANGE", "AttractorSweep",
           "perturbation_sizes", "kl_grid", "unit_directions", "plane_basis", "next_token_logprobs", "kl_divergence",
           "next_token_kl", "swapped_layers", "intervention_outputs", "validity_radius", "window_spectra",
           "attractor_sweep", "attractor_runs", "disjoint_halves", "chapter_ledger", "ledger_entry", "SUMMARY_CURVES",
           "basin_reach", "spectra_summary", "layer_summary"]

#: Direction kinds: the teleport's plane, the whole space (norm-matched random), towards another prompt (swap).
KINDS = ("plane", "random", "swap")
#: Layer interventions at the last token: none (the extension of the clean vector), deletion, neighbour swap.
INTERVENTIONS = ("none", "delete", "swap")
#: Relative step of the central differences that give the follow-up map's Jacobian-vector products.
FD_STEP = 1e-3
#: The linearisation "stops holding" where its prediction of the displacement is off by more than this share.
LINEAR_TOLERANCE = 0.1
#: Perturbation sizes, relative to the stream's norm: from a hundredth to about three times the norm.
SIZE_RANGE = (0.01, 10 ** 0.5)

#: The per-prompt curves of :meth:`AttractorSweep.curves`, each ``(n_prompts, n_layers)`` at the claims' size
#: :data:`~transformer_dynamics.claims.ATTRACTOR_SIZE` (``<kind>`` one of :data:`KINDS`):
#:
#: - ``flow:<kind>``: inward-flow fraction (share of directions whose recovery ratio is below 1);
#: - ``flow_raw:<kind>``: the same for the raw distance (not relative to the stream's norm);
#: - ``basin:<kind>``: basin stability (share ending within the tolerance);
#: - ``recovery:<kind>``: median recovery ratio over directions;
#: - ``kl:<kind>``: next-token KL of the first direction; ``kl_delete``, ``kl_swap``: of the layer interventions,
#:   ``top1_delete``, ``top1_swap``: 1 where they leave the most likely next token unchanged;
#: - ``validity:<kind>``: log10 of the validity radius (the median error over directions crossing the tolerance);
#: - ``recovery_a:<kind>``, ``kl_b:<kind>``, ``kl_delete_b``, ``kl_swap_b``: the disjoint halves a correlation
#:   reads (:func:`disjoint_halves`).
#:
#: and, over sizes, ``(n_prompts, n_layers, n_sizes)``: ``flow_size:<kind>``, ``basin_size:<kind>``,
#: ``recovery_size:<kind>``, ``error_size:<kind>`` (median linearisation error) and ``kl_size:<kind>``
#: (``(..., n_kl_sizes)``).
CURVES = ("flow", "flow_raw", "basin", "recovery", "kl", "kl_delete", "kl_swap", "top1_delete", "top1_swap",
          "validity", "recovery_a", "kl_b", "kl_delete_b", "kl_swap_b")


# --------------------------------------------------------------------------------------------------
# Sizes and directions
# --------------------------------------------------------------------------------------------------
def perturbation_sizes(per_decade: int, low: float = SIZE_RANGE[0], high: float = SIZE_RANGE[1]) -> np.ndarray:
    """Relative sizes ``10 ** (k / per_decade)`` within ``[low, high]`` (powers of ten, so that the claims' size
    :data:`~transformer_dynamics.claims.ATTRACTOR_SIZE`, a tenth, is one of them; added if the range leaves it out)
    -> ``(S,)`` increasing. ``per_decade=4``: 0.01, 0.018, 0.032, 0.056, 0.1, ..., 1.78, 3.16 (11 sizes)."""
    per_decade = check_positive_int(per_decade, "per_decade (sizes per decade)")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}")
    lo, hi = np.log10(low) * per_decade, np.log10(high) * per_decade
    k = np.arange(int(np.ceil(lo - 1e-9)), int(np.floor(hi + 1e-9)) + 1)
    s = 10.0 ** (k / per_decade)
    if not np.any(np.isclose(s, ATTRACTOR_SIZE, rtol=1e-9)):
        s = np.sort(np.r_[s, ATTRACTOR_SIZE])
    return s


def kl_grid(sizes: Sequence[float], every: int | None = 2) -> np.ndarray:
    """The sizes whose perturbations are also run to the output for the next-token KL: from the claims' size
    :data:`~transformer_dynamics.claims.ATTRACTOR_SIZE` up, every ``every``-th of ``sizes`` (None: the claims' size
    only; smaller perturbations barely move the next token) -> ``(S_kl,)``."""
    sizes = np.asarray(sizes, dtype=np.float64)
    at = np.flatnonzero(np.isclose(sizes, ATTRACTOR_SIZE, rtol=1e-9))
    if not at.size:
        raise ValueError(f"sizes must include the claims' size {ATTRACTOR_SIZE} (perturbation_sizes)")
    if every is None:
        return sizes[at[:1]]
    return sizes[int(at[0])::check_positive_int(every, "every")]


def plane_basis(pca: Any, d_model: int) -> np.ndarray:
    """An orthonormal basis ``(2, d_model)`` of the plane of a fitted PCA's first two components (``components_``,
    :class:`transformer_dynamics.reduce.PCA` or scikit-learn's)."""
    comps = np.asarray(getattr(pca, "components_", None), dtype=np.float64)
    if comps.ndim != 2 or comps.shape[0] < 2 or comps.shape[1] != d_model:
        raise ValueError(f"pca must be fitted with at least 2 components of width {d_model} (this model's d_model); "
                         f"got components_ of shape {comps.shape}")
    q, _ = np.linalg.qr(comps[:2].T)
    return q.T


def unit_directions(x: np.ndarray, kind: str, n_directions: int, *, plane: np.ndarray | None = None,
                    seed: int = 0) -> np.ndarray:
    """Unit directions for each prompt's vector ``x: (n, D)`` -> ``(n, n_directions, D)`` float64.

    kind ``"plane"``: ``cos(t) v1 + sin(t) v2`` with ``plane = (v1, v2)`` orthonormal ``(2, D)`` and ``t`` uniform;
    ``"random"``: uniform on the sphere of R^D; ``"swap"``: towards the vectors of other prompts,
    ``(x_j - x_i) / ||x_j - x_i||`` with donors ``j = (i + 1 + r) mod n`` for direction ``r`` (NaN where the donor
    is the prompt itself or its vector is the same: two rows ending in the same token at the first layer).
    Random draws from ``numpy.random.default_rng(seed)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must be (n_prompts, d_model), got shape {x.shape}")
    n_directions = check_positive_int(n_directions, "n_directions")
    n, D = x.shape
    rng = np.random.default_rng(check_seed(seed))
    if kind == "plane":
        if plane is None or np.shape(plane) != (2, D):
            raise ValueError(f"kind 'plane' needs plane: (2, {D}) orthonormal (plane_basis)")
        t = rng.uniform(0, 2 * np.pi, (n, n_directions))
        return np.cos(t)[..., None] * plane[0] + np.sin(t)[..., None] * plane[1]
    if kind == "random":
        u = rng.standard_normal((n, n_directions, D))
        return u / np.linalg.norm(u, axis=-1, keepdims=True)
    if kind == "swap":
        donors = (np.arange(n)[:, None] + 1 + np.arange(n_directions)[None]) % n
        diff = x[donors] - x[:, None]
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm > 0, diff / norm, np.nan)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


# --------------------------------------------------------------------------------------------------
# The next-token distribution and the layer interventions
# --------------------------------------------------------------------------------------------------
@torch.inference_mode()
def next_token_logprobs(model, h: np.ndarray | torch.Tensor, *, chunk: int = 64) -> torch.Tensor:
    """Log-probabilities of the next token from the decoder stack's output ``h: (B, d_model)`` (point ``2L``, the
    final norm's input): ``log_softmax(cap(lm_head(norm(h))))`` with the model's final norm, LM head and final
    logit soft-capping (Gemma 2) -> ``(B, vocab)`` float32 on the CPU, ``chunk`` rows at a time."""
    norm = getattr(base_model(model), "norm", None)
    head = model.get_output_embeddings()
    if norm is None or head is None:
        raise ValueError("this model has no final norm or LM head (model.model.norm, get_output_embeddings())")
    cap = getattr(model.config, "final_logit_softcapping", None)
    p = next(model.parameters())
    h = torch.as_tensor(np.asarray(h) if not isinstance(h, torch.Tensor) else h)
    out = []
    for c in range(0, h.shape[0], chunk):
        logits = head(norm(h[c:c + chunk].to(p.device, p.dtype))).float()
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        out.append(torch.log_softmax(logits, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, head.weight.shape[0]))


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> np.ndarray:
    """``KL(p || q) = sum p (log p - log q)`` per row of log-probabilities ``logp, logq: (B, V)`` -> ``(B,)``
    float64, computed in their precision (float32 from :func:`next_token_logprobs`: round-off about 1e-6 nats;
    ``logp`` may be ``(1, V)``: one distribution for every row). Clipped at 0 (round-off)."""
    logp, logq = torch.as_tensor(logp), torch.as_tensor(logq)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return np.maximum(kl.double().numpy(), 0.0)


def next_token_kl(model, h: np.ndarray, logp_clean: torch.Tensor, rows: np.ndarray, *, chunk: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """How perturbed stack outputs ``h: (B, d_model)`` change the next token against the clean log-probabilities
    ``logp_clean[rows]`` (``logp_clean: (n, V)``, ``rows: (B,)``) -> ``(kl, same)``: ``KL(clean || perturbed)``
    ``(B,)`` and whether the most likely next token is unchanged ``(B,)`` bool (top-1 agreement, the analogue of
    retained top-1 accuracy). ``chunk`` rows at a time: a (B, V) array is never held (Gemma's vocabulary has 262,144
    entries)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) != len(h):
        raise ValueError(f"need one clean row per output: {len(rows)} rows for {len(h)} outputs")
    kl, same = np.empty(len(rows)), np.empty(len(rows), dtype=bool)
    for c in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[c:c + chunk])
        logq = next_token_logprobs(model, h[c:c + chunk], chunk=chunk)
        kl[c:c + chunk] = kl_divergence(logp_clean[r], logq)
        same[c:c + chunk] = (logq.argmax(-1) == logp_clean[r].argmax(-1)).numpy()
    return kl, same


@contextmanager
def swapped_layers(model, a: int, b: int) -> Iterator[None]:
    """For the duration decoder layers ``a`` and ``b`` exchange places in the stack (and, where the config says each
    position's attention kind, ``config.layer_types``, so that each layer keeps its own mask and rotary
    embedding). Each attention keeps its ``layer_idx``: under :func:`~transformer_dynamics.perturb.extend` it reads
    its own layer's cached keys and values."""
    layers = layer_modules(model)
    n = len(layers)
    a, b = perturb.check_layer(a, n), perturb.check_layer(b, n)
    types = getattr(model.config, "layer_types", None)
    layers[a], layers[b] = layers[b], layers[a]
    if isinstance(types, list):
        types[a], types[b] = types[b], types[a]
    try:
        yield
    finally:
        layers[a], layers[b] = layers[b], layers[a]
        if isinstance(types, list):
            types[a], types[b] = types[b], types[a]


def intervention_outputs(model, cache: perturb.PrefixCache, layer: int, kind: str, *, batch_size: int = 64
                         ) -> np.ndarray:
    """The stack's output ``(n, d_model)`` at the last token of every text of ``cache`` under an intervention on
    decoder layer ``layer`` at the last token only: ``"none"`` (the clean vector written back at the layer's input:
    the clean run through the extension), ``"delete"`` (the layer skipped: its input goes on to the next layer, or
    is the output for the last layer) or ``"swap"`` (the layer exchanged with its neighbour, the next one or, for
    the last layer, the previous one)."""
    n_layers = len(layer_modules(model))
    layer = perturb.check_layer(layer, n_layers)
    rows = np.arange(cache.n)
    if kind == "none":
        return perturb.extend(model, cache, rows, layer=layer, vectors=cache.clean[:, 2 * layer],
                              batch_size=batch_size)[:, -1]
    if kind == "delete":
        if layer == n_layers - 1:
            return cache.clean[:, 2 * layer].copy()
        return perturb.extend(model, cache, rows, layer=layer + 1, vectors=cache.clean[:, 2 * layer],
                              batch_size=batch_size)[:, -1]
    if kind == "swap":
        if n_layers < 2:
            raise ValueError("a layer swap needs at least 2 decoder layers")
        other = layer + 1 if layer < n_layers - 1 else layer - 1
        first = min(layer, other)
        with swapped_layers(model, layer, other):
            return perturb.extend(model, cache, rows, layer=first, vectors=cache.clean[:, 2 * first],
                                  batch_size=batch_size)[:, -1]
    raise ValueError(f"kind must be one of {INTERVENTIONS}, got {kind!r}")


# --------------------------------------------------------------------------------------------------
# The linearisation's validity radius
# --------------------------------------------------------------------------------------------------
def validity_radius(sizes: np.ndarray, error: np.ndarray, tolerance: float = LINEAR_TOLERANCE) -> np.ndarray:
    """Where the linearisation stops holding: the first size at which ``error`` exceeds ``tolerance``, interpolated
    log-log between the grid's sizes (exact for an error that is a power of the size: an error equal to the size
    crosses a tolerance of 0.1 at 0.1). sizes: ``(S,)`` increasing; error: ``(..., S)`` -> ``(...)``. Censored at
    the grid's ends: ``sizes[0]`` where the error exceeds the tolerance there already, ``sizes[-1]`` where it never
    does; NaN where the error is undefined at the first size."""
    sizes = np.asarray(sizes, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(np.diff(sizes) <= 0) or e.shape[-1] != sizes.size:
        raise ValueError(f"sizes must be (S >= 2,) increasing and error (..., S); got {sizes.shape}, {e.shape}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    above = e > tolerance
    first = np.where(above.any(-1), above.argmax(-1), sizes.size)               # index of the first crossing
    ls = np.log(sizes)
    k = np.clip(first, 1, sizes.size - 1)
    tiny = np.finfo(np.float64).tiny
    e0 = np.log(np.maximum(np.take_along_axis(e, (k - 1)[..., None], -1)[..., 0], tiny))
    e1 = np.log(np.maximum(np.take_along_axis(e, k[..., None], -1)[..., 0], tiny))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((np.log(tolerance) - e0) / (e1 - e0), 0.0, 1.0)
    r = np.exp(ls[k - 1] + frac * (ls[k] - ls[k - 1]))
    r = np.where(first == 0, sizes[0], np.where(first == sizes.size, sizes[-1], r))
    return np.where(np.isnan(e[..., 0]), np.nan, r)


# --------------------------------------------------------------------------------------------------
# Jacobian spectra of the window map (dynamics' Jacobians)
# --------------------------------------------------------------------------------------------------
def window_spectra(model, token_ids: Sequence[Sequence[int]], layers: Sequence[int], window: int, *,
                   pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """Singular values of the Jacobian of the window map ``x_p -> x_{p+W}`` (``p = 2l``, the product of the
    sublayer Jacobians of :func:`transformer_dynamics.dynamics.jacobians`, context frozen) and of its update
    ``J - I``, each scaled by the stream's norm ``||x_p|| / ||x_{p+W}||`` (a scaled value below 1: that direction
    shrinks relative to the stream) -> ``{"full": (n, n_layers, D), "update": (n, n_layers, D)}`` descending."""
    from . import dynamics as dy  # noqa: PLC0415

    window = check_positive_int(window, "window")
    ctx = dy.frozen_context(model, [list(s) for s in token_ids], pad_token_id=pad_token_id)
    subs = sorted({2 * l + i for l in layers for i in range(window)})
    J = dy.jacobians(model, ctx, subs).double()                          # (n, len(subs), D, D)
    at = {s: i for i, s in enumerate(subs)}
    eye = torch.eye(J.shape[-1], dtype=J.dtype)
    full, update = [], []
    h = ctx.h.double()
    for l in layers:
        p = 2 * l
        M = J[:, at[p]]
        for s in range(p + 1, p + window):
            M = J[:, at[s]] @ M
        scale = (h[:, p].norm(dim=-1) / h[:, p + window].norm(dim=-1))[:, None]
        # float32 singular values: the spectra span about six decades, far above float32's round-off
        full.append(torch.linalg.svdvals(M.float()).double() * scale)
        update.append(torch.linalg.svdvals((M - eye).float()).double() * scale)
    return {"full": torch.stack(full, 1).numpy(), "update": torch.stack(update, 1).numpy()}


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------
@dataclass
class AttractorSweep:
    """Perturbations of ``n`` prompts at each layer of ``layers`` (:func:`attractor_sweep`).

    sizes: ``(S,)`` relative sizes; kl_sizes: ``(S_kl,)`` those whose perturbations were also run to the output;
    kinds: direction kinds; window: points followed; spread: ``(n_layers,)`` the prompts' spread around their mean
    over their mean norm at each layer's input (where the texts' own spread lies on the size axis);
    swap_size: ``(n, n_layers, R)`` the full activation swap's relative size per donor.
    Per perturbation, ``(n, n_layers, n_kinds, S, R)``: ``recovery`` (relative), ``recovery_raw``, ``end``
    (``rho_{p+W}``), ``error`` (the linearisation's relative error); ``kl``: ``(n, n_layers, n_kinds, S_kl)`` of the
    first direction of the kinds ``kl_kinds`` (NaN for the others); ``kl_delete``, ``kl_swap``: ``(n, n_layers)``, and ``top1_delete``, ``top1_swap``: 1 where the most
    likely next token stayed the same, else 0; ``spectra``: :func:`window_spectra` on the first
    texts (empty when not asked for); seconds: wall time.
    """

    layers: list[int]
    sizes: np.ndarray
    kl_sizes: np.ndarray
    kinds: tuple[str, ...]
    kl_kinds: tuple[str, ...]
    window: int
    prompts: list[str]
    spread: np.ndarray
    swap_size: np.ndarray
    recovery: np.ndarray
    recovery_raw: np.ndarray
    end: np.ndarray
    error: np.ndarray
    kl: np.ndarray
    kl_delete: np.ndarray
    kl_swap: np.ndarray
    top1_delete: np.ndarray
    top1_swap: np.ndarray
    spectra: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = float("nan")

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    def _at(self, sizes: np.ndarray, size: float) -> int:
        hit = np.flatnonzero(np.isclose(sizes, size, rtol=1e-9))
        if not hit.size:
            raise ValueError(f"size {size} was not measured (sizes {np.round(sizes, 4).tolist()})")
        return int(hit[0])

    def curves(self, size: float = ATTRACTOR_SIZE) -> dict[str, np.ndarray]:
        """The per-prompt curves (:data:`CURVES`) at ``size`` and over sizes: ``{key: (n, n_layers[, S])}``. A share
        is over the directions defined for that prompt (NaN where none is)."""
        c, ck = self._at(self.sizes, size), self._at(self.kl_sizes, size)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(self.recovery)
            share = lambda hit: np.where(ok.any(-1), (hit & ok).sum(-1) / np.maximum(ok.sum(-1), 1), np.nan)  # noqa
            flow = share(self.recovery < 1)
            flow_raw = share(self.recovery_raw < 1)
            basin = share(self.end <= BASIN_TOLERANCE)
            rec = _nanmedian(self.recovery, -1)
            err = _nanmedian(self.error, -1)
        radius = validity_radius(self.sizes, err)                      # (n, L, K)
        out = {"kl_delete": self.kl_delete, "kl_swap": self.kl_swap, "top1_delete": self.top1_delete,
               "top1_swap": self.top1_swap}
        for k, kind in enumerate(self.kinds):
            out |= {f"flow:{kind}": flow[:, :, k, c], f"flow_raw:{kind}": flow_raw[:, :, k, c],
                    f"basin:{kind}": basin[:, :, k, c], f"recovery:{kind}": rec[:, :, k, c],
                    f"validity:{kind}": np.log10(radius[:, :, k]), f"flow_size:{kind}": flow[:, :, k],
                    f"basin_size:{kind}": basin[:, :, k], f"recovery_size:{kind}": rec[:, :, k],
                    f"error_size:{kind}": err[:, :, k]}
            if kind in self.kl_kinds:
                out |= {f"kl:{kind}": self.kl[:, :, k, ck], f"kl_size:{kind}": self.kl[:, :, k]}
        return disjoint_halves(out)


def disjoint_halves(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``curves`` with the halves a correlation between two of them reads: ``recovery_a:<kind>`` the recovery on
    the even-numbered prompts, ``kl_b:<kind>``, ``kl_delete_b``, ``kl_swap_b`` the KLs on the odd-numbered ones (NaN
    elsewhere), so that the two sides share no prompt's noise. curves: ``{key: (n, ...)}`` -> the same plus the
    halves."""
    out = dict(curves)
    n = next(iter(curves.values())).shape[0]
    even = np.arange(n) % 2 == 0
    for key, v in curves.items():
        mask = even.reshape((n,) + (1,) * (v.ndim - 1))
        if key.startswith("recovery:"):
            out[key.replace("recovery:", "recovery_a:")] = np.where(mask, v, np.nan)
        elif key.startswith("kl:") or key in ("kl_delete", "kl_swap"):
            out[key.replace("kl:", "kl_b:") if ":" in key else f"{key}_b"] = np.where(~mask, v, np.nan)
    return out


def _nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a - b||`` over the last axis, float64."""
    return np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), axis=-1)


def _run(model, cache: perturb.PrefixCache, rows: np.ndarray, vectors: np.ndarray, *, layer: int, points: list[int],
         chunk: int) -> np.ndarray:
    """:func:`~transformer_dynamics.perturb.extend` ``chunk`` rows at a time, keeping only ``points`` -> ``(len(rows),
    len(points), D)`` float32."""
    out = np.empty((len(rows), len(points), vectors.shape[-1]), dtype=np.float32)
    stop = max(points)
    for c in range(0, len(rows), chunk):
        out[c:c + chunk] = perturb.extend(model, cache, rows[c:c + chunk], layer=layer, vectors=vectors[c:c + chunk],
                                          stop_after=stop, batch_size=chunk)[:, points]
    return out


def attractor_sweep(model, tokenizer, prompts: Sequence[str], *, layers: Sequence[int], sizes: Sequence[float],
                    pca: Any, kinds: Sequence[str] = KINDS, n_directions: int = 4, window: int | None = None,
                    kl_sizes: Sequence[float] | None = None, kl_kinds: Sequence[str] = ("plane", "random"),
                    n_spectra: int = 0, seed: int = 0,
                    add_bos: bool = True, strip: bool = False, batch_size: int = 4, chunk: int = 256
                    ) -> AttractorSweep:
    """Every perturbation of the module docstring for ``prompts`` (the sampling unit, >= 2) at each layer of
    ``layers`` (distinct, increasing).

    sizes: relative sizes (:func:`perturbation_sizes`; increasing, > 0); pca: a fitted PCA of this model's stream (its
    first two components give the ``"plane"`` directions); n_directions: directions per prompt, layer, kind and
    size (the same directions at every size, so a curve over sizes is paired); window: points followed (None:
    :func:`~transformer_dynamics.perturb.equal_window`); kl_sizes: sizes (of ``sizes``) whose first direction is run
    to the output for the next-token KL (None: all), for the kinds ``kl_kinds`` (of ``kinds``); n_spectra: texts (the first prompts) whose window Jacobians'
    spectra are computed (:func:`window_spectra`; 0: none); seed: the random directions. Each prompt runs once
    (:func:`~transformer_dynamics.perturb.prefix_cache`, ``batch_size`` texts at a time); every perturbation is one
    token from its layer on (:func:`~transformer_dynamics.perturb.extend`, ``chunk`` rows at a time).
    """
    t0 = time.perf_counter()
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 prompts (the sampling unit), got {len(prompts)}")
    n_layers = len(layer_modules(model))
    layers = [perturb.check_layer(l, n_layers) for l in layers]
    if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct and increasing, got {layers}")
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError(f"sizes must be >= 2 increasing positive numbers (perturbation_sizes), got {sizes}")
    kl_sizes = sizes if kl_sizes is None else np.asarray(kl_sizes, dtype=np.float64).reshape(-1)
    match = np.isclose(kl_sizes[:, None], sizes[None], rtol=1e-9)             # (S_kl, S)
    if not kl_sizes.size or not match.any(1).all():
        raise ValueError(f"kl_sizes must be some of sizes {np.round(sizes, 4).tolist()}, got {kl_sizes.tolist()}")
    kl_at = match.argmax(1)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be some of {KINDS}, got {kinds}")
    kl_kinds = tuple(k for k in kinds if k in kl_kinds)
    kk = [kinds.index(k) for k in kl_kinds]
    R = check_positive_int(n_directions, "n_directions")
    w_max = perturb.equal_window(layers, n_layers)
    W = w_max if window is None else check_int(window, "window", low=1, high=w_max)
    chunk = check_positive_int(chunk, "chunk")
    ids = tokenize(tokenizer, prompts, add_bos=add_bos, strip=strip)
    pad = perturb._pad_id(tokenizer)
    cache = perturb.prefix_cache(model, ids, batch_size=batch_size, pad_token_id=pad)
    clean = cache.clean.astype(np.float64)                              # (n, 2L + 1, D)
    n, _, D = clean.shape
    norm = np.linalg.norm(clean, axis=-1)                               # (n, 2L + 1)
    plane = plane_basis(pca, D) if "plane" in kinds else None
    last = 2 * n_layers
    logp_clean = next_token_logprobs(model, cache.clean[:, last])       # (n, V)
    K, S, Sk, L = len(kinds), sizes.size, len(kl_at), len(layers)
    shape = (n, L, K, S, R)
    recovery, recovery_raw, end, error = (np.full(shape, np.nan) for _ in range(4))
    kl = np.full((n, L, K, Sk), np.nan)
    kl_delete, kl_swap, top1_delete, top1_swap = (np.empty((n, L)) for _ in range(4))
    swap_size = np.full((n, L, R), np.nan)
    rng = np.random.SeedSequence(check_seed(seed))
    for j, (l, ss) in enumerate(zip(layers, rng.spawn(L))):
        p, q = 2 * l, 2 * l + W
        x = clean[:, p]
        U = np.stack([unit_directions(x, kind, R, plane=plane, seed=int(s.generate_state(1)[0]))
                      for kind, s in zip(kinds, ss.spawn(K))], 1)       # (n, K, R, D)
        undefined = ~np.isfinite(U).all(-1)                             # (n, K, R)
        U = np.where(undefined[..., None], 0.0, U)
        if "swap" in kinds:
            donors = (np.arange(n)[:, None] + 1 + np.arange(R)[None]) % n
            swap_size[:, j] = _rel(x[donors], x[:, None]) / norm[:, p, None]
        # window rows: every size, plus the central differences (+h, -h) and the clean vector through the extension
        steps = np.r_[sizes, FD_STEP, -FD_STEP]                         # (S + 2,)
        vec = x[:, None, None, None] + (steps[None, None, :, None, None] * norm[:, p, None, None, None, None]
                                        * U[:, :, None])                # (n, K, S + 2, R, D)
        rows = np.r_[np.repeat(np.arange(n), K * (S + 2) * R), np.arange(n)]
        out = _run(model, cache, rows, np.concatenate([vec.reshape(-1, D), x]), layer=l, points=[p, q], chunk=chunk)
        ref = out[-n:, 1].astype(np.float64)                            # (n, D): the clean window end, extended
        out = out[:-n].reshape(n, K, S + 2, R, 2, D).astype(np.float64)
        disp0 = out[:, :, :S, :, 0] - x[:, None, None, None]            # (n, K, S, R, D)
        dispW = out[:, :, :S, :, 1] - ref[:, None, None, None]
        d0, dW = np.linalg.norm(disp0, axis=-1), np.linalg.norm(dispW, axis=-1)
        jvp = (out[:, :, S, :, 1] - out[:, :, S + 1, :, 1]) / (2 * FD_STEP * norm[:, p, None, None, None])  # J u
        pred = sizes[None, None, :, None, None] * norm[:, p, None, None, None, None] * jvp[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            rho0, rhoW = d0 / norm[:, p, None, None, None], dW / norm[:, q, None, None, None]
            bad = undefined[:, :, None, :] | (d0 == 0)
            recovery[:, j] = np.where(bad, np.nan, rhoW / rho0)
            recovery_raw[:, j] = np.where(bad, np.nan, dW / d0)
            end[:, j] = np.where(bad, np.nan, rhoW)
            error[:, j] = np.where(bad, np.nan, _rel(dispW, pred) / np.linalg.norm(pred, axis=-1))
        # the next token: the first direction at the KL sizes, run to the output; the layer interventions
        if kk:
            kv = vec[:, kk][:, :, kl_at, 0].reshape(-1, D)               # (n * K_kl * S_kl, D)
            rows = np.repeat(np.arange(n), len(kk) * Sk)
            h = _run(model, cache, rows, kv, layer=l, points=[last], chunk=chunk)[:, 0]
            kj = next_token_kl(model, h, logp_clean, rows)[0].reshape(n, len(kk), Sk)
            kl[:, j, kk] = np.where(undefined[:, kk][:, :, :1], np.nan, kj)
        for name, target, same in (("delete", kl_delete, top1_delete), ("swap", kl_swap, top1_swap)):
            target[:, j], same[:, j] = next_token_kl(
                model, intervention_outputs(model, cache, l, name, batch_size=chunk), logp_clean, np.arange(n))
    spread = np.array([np.sqrt(((clean[:, 2 * l] - clean[:, 2 * l].mean(0)) ** 2).sum(-1).mean())
                       / norm[:, 2 * l].mean() for l in layers])
    spectra = window_spectra(model, ids[:n_spectra], layers, W, pad_token_id=pad) if n_spectra else {}
    return AttractorSweep(layers=layers, sizes=sizes, kl_sizes=sizes[kl_at], kinds=kinds, kl_kinds=kl_kinds,
                          window=W, prompts=prompts,
                          spread=spread, swap_size=swap_size, recovery=recovery, recovery_raw=recovery_raw, end=end,
                          error=error, kl=kl, kl_delete=kl_delete, kl_swap=kl_swap, top1_delete=top1_delete,
                          top1_swap=top1_swap, spectra=spectra,
                          seconds=time.perf_counter() - t0)


def attractor_runs(model, tokenizer, streams: Mapping[str, np.ndarray], *, prompts: Sequence[str],
                   layers: Sequence[int], sizes: Sequence[float], n_prompts: int | None = None,
                   n_reference_prompts: int | None = None, kl_sizes: Sequence[float] | None = None,
                   reference_kl_sizes: Sequence[float] = (ATTRACTOR_SIZE,),
                   reference_kl_kinds: Sequence[str] = ("plane",), n_spectra: int = 0,
                   n_reference_spectra: int | None = None, **kwargs: Any) -> dict[str, AttractorSweep]:
    """:func:`attractor_sweep` for the trained model and its random initialisations, each with the plane of its own
    stream (a 2-component PCA of every sublayer vector of ``streams[run]: (n, n_sublayers, D)``, as chapter 5).

    streams: ``{run: rs}``, run ``"trained"`` (``model`` itself) or ``"<kind>:<seed>"``
    (:func:`transformer_dynamics.random_init.random_init_model`, built here one at a time). n_prompts /
    n_reference_prompts: how many of ``prompts`` (the first) the trained run / each random init uses (None: all / as
    many as the trained run); kl_sizes / reference_kl_sizes: the sizes run to the output for the trained run / the
    random inits, of the direction kinds ``kwargs["kl_kinds"]`` / ``reference_kl_kinds`` (the claims read the plane
    kind's); n_spectra / n_reference_spectra: texts of :func:`window_spectra` for the trained run / each random
    init (None: as many as the trained run). kwargs: :func:`attractor_sweep`'s.
    -> ``{run: AttractorSweep}``.
    """
    from . import random_init  # noqa: PLC0415
    from .reduce.pca import PCA  # noqa: PLC0415

    prompts = list(prompts)
    n_trained = len(prompts) if n_prompts is None else int(n_prompts)
    n_ref = n_trained if n_reference_prompts is None else int(n_reference_prompts)
    if not 2 <= n_trained <= len(prompts) or not 2 <= n_ref <= len(prompts):
        raise ValueError(f"n_prompts and n_reference_prompts must be in [2, {len(prompts)}] (the prompts given); "
                         f"got {n_prompts} and {n_reference_prompts}")
    out = {}
    for run, rs in streams.items():
        trained = run == "trained"
        lm = model if trained else random_init.random_init_model(model, *perturb._init_of(run))
        pca = PCA(n_components=2).fit(np.asarray(rs))
        kw = {**kwargs, **({} if trained else {"kl_kinds": reference_kl_kinds})}
        out[run] = attractor_sweep(lm, tokenizer, prompts[:n_trained if trained else n_ref], layers=layers,
                                   sizes=sizes, pca=pca, kl_sizes=kl_sizes if trained else reference_kl_sizes,
                                   n_spectra=n_spectra if trained or n_reference_spectra is None
                                   else n_reference_spectra, **kw)
        del lm
    return out


# --------------------------------------------------------------------------------------------------
# Another chapter's ledger, from inside a build
# --------------------------------------------------------------------------------------------------
def chapter_ledger(notebook: str, directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ledger of chapter ``notebook`` (e.g. ``"07_local_dynamics"``) beside this chapter's ledger folder
    ``directory``, or None when that chapter has not run. Inside a book build a chapter records into
    ``<out>/ledger/.partial/<profile>/<stem>`` while the finished chapters' ledgers are in
    ``<out>/ledger/<profile>``: both places are looked at."""
    from .ledger import load  # noqa: PLC0415

    d = Path(directory)
    places = [d / f"{notebook}.json"]
    if d.parent.parent.name == ".partial":
        places.append(d.parents[2] / d.parent.name / f"{notebook}.json")
    for path in places:
        if path.is_file():
            try:
                return load(path)
            except (ValueError, json.JSONDecodeError):
                return None
    return None


def ledger_entry(data: Mapping[str, Any] | None, key: str, model: str) -> dict[str, Any] | None:
    """The entry ``key`` for ``model`` of a loaded ledger (:func:`chapter_ledger`), or None (no ledger, or the key not
    recorded there: another chapter's keys may change)."""
    for e in (data or {}).get("entries", []):
        if e.get("key") == key and e.get("model", "") == model:
            return e
    return None


# --------------------------------------------------------------------------------------------------
# Summaries per layer
# --------------------------------------------------------------------------------------------------
#: The per-layer columns of :func:`layer_summary` read from :meth:`AttractorSweep.curves` (means over prompts).
SUMMARY_CURVES = ("flow:plane", "flow:random", "flow:swap", "basin:plane", "recovery:plane", "validity:plane",
                  "kl:plane", "kl_delete", "kl_swap", "top1_delete", "top1_swap")


def basin_reach(sizes: np.ndarray, basin: np.ndarray) -> np.ndarray:
    """The basin's reach: the size at which basin stability ``basin: (..., S)`` (e.g. the mean over prompts per
    layer) first falls below one half, interpolated linearly in the stability and logarithmically in the size
    between the grid's sizes -> ``(...)``. Censored at the grid's ends: ``sizes[0]`` where it is below one half
    there already, ``sizes[-1]`` where it never falls below; NaN where it is undefined at the first size."""
    sizes = np.asarray(sizes, dtype=np.float64)
    b = np.asarray(basin, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(np.diff(sizes) <= 0) or b.shape[-1] != sizes.size:
        raise ValueError(f"sizes must be (S >= 2,) increasing and basin (..., S); got {sizes.shape}, {b.shape}")
    below = b < 0.5
    first = np.where(below.any(-1), below.argmax(-1), sizes.size)
    k = np.clip(first, 1, sizes.size - 1)
    b0 = np.take_along_axis(b, (k - 1)[..., None], -1)[..., 0]
    b1 = np.take_along_axis(b, k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((b0 - 0.5) / (b0 - b1), 0.0, 1.0)
    ls = np.log(sizes)
    r = np.exp(ls[k - 1] + frac * (ls[k] - ls[k - 1]))
    r = np.where(first == 0, sizes[0], np.where(first == sizes.size, sizes[-1], r))
    return np.where(np.isnan(b[..., 0]), np.nan, r)


def spectra_summary(spectra: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, means over texts of :func:`window_spectra`'s scaled singular values: ``top`` (the largest, of the
    map), ``rms`` (of the map: the linear recovery of a uniformly random direction), ``share_below_1`` (of the map's
    values: directions that shrink relative to the stream) and ``rms_update`` -> ``{name: (n_layers,)}``."""
    full, update = np.asarray(spectra["full"]), np.asarray(spectra["update"])
    return {"top": full[..., 0].mean(0), "rms": np.sqrt((full ** 2).mean(-1)).mean(0),
            "share_below_1": (full < 1).mean(-1).mean(0), "rms_update": np.sqrt((update ** 2).mean(-1)).mean(0)}


def layer_summary(sweeps: Mapping[str, AttractorSweep], names: Sequence[str],
                  size: float = ATTRACTOR_SIZE) -> Any:
    """One row per layer and run kind (``"trained"``, ``"default"``, ``"matched"``: the seeds of a kind averaged):
    the means over prompts of :data:`SUMMARY_CURVES` at ``size``, the basin's reach (:func:`basin_reach` of the plane
    directions) and :func:`spectra_summary` where spectra were computed -> DataFrame indexed by (layer, run)."""
    import pandas as pd  # noqa: PLC0415

    rows = []
    for run, sw in sweeps.items():
        c = sw.curves(size)
        reach = basin_reach(sw.sizes, np.nanmean(c["basin_size:plane"], 0)) if "basin_size:plane" in c else None
        spec = spectra_summary(sw.spectra) if sw.spectra else {}
        for i, (name, l) in enumerate(zip(names, sw.layers)):
            row = {"layer": f"{name} ({l})", "run": run.split(":")[0]}
            row |= {k: float(np.nanmean(c[k][:, i])) for k in SUMMARY_CURVES if k in c}
            if reach is not None:
                row["basin reach"] = float(reach[i])
            row |= {f"spectrum {k}": float(v[i]) for k, v in spec.items()}
            rows.append(row)
    out = pd.DataFrame(rows).groupby(["layer", "run"], sort=False).mean()
    order = pd.MultiIndex.from_product([list(dict.fromkeys(r["layer"] for r in rows)),
                                        list(dict.fromkeys(r["run"] for r in rows))], names=["layer", "run"])
    return out.reindex([i for i in order if i in out.index])
