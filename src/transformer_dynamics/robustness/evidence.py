"""The evidence behind each claim of the registry: its value and bootstrap replicates over the sampling unit,
on the data and on the reference runs, and the verdicts.

- :func:`evidence_from_curves`: the registry's statistics applied to curves (any source) -> :class:`Evidence`;
- :func:`claim_evidence`: every residual-stream claim on one stream ``rs`` (curves of
  :mod:`transformer_dynamics.robustness.curves`);
- :func:`claim_evidence_runs`: :func:`claim_evidence` of many streams side by side (one process per core);
- :func:`stream_verdicts`: one model's stream with its references (the residual-accumulation null of the same
  texts, random initialisations) -> the verdict table of :func:`transformer_dynamics.verdicts.judge`;
- :func:`evidence_frame`: evidence as a table (one row per claim, reading and run, each decided on its own);
- :func:`first_transitions_table`: the earliest transitions under each capture variant (chapter 8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import os
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as _claims
from .. import metrics, mutual_info, nulls
from ..arrays import check_rs, transition_kind
from ..verdicts import Evidence, decide, judge, pool_seeds
from .stored import cached_evidence
from .curves import CurveOptions, Curves, _MIN_RS, _nanmean, cae_curves, group_of, rs_curves

__all__ = ["evidence_from_curves", "claim_evidence", "claim_evidence_runs", "stream_verdicts", "cae_verdicts",
           "evidence_frame", "first_transitions_table", "rs_readings"]


def rs_readings(keys: Iterable[str] | None = None, *, mi_methods: Sequence[str] = ("kde",),
                headline_only: bool = False) -> list[tuple[str, str]]:
    """``[(claim, reading)]`` of the residual-stream claims ``keys`` (None: all of them) whose curves exist with
    these MI estimators."""
    keys = _claims.claims_of(source="rs") if keys is None else list(keys)
    out = []
    for k, r in _claims.readings(keys, headline_only=headline_only):
        c = _claims.get(k)
        if c.source != "rs":
            raise ValueError(f"claim {k!r} is decided from {c.source!r} curves, not from a residual stream")
        reading = c.reading(r)
        if all(not key.startswith(("mi:", "mi_a:")) or key.split(":", 1)[1] in mi_methods for key in reading.keys):
            out.append((k, r))
    return out


def _null_moves(keys: Sequence[str]) -> bool:
    heads = []
    for key in keys:
        head = key.split(":")[0]
        heads.append("rot" if head.startswith("rot") else "pca" if head.startswith(("pcs", "pca"))
                     else "mi" if head in ("mi_a", "r_b", "mag_b") else head)
    return any(nulls.MOVES.get(h, True) for h in heads)


def evidence_from_curves(curves: Curves, pairs: Sequence[tuple[str, str]], *, run: str = "trained", n: int,
                         null_moves: bool | None = None) -> list[Evidence]:
    """The registry's statistics of ``pairs`` ``[(claim, reading)]`` on a source's :class:`~.curves.Curves` -> one
    :class:`Evidence` per pair, for run ``run`` over ``n`` sampling units: the value on ``full``, the replicates on
    ``boot`` (or, for a statistic reading any curve that ``boot`` lacks, on ``half``) and the leave-one-out values on
    ``jack`` where it has the curves. ``null_moves``: whether the accumulation null can move the statistic (None:
    from its curves, :data:`transformer_dynamics.nulls.MOVES`)."""
    out = []
    for key, name in pairs:
        r = _claims.get(key).reading(name)
        missing = [k for k in r.keys if k not in curves.full]
        if missing:
            raise KeyError(f"claim {key!r} ({name}) needs the curves {missing}; they were not computed")
        value = float(r(curves.full)[0])
        src = curves.boot if all(k in curves.boot for k in r.keys) else curves.half
        boot = r(src) if all(k in src for k in r.keys) else np.zeros(0)
        jack = r(curves.jack) if curves.jack and all(k in curves.jack for k in r.keys) else None
        moves = _null_moves(r.keys) if null_moves is None else null_moves
        out.append(Evidence(key, name, run, value, boot, int(n), jackknife=jack, extra={"null_moves": moves}))
    return out


def claim_evidence(rs, keys: Iterable[str] | None = None, *, run: str = "trained", n_boot: int = 1000,
                   n_boot_slow: int | None = 200, seed: int = 0, mi_methods: Sequence[str] = ("kde",),
                   mi_units=None, massive=None, n_shuffles: int = 100, variance: float = 0.9,
                   pca_components: int | None = None, headline_only: bool = False) -> list[Evidence]:
    """Every residual-stream claim ``keys`` (None: all) on one stream, with ``n_boot`` bootstrap resamples of the
    texts (the statistics that must be recomputed, MI, rotations and PCA, on ``n_boot_slow`` half-samples).

    rs: (n_samples, n_sublayers, d_model). mi_units: int (that many random units, ``seed``), indices, or None
    (all); massive: the massive units (None: the stream's own, :func:`transformer_dynamics.metrics.massive_units`);
    other keywords as :class:`~.curves.CurveOptions`. -> [:class:`Evidence`], in registry order.
    """
    rs = check_rs(rs, **_MIN_RS)
    pairs = rs_readings(keys, mi_methods=mi_methods, headline_only=headline_only)
    curve_keys = {k for key, name in pairs for k in _claims.get(key).reading(name).keys}
    groups = [g for g in ("mean", "r", "cos", "vel", "mi", "rot", "pca") if g in {group_of(k) for k in curve_keys}]
    D = rs.shape[2]
    units = (metrics.subsample_units(D, mi_units, seed=seed) if mi_units is None or np.isscalar(mi_units)
             else np.asarray(mi_units, dtype=np.int64))
    methods = tuple(dict.fromkeys(k.split(":", 1)[1] for k in curve_keys if k.startswith(("mi:", "mi_a:"))))
    opts = CurveOptions(massive=metrics.massive_units(rs) if massive is None else np.asarray(massive),
                        mi_units=units, mi_methods=methods, n_shuffles=n_shuffles, variance=variance,
                        pca_components=pca_components, seed=seed, keys=frozenset(curve_keys))
    curves = rs_curves(rs, groups, opts, n_boot=n_boot, n_boot_slow=n_boot_slow, seed=seed)
    return evidence_from_curves(curves, pairs, run=run, n=rs.shape[0])


def _nbytes(rs: Any) -> int:
    return int(np.prod(rs.shape)) * 4 if hasattr(rs, "shape") else 0


#: Below this many bytes of streams in all, the runs' evidence is computed here, one after another: spawning a
#: worker (a fresh interpreter importing torch) costs seconds, more than such small jobs take.
IN_PROCESS_BYTES = 256 * 2**20


def _evidence_job(rs: Any, kwargs: dict[str, Any]) -> list[Evidence]:
    return claim_evidence(rs.to_numpy() if hasattr(rs, "to_numpy") else rs, **kwargs)


def claim_evidence_runs(runs: Mapping[Any, Any], *, per_run: Mapping[Any, dict] | None = None,
                        workers: int | None = None, cache_dir: str | os.PathLike | None | bool = None,
                        **kwargs: Any) -> dict[Any, list[Evidence]]:
    """:func:`claim_evidence` of every stream of ``runs`` ({key: rs}), side by side in worker processes with one
    thread each (:func:`transformer_dynamics.workers.map_jobs`; None: one per core while the available memory holds
    ~8x the largest stream per worker, and here when the streams are small, :data:`IN_PROCESS_BYTES`; 1: one after
    another here). Keywords as :func:`claim_evidence`, ``per_run[key]`` overriding them for one run. Each run's
    evidence is stored in the cache, reading by reading, and read back when the same stream is asked for it with the
    same settings again (:mod:`.stored`; cache_dir: None the default cache, a folder, or False: compute, store
    nothing).
    -> {key: [Evidence]} in the order of ``runs``."""
    from .. import workers as _workers  # noqa: PLC0415

    per_run = per_run or {}
    kwargs_of = {k: {**kwargs, **per_run.get(k, {})} for k in runs}

    def compute(todo: Mapping[Any, Any], kw_of: Mapping[Any, dict[str, Any]]) -> dict[Any, list[Evidence]]:
        keys = list(todo)
        n_workers = workers
        if n_workers is None:
            total = sum(_nbytes(todo[k]) for k in keys)
            n_workers = 1 if total < IN_PROCESS_BYTES else _workers.default_workers(
                len(keys), 8 * max(_nbytes(todo[k]) for k in keys))
        out = _workers.map_jobs(_evidence_job, [(todo[k], kw_of[k]) for k in keys], n_workers)
        return dict(zip(keys, out))

    if not runs:
        return {}
    return cached_evidence(runs, kwargs_of, compute, cache_dir)


def stream_verdicts(rs, references: Mapping[str, Any] | None = None, keys: Iterable[str] | None = None, *,
                    null: bool = True, null_seed: int = 0, reference_readings: str = "headline",
                    readings: str = "all", workers: int | None = None, seed: int = 0, **kwargs: Any
                    ) -> tuple[pd.DataFrame, list[Evidence]]:
    """One model's verdicts on the residual-stream claims ``keys``, against what any residual stream gives.

    rs: (n_samples, n_sublayers, d_model), the data; references: {run: rs'} random-init streams named
    ``"default:<seed>"`` / ``"matched:<seed>"`` (fewer texts allowed); null: also the residual-accumulation null of
    ``rs`` (:func:`transformer_dynamics.nulls.accumulation_null`, ``null_seed``); reference_readings:
    ``"headline"`` (the references on the headline readings only) or ``"all"``; readings: the same for the data
    (``"all"``: every reading the curves allow). Keywords as
    :func:`claim_evidence`. -> (:func:`transformer_dynamics.verdicts.judge`'s table, every :class:`Evidence`).
    """
    runs: dict[str, Any] = {"trained": rs}
    if null:
        runs["null"] = nulls.accumulation_null(rs, seed=null_seed)
    runs.update(references or {})
    per_run = {r: {"run": r, "headline_only": (readings if r == "trained" else reference_readings) == "headline"}
               for r in runs}
    ev = claim_evidence_runs(runs, per_run=per_run, workers=workers, keys=keys, seed=seed, **kwargs)
    flat = [e for es in ev.values() for e in es]
    return judge(flat, seed=seed), flat


def cae_verdicts(trained: Mapping[Any, tuple], references: Mapping[str, tuple] | None = None,
                 keys: Iterable[str] | None = None, *, n_boot: int = 1000, seed: int = 0
                 ) -> tuple[pd.DataFrame, list[Evidence]]:
    """The autoencoder's claims (source ``"cae"``) decided over its test texts, pooled over training seeds.

    trained: {training seed: (CAEResult, rs_test)} of the trained model's stream (each CAE on its own test texts);
    references: {run: (CAEResult, rs_test)} of random-init streams, runs named ``"default:<seed>"`` /
    ``"matched:<seed>"``. Each seed's curves are resampled over its test texts (:func:`~.curves.cae_curves`); the
    seeds are pooled (:func:`transformer_dynamics.verdicts.pool_seeds`: the spread between them is reported with
    each row, column ``seeds``). -> (:func:`transformer_dynamics.verdicts.judge`'s table, every :class:`Evidence`).
    """
    keys = _claims.claims_of(source="cae") if keys is None else list(keys)
    pairs = _claims.readings(keys)
    if not trained:
        raise ValueError("trained is empty: give at least one {seed: (cae, rs_test)}")
    per_seed = []
    for res, x in trained.values():
        per_seed.append(evidence_from_curves(cae_curves(res, x, n_boot=n_boot, seed=seed), pairs, run="trained",
                                             n=len(x), null_moves=True))
    evidence = [pool_seeds([ev[i] for ev in per_seed]) for i in range(len(pairs))]
    for run, (res, x) in (references or {}).items():
        evidence += evidence_from_curves(cae_curves(res, x, n_boot=n_boot, seed=seed), pairs, run=run, n=len(x),
                                         null_moves=True)
    return judge(evidence, seed=seed), evidence


def evidence_frame(evidence: Sequence[Evidence], **columns: Any) -> pd.DataFrame:
    """Evidence as a table, each row decided on its own (premises looked up within the same run and reading):
    ``claim``, ``reading``, ``run``, ``value``, ``low``, ``high``, ``p``, ``n``, ``n_boot``, ``verdict``, ``reason``,
    plus constant ``columns`` (e.g. ``model="smollm2-135m"``)."""
    index = {(e.run, e.claim, e.reading): e for e in evidence}
    decided: dict[tuple, dict] = {}

    def one(e: Evidence) -> dict:
        k = (e.run, e.claim, e.reading)
        if k not in decided:
            c = _claims.get(e.claim)
            prem = index.get((e.run, c.premise, e.reading)) if c.premise else None
            decided[k] = decide(e, premise=one(prem)["verdict"] if prem is not None else None)
        return decided[k]

    rows = [{"claim": e.claim, "reading": e.reading, "run": e.run, **one(e), **columns} for e in evidence]
    return pd.DataFrame(rows)


def first_transitions_table(rs_by_variant: Mapping[Any, np.ndarray], n_first: int = 4,
                            mi_units: int | Sequence[int] | None = 64, seed: int = 0) -> pd.DataFrame:
    """Median r over units and mean KDE MI over units at the first ``n_first`` transitions, per variant.

    rs_by_variant: {variant label (e.g. ``"strip=False, add_bos=True"``): rs (n_samples, n_sublayers, d_model)}.
    -> long DataFrame with columns ``variant``, ``transition`` (0 .. n_first - 1), ``kind`` (within / cross),
    ``r_median`` and ``mi_mean`` (NaN where undefined: a constant sublayer).
    """
    rows = []
    for label, rs in rs_by_variant.items():
        rs = check_rs(rs, **_MIN_RS)
        k = min(int(n_first), rs.shape[1] - 1)
        sub = rs[:, :k + 1]
        units = (metrics.subsample_units(rs.shape[2], mi_units, seed=seed) if mi_units is None
                 or np.isscalar(mi_units) else np.asarray(mi_units, dtype=np.int64))
        med = metrics.median_by_transition(metrics.successive_correlation(sub))["all"]
        mi = _nanmean(mutual_info.mutual_information(sub, "kde", units=units), 1)
        kinds = transition_kind(rs.shape[1])[:k]
        rows += [{"variant": label, "transition": t, "kind": kinds[t], "r_median": float(med[t]),
                  "mi_mean": float(mi[t])} for t in range(k)]
    return pd.DataFrame(rows, columns=["variant", "transition", "kind", "r_median", "mi_mean"])
