"""What a calibration run says: false-decision rates and power per claim and reading (:func:`rates`, :func:`table`,
the book's :func:`book_table`), the worst rate (:func:`worst`), binomial intervals, and the appendix's sentence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as _claims
from .run import Calibration, _pairs
from .streams import ALPHA, Z_POWER


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------
def binomial_interval(k, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of ``k`` successes in ``n`` trials (arrays broadcast). -> (low, high)."""
    from scipy.stats import beta  # noqa: PLC0415

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    a = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


_OPPOSITE = {"holds": "fails", "fails": "holds"}


def rates(cal: Calibration) -> pd.DataFrame:
    """One row per scenario, claim and reading: ``scenario, claim, reading, truth, sims, events, rate, low, high``
    and ``kind`` (``"false"``: the share of false decisions on a null, the random walk's share "beyond the null";
    ``"power"``: the share of planted effects decided on their side after Benjamini-Hochberg, ``"power_raw"``
    before it)."""
    df = cal.rows
    out = []
    for (scenario, claim, reading), g in df.groupby(["scenario", "claim", "reading"], sort=False):
        if scenario == "planted":
            t = cal.truth.get((scenario, claim, reading))
            for kind, col in (("power", "verdict_bh"), ("power_raw", "verdict")):
                out.append({"scenario": scenario, "kind": kind, "claim": claim, "reading": reading, "truth": t,
                            "sims": len(g), "events": int((g[col] == t).sum())})
            continue
        if (g["verdict"].isin(["beyond", "not beyond"])).all():
            out.append({"scenario": scenario, "kind": "false", "claim": claim, "reading": reading,
                        "truth": "same as null", "sims": len(g), "events": int((g["verdict"] == "beyond").sum())})
            continue
        t = cal.truth.get((scenario, claim, reading))
        if t is None:
            continue
        wrong = g["verdict"] != "undecided" if t == "null" else g["verdict"] == _OPPOSITE[t]
        out.append({"scenario": scenario, "kind": "false", "claim": claim, "reading": reading, "truth": t,
                    "sims": len(g), "events": int(wrong.sum())})
    r = pd.DataFrame(out, columns=["scenario", "kind", "claim", "reading", "truth", "sims", "events"])
    r["rate"] = r["events"] / r["sims"]
    r["low"], r["high"] = binomial_interval(r["events"], r["sims"])
    return r


def table(cal: Calibration) -> pd.DataFrame:
    """The calibration table: one row per claim and reading (registry order) with the false-decision rate on each
    null (a column per scenario, the random walk's "beyond the null"), the worst of them with its binomial
    interval and simulations, the trained and the planted size (standard errors; ``planted_z`` from the draws that
    sized it, ``planted_z_sims`` from the planted simulations themselves), the power after Benjamini-Hochberg with
    its interval and simulations."""
    r = rates(cal)
    pairs = [p for p in _pairs() if ((r["claim"] == p[0]) & (r["reading"] == p[1])).any()]
    rows = []
    for key, reading in pairs:
        g = r[(r["claim"] == key) & (r["reading"] == reading)]
        row: dict[str, Any] = {"claim": key, "reading": reading}
        false = g[g["kind"] == "false"]
        for s in false.itertuples():
            row[s.scenario] = s.rate
        if len(false):
            w = false.sort_values(["rate", "sims"], ascending=[False, True]).iloc[0]
            row.update({"worst": w["rate"], "worst_low": w["low"], "worst_high": w["high"], "worst_on": w["scenario"],
                        "sims": int(false["sims"].min())})
        pw = g[g["kind"] == "power"]
        plan = cal.plan[(cal.plan["claim"] == key) & (cal.plan["reading"] == reading)]
        planted = cal.rows[(cal.rows["scenario"] == "planted") & (cal.rows["claim"] == key)
                           & (cal.rows["reading"] == reading)]["value"].astype(float)
        if len(planted) > 2 and planted.std() > 0:
            row["planted_z_sims"] = (planted.mean() - _claims.get(key).threshold) / planted.std()
        if len(plan):
            row["trained_z"] = float(plan["z"].iloc[0])
            row["planted_z"] = float(plan["z_planted"].iloc[0])
            row["reached"] = bool(plan["reached"].iloc[0])
        if len(pw):
            row.update({"power": float(pw["rate"].iloc[0]), "power_low": float(pw["low"].iloc[0]),
                        "power_high": float(pw["high"].iloc[0]), "power_sims": int(pw["sims"].iloc[0]),
                        "power_raw": float(g[g["kind"] == "power_raw"]["rate"].iloc[0])})
        rows.append(row)
    return pd.DataFrame(rows)


