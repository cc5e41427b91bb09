"""The claims' values as a reader's table (chapter 6): one row per claim, one column per model, condition or
precision, each cell the value with its 95% interval over texts."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import claims as _claims
from ..formats import number, with_interval

__all__ = ["value_table"]


def value_table(frame: pd.DataFrame, columns: str | Sequence[str], *, digits: int = 3) -> pd.DataFrame:
    """The claims' values with their intervals, side by side.

    frame: :func:`~.evidence.evidence_frame` rows (``claim``, ``reading``, ``value``, ``low``, ``high``) with the
    ``columns`` (e.g. ``"model"`` or ``["model", "condition"]``) to spread; only each claim's headline reading is
    shown. -> DataFrame indexed by (figure, claim), with a ``test`` column (the claim's side of its threshold,
    e.g. ``"> 0.8"``) and one text column per value of ``columns``
    (:func:`transformer_dynamics.formats.with_interval`: ``"0.812 [0.801, 0.823]"``), in registry order.
    """
    cols = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in ["claim", "reading", "value", "low", "high", *cols] if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the columns {missing}; pass robustness.evidence_frame(ev, ...) rows "
                         "with those columns")
    f = frame[frame["reading"] == frame["claim"].map(lambda k: _claims.get(k).headline)].copy()
    f["text"] = [with_interval(v, lo, hi, digits) for v, lo, hi in zip(f["value"], f["low"], f["high"])]
    order = {k: i for i, k in enumerate(_claims.REGISTRY)}
    wide = f.pivot_table(index="claim", columns=cols, values="text", aggfunc="first", sort=False)
    wide = wide.reindex(sorted(wide.index, key=order.get))
    # column order: as the frame has them
    wide = wide[list(dict.fromkeys(f[cols[0]] if len(cols) == 1 else zip(*(f[c] for c in cols))))]
    wide.columns.name = None if len(cols) == 1 else wide.columns.name
    c = [_claims.get(k) for k in wide.index]
    wide.insert(0, "test", [f"{x.test} {number(x.threshold)}" for x in c])
    wide.index = pd.MultiIndex.from_arrays([[x.figure for x in c], list(wide.index)], names=["figure", "claim"])
    return wide
