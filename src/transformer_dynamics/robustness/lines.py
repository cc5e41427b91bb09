"""What happens to each verdict under the open choices (chapter 8): one line per claim, reading and model.

The input is a table of verdicts (:func:`choice_frame`, i.e. :func:`~.evidence.evidence_frame` rows with ``model``,
``choice`` and ``setting`` columns): the book's **headline** run (``choice == "headline"``) and one run per other
setting of each open choice (the last token, N, precision, ...). Each row is compared with its **reference**: the
row of its choice marked ``reference`` when there is one (the float32 capture at the precision runs' N, so that
precision is compared at equal N), else the headline row of the same reading. The other readings of a claim on the
headline run are compared with its headline reading (choice ``"reading"``).

A comparison (:func:`setting_changes`, column ``change``) is

- ``"flip"``: holds <-> fails;
- ``"loses power"``: holds or fails -> undecided with the value defined (a smaller N, a noisier setting);
- ``"gains"``: undecided (or undefined) -> decided;
- ``"undefined"``: the value is undefined at the setting (e.g. the first transition with rows as given: a constant
  sublayer), too few resamples are defined, or the claim's premise does not hold there (it is not asked);
- ``"same"`` otherwise; ``"headline"`` and ``"reference"`` mark the rows the others are compared with.

Only a comparison at the same N counts for a choice other than N: a row whose N differs from its reference's is an
error (mark the choice's reference row at that N). A line (:func:`robustness_lines`) has a ``status``:
``"robust"`` (decided at the headline, and the same wherever defined), ``"hinges"`` (a flip: "hinges on" names only
the choices that flip it), ``"loses power"`` (no flip, but undecided somewhere), ``"undecided"`` (at the headline,
no flip), ``"undefined"`` (at the headline). :func:`robustness_counts` counts them per model (headline readings),
:func:`counts_sentence` says it in words.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import claims as _claims
from ..formats import with_interval
from ..verdicts import Evidence
from .evidence import claim_evidence_runs, evidence_frame

__all__ = ["HEADLINE", "N_CHOICE", "READING_CHOICE", "CHANGES", "STATUSES", "choice_evidence", "choice_frame",
           "setting_changes",
           "robustness_lines", "robustness_counts", "hinge_counts", "counts_sentence"]

#: the choice of the book's headline run
HEADLINE = "headline"
#: the choice whose settings change the number of texts (the only one compared across N)
N_CHOICE = "N"
#: the choice a claim's other readings on the headline run are shown under
READING_CHOICE = "reading"
CHANGES = ("headline", "reference", "same", "flip", "loses power", "gains", "undefined")
STATUSES = ("robust", "hinges", "loses power", "undecided", "undefined")
_UNDEFINED = ("value undefined", "too few defined", "no interval", "premise")
_REQUIRED = ("model", "claim", "reading", "choice", "setting", "verdict", "value", "low", "high", "n", "reason")


def choice_evidence(runs: Mapping[tuple[str, str, str], Any], *, mi_methods: Sequence[str],
                    **kwargs: Any) -> dict[tuple[str, str, str], list[Evidence]]:
    """Every residual-stream claim's value and bootstrap replicates for each run ``{(model, choice, setting): rs}``
    (:func:`~.evidence.claim_evidence_runs`, side by side): the headline runs (``choice == "headline"``) with every
    MI estimator of ``mi_methods`` (each a reading of the MI claims), the other runs with the first only.
    ``kwargs``: :func:`~.evidence.claim_evidence`'s (``n_boot``, ``seed``, ``mi_units``...)."""
    mi_methods = list(mi_methods)
    every_mi = {k: {"mi_methods": mi_methods} for k in runs if k[1] == HEADLINE}
    return claim_evidence_runs(runs, mi_methods=mi_methods[:1], per_run=every_mi, **kwargs)


def choice_frame(evidence: Mapping[tuple[str, str, str], Sequence[Evidence]],
                 references: Collection[tuple[str, str]] = ()) -> pd.DataFrame:
    """Verdicts of runs keyed ``(model, choice, setting)`` -> :func:`~.evidence.evidence_frame` rows with columns
    ``model``, ``choice``, ``setting`` and ``reference`` (True for the ``(choice, setting)`` pairs in
    ``references``: the rows their choice's other settings are compared with)."""
    refs = {(str(c), str(s)) for c, s in references}
    frames = [evidence_frame(ev, model=m, choice=c, setting=str(s), reference=(str(c), str(s)) in refs)
              for (m, c, s), ev in evidence.items()]
    if not frames:
        raise ValueError("no runs: give {(model, choice, setting): [Evidence]}")
    return pd.concat(frames, ignore_index=True)


