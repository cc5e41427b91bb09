"""Verdicts on the registry's claims, decided from uncertainty over the sampling unit (texts, or prompts).

:func:`decide` turns a claim's value and its bootstrap replicates into a verdict with three values:
**holds** when the whole percentile interval lies on the claim's side of its threshold, **fails** when it lies
wholly on the other side, **undecided** otherwise (and for an undefined value, too few defined replicates, or a
premise that does not hold). Its p-value, ``2 min(P*(theta* <= t), P*(theta* >= t))`` with add-one smoothing, is
below ``alpha`` exactly when the interval excludes the threshold; :func:`benjamini_hochberg` corrects a family of
them (a chapter's verdicts) and :func:`corrected` gives the corrected verdicts.

:func:`compare` sets a claim's value against a reference (the residual-accumulation null, random
initialisations): the difference trained - reference with its interval (replicates paired by index, seeds
resampled), and whether the trained value lies *beyond* the reference on the claim's side. :func:`judge` reads a
table of evidence (one row per claim, reading and run) and writes one line per claim and reading, e.g.
"holds, beyond random init and the null", "holds, but so does random init", "fails".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import claims as _claims
from .formats import with_interval

__all__ = ["Evidence", "decide", "bootstrap_p", "benjamini_hochberg", "corrected", "compare", "judge",
           "verdict_from_interval", "rederive", "summary_table", "pool_seeds", "REFERENCES", "MIN_DEFINED"]

#: The reference runs, in the order a verdict line names them: the accumulation null and the random inits.
REFERENCES = {"null": "the null", "default": "random init", "matched": "matched-scale random init",
              "permuted": "permuted weights"}
#: The share of replicates that must be defined for an interval (fewer: undecided, "too few defined resamples").
MIN_DEFINED = 0.9


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


@dataclass
class Evidence:
    """A claim's value on one run with its bootstrap replicates over the sampling unit.

    claim, reading: the registry's key and reading; run: ``"trained"`` (the data itself), ``"null"``, or a
    reference ``"default:0"`` / ``"matched:2"`` (kind and seed); value: the statistic on all units; replicates:
    ``(B,)`` the statistic on each resample; n: sampling units; recentred: the replicates are shifted by
    ``value - median(replicates)`` before deciding. A resample repeats about 37 % of the texts and leaves as many
    out, which shifts many statistics themselves, not only their spread (the KDE MI of repeated points, PCA
    counts, ``|mean|`` near zero, rotation counts of a noisier mean trajectory): the re-centred interval keeps the
    replicates' spread around the estimate without that shift.
    """

    claim: str
    reading: str
    run: str
    value: float
    replicates: np.ndarray
    n: int
    recentred: bool = True
    extra: dict = field(default_factory=dict)
    #: ``(n,)`` the statistic without each unit in turn (leave-one-out), where the source computes it: a verdict that
    #: one text (or prompt) decides is refused (:func:`decide`)
    jackknife: np.ndarray | None = None

    @property
    def centred(self) -> np.ndarray:
        """The replicates as the verdict reads them (re-centred on ``value`` when ``recentred``)."""
        r = np.asarray(self.replicates, dtype=np.float64)
        if self.recentred and _finite(self.value) and np.isfinite(r).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = r + (float(self.value) - np.nanmedian(r))
        return r


def pool_seeds(evidence: Sequence[Evidence], run: str | None = None) -> Evidence:
    """One :class:`Evidence` from the same claim measured with several seeds of a random procedure (e.g. an
    autoencoder trained with each seed): the value is the mean over seeds, replicate b the mean of the seeds'
    replicates b (each seed resampled over its own texts), and ``extra["seeds"]`` the seeds' values, so that a
    reader sees the spread. run: the pooled run's name (default: the first's)."""
    evidence = list(evidence)
    if not evidence:
        raise ValueError("no evidence to pool")
    first = evidence[0]
    if any((e.claim, e.reading) != (first.claim, first.reading) for e in evidence):
        raise ValueError("pool_seeds needs the same claim and reading from every seed")
    B = min(np.asarray(e.replicates).size for e in evidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(np.nanmean([e.value for e in evidence]))
        reps = np.nanmean(np.stack([np.asarray(e.centred, dtype=np.float64)[:B] for e in evidence]), axis=0)
    return Evidence(first.claim, first.reading, run or first.run, value, reps, min(e.n for e in evidence),
                    recentred=False, extra={**first.extra, "seeds": [float(e.value) for e in evidence]})


def _interval(reps: np.ndarray, alpha: float) -> tuple[float, float]:
    ok = reps[np.isfinite(reps)]
    if not ok.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_p(reps, threshold: float) -> float:
    """Two-sided bootstrap p-value of ``threshold`` over the finite replicates ``reps: (B,)``:
    ``2 min(#{r <= t} + 1, #{r >= t} + 1) / (B + 1)``, capped at 1, so that p < alpha exactly when the percentile
    interval excludes t. Where no replicate reaches t the count says only p < 2 / (B + 1): there the normal tail
    ``2 Phi(-|mean - t| / sd)`` of the replicates continues it below that floor (so that Benjamini-Hochberg over
    many verdicts is not limited by the number of resamples). NaN with no finite replicate."""
    from scipy.special import ndtr  # noqa: PLC0415

    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not r.size:
        return float("nan")
    lo, hi = np.sum(r <= threshold), np.sum(r >= threshold)
    p = float(min(1.0, 2 * (min(lo, hi) + 1) / (r.size + 1)))
    sd = float(np.std(r))
    if min(lo, hi) == 0 and sd > 0:
        p = min(p, float(2 * ndtr(-abs(float(np.mean(r)) - threshold) / sd)))
    return p


def verdict_from_interval(key: str, value, low, high) -> tuple[str, str]:
    """The verdict of claim ``key`` from its value and interval alone (how a stored ledger row is re-derived):
    ``(verdict, reason)``."""
    c = _claims.get(key)
    if not _finite(value):
        return "undecided", "value undefined"
    if not (_finite(low) and _finite(high)):
        return "undecided", "no interval"
    lo, hi = sorted((float(low), float(high)))
    thr = c.threshold
    inside, outside = (lo > thr, hi < thr) if c.test == ">" else (hi < thr, lo > thr)
    if inside:
        return "holds", f"interval [{lo:.3g}, {hi:.3g}] {c.test} {thr:g}"
    if outside:
        return "fails", f"interval [{lo:.3g}, {hi:.3g}] on the wrong side of {thr:g}"
    return "undecided", f"interval [{lo:.3g}, {hi:.3g}] contains {thr:g}"


#: Reasons a verdict is undecided whatever the interval says (kept when a stored verdict is re-derived).
_NOT_FROM_INTERVAL = ("value undefined", "premise ", "too few defined", "decided by one unit")


def rederive(entry: Mapping) -> tuple[str | None, str]:
    """The verdict of a stored claim row (a ledger entry: ``registry``, ``value``, ``ci``, ``verdict``, ``reason``)
    re-derived from its value and interval, so that a row edited by hand is never shown with a stale verdict:
    ``(verdict, reason)``. An undecided row whose reason is not its interval (an undefined value, a premise, too few
    resamples, a verdict refused because one text decides it) stays undecided; a row that is not a claim gives
    ``(None, "")``."""
    key = entry.get("registry")
    if not key or key not in _claims.REGISTRY:
        return None, ""
    reason = str(entry.get("reason") or "")
    if entry.get("verdict") == "undecided" and reason.startswith(_NOT_FROM_INTERVAL):
        return "undecided", reason
    ci = entry.get("ci") or (None, None)
    try:
        value = float(entry.get("value"))
    except (TypeError, ValueError):
        value = float("nan")
    return verdict_from_interval(key, value, *ci)


def decide(ev: Evidence, *, premise: str | None = None, alpha: float = _claims.ALPHA) -> dict:
    """The verdict on one piece of evidence -> ``{"value", "low", "high", "p", "n_boot", "verdict", "reason"}``.

    premise: the verdict of the claim's premise on the same run and reading (required when it has one).
    """
    c = _claims.get(ev.claim)
    reps = ev.centred
    defined = np.isfinite(reps)
    low, high = _interval(reps, alpha)
    out = {"value": float(ev.value) if _finite(ev.value) else float("nan"), "low": low, "high": high,
           "p": bootstrap_p(reps, c.threshold), "n_boot": int(reps.size), "n": int(ev.n)}
    if not _finite(ev.value):
        return {**out, "verdict": "undecided", "reason": "value undefined"}
    if c.premise is not None and premise != "holds":
        return {**out, "verdict": "undecided", "reason": f"premise {c.premise} {premise or 'not recorded'}"}
    if reps.size < 2 or defined.mean() < MIN_DEFINED:
        return {**out, "verdict": "undecided",
                "reason": f"too few defined resamples ({int(defined.sum())} of {reps.size})"}
    v, reason = verdict_from_interval(ev.claim, ev.value, low, high)
    if v != "undecided" and ev.jackknife is not None:
        one = _one_text(ev, c, v, low, high)
        if one:
            return {**out, "verdict": "undecided", "reason": one}
    return {**out, "verdict": v, "reason": reason}


def _one_text(ev: Evidence, c, verdict: str, low: float, high: float) -> str:
    """Why a decided verdict is one unit's doing ("" if it is not): without the unit that pulls the statistic
    furthest from the threshold's side it was decided on, the interval (moved by that pull) no longer clears it."""
    jack = np.asarray(ev.jackknife, dtype=np.float64)
    ok = np.isfinite(jack)
    if not ok.any():
        return ""
    above = (verdict == "holds") == (c.test == ">")           # the interval lies above the threshold
    i = int(np.flatnonzero(ok)[np.argmin(jack[ok]) if above else np.argmax(jack[ok])])
    shift = float(jack[i] - ev.value)
    still = low + shift > c.threshold if above else high + shift < c.threshold
    if still:
        return ""
    return (f"decided by one unit: without #{i} the value is {jack[i]:.3g} and the interval "
            f"[{low + shift:.3g}, {high + shift:.3g}] contains {c.threshold:g}")


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of ``p: (m,)``; NaN entries stay NaN and are not counted."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not ok.size:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(adj[::-1])[::-1])
    return q


def corrected(verdict: Sequence[str], p, *, alpha: float = _claims.ALPHA) -> tuple[np.ndarray, list[str]]:
    """Benjamini-Hochberg over a family: -> (q-values, corrected verdicts). A decided verdict stays decided when
    its q-value is below ``alpha``, else it becomes undecided; undecided stays undecided."""
    q = benjamini_hochberg(p)
    out = [v if v in ("holds", "fails") and np.isfinite(qi) and qi < alpha else ("undecided" if v else v)
           for v, qi in zip(verdict, q)]
    return q, out


def _pooled(refs: Sequence[Evidence], rng: np.random.Generator, B: int) -> np.ndarray:
    """Replicates of the mean over seeds: per replicate, seeds drawn with replacement and their replicates at that
    index averaged (so that the spread between seeds enters the interval)."""
    reps = np.stack([np.resize(np.asarray(e.centred, dtype=np.float64), B) for e in refs])   # (S, B)
    pick = rng.integers(0, len(refs), size=(B, len(refs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(reps[pick, np.arange(B)[:, None]], axis=1)


def compare(trained: Evidence, refs: Sequence[Evidence], *, alpha: float = _claims.ALPHA, seed: int = 0) -> dict:
    """The trained value against a reference (one run, or several seeds of it).

    -> ``{"value", "low", "high", "seeds", "spread", "diff", "diff_low", "diff_high", "beyond", "verdict"}``: the
    reference's value (mean over seeds) and interval, its seeds' values (min, max), the difference trained -
    reference with its interval, ``beyond`` (the difference's interval wholly on the claim's side of 0) and the
    reference's own verdict (decided like a claim on the mean over seeds).
    """
    c = _claims.get(trained.claim)
    t = np.asarray(trained.centred, dtype=np.float64)
    B = t.size
    rng = np.random.default_rng(seed)
    ref = _pooled(refs, rng, B)
    values = [float(e.value) for e in refs]
    ref_value = float(np.nanmean(values)) if any(map(_finite, values)) else float("nan")
    lo, hi = _interval(ref, alpha)
    ref_verdict, _ = verdict_from_interval(trained.claim, ref_value, lo, hi)
    diff = t - ref
    d_lo, d_hi = _interval(diff, alpha)
    d = float(trained.value) - ref_value if _finite(trained.value) and _finite(ref_value) else float("nan")
    beyond = bool(_finite(d_lo) and _finite(d_hi) and (d_lo > 0 if c.test == ">" else d_hi < 0))
    finite = [v for v in values if _finite(v)]
    return {"value": ref_value, "low": lo, "high": hi, "seeds": len(refs),
            "spread": [min(finite), max(finite)] if finite else [float("nan")] * 2,
            "diff": d, "diff_low": d_lo, "diff_high": d_hi, "beyond": beyond, "verdict": ref_verdict}


def _line(verdict: str, refs: Mapping[str, dict]) -> str:
    """The verdict line from the trained verdict and the references' comparisons."""
    if verdict != "holds":
        return verdict
    if not refs:
        return "holds"
    not_beyond = [name for name, r in refs.items() if not r["beyond"]]
    if not not_beyond:
        return "holds, beyond " + _and(REFERENCES[n] for n in refs)
    so_does = [n for n in not_beyond if refs[n]["verdict"] == "holds"]
    parts = []
    if so_does:
        parts.append(("but so do " if len(so_does) > 1 else "but so does ") + _and(REFERENCES[n] for n in so_does))
    rest = [n for n in not_beyond if n not in so_does]
    if rest:
        parts.append("not separated from " + _and(REFERENCES[n] for n in rest))
    return "holds, " + "; ".join(parts)


def _and(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def judge(evidence: Sequence[Evidence], *, alpha: float = _claims.ALPHA, seed: int = 0) -> pd.DataFrame:
    """Verdicts and verdict lines for the evidence of one model (and condition).

    evidence: :class:`Evidence` of the run ``"trained"`` and of reference runs (``"null"``, ``"default:s"``,
    ``"matched:s"``) for any claims and readings. The null is compared only where it can move the claim's
    statistic (``Evidence.extra["null_moves"]``; its own value is still reported). -> one row per (claim, reading)
    of the trained run, in registry order: ``claim``, ``reading``, ``value``, ``low``, ``high``, ``p``, ``n``,
    ``n_boot``, ``verdict``, ``reason``, ``line``, ``refs`` ({reference: :func:`compare`'s dict}) and ``seeds`` (the
    values of the seeds pooled into the trained value, :func:`pool_seeds`; None otherwise).
    """
    by_key: dict[tuple[str, str], dict[str, list[Evidence]]] = {}
    for e in evidence:
        kind = e.run.split(":")[0]
        by_key.setdefault((e.claim, e.reading), {}).setdefault(kind, []).append(e)
    decided: dict[tuple[str, str], dict] = {}

    def verdict_of(key, reading):
        if (key, reading) in decided:
            return decided[key, reading]["verdict"]
        runs = by_key.get((key, reading), {})
        if "trained" not in runs:
            return None
        c = _claims.get(key)
        premise = verdict_of(c.premise, reading) if c.premise else None
        decided[key, reading] = decide(runs["trained"][0], premise=premise, alpha=alpha)
        return decided[key, reading]["verdict"]

    rows = []
    order = {k: i for i, k in enumerate(_claims.REGISTRY)}
    for (key, reading) in sorted(by_key, key=lambda k: (order[k[0]], _claims.get(k[0]).reading_names.index(k[1]))):
        runs = by_key[key, reading]
        if "trained" not in runs:
            continue
        verdict_of(key, reading)
        d = decided[key, reading]
        trained = runs["trained"][0]
        refs = {}
        for kind in REFERENCES:
            if kind in runs:
                r = compare(trained, runs[kind], alpha=alpha, seed=seed)
                if kind == "null" and not trained.extra.get("null_moves", True):
                    r = {**r, "beyond": None, "note": "the null keeps this statistic: same number as the data"}
                refs[kind] = r
        decisive = {k: r for k, r in refs.items() if r["beyond"] is not None}
        rows.append({"claim": key, "reading": reading, **d, "line": _line(d["verdict"], decisive), "refs": refs,
                     "seeds": trained.extra.get("seeds")})
    return pd.DataFrame(rows, columns=["claim", "reading", "value", "low", "high", "p", "n", "n_boot", "verdict",
                                       "reason", "line", "refs", "seeds"])


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """A verdict table for readers: one row per claim, reading, model (and condition), with the figure, the
    paper's sentence, our value with its 95 % interval, the verdict (raw and corrected for the chapter's number of
    verdicts), each reference's value and the verdict line.

    table: :func:`judge` rows (optionally with ``model``, ``condition``, ``verdict_bh`` columns, as
    :meth:`transformer_dynamics.chapter.Chapter.decide` returns them). -> DataFrame of strings.
    """
    rows = []
    for r in table.to_dict("records"):
        c = _claims.get(r["claim"])
        rd = c.reading(r["reading"])
        sentence = c.quote + ("" if rd.name == c.headline else f" [{rd.description}]")
        cond = r.get("condition", "original")
        if cond and cond != "original":
            sentence += f" [{cond} control]"
        row = {"Figure": c.figure, "Claim": sentence}
        if "model" in r:
            row["Model"] = r["model"]
        row["Paper"] = c.paper
        row["Ours [95% CI]"] = with_interval(r["value"], r["low"], r["high"])
        row["Verdict"] = f"{_claims.MARKS.get(r['verdict'], '–')} {r['verdict']}"
        if "verdict_bh" in r:
            row["Corrected (BH)"] = f"{_claims.MARKS.get(r['verdict_bh'], '–')} {r['verdict_bh']}" \
                if r["verdict_bh"] else "–"
        refs = r.get("refs") or {}
        for kind, name in REFERENCES.items():
            ref = refs.get(kind)
            row[name[0].upper() + name[1:]] = "–" if not ref else with_interval(ref["value"], ref["low"], ref["high"])
        row["Line"] = r.get("line", r["verdict"])
        rows.append(row)
    return pd.DataFrame(rows)
