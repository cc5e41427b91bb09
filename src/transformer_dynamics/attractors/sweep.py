"""The attractor sweep of one model (:func:`attractor_sweep`) and of the trained model with its random
initialisations (:func:`attractor_runs`); :class:`AttractorSweep` holds it (see
:mod:`transformer_dynamics.attractors`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import perturb, random_init, residual
from ..arrays import nanmedian
from ..capture import tokenize
from ..claims import ATTRACTOR_SIZE, BASIN_TOLERANCE
from ..validation import check_int, check_positive_int, check_seed
from .probes import (FD_STEP, KINDS, intervention_outputs, next_token_kl, next_token_logprobs, plane_basis,
                     unit_directions, validity_radius, window_spectra)

__all__ = ["AttractorSweep", "disjoint_halves", "attractor_sweep", "attractor_runs"]

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
    first direction of the kinds ``kl_kinds`` (NaN for the others); ``kl_delete``, ``kl_swap``: ``(n, n_layers)``, and
    ``top1_delete``, ``top1_swap``: 1 where the most likely next token stayed the same, else 0; ``spectra``:
    :func:`window_spectra` on the first texts (empty when not asked for); seconds: wall time.
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
            rec = nanmedian(self.recovery, -1)
            err = nanmedian(self.error, -1)
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
    to the output for the next-token KL (None: all), for the kinds ``kl_kinds`` (of ``kinds``); n_spectra: texts (the
    first prompts) whose window Jacobians' spectra are computed (:func:`window_spectra`; 0: none); seed: the random
    directions. Each prompt runs once (:func:`~transformer_dynamics.perturb.prefix_cache`, ``batch_size`` texts at a
    time); every perturbation is one token from its layer on (:func:`~transformer_dynamics.perturb.extend`, ``chunk``
    rows at a time).
    """
    t0 = time.perf_counter()
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 prompts (the sampling unit), got {len(prompts)}")
    model = residual.of(model, tokenizer)
    n_layers = model.n_layers
    layers = [perturb.check_layer(l, n_layers) for l in layers]
    if not layers or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be distinct and increasing, got {layers}")
    sizes, kl_at = _check_sizes(sizes, kl_sizes)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be some of {KINDS}, got {kinds}")
    kl_kinds = tuple(k for k in kinds if k in kl_kinds)
    R = check_positive_int(n_directions, "n_directions")
    w_max = perturb.equal_window(layers, n_layers)
    W = w_max if window is None else check_int(window, "window", low=1, high=w_max)
    chunk = check_positive_int(chunk, "chunk")
    ids = tokenize(tokenizer, prompts, add_bos=add_bos, strip=strip)
    cache = perturb.prefix_cache(model, ids, batch_size=batch_size)
    clean = cache.clean.astype(np.float64)                              # (n, 2L + 1, D)
    n, _, D = clean.shape
    run = _Clean(cache, clean, np.linalg.norm(clean, axis=-1),          # norms (n, 2L + 1)
                 next_token_logprobs(model, cache.clean[:, 2 * n_layers]),  # (n, V)
                 plane_basis(pca, D) if "plane" in kinds else None)
    per_layer = [_one_layer(model, run, l, ss, kinds=kinds, sizes=sizes, kl_at=kl_at,
                            kk=[kinds.index(k) for k in kl_kinds], R=R, W=W, chunk=chunk)
                 for l, ss in zip(layers, np.random.SeedSequence(check_seed(seed)).spawn(len(layers)))]
    out = {k: np.stack([r[k] for r in per_layer], axis=1).astype(np.float64)  # each (n, L, ...); top-1 as 0/1
           for k in per_layer[0]}
    spread = np.array([np.sqrt(((clean[:, 2 * l] - clean[:, 2 * l].mean(0)) ** 2).sum(-1).mean())
                       / run.norm[:, 2 * l].mean() for l in layers])
    spectra = window_spectra(model, ids[:n_spectra], layers, W) if n_spectra else {}
    return AttractorSweep(layers=layers, sizes=sizes, kl_sizes=sizes[kl_at], kinds=kinds, kl_kinds=kl_kinds,
                          window=W, prompts=prompts, spread=spread, spectra=spectra, **out,
                          seconds=time.perf_counter() - t0)