def _undefined(verdict: str, reason: Any) -> bool:
    return verdict == "undecided" and str(reason).startswith(_UNDEFINED)


def _change(row_verdict: str, row_undef: bool, ref_verdict: str, ref_undef: bool) -> str:
    if row_undef:
        return "same" if ref_undef else "undefined"
    decided = row_verdict in ("holds", "fails")
    if ref_undef or ref_verdict == "undecided":
        return "gains" if decided else "same"
    if not decided:
        return "loses power"
    return "same" if row_verdict == ref_verdict else "flip"


def _check(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"the verdict table lacks the columns {missing}; build it with robustness.choice_frame "
                         "(evidence_frame rows with model, choice and setting)")
    f = frame.copy()
    f["setting"] = f["setting"].astype(str)
    f["reference"] = f["reference"].fillna(False).astype(bool) if "reference" in f else False
    heads = f[f["choice"] == HEADLINE]
    dup = heads.duplicated(["model", "claim", "reading"])
    if dup.any():
        raise ValueError(f"more than one headline row for {heads[dup][['model', 'claim', 'reading']].iloc[0].tolist()}"
                         "; give one run with choice 'headline' per model")
    return f


def setting_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row of ``frame`` (:func:`choice_frame`) set against its reference.

    -> one row per compared row: ``model``, ``claim``, ``reading`` (the line's reading: a claim's other readings on
    the headline run belong to its headline reading's line, with ``choice`` ``"reading"`` and the reading as
    ``setting``), ``choice``, ``setting``, ``verdict``, ``value``, ``low``, ``high``, ``n``, ``reason``,
    ``ref_setting`` and ``ref_verdict`` (what it was compared with) and ``change`` (:data:`CHANGES`).
    """
    f = _check(frame)
    out = []
    cols = ["verdict", "value", "low", "high", "n", "reason"]
    for (model, claim), g in f.groupby(["model", "claim"], sort=False):
        c = _claims.get(claim)
        heads = {r["reading"]: r for _, r in g[g["choice"] == HEADLINE].iterrows()}
        refs = {(r["choice"], r["reading"]): r for _, r in g[g["reference"] & (g["choice"] != HEADLINE)].iterrows()}
        for _, r in g.iterrows():
            base = {"model": model, "claim": claim, "reading": r["reading"], "choice": r["choice"],
                    "setting": r["setting"], **{k: r[k] for k in cols}}
            undef = _undefined(r["verdict"], r["reason"])
            if r["choice"] == HEADLINE:
                if r["reading"] == c.headline:
                    out.append({**base, "ref_setting": "", "ref_verdict": "", "change": "headline"})
                    continue
                ref = heads.get(c.headline)
                if ref is None:
                    continue
                base.update(reading=c.headline, choice=READING_CHOICE, setting=r["reading"])
            elif r["reference"]:
                out.append({**base, "ref_setting": "", "ref_verdict": "", "change": "reference"})
                continue
            else:
                ref = refs.get((r["choice"], r["reading"]), heads.get(r["reading"]))
                if ref is None:
                    raise ValueError(f"{model}, {claim} ({r['reading']}): the row at {r['choice']} = {r['setting']} "
                                     "has no headline row of its reading to compare with")
                if r["choice"] != N_CHOICE and int(r["n"]) != int(ref["n"]):
                    raise ValueError(
                        f"{model}, {claim}: {r['choice']} = {r['setting']} has N = {int(r['n'])} but is compared with "
                        f"N = {int(ref['n'])}; only the choice {N_CHOICE!r} compares across N: mark a reference row "
                        f"of {r['choice']!r} at N = {int(r['n'])} (choice_frame(..., references=...))")
            ref_undef = _undefined(ref["verdict"], ref["reason"])
            out.append({**base, "ref_setting": "headline" if ref["choice"] == HEADLINE else ref["setting"],
                        "ref_verdict": "undefined" if ref_undef else ref["verdict"],
                        "change": _change(r["verdict"], undef, ref["verdict"], ref_undef)})
    return pd.DataFrame(out, columns=["model", "claim", "reading", "choice", "setting", *cols, "ref_setting",
                                      "ref_verdict", "change"])


def _numbers(r) -> str:
    """The row's value with its interval (:func:`transformer_dynamics.formats.with_interval`)."""
    return with_interval(r["value"], r["low"], r["high"])


