"""Chapter 7's measures as the claim registry's evidence: which sublayers and starts the registry's dynamics claims
read, their curves on the texts and on every bootstrap resample of them, and the evidence of each run.

- :func:`depth_thirds`, :func:`claim_sublayers`: the sublayers the readings' depth contrasts weigh (found by
  asking the statistics themselves, :func:`transformer_dynamics.effects.depth_contrast`), optionally every
  ``layer_stride``-th layer of them;
- :func:`exponent_starts`, :func:`lower_starts`: the inputs of the paper's five perturbed layers, and of its
  first two (the "lower layers" of ``attractor_lower_exponents``);
- :func:`claim_curves`: one run's curves (means over texts through
  :func:`transformer_dynamics.robustness.mean_curves`; the lower layers' exponent, a max over starts of a median
  over texts, recomputed on the same resamples);
- :func:`reference_runs`: :func:`~.local.local_dynamics` of the trained model (on the texts and on their
  token-shuffled control) and of the same architecture at random initialisation
  (:mod:`transformer_dynamics.random_init`), computing what the claims read; :func:`jpca_runs` the same for jPCA on
  captured residual streams;
- :func:`run_evidence`, :func:`jpca_evidence`: [:class:`~transformer_dynamics.verdicts.Evidence`] per run;
  :func:`verdict_table`: both through :func:`transformer_dynamics.verdicts.judge`;
- :func:`recovery_table`, :func:`thirds_table`: the chapter's tables (exponents against chapter 5's noise
  recovery at the perturbed depths; the measures' means over the thirds per run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .. import claims as _claims
from .. import residual
from .. import effects as fx
from ..bootstrap import bootstrap_indices
from ..perturb import depth_names, paper_layers
from ..robustness import evidence_from_curves, mean_curves
from ..verdicts import judge
from .exponents import relative_exponents
from .local import _SPECTRAL_KEYS, REFERENCE_LABELS, LocalDynamics, local_dynamics, predicted_recovery
from .maps import text_token_ids
from .rotational import JPCAResamples, JPCAResult, jpca, jpca_projection, jpca_resampled

__all__ = ["CHAPTER", "depth_thirds", "claim_sublayers", "exponent_starts", "lower_starts", "claim_curves",
           "claim_pairs", "reference_runs", "run_workers", "JPCARun", "jpca_runs", "jpca_table", "jpca_by_reference",
           "jpca_planes",
           "run_evidence", "jpca_evidence", "verdict_table", "verdict_tables", "recovery_table", "thirds_table"]

CHAPTER = "07_local_dynamics"


def depth_thirds(n_sublayers: int) -> dict[str, np.ndarray]:
    """Sublayer indices of the early, middle and late thirds of depth by layer, exactly as the claims' depth
    contrasts take them (read off :func:`transformer_dynamics.effects.depth_contrast`'s weights).
    Returns ``{"early": (n,), "middle": (n,), "late": (n,)}``."""
    if int(n_sublayers) < 6 or n_sublayers % 2:
        raise ValueError(f"n_sublayers must be even and >= 6 (three layers), got {n_sublayers}")
    w = fx.depth_contrast(np.eye(int(n_sublayers)))                 # early: > 0, late: < 0, middle: 0
    s = np.arange(int(n_sublayers))
    return {"early": s[w > 0], "middle": s[w == 0], "late": s[w < 0]}


def _per_sublayer_readings() -> list[tuple[str, str]]:
    """The dynamics claims' readings over per-sublayer curves (the spectra of :class:`~.local.LocalDynamics`)."""
    return [(k, r) for k, r in _claims.readings(_claims.claims_of(source="dynamics"))
            if set(_claims.get(k).reading(r).keys) <= set(_SPECTRAL_KEYS)]


def claim_sublayers(n_sublayers: int, *, layer_stride: int = 1) -> np.ndarray:
    """``(m,)`` the sublayers the registry's per-sublayer dynamics readings weigh (each curve set to a unit impulse
    at one sublayer: those whose statistic moves), in increasing order. layer_stride: keep every
    ``layer_stride``-th layer of each contiguous block of them (both sublayers of a kept layer), counted from the
    block's outer end (the first layer for a block that starts the network, else its last): the thirds' ends,
    where their contrast lives, are always measured."""
    if isinstance(layer_stride, bool) or int(layer_stride) != layer_stride or layer_stride < 1:
        raise ValueError(f"layer_stride must be an integer >= 1, got {layer_stride!r}")
    n_sublayers = int(n_sublayers)
    impulses = np.eye(n_sublayers)
    moved = np.zeros(n_sublayers, dtype=bool)
    for key, name in _per_sublayer_readings():
        r = _claims.get(key).reading(name)
        still = r({k: np.zeros((1, n_sublayers)) for k in r.keys})[0]
        moved |= np.abs(r({k: impulses for k in r.keys}) - still) > 0
    layers = np.unique(np.flatnonzero(moved) // 2)
    keep = []
    for block in np.split(layers, np.flatnonzero(np.diff(layers) > 1) + 1):
        if not block.size:
            continue
        offset = block - block[0] if block[0] == 0 else block[-1] - block
        keep += block[offset % int(layer_stride) == 0].tolist()
    return np.sort(np.array([2 * l + j for l in keep for j in (0, 1)], dtype=np.int64))


def exponent_starts(n_sublayers: int) -> np.ndarray:
    """``(k,)`` the inputs (sublayer ``2l``) of the paper's five perturbed layers mapped to this depth
    (:func:`transformer_dynamics.perturb.paper_layers`): where chapter 5 perturbs."""
    return 2 * np.asarray(paper_layers(int(n_sublayers) // 2), dtype=np.int64)


def lower_starts(n_sublayers: int) -> np.ndarray:
    """``(2,)`` the inputs of the first and early perturbed layers: the paper's "lower layers"."""
    return exponent_starts(n_sublayers)[:2]


def _lower_relative(result: LocalDynamics) -> np.ndarray:
    """``(B, 2)`` each text's top exponent at the lower starts relative to the RS's own growth."""
    lower = lower_starts(result.n_sublayers)
    missing = sorted(set(lower.tolist()) - set(result.starts.tolist()))
    if missing:
        raise ValueError(f"the exponents were not computed from the lower layers' inputs {missing}: pass "
                         "starts=dynamics.exponent_starts(n_sublayers) to local_dynamics")
    idx = [int(np.flatnonzero(result.starts == s)[0]) for s in lower]
    return relative_exponents(result["exponents"][:, idx, :1], result["norms"], lower)[:, :, 0]


def claim_curves(result: LocalDynamics, *, n_boot: int = 1000, seed: int = 0
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One run's curves for the registry, on all texts and on ``n_boot`` resamples of them (``seed``: the resamples
    of :func:`transformer_dynamics.bootstrap.bootstrap_indices`, the same for every run of the same texts, so that
    :func:`transformer_dynamics.verdicts.compare` pairs them).

    -> ``(full, replicates)``: the spectra ``(1, S)`` / ``(B, S)`` (means over texts; NaN off the computed
    sublayers), ``bottleneck_fraction`` ``(1,)`` / ``(B,)`` (mean over texts) and, when the exponents were taken from
    the lower layers, ``lower_relative_exponent``: the larger over the two lower starts of the median over texts of
    the relative top exponent."""
    per_text = {k: result[k] for k in (*_SPECTRAL_KEYS, "bottleneck_fraction") if k in result}
    curves = mean_curves(per_text, n_boot=n_boot, seed=seed)
    if set(lower_starts(result.n_sublayers).tolist()) <= set(result.starts.tolist()):
        rel = _lower_relative(result)                                                   # (n, 2)
        stat = lambda x: np.nanmax(np.nanmedian(x, axis=-2), axis=-1)  # noqa: E731
        n = rel.shape[0]
        curves.full["lower_relative_exponent"] = stat(rel[None])
        curves.boot["lower_relative_exponent"] = stat(rel[bootstrap_indices(n, n_boot, seed)])
        leave_out = np.array([np.delete(np.arange(n), i) for i in range(n)])
        curves.jack["lower_relative_exponent"] = stat(rel[leave_out])
    return curves


def claim_pairs(curves: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """``[(claim, reading)]`` of the registry's dynamics claims whose curves are all in ``curves``."""
    return [(k, r) for k, r in _claims.readings(_claims.claims_of(source="dynamics"))
            if set(_claims.get(k).reading(r).keys) <= set(curves)]


def reference_runs(model, tokenizer, texts: Sequence[str], *, inits: Sequence[str] = ("default", "matched"),
                   seeds: Sequence[int] = (0, 1, 2), conditions: Sequence[str] = ("original", "shuffled"),
                   layer_stride: int = 1, seed: int = 0, add_bos: bool = True, strip: bool = False,
                   keep_eigenvalues: bool = True, workers: int | None = None,
                   **kwargs: Any) -> dict[tuple[str, str], LocalDynamics]:
    """:func:`~.local.local_dynamics` of the trained ``model`` on ``texts`` under each of ``conditions``
    (``"shuffled"``: the paper's token-shuffled control, :func:`~.maps.text_token_ids` with ``seed``), and of the
    same architecture at random initialisation (:func:`transformer_dynamics.random_init.random_init_model`, every
    kind of ``inits`` and seed of ``seeds``, one model per run) on the original texts; each computing what the
    claims read: spectra at :func:`claim_sublayers` (``layer_stride``), exponents from :func:`exponent_starts`,
    the bottleneck. keep_eigenvalues: for the trained model's runs (the figures). Keywords go to
    :func:`~.local.local_dynamics` (``pad_token_id`` defaults to the model's
    :attr:`~transformer_dynamics.residual.ResidualModel.pad_id`).

    workers: the runs side by side in that many processes with one thread each
    (:func:`transformer_dynamics.workers.map_jobs`: a run's float64 eigenvalues keep two cores busy, its
    Jacobians and forward passes do not); 1: one after another in this process; None: :func:`run_workers`.
    A run's numbers do not depend on where it ran, up to the float32 round-off of its Jacobians (a matrix
    product's threads change its last bits).

    -> ``{(run, condition): LocalDynamics}``, runs named as :func:`transformer_dynamics.verdicts.judge` reads them:
    ``"trained"``, ``"default:<seed>"``, ``"matched:<seed>"``.
    """
    from .. import random_init  # noqa: PLC0415
    from .. import workers as _workers  # noqa: PLC0415

    for kind in inits:
        random_init.check_kind(kind)
    rm = residual.of(model, tokenizer)
    n_sublayers = rm.n_sublayers
    kwargs = {"pad_token_id": rm.pad_id, "bottleneck": True,
              "sublayers": claim_sublayers(n_sublayers, layer_stride=layer_stride),
              "starts": exponent_starts(n_sublayers), **kwargs}
    ids = {c: text_token_ids(tokenizer, texts, condition=c, seed=seed, add_bos=add_bos, strip=strip)
           for c in dict.fromkeys(["original", *conditions])}
    runs = [(("trained", c), "trained", 0, c, keep_eigenvalues) for c in conditions]
    runs += [((f"{kind}:{int(s)}", "original"), kind, int(s), "original", False) for kind in inits for s in seeds]
    if workers is None:
        workers = run_workers(rm, len(ids["original"]), len(kwargs["sublayers"]), len(runs))
    sent = _Weights.of(rm) if workers > 1 else rm.model
    jobs = [(sent, ids[c], kind, s, {**kwargs, "keep_eigenvalues": keep}) for _, kind, s, c, keep in runs]
    results = _workers.map_jobs(_reference_run, jobs, workers)
    return {key: r for (key, *_), r in zip(runs, results)}


#: Seconds of one float64 eigenvalue problem of a D x D update per D**3 (0.17 s at D = 576 on one core of the
#: 2-core machine the book is measured on): :func:`run_workers`' estimate of a run's work.
_EIG_SECONDS_PER_D3 = 9e-10
#: Below this many seconds of estimated work per run, starting worker processes (each importing torch and
#: transformers, the model passed through shared memory) costs more than running the runs side by side saves.
_MIN_RUN_SECONDS = 20.0


def run_workers(model, n_texts: int, n_spectra: int, n_runs: int) -> int:
    """How many processes :func:`reference_runs` runs its ``n_runs`` runs in: one per CPU core
    (:func:`transformer_dynamics.workers.default_workers`, two model copies' memory per worker) for a model on
    the CPU with floating-point weights whose runs are long enough (``n_texts`` texts' eigenvalues at
    ``n_spectra`` sublayers estimated at >= 20 s a run); 1 otherwise (a GPU's or a quantised model, small runs).
    model: its :class:`~transformer_dynamics.residual.ResidualModel`, or the model as loaded."""
    from .. import workers as _workers  # noqa: PLC0415

    rm = residual.of(model)
    if rm.device.type != "cpu" or not rm.dtype.is_floating_point or n_runs < 2:
        return 1
    if n_texts * n_spectra * rm.d_model ** 3 * _EIG_SECONDS_PER_D3 < _MIN_RUN_SECONDS:
        return 1
    size = sum(p.numel() * p.element_size() for p in rm.model.parameters())
    return _workers.default_workers(n_runs, job_bytes=2 * size)


class _Weights(NamedTuple):
    """A model as its config, weights and dtype: what a worker of :func:`reference_runs` is sent and rebuilds
    (:meth:`build`). The module itself may not pickle: a model once asked for its hidden states holds transformers'
    output-capturing hooks, local functions. The weights travel through shared memory (torch's pickling)."""

    config: Any
    state: dict[str, Any]
    dtype: Any

    @classmethod
    def of(cls, rm: residual.ResidualModel) -> "_Weights":
        return cls(rm.model.config, rm.model.state_dict(), rm.dtype)

    def build(self):
        """The model again: its architecture from the config, built without initialising it
        (:func:`transformer_dynamics.random_init.uninitialised_model`), then these weights (tied ones stay tied), in
        eval mode with gradients off as :func:`transformer_dynamics.models.load_model` leaves it."""
        from ..random_init import uninitialised_model  # noqa: PLC0415

        model = uninitialised_model(self.config, self.dtype)
        model.load_state_dict(self.state)
        return model.eval().requires_grad_(False)


def _reference_run(model, token_ids, kind: str, seed: int, kwargs: dict[str, Any]) -> LocalDynamics:
    """One run of :func:`reference_runs`: the trained ``model`` (``kind == "trained"``; a :class:`_Weights` is built
    first) or its random init."""
    if isinstance(model, _Weights):
        model = model.build()
    if kind == "trained":
        return local_dynamics(model, token_ids, **kwargs)
    from .. import random_init  # noqa: PLC0415

    return local_dynamics(random_init.random_init_model(model, kind, seed), token_ids, **kwargs)


class JPCARun(NamedTuple):
    """One stream's jPCA (:func:`jpca_runs`): ``fit`` the :class:`~.rotational.JPCAResult` on its texts (with its PCs'
    ``components`` and ``explained``), ``resamples`` the :class:`~.rotational.JPCAResamples` (the layer-shuffled
    control, every bootstrap resample), ``Z`` the trajectories projected on the PCs ``(n, S, k)``; unpacks as
    ``fit, resamples, Z``."""

    fit: JPCAResult
    resamples: JPCAResamples
    Z: np.ndarray


def jpca_runs(streams: Mapping[str, np.ndarray], *, k: int = 6, n_boot: int = 1000, n_shuffles: int = 100,
              seed: int = 0) -> dict[str, JPCARun]:
    """jPCA of each residual stream of ``streams`` (``{run: rs (n, S, D)}``, e.g. the trained model's capture and
    the random-init references): its own projection on ``k`` PCs (:func:`~.rotational.jpca_projection`), the fit
    (:func:`~.rotational.jpca`) and the layer-shuffled control on the texts and every resample
    (:func:`~.rotational.jpca_resampled`). -> ``{run: JPCARun}``."""
    out = {}
    for run, rs in streams.items():
        Z, comps, explained = jpca_projection(np.asarray(rs), k)
        fit = jpca(Z, projected=True)
        fit.components, fit.explained = comps, explained
        out[run] = JPCARun(fit, jpca_resampled(Z, n_boot=n_boot, n_shuffles=n_shuffles, seed=seed), Z)
    return out


def run_evidence(results: Mapping[str, LocalDynamics], *, n_boot: int = 1000, seed: int = 0) -> list:
    """The registry's dynamics claims on each run of ``results`` (``{run: LocalDynamics}``, runs named as
    :func:`transformer_dynamics.verdicts.judge` reads them: ``"trained"``, ``"default:<seed>"``...) ->
    [:class:`~transformer_dynamics.verdicts.Evidence`], every claim whose curves the run has."""
    out = []
    for run, r in results.items():
        curves = claim_curves(r, n_boot=n_boot, seed=seed)
        out += evidence_from_curves(curves, claim_pairs(curves.full), run=run, n=r.n_texts, null_moves=False)
    return out


def jpca_evidence(results: Mapping[str, JPCAResamples]) -> list:
    """``jpca_rotational`` on each run of ``results`` (``{run: JPCAResamples}``) -> [Evidence]."""
    out = []
    for run, r in results.items():
        curves = r.curves()
        out += evidence_from_curves(curves, claim_pairs(curves.full), run=run, n=r.n, null_moves=False)
    return out


def verdict_tables(results: Mapping[tuple[str, str], LocalDynamics],
                   jpca_results: Mapping[tuple[str, str], JPCARun] | None = None, *, n_boot: int = 1000, seed: int = 0
                   ) -> dict[str, pd.DataFrame]:
    """:func:`verdict_table` of one model per condition: ``results`` ``{(run, condition): LocalDynamics}``
    (:func:`reference_runs`), ``jpca_results`` ``{(run, condition): JPCARun}``
    (:func:`jpca_runs`) -> ``{condition: table}``; a condition's table sets its trained run against the references
    measured on that condition (the random inits: on the original texts)."""
    jpca_results = jpca_results or {}
    conditions = dict.fromkeys(c for (run, c) in results if run == "trained")
    return {c: verdict_table({run: r for (run, cc), r in results.items() if cc == c},
                             {run: j.resamples for (run, cc), j in jpca_results.items() if cc == c},
                             n_boot=n_boot, seed=seed) for c in conditions}


def jpca_table(jpca_results: Mapping[tuple, JPCARun]) -> pd.DataFrame:
    """One row per jPCA run (``{key: JPCARun}``, :func:`jpca_runs`; the keys become the
    index): variance in the PCs, both R^2, their ratio and its layer-shuffled median, the skew fit's R^2 over its
    layer-shuffled median with the bootstrap interval of the difference, the fastest plane's frequency and
    period."""
    rows = {}
    for key, (fit, res, _) in jpca_results.items():
        omega = float(fit.frequencies[0]) if len(fit.frequencies) else np.nan
        lo, hi = np.nanquantile(res.replicates, [0.025, 0.975]) if res.replicates.size else (np.nan, np.nan)
        rows[key] = {"texts": res.n, "variance in the PCs": float(np.nansum(fit.explained)), "R² skew": fit.r2_skew,
                     "R² unconstrained": fit.r2_full, "ratio": fit.ratio,
                     "ratio, layer-shuffled (median)": float(np.median(res.shuffled)),
                     "R² skew, layer-shuffled (median)": float(np.median(res.shuffled_r2_skew)),
                     "R² skew − shuffled": res.excess, "95% interval": (float(lo), float(hi)),
                     "ω of the fastest plane (rad/sublayer)": omega,
                     "period (sublayers)": 2 * np.pi / omega if omega else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def jpca_by_reference(jpca_results: Mapping[tuple[str, str], JPCARun]
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``({label: R^2 skew}, {label: (n_shuffles,) the shuffled orders' R^2 skew})`` of one model's jPCA runs
    (``{(run, condition): JPCARun}``), labelled as :data:`~.local.REFERENCE_LABELS` with the
    seed of a random init: the panels of :func:`transformer_dynamics.plots.dynamics.plot_jpca_control`."""
    values, controls = {}, {}
    for (run, condition), (fit, res, _) in jpca_results.items():
        kind, _, s = run.partition(":")
        label = REFERENCE_LABELS.get((kind, condition), f"{run}, {condition}") + (f" (seed {s})" if s else "")
        values[label], controls[label] = fit.r2_skew, res.shuffled_r2_skew
    return values, controls


def jpca_planes(jpca_results: Mapping[tuple[str, str], JPCARun]) -> dict[str, tuple]:
    """``{condition: (Z, plane, frequency)}`` the trained model's trajectories and its fastest rotational plane per
    condition (``{(run, condition): JPCARun}``; conditions without a plane left out): the
    panels of :func:`transformer_dynamics.plots.dynamics.plot_jpca_plane`."""
    return {c: (Z, fit.planes[0], float(fit.frequencies[0])) for (run, c), (fit, _, Z) in jpca_results.items()
            if run == "trained" and len(fit.planes)}


def verdict_table(results: Mapping[str, LocalDynamics], jpca: Mapping[str, JPCAResamples] | None = None, *,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The registry's verdicts on one model and condition: :func:`run_evidence` of ``results`` (``{run:
    LocalDynamics}``) and :func:`jpca_evidence` of ``jpca`` (``{run: JPCAResamples}``) through
    :func:`transformer_dynamics.verdicts.judge` (the trained run against every random-init reference present) ->
    judge's table, for :meth:`transformer_dynamics.ledger.Ledger.claims`."""
    ev = run_evidence(results, n_boot=n_boot, seed=seed) + jpca_evidence(jpca or {})
    return judge(ev, seed=seed)


def recovery_table(result: LocalDynamics, recovery: Sequence[np.ndarray]) -> pd.DataFrame:
    """The Jacobians against chapter 5's noise recovery at the paper's perturbed depths (``result.starts`` =
    :func:`exponent_starts`): per depth, the median over texts of the top exponent, of the same relative to the
    RS's own growth, of the recovery the Jacobians predict (:func:`~.local.predicted_recovery`) and of the measured
    one (``recovery``: one ``(n,)`` array per depth, e.g. :func:`transformer_dynamics.perturb.noise_sweep`'s
    ``.recovery``). -> DataFrame indexed by depth name, with the layer and sublayer."""
    starts = result.starts
    if len(recovery) != len(starts):
        raise ValueError(f"need one recovery array per start ({len(starts)}), got {len(recovery)}")
    pred = predicted_recovery(result)
    with np.errstate(invalid="ignore"):
        frame = pd.DataFrame({"layer": starts // 2, "sublayer": starts,
                              "λ₁": np.median(result["top_exponent"], axis=0),
                              "λ₁ relative": np.median(result["top_relative_exponent"], axis=0),
                              "predicted recovery": np.nanmedian(pred, axis=0),
                              "measured recovery": [float(np.median(r)) for r in recovery]},
                             index=depth_names((starts // 2).tolist()))
    frame.index.name = "depth"
    return frame


def thirds_table(results: Mapping[tuple, LocalDynamics], measures: Sequence[str]) -> pd.DataFrame:
    """Each measure's mean over texts and the sublayers of each third (NaN where none was computed), per run.

    results: ``{key: LocalDynamics}`` (e.g. ``(model, run, condition)`` tuples, which become the index).
    -> DataFrame indexed like ``results``' keys, columns ``(measure, third)``."""
    rows = {}
    for key, r in results.items():
        th = depth_thirds(r.n_sublayers)
        with np.errstate(invalid="ignore"):
            rows[key] = {(m, t): float(np.nanmean(r[m][:, th[t]])) if np.isfinite(r[m][:, th[t]]).any()
                         else np.nan for m in measures for t in ("early", "middle", "late")}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame
