"""The trained models' effect sizes, in standard errors from each claim's threshold (:func:`effect_sizes` from
the book's ledgers, :func:`sizes_from_evidence` from evidence), and the sizes a calibration plants
(:func:`planted_sizes`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as _claims
from .streams import ALPHA, MECHANISMS, Z_MAX

# ----------------------------------------------------------------------------------------------------------
# effect sizes of the trained models
# ----------------------------------------------------------------------------------------------------------
_SIZE_COLUMNS = ["model", "claim", "reading", "value", "low", "high", "n", "z"]


def _z(key: str, value, low, high) -> float:
    """The standardised effect: (value - threshold) / standard error, the standard error from the 1 - alpha
    percentile interval ``(high - low) / (2 z_{1 - alpha/2})``. NaN without a value or an interval; +-inf for a
    zero-width interval off the threshold."""
    from scipy.stats import norm  # noqa: PLC0415

    c = _claims.get(key)
    try:
        value, low, high = float(value), float(low), float(high)
    except (TypeError, ValueError):
        return float("nan")
    if not all(map(math.isfinite, (value, low, high))):
        return float("nan")
    se = abs(high - low) / (2 * norm.ppf(1 - ALPHA / 2))
    d = value - c.threshold
    if se == 0:
        return float("nan") if d == 0 else math.copysign(math.inf, d)
    return d / se


def effect_sizes(ledgers: Sequence[Mapping[str, Any]] | None = None, *, directory=None,
                 models: Sequence[str] | None = None) -> pd.DataFrame:
    """The residual-stream claims' values on the trained models as the book recorded them: the claim rows of the
    original texts in the ledgers (when ``ledgers`` is None, those of ``directory``, or of the finished chapters
    when it is a running chapter's folder: :func:`transformer_dynamics.ledger.book_directory`). -> DataFrame
    ``model, claim, reading, value, low, high, n, z`` (``z``: :func:`_z`, the size a planted effect is given), one
    row per model, claim and reading."""
    from .. import ledger as _ledger  # noqa: PLC0415

    if ledgers is None:  # a chapter's own folder inside a book build: the finished chapters' folder
        ledgers = _ledger.load_all(None if directory is None else _ledger.book_directory(directory))
    rs_claims = set(_claims.claims_of(source="rs"))
    rows = []
    for led in ledgers:
        for e in led.get("entries", []):
            key = e.get("registry")
            if key not in rs_claims or (e.get("condition") or "original") != "original":
                continue
            if models is not None and e.get("model") not in models:
                continue
            if (e.get("reading") or _claims.get(key).headline) not in _claims.get(key).reading_names:
                continue                                    # a reading the registry no longer has
            ci = e.get("ci") or (None, None)
            rows.append({"model": e.get("model", ""), "claim": key, "reading": e.get("reading") or
                         _claims.get(key).headline, "value": _num(e.get("value")), "low": _num(ci[0]),
                         "high": _num(ci[1]), "n": e.get("n")})
    out = pd.DataFrame(rows, columns=_SIZE_COLUMNS[:-1])
    out["z"] = [_z(r.claim, r.value, r.low, r.high) for r in out.itertuples()]
    return out.drop_duplicates(["model", "claim", "reading"], keep="last").reset_index(drop=True)


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def sizes_from_evidence(evidence: Sequence[Any], model: str = "") -> pd.DataFrame:
    """:func:`effect_sizes`' frame from :class:`~transformer_dynamics.verdicts.Evidence` of the run ``"trained"``
    (e.g. :func:`transformer_dynamics.robustness.claim_evidence` on a captured stream) instead of a ledger."""
    from ..verdicts import decide  # noqa: PLC0415

    rows = []
    for e in evidence:
        if e.run != "trained":
            continue
        d = decide(e)
        rows.append({"model": model, "claim": e.claim, "reading": e.reading, "value": d["value"], "low": d["low"],
                     "high": d["high"], "n": e.n, "z": _z(e.claim, d["value"], d["low"], d["high"])})
    return pd.DataFrame(rows, columns=_SIZE_COLUMNS)


def planted_sizes(sizes: pd.DataFrame | None, pairs: Sequence[tuple[str, str]], *, model: str | None = None,
                  z_max: float = Z_MAX) -> dict[tuple[str, str], float]:
    """The size to plant per reading: the trained ``z`` (:func:`effect_sizes`), of the smaller ``|z|`` over the models
    when several (the weaker trained effect), capped at ``z_max``; readings without a finite trained size or a
    mechanism are left out. ``sizes`` None: ``z_max`` standard errors on the claim's side for every reading."""
    out = {}
    for pair in pairs:
        if pair not in MECHANISMS:
            continue
        if sizes is None:
            out[pair] = z_max if _claims.get(pair[0]).test == ">" else -z_max
            continue
        s = sizes[(sizes["claim"] == pair[0]) & (sizes["reading"] == pair[1])]
        if model is not None:
            s = s[s["model"] == model]
        z = s["z"].astype(float)
        z = z[z.notna() & (z != 0)]
        if z.empty or (np.sign(z).nunique() > 1):     # no size, or the models disagree on the side
            continue
        zz = float(z.abs().min()) * float(np.sign(z.iloc[0]))
        out[pair] = float(np.clip(zz, -z_max, z_max))
    return out