def _state(r) -> str:
    if _undefined(r["verdict"], r["reason"]):
        return f"undefined ({r['reason']})"
    return f"{r['verdict']}, {_numbers(r)}"


def _label(choice: str, setting: str) -> str:
    if choice == N_CHOICE:
        return f"N = {setting}"
    return f"{choice} {setting}"


def _where(rows: pd.DataFrame, state: bool = True) -> str:
    """The settings of ``rows``, each with its verdict and numbers (``state``) and, where it is compared with a
    reference other than the headline, that reference's verdict."""
    out = []
    for _, r in rows.iterrows():
        own_ref = state and r.get("ref_setting") not in ("", "headline", None)
        ref = f"; {r['ref_setting']}: {r['ref_verdict']}" if own_ref else ""
        out.append(_label(r["choice"], r["setting"]) + (f" ({_state(r)}{ref})" if state else ""))
    return "; ".join(out)


def _line(head, comp: pd.DataFrame, status: str) -> str:
    flips, losses = comp[comp["change"] == "flip"], comp[comp["change"] == "loses power"]
    gains, undef = comp[comp["change"] == "gains"], comp[comp["change"] == "undefined"]
    compared = comp[comp["change"] != "reference"]
    mark = _claims.MARKS.get(head["verdict"], "")
    parts = []
    if status == "undefined":
        parts.append(f"undefined at the headline ({head['reason']})")
    elif status == "undecided":
        parts.append(f"undecided at the headline ({_state(head)})")
    elif status == "robust":
        every = "the one setting" if len(compared) == 1 else f"all {len(compared)} settings"
        parts.append(f"robust {mark}: {head['verdict']} at {every} compared"
                     + (" where defined" if len(undef) else ""))
    elif status == "loses power":
        parts.append(f"{head['verdict']} {mark} ({_numbers(head)}); only loses significance at {_where(losses)}")
    else:
        on = ", ".join(dict.fromkeys(flips["choice"])) or ", ".join(dict.fromkeys(gains["choice"]))
        parts.append(f"hinges on {on}: {_where(flips if len(flips) else gains)}; headline {_state(head)}")
    if status == "hinges" and len(losses):
        parts.append(f"loses significance at {_where(losses, state=False)}")
    if len(gains) and status not in ("hinges",):
        parts.append(f"decided at {_where(gains)}")
    if len(undef):
        parts.append(f"undefined at {_where(undef, state=False)}")
    return "; ".join(parts)


