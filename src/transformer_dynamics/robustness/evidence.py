"""The evidence behind each claim of the registry (:mod:`transformer_dynamics.claims`) from one RS array,
the verdicts, and one line per claim and model over the open choices of the pipeline (notebooks 02-08).

:func:`claim_evidence` gives each claim's value with its bootstrap interval or test p-value,
:func:`verdict_table` the registry's verdicts, :func:`robustness_lines` whether a verdict survives every
choice; :func:`rotation_evidence` and :func:`teleport_evidence` decide Fig 2B's and Fig 4D's claims, and
:func:`first_transitions_table` shows the earliest transitions under each capture variant.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import bootstrap, metrics, phase
from .. import claims as _claims
from ..arrays import check_rs, split_transitions, transition_kind
from .resampling import bootstrap_headlines
from .statistics import GROUPS, _MIN_RS, _check_groups, _mi_units, _nanmean, curves

__all__ = ["claim_evidence", "claim_evidence_runs", "rotation_evidence", "teleport_evidence", "verdict_table", "robustness_lines",
           "first_transitions_table"]

#: claim -> (reading -> headline statistic) for the claims decided from a bootstrap interval
_INTERVAL_CLAIMS = {
    "r_early": {"first_each_kind": "r_first_each_kind", "first_transition": "r_first_transition",
                "first_defined": "r_first"},
    "sign_preserved": {"second_half": "sign_preserved"},
    "units_high_r": {"median": "units_high_r"},
    "vel_last_third": {"within": "vel_steepest_third_within", "cross": "vel_steepest_third_cross"},
    "mi_drop_at_cross": {"*": "mi_steepest_drop_cross"},
    "pcs_fewer_later": {"global": "pcs_last_minus_first"},
}


def _p_rows(c: Mapping[str, Any], mi_method: str, seed: int) -> list[tuple[str, str, float, float]]:
    """(claim, reading, value, p) of the claims decided by a permutation / sign test, from one set of curves."""
    rows = []
    if "mag_mean" in c:
        rows.append(("magnitude_increases", "mean_abs") + bootstrap.trend_test(c["mag_mean"], seed=seed))
    if "r_median" in c:
        w, x = split_transitions(np.asarray(c["r_median"]))
        rows.append(("r_increases_within", "median") + bootstrap.trend_test(w, seed=seed))
        rows.append(("r_increases_cross", "median") + bootstrap.trend_test(x, seed=seed))
        k = min(w.size, x.size)
        rows.append(("r_within_above_cross", "median") + bootstrap.sign_test(w[:k], x[:k]))
    for reading, key in (("raw", "cos_mean"), ("centred", "ccos_mean")):
        if key in c:
            w, x = split_transitions(np.asarray(c[key]))
            k = min(w.size, x.size)
            rows.append(("cos_increases", reading) + bootstrap.trend_test(c[key], seed=seed))
            rows.append(("cos_within_above_cross", reading) + bootstrap.sign_test(w[:k], x[:k]))
    if "vel_mean" in c:
        w, x = split_transitions(np.asarray(c["vel_mean"]))
        k = min(w.size, x.size)
        rows.append(("vel_increases", "within") + bootstrap.trend_test(w, seed=seed))
        rows.append(("vel_increases", "cross") + bootstrap.trend_test(x, seed=seed))
        rows.append(("vel_cross_above_within", "median") + bootstrap.sign_test(x[:k], w[:k]))
    if "mi_mean" in c:
        mi = np.asarray(c["mi_mean"], dtype=np.float64)
        rows.append(("mi_early_drop", mi_method) + bootstrap.trend_test(mi[:metrics.early_stop(mi.size)], seed=seed))
        if "r_median" in c:
            rows.append(("mi_vs_r", mi_method) + bootstrap.trend_test(mi, np.asarray(c["r_median"]), seed=seed))
    if "rot" in c and c.get("rot_null") is not None:
        rows += rotation_evidence(c["rot"], c["rot_null"])
    if "rot" in c and c.get("rot_null_points") is not None:
        rows += rotation_evidence(c["rot"], c["rot_null_points"], "points")
    return rows


def rotation_evidence(rot, null, reading: str = "sublayers") -> list[tuple[str, str, float, float]]:
    """The rotation claims from counts and their layer-shuffle null.

    rot: (d_model,) rotation count per unit; null: (n_shuffles, d_model). -> [(claim, reading, value, p)]:
    ``rotations_beat_null`` (mean ``|R|`` minus the null's; p: the fraction of shuffles whose mean ``|R|`` over
    units reaches the observed one, a permutation test) and ``rotations_majority`` (fraction of units beyond
    their null's 95th percentile of ``|R|``; p: a sign test over units against one half).
    """
    rot, null = np.asarray(rot, dtype=np.float64), np.asarray(null, dtype=np.float64)
    obs, per_shuffle = np.abs(rot).mean(), np.abs(null).mean(1)      # the null's mean |R| of each shuffle
    p = (1.0 + np.sum(per_shuffle >= obs)) / (1.0 + per_shuffle.size)
    exceeds = phase.exceeds_null(rot, null).astype(np.float64)
    return [("rotations_beat_null", reading, float(obs - np.abs(null).mean()), float(p)),
            ("rotations_majority", reading) + bootstrap.sign_test(exceeds, np.full(exceeds.size, 0.5))]


def teleport_evidence(per_layer: Sequence[np.ndarray]) -> tuple[float, float]:
    """The teleport claim (Fig 4D) from per-grid-point errors, one array per teleport layer in depth order.

    per_layer: [(n_points,)] e.g. ``TeleportResult.mse_pc`` (lower: better recovery), at least 3 layers. ->
    (fraction of the middle layers' points below the smaller of the first and the last layer's medians,
    the sign test's p against one half). NaN points are dropped.
    """
    if len(per_layer) < 3:
        raise ValueError(f"need at least 3 teleport layers (first, middle, last); got {len(per_layer)}")
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in per_layer]
    ref = min(np.nanmedian(arrays[0]), np.nanmedian(arrays[-1]))
    mid = np.concatenate(arrays[1:-1])
    mid = mid[np.isfinite(mid)]
    return bootstrap.sign_test(np.full(mid.size, ref), mid)


def claim_evidence(rs, *, n_boot: int = 1000, n_boot_slow: int | None = 50, seed: int = 0,
                   groups: Iterable[str] = GROUPS, mi_methods: Sequence[str] = ("kde",), **kwargs: Any
                   ) -> pd.DataFrame:
    """The value of every registered claim computable from one residual-stream array, with its evidence.

    rs: (n_samples, n_sublayers, d_model); keywords as :func:`~.resampling.bootstrap_headlines` /
    :func:`~.statistics.curves`; ``mi_methods``: the MI estimators (the MI claims' readings; the first with the
    bootstrap of the drop's location for each; "kde_exact" beside "kde" is the same estimate, not a reading,
    and is left out). -> DataFrame with columns ``claim``, ``reading``, ``value``,
    ``low``, ``high`` (bootstrap interval, claims with ``evidence="interval"``) and ``p`` (permutation / sign test,
    the others), one row per (claim, reading) in registry order.
    """
    rs = check_rs(rs, **_MIN_RS)
    groups = _check_groups(groups)
    methods = [m for m in mi_methods if not (m == "kde_exact" and "kde" in mi_methods)] if "mi" in groups else []
    first = [g for g in groups if g != "mi"] + (["mi"] if methods else [])
    kw = {**kwargs, "mi_method": methods[0]} if methods else kwargs
    base = curves(rs, groups=first, seed=seed, **kw)
    # the rotation claims are decided by permutation tests on ``base``: no bootstrap of the rotation null
    boot_groups = [g for g in first if g != "rot"]
    boot = (bootstrap_headlines(rs, n_boot, seed, groups=boot_groups, n_boot_slow=n_boot_slow, base=base, **kw)
            if boot_groups else pd.DataFrame(columns=["estimate", "low", "high"]))
    rows = []
    for claim, readings in _INTERVAL_CLAIMS.items():
        for reading, key in readings.items():
            if key in boot.index:
                r = boot.loc[key]
                rows.append({"claim": claim, "reading": methods[0] if reading == "*" else reading,
                             "value": r["estimate"], "low": r["low"], "high": r["high"], "p": np.nan})
    rows += [{"claim": k, "reading": rd, "value": v, "low": np.nan, "high": np.nan, "p": p}
             for k, rd, v, p in _p_rows(base, methods[0] if methods else "", seed)]
    for m in methods[1:]:
        kw_m = {**kwargs, "mi_method": m}
        c_m = {**curves(rs, groups=("mi",), seed=seed, **kw_m), "r_median": base.get("r_median")}
        if c_m["r_median"] is None:
            del c_m["r_median"]
        b_m = bootstrap_headlines(rs, n_boot, seed, groups=("mi",), n_boot_slow=n_boot_slow, base=c_m, **kw_m)
        if "mi_steepest_drop_cross" in b_m.index:
            r = b_m.loc["mi_steepest_drop_cross"]
            rows.append({"claim": "mi_drop_at_cross", "reading": m, "value": r["estimate"], "low": r["low"],
                         "high": r["high"], "p": np.nan})
        rows += [{"claim": k, "reading": rd, "value": v, "low": np.nan, "high": np.nan, "p": p}
                 for k, rd, v, p in _p_rows(c_m, m, seed) if k in ("mi_early_drop", "mi_vs_r")]
    order = {k: i for i, k in enumerate(_claims.REGISTRY)}
    df = pd.DataFrame(rows, columns=["claim", "reading", "value", "low", "high", "p"])
    return df.sort_values("claim", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def _nbytes(rs: Any) -> int:
    return int(np.prod(rs.shape)) * 4 if hasattr(rs, "shape") else 0


def _evidence_job(rs: Any, kwargs: dict[str, Any]) -> pd.DataFrame:
    return claim_evidence(rs.to_numpy() if hasattr(rs, "to_numpy") else rs, **kwargs)


def claim_evidence_runs(runs: Mapping[tuple, Any], *, names: Sequence[str], per_run: Mapping[tuple, dict] | None = None,
                        workers: int | None = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`claim_evidence` of every run, side by side in worker processes, one thread each
    (:func:`transformer_dynamics.workers.map_jobs`; None: one per core while the available memory holds ~8x the
    largest array per worker; ``workers=1``: one after another here).

    runs: {key: rs} with rs ``(n_samples, n_sublayers, d_model)`` (or a cache entry), each key a tuple naming the
    run, one value per column of ``names`` (e.g. ``("smollm2-135m", "N", "250")`` for ``("model", "choice",
    "setting")``); keywords as :func:`claim_evidence`, ``per_run[key]`` overriding them for one run. -> the runs'
    evidence tables, in the order of ``runs``, each with the columns ``names`` added: :func:`verdict_table`'s input.
    """
    from .. import workers as _workers  # noqa: PLC0415

    per_run = per_run or {}
    keys = list(runs)
    bad = [k for k in keys if not isinstance(k, tuple) or len(k) != len(names)]
    if bad:
        raise ValueError(f"every run's key must be a tuple of {len(names)} values ({', '.join(names)}); got {bad[0]!r}")
    if workers is None:  # a job holds float64 copies of its array: ~8x its float32 bytes
        workers = _workers.default_workers(len(keys), 8 * max(_nbytes(runs[k]) for k in keys))
    tables = _workers.map_jobs(_evidence_job, [(runs[k], {**kwargs, **per_run.get(k, {})}) for k in keys], workers)
    return pd.concat([t.assign(**dict(zip(names, k))) for k, t in zip(keys, tables)], ignore_index=True)


def verdict_table(evidence: pd.DataFrame) -> pd.DataFrame:
    """Verdicts from the registry for a table of evidence.

    evidence: rows with ``claim``, ``reading``, ``value``, ``low``, ``high``, ``p`` and any other columns that
    name a run (model, choice, setting...): a claim's premise is looked up among the rows of the same run and
    reading. -> a copy with ``verdict`` and ``reason`` columns.
    """
    ev = evidence.reset_index(drop=True).copy()
    run_cols = [c for c in ev.columns if c not in ("claim", "value", "low", "high", "p")]
    index = {tuple(r[c] for c in run_cols) + (r["claim"],): i for i, r in ev.iterrows()}
    verdicts, reasons = [None] * len(ev), [""] * len(ev)

    def decide(i):
        if verdicts[i] is not None:
            return verdicts[i]
        r = ev.loc[i]
        c = _claims.get(r["claim"])
        premise = None
        if c.premise is not None:
            j = index.get(tuple(r[col] for col in run_cols) + (c.premise,))
            premise = None if j is None else decide(j)
        ci = (r["low"], r["high"]) if c.evidence == "interval" else None
        v = _claims.verdict(r["claim"], r["value"], ci=ci, p=r["p"], premise=premise)
        verdicts[i], reasons[i] = v.verdict, v.reason
        return v.verdict

    for i in range(len(ev)):
        decide(i)
    ev["verdict"], ev["reason"] = verdicts, reasons
    return ev


def _fmt(v) -> str:
    return "undefined" if v is None or not np.isfinite(v) else f"{v:.3g}"


def robustness_lines(verdicts: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """One line per (claim, model) over the open choices.

    verdicts: :func:`verdict_table` output with columns ``model``, ``choice`` (the open choice a row varies:
    ``"baseline"`` for the book's headline settings, else e.g. ``"strip"``, ``"reading"``) and ``setting`` (its
    value there); the baseline rows of the claim's other readings count as the choice ``"reading"``, and its other
    readings under another choice X as ``"X & reading"`` (readings crossed with the other choices). The headline
    verdict is the baseline row of the claim's headline reading. -> DataFrame with ``claim``, ``model``,
    ``headline`` (its verdict), ``status`` (``"robust"`` holds or fails everywhere, ``"undecided"`` nowhere decided,
    ``"hinges"``), ``hinges_on`` (the choices whose setting changes the verdict), ``line`` (e.g. "robust ✓", "hinges
    on strip (True: holds, 0.91); headline: undecided, undefined"), ``settings`` (rows compared) and ``flips`` (rows
    whose verdict differs from the headline).
    """
    out = []
    for (claim, model), g in verdicts.groupby(["claim", "model"], sort=False):
        c = _claims.get(claim)
        g = g.copy()
        g["setting"] = g["setting"].astype(str)
        other = g["reading"] != c.headline                                   # the claim's other readings
        crossed = other & (g["choice"] != baseline)                           # ... under another choice too
        g.loc[crossed, "setting"] = g.loc[crossed, "setting"] + ", " + g.loc[crossed, "reading"]
        g.loc[crossed, "choice"] = g.loc[crossed, "choice"] + " & reading"
        plain = other & (g["choice"] == baseline)
        g.loc[plain, "choice"], g.loc[plain, "setting"] = "reading", g.loc[plain, "reading"]
        base = g[(g["choice"] == baseline) & (g["reading"] == c.headline)]
        head = base["verdict"].iloc[0] if len(base) else "undecided"
        head_value = base["value"].iloc[0] if len(base) else np.nan
        rows = g[~((g["choice"] == baseline) & (g["reading"] == c.headline))]
        flips = rows[rows["verdict"] != head]
        seen = set(rows["verdict"]) | {head}
        if not len(flips):
            status = "robust" if head in ("holds", "fails") else "undecided"
            line = {"holds": "robust ✓", "fails": "robust ✗"}.get(head, "undecided under every choice")
            on = ""
        else:
            status = "hinges"
            parts = []
            for choice, f in flips.groupby("choice", sort=False):
                vals = "; ".join(f"{s}: {v}, {_fmt(x)}" for s, v, x in zip(f["setting"], f["verdict"], f["value"]))
                parts.append(f"{choice} ({vals})")
            on = ", ".join(dict.fromkeys(flips["choice"]))
            line = f"hinges on {'; '.join(parts)}; headline: {head}, {_fmt(head_value)}"
            if seen <= {"undecided", head} and head == "undecided":
                line = "hinges on " + "; ".join(parts) + " (headline undecided)"
        out.append({"claim": claim, "model": model, "headline": head, "status": status, "hinges_on": on,
                    "line": line, "settings": int(len(rows)), "flips": int(len(flips))})
    return pd.DataFrame(out, columns=["claim", "model", "headline", "status", "hinges_on", "line", "settings",
                                      "flips"])


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
        units = _mi_units(rs.shape[2], mi_units, seed)
        med = metrics.median_by_transition(metrics.successive_correlation(sub))["all"]
        mi = _nanmean(metrics.mutual_information(sub, "kde", units=units), 1)
        kinds = transition_kind(rs.shape[1])[:k]
        rows += [{"variant": label, "transition": t, "kind": kinds[t], "r_median": float(med[t]),
                  "mi_mean": float(mi[t])} for t in range(k)]
    return pd.DataFrame(rows, columns=["variant", "transition", "kind", "r_median", "mi_mean"])