def worst(cal: Calibration) -> dict[str, Any]:
    """The largest false-decision rate over every claim, reading and null: ``{"rate", "low", "high", "events",
    "sims", "claim", "reading", "scenario"}`` (ties: the one with fewer simulations)."""
    r = rates(cal)
    f = r[r["kind"] == "false"].sort_values(["rate", "sims"], ascending=[False, True])
    if f.empty:
        return {"rate": float("nan")}
    w = f.iloc[0]
    return {"rate": float(w["rate"]), "low": float(w["low"]), "high": float(w["high"]), "events": int(w["events"]),
            "sims": int(w["sims"]), "claim": w["claim"], "reading": w["reading"], "scenario": w["scenario"]}


def book_table(cal: Calibration) -> pd.DataFrame:
    """:func:`table` for the book: one row per claim and reading with the false-decision rate on the stationary
    nulls (the largest over phi), with one outlier text, at the threshold and (the random walk) "beyond the null";
    the worst of them with its 95 % binomial interval and simulations; the trained models' size and the planted
    one (standard errors; the trained size is capped at :data:`Z_MAX`) and the power after Benjamini-Hochberg with
    its interval and simulations. Rates as numbers; intervals as text."""
    t = table(cal)
    stat = [c for c in t.columns if str(c).startswith("stationary")]
    thr = [c for c in t.columns if str(c).startswith("at threshold")]

    def most(row, cols):
        v = [row[c] for c in cols if c in row and pd.notna(row[c])]
        return max(v) if v else np.nan

    def ci(lo, hi):
        return "" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]"

    rows = []
    for _, r in t.iterrows():
        rows.append({"claim": r["claim"], "reading": r["reading"], "stationary": most(r, stat),
                     "one outlier text": r.get("one outlier text", np.nan), "at threshold": most(r, thr),
                     "random walk: beyond": r.get("random walk", np.nan), "worst": r.get("worst", np.nan),
                     "worst 95% CI": ci(r.get("worst_low"), r.get("worst_high")), "sims": r.get("sims", np.nan),
                     "trained z": r.get("trained_z", np.nan), "planted z": r.get("planted_z", np.nan),
                     "power": r.get("power", np.nan),
                     "power 95% CI": ci(r.get("power_low"), r.get("power_high")),
                     "power sims": r.get("power_sims", np.nan)})
    out = pd.DataFrame(rows)
    for c in ("sims", "power sims"):
        out[c] = out[c].astype("Int64")
    return out


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """A table of this module (:func:`book_table`, :func:`effect_sizes`) as Markdown: numbers to ``digits``
    decimals, integers as integers, missing entries blank."""
    def cell(v):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "inf" if math.isinf(v) and v > 0 else "-inf" if math.isinf(v) else f"{v:.{digits}f}"
        return str(v)

    return frame.astype(object).map(cell).to_markdown(index=False, disable_numparse=True)


def summary(cal: Calibration) -> dict[str, Any]:
    """What the book records of a calibration run: ``worst`` (:func:`worst`), ``readings`` (claim readings judged),
    ``above_2_alpha`` (``"claim:reading"`` whose false-decision rate exceeds 2 alpha on some null, with the rate),
    ``strong`` (readings planted at :data:`Z_POWER` or more standard errors) and ``below_power`` (those of them
    with power below 0.8 after Benjamini-Hochberg)."""
    t = table(cal)
    above = t[t["worst"] > 2 * ALPHA] if "worst" in t else t.iloc[:0]
    strong = t[t["planted_z"].abs() >= Z_POWER] if "planted_z" in t else t.iloc[:0]
    below = strong[strong["power"] < 0.8] if "power" in strong else strong.iloc[:0]
    return {"worst": worst(cal), "readings": len(t),
            "above_2_alpha": {f"{r.claim}:{r.reading}": float(r.worst) for r in above.itertuples()},
            "strong": len(strong), "below_power": {f"{r.claim}:{r.reading}": float(r.power)
                                                   for r in below.itertuples()}}


def summary_sentence(s: Mapping[str, Any]) -> str:
    """The appendix's closing sentence (Markdown) from :func:`summary`'s ``s``: the worst false-decision rate with
    its interval, the readings above 2 alpha and those planted clearly but below power 0.8."""
    w = s["worst"]
    return (f"The worst false-decision rate: **{w['rate']:.2f}** (95 % interval {w['low']:.2f}–{w['high']:.2f}, "
            f"{w['events']} of {w['sims']} simulations), for `{w['claim']}` ({w['reading']}) on *{w['scenario']}*. "
            f"{len(s['above_2_alpha'])} of {s['readings']} claim readings decide falsely more than 2α of the time on "
            f"some null. Of the {s['strong']} readings planted at {Z_POWER} or more standard errors, "
            f"{len(s['below_power'])} have power below 0.8.")