def robustness_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per model, claim and reading over the open choices of ``frame`` (:func:`choice_frame`).

    -> DataFrame with ``model``, ``claim``, ``reading``, ``headline_reading`` (bool: the claim's headline reading),
    ``verdict``, ``value``, ``low``, ``high``, ``n`` (the headline row), ``status`` (:data:`STATUSES`),
    ``hinges_on`` (the choices whose settings flip the verdict, comma-separated), ``loses_power_at``,
    ``undefined_at`` (settings), ``compared`` (rows compared with a reference), ``flips``, ``losses``, ``gains``,
    ``undefined`` (their counts) and ``line`` (e.g. "robust ✓: holds at all 9 settings compared", "holds ✓ (...);
    only loses significance at N = 100 (undecided, ...)", "hinges on last token: headline holds, ...; last token
    strip=False (fails, ...)"). Readings other than the headline's get a line only where they were computed under
    another setting too. A line "hinges" only on a flip (holds <-> fails) against a reference at the same N (or
    mixed holds and fails where the headline is undecided).
    """
    changes = setting_changes(frame)
    out = []
    for (model, claim, reading), g in changes.groupby(["model", "claim", "reading"], sort=False):
        c = _claims.get(claim)
        head = g[g["change"] == "headline"]
        if reading != c.headline:
            head = frame[(frame["model"] == model) & (frame["claim"] == claim) & (frame["reading"] == reading)
                         & (frame["choice"] == HEADLINE)]
        comp = g[~g["change"].isin(["headline"])]
        if not len(head) or (reading != c.headline and not len(comp)):
            continue
        head = head.iloc[0]
        count = {k: int((comp["change"] == k).sum()) for k in ("flip", "loses power", "gains", "undefined")}
        gained = set(comp.loc[comp["change"] == "gains", "verdict"])
        if _undefined(head["verdict"], head["reason"]):
            status = "undefined"
        elif count["flip"] or {"holds", "fails"} <= gained:
            status = "hinges"
        elif head["verdict"] == "undecided":
            status = "undecided"
        elif count["loses power"]:
            status = "loses power"
        else:
            status = "robust"
        on = comp[comp["change"] == "flip"] if count["flip"] else comp[comp["change"] == "gains"]
        out.append({"model": model, "claim": claim, "reading": reading, "headline_reading": reading == c.headline,
                    "verdict": head["verdict"], "value": head["value"], "low": head["low"], "high": head["high"],
                    "n": head["n"], "status": status,
                    "hinges_on": ", ".join(dict.fromkeys(on["choice"])) if status == "hinges" else "",
                    "loses_power_at": _where(comp[comp["change"] == "loses power"], state=False),
                    "undefined_at": _where(comp[comp["change"] == "undefined"], state=False),
                    "compared": int((comp["change"] != "reference").sum()), "flips": count["flip"],
                    "losses": count["loses power"], "gains": count["gains"], "undefined": count["undefined"],
                    "line": _line(head, comp, status)})
    return pd.DataFrame(out, columns=["model", "claim", "reading", "headline_reading", "verdict", "value", "low",
                                      "high", "n", "status", "hinges_on", "loses_power_at", "undefined_at",
                                      "compared", "flips", "losses", "gains", "undefined", "line"])


def robustness_counts(lines: pd.DataFrame) -> pd.DataFrame:
    """How many claims are robust, hinge (flip), only lose power, or are undecided / undefined at the headline, per
    model, over the claims' headline readings of :func:`robustness_lines` -> DataFrame indexed by model (and
    ``"all"``), one column per status of :data:`STATUSES` and ``claims``."""
    heads = lines[lines["headline_reading"]]
    if heads.empty:
        raise ValueError("no headline-reading lines: pass robustness_lines(frame) of a frame with a headline run")
    t = pd.crosstab(heads["model"], heads["status"]).reindex(columns=list(STATUSES), fill_value=0)
    t = t.reindex(list(dict.fromkeys(heads["model"])))
    t.loc["all"] = t.sum()
    t["claims"] = t[list(STATUSES)].sum(axis=1)
    t.index.name = "model"
    t.columns.name = None
    return t.astype(int)


def hinge_counts(lines: pd.DataFrame) -> pd.DataFrame:
    """How many claims (headline readings of :func:`robustness_lines`) flip on each choice, per model -> DataFrame
    indexed by choice, one column per model (a claim that flips on two choices counts for both)."""
    heads = lines[lines["headline_reading"] & (lines["hinges_on"] != "")]
    models = list(dict.fromkeys(lines["model"]))
    if heads.empty:
        return pd.DataFrame(columns=models, dtype=int).rename_axis("hinges on")
    pairs = heads.assign(choice=heads["hinges_on"].str.split(", ")).explode("choice")
    t = pd.crosstab(pairs["choice"], pairs["model"]).reindex(columns=models, fill_value=0)
    t = t.reindex(list(dict.fromkeys(pairs["choice"])))
    t.index.name, t.columns.name = "hinges on", None
    return t.astype(int)


def counts_sentence(counts: pd.DataFrame) -> str:
    """:func:`robustness_counts` in one sentence (its ``"all"`` row), e.g. "Of 46 claims × models (23 claims, 2
    models), 30 are robust, 2 hinge on an open choice (a flip), 10 only lose significance, 3 are undecided and 1
    undefined at the headline."."""
    models = [m for m in counts.index if m != "all"]
    a = counts.loc["all"] if "all" in counts.index else counts.sum()
    per = {int(counts.loc[m, "claims"]) for m in models}
    each = f"{per.pop()} claims, " if len(per) == 1 else ""
    return (f"Of {int(a['claims'])} claims × models ({each}{len(models)} model{'s' * (len(models) != 1)}), "
            f"{int(a['robust'])} are robust, {int(a['hinges'])} hinge on an open choice (a flip), "
            f"{int(a['loses power'])} only lose significance, {int(a['undecided'])} are undecided and "
            f"{int(a['undefined'])} undefined at the headline.")