def _check_sizes(sizes, kl_sizes) -> tuple[np.ndarray, np.ndarray]:
    """``sizes`` as an array (checked) and the index in it of each of ``kl_sizes`` (None: all)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError(f"sizes must be >= 2 increasing positive numbers (perturbation_sizes), got {sizes}")
    kl_sizes = sizes if kl_sizes is None else np.asarray(kl_sizes, dtype=np.float64).reshape(-1)
    match = np.isclose(kl_sizes[:, None], sizes[None], rtol=1e-9)             # (S_kl, S)
    if not kl_sizes.size or not match.any(1).all():
        raise ValueError(f"kl_sizes must be some of sizes {np.round(sizes, 4).tolist()}, got {kl_sizes.tolist()}")
    return sizes, match.argmax(1)


@dataclass
class _Clean:
    """What every layer's perturbations start from: the prompts' prefix cache, their clean stream ``(n, 2L + 1, D)``
    in float64 and its norms ``(n, 2L + 1)``, the clean next-token log-probabilities ``(n, V)``, the PCA plane's basis
    (None without the ``"plane"`` kind)."""

    cache: Any
    clean: np.ndarray
    norm: np.ndarray
    logp: np.ndarray
    plane: np.ndarray | None


def _one_layer(model, run: _Clean, l: int, ss: np.random.SeedSequence, *, kinds, sizes, kl_at, kk, R, W, chunk
               ) -> dict[str, np.ndarray]:
    """Every perturbation at decoder layer ``l`` (its directions drawn from ``ss``) -> {field of
    :class:`AttractorSweep`: (n, ...) without the layer axis}."""
    cache, clean, norm, n, D = run.cache, run.clean, run.norm, run.clean.shape[0], run.clean.shape[2]
    K, S, Sk, last = len(kinds), sizes.size, len(kl_at), clean.shape[1] - 1
    p, q = 2 * l, 2 * l + W
    x = clean[:, p]
    U = np.stack([unit_directions(x, kind, R, plane=run.plane, seed=int(s.generate_state(1)[0]))
                  for kind, s in zip(kinds, ss.spawn(K))], 1)           # (n, K, R, D)
    undefined = ~np.isfinite(U).all(-1)                                 # (n, K, R)
    U = np.where(undefined[..., None], 0.0, U)
    res = {"swap_size": np.full((n, R), np.nan)}
    if "swap" in kinds:
        donors = (np.arange(n)[:, None] + 1 + np.arange(R)[None]) % n
        res["swap_size"] = _rel(x[donors], x[:, None]) / norm[:, p, None]
    # window rows: every size, plus the central differences (+h, -h) and the clean vector through the extension
    steps = np.r_[sizes, FD_STEP, -FD_STEP]                             # (S + 2,)
    vec = x[:, None, None, None] + (steps[None, None, :, None, None] * norm[:, p, None, None, None, None]
                                    * U[:, :, None])                    # (n, K, S + 2, R, D)
    rows = np.r_[np.repeat(np.arange(n), K * (S + 2) * R), np.arange(n)]
    out = _run(model, cache, rows, np.concatenate([vec.reshape(-1, D), x]), layer=l, points=[p, q], chunk=chunk)
    ref = out[-n:, 1].astype(np.float64)                                # (n, D): the clean window end, extended
    out = out[:-n].reshape(n, K, S + 2, R, 2, D).astype(np.float64)
    disp0 = out[:, :, :S, :, 0] - x[:, None, None, None]                # (n, K, S, R, D)
    dispW = out[:, :, :S, :, 1] - ref[:, None, None, None]
    d0, dW = np.linalg.norm(disp0, axis=-1), np.linalg.norm(dispW, axis=-1)
    jvp = (out[:, :, S, :, 1] - out[:, :, S + 1, :, 1]) / (2 * FD_STEP * norm[:, p, None, None, None])  # J u
    pred = sizes[None, None, :, None, None] * norm[:, p, None, None, None, None] * jvp[:, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho0, rhoW = d0 / norm[:, p, None, None, None], dW / norm[:, q, None, None, None]
        bad = undefined[:, :, None, :] | (d0 == 0)
        res["recovery"] = np.where(bad, np.nan, rhoW / rho0)
        res["recovery_raw"] = np.where(bad, np.nan, dW / d0)
        res["end"] = np.where(bad, np.nan, rhoW)
        res["error"] = np.where(bad, np.nan, _rel(dispW, pred) / np.linalg.norm(pred, axis=-1))
    # the next token: the first direction at the KL sizes, run to the output; the layer interventions
    res["kl"] = np.full((n, K, Sk), np.nan)
    if kk:
        kv = vec[:, kk][:, :, kl_at, 0].reshape(-1, D)                   # (n * K_kl * S_kl, D)
        rows = np.repeat(np.arange(n), len(kk) * Sk)
        h = _run(model, cache, rows, kv, layer=l, points=[last], chunk=chunk)[:, 0]
        kj = next_token_kl(model, h, run.logp, rows)[0].reshape(n, len(kk), Sk)
        res["kl"][:, kk] = np.where(undefined[:, kk][:, :, :1], np.nan, kj)
    for name in ("delete", "swap"):
        res[f"kl_{name}"], res[f"top1_{name}"] = next_token_kl(
            model, intervention_outputs(model, cache, l, name, batch_size=chunk), run.logp, np.arange(n))
    return res


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
    from ..reduce.pca import PCA  # noqa: PLC0415

    prompts = list(prompts)
    n_trained, n_ref = perturb.prompt_counts(len(prompts), n_prompts, n_reference_prompts)
    model = residual.of(model, tokenizer)
    out = {}
    for run, rs in streams.items():
        trained = run == "trained"
        lm = model if trained else residual.of(random_init.run_model(model.model, run), tokenizer)
        pca = PCA(n_components=2).fit(np.asarray(rs))
        kw = {**kwargs, **({} if trained else {"kl_kinds": reference_kl_kinds})}
        out[run] = attractor_sweep(lm, tokenizer, prompts[:n_trained if trained else n_ref], layers=layers,
                                   sizes=sizes, pca=pca, kl_sizes=kl_sizes if trained else reference_kl_sizes,
                                   n_spectra=n_spectra if trained or n_reference_spectra is None
                                   else n_reference_spectra, **kw)
        del lm
    return out
