"""The pieces of an attractor sweep: perturbation sizes and directions, the next-token distribution and the layer
interventions, the linearisation's validity radius, and the window map's Jacobian spectra (see
:mod:`transformer_dynamics.attractors`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from .. import perturb, residual
from ..claims import ATTRACTOR_SIZE
from ..validation import check_positive_int, check_seed

__all__ = ["KINDS", "INTERVENTIONS", "FD_STEP", "LINEAR_TOLERANCE", "SIZE_RANGE", "CURVES", "perturbation_sizes",
           "kl_grid", "plane_basis", "unit_directions", "next_token_logprobs", "kl_divergence", "next_token_kl",
           "swapped_layers", "intervention_outputs", "validity_radius", "window_spectra"]

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
    rm = residual.of(model)
    norm = getattr(rm.base, "norm", None)
    head = rm.model.get_output_embeddings()
    if norm is None or head is None:
        raise ValueError("this model has no final norm or LM head (model.model.norm, get_output_embeddings())")
    cap = getattr(rm.config, "final_logit_softcapping", None)
    p = next(rm.model.parameters())
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
    rm = residual.of(model)
    layers = rm.layers
    a, b = perturb.check_layer(a, rm.n_layers), perturb.check_layer(b, rm.n_layers)
    types = getattr(rm.config, "layer_types", None)
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
    model = residual.of(model)
    n_layers = model.n_layers
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
                   pad_token_id: int | None = None) -> dict[str, np.ndarray]:
    """Singular values of the Jacobian of the window map ``x_p -> x_{p+W}`` (``p = 2l``, the product of the
    sublayer Jacobians of :func:`transformer_dynamics.dynamics.jacobians`, context frozen) and of its update
    ``J - I``, each scaled by the stream's norm ``||x_p|| / ||x_{p+W}||`` (a scaled value below 1: that direction
    shrinks relative to the stream) -> ``{"full": (n, n_layers, D), "update": (n, n_layers, D)}`` descending."""
    from .. import dynamics as dy  # noqa: PLC0415

    window = check_positive_int(window, "window")
    model = residual.of(model, pad_id=pad_token_id)
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
