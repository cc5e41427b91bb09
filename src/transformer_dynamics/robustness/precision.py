"""Numerical precision: the capture keywords of a precision name (:func:`precision_kwargs`), how far a
second capture of the same texts is from the first (:func:`precision_difference`), and headline numbers
side by side (:func:`headline_change`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import metrics, phase
from ..arrays import nanmedian

__all__ = ["precision_kwargs", "precision_difference", "headline_change"]


def precision_kwargs(precision: str) -> dict[str, Any]:
    """``pipeline.residual_stream`` keywords for a precision name: ``"float32"``, ``"bfloat16"``,
    ``"float16"`` -> ``{"dtype": precision, "quantization": None}``; ``"4bit"`` / ``"8bit"`` ->
    ``{"dtype": "float32", "quantization": precision}`` (bitsandbytes, float32 compute)."""
    if precision in ("4bit", "8bit"):
        return {"dtype": "float32", "quantization": precision}
    if precision in ("float32", "bfloat16", "float16"):
        return {"dtype": precision, "quantization": None}
    raise ValueError(f"unknown precision {precision!r}; use 'float32', 'bfloat16', 'float16', '4bit' or '8bit'")


def _corr(a, b) -> float:
    a, b = np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return np.nan
    a, b = a[ok], b[ok]
    if np.array_equal(a, b):
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(a, b)[0, 1])


def precision_difference(rs_a, rs_b) -> dict[str, Any]:
    """How much a second capture of the same texts (e.g. bfloat16 vs float32) differs from the first.

    rs_a, rs_b: (n_samples, n_sublayers, d_model), the same texts in the same order; ``rs_a`` is the
    reference. Returns

    - ``"rel_error"``: (n_sublayers,) ``||b_s - a_s||_F / ||a_s||_F`` over texts and units, per sublayer;
    - ``"rel_error_per_text"``: (n_sublayers,) median over texts of ``||b_ns - a_ns|| / ||a_ns||``;
    - ``"max_rel_error"``: float, the largest ``rel_error``;
    - ``"corr"``: {statistic: Pearson correlation between its values from a and from b}, for ``"rs"`` (all
      activations), ``"r"`` (successive r per transition and unit), ``"cos"`` and ``"vel"`` (per text and
      transition) and ``"rot"`` (rotation count per unit).
    """
    a, b = np.asarray(rs_a), np.asarray(rs_b)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"rs_a and rs_b must be (n_samples, n_sublayers, d_model) arrays of one shape (the same "
                         f"texts captured twice); got {a.shape} and {b.shape}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = b64 - a64
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.sqrt((diff ** 2).sum(axis=(0, 2)) / (a64 ** 2).sum(axis=(0, 2)))
        per_text = np.linalg.norm(diff, axis=2) / np.linalg.norm(a64, axis=2)
    corr = {"rs": _corr(a64, b64)}
    if a.shape[0] >= 2 and a.shape[1] >= 2:
        corr["r"] = _corr(metrics.successive_correlation(a), metrics.successive_correlation(b))
        corr["cos"] = _corr(metrics.cosine_similarity(a), metrics.cosine_similarity(b))
        corr["vel"] = _corr(metrics.velocity(a), metrics.velocity(b))
    if a.shape[1] >= 3:
        corr["rot"] = _corr(phase.rotations_per_unit(a, "mean"), phase.rotations_per_unit(b, "mean"))
    return {"rel_error": rel, "rel_error_per_text": nanmedian(per_text, 0), "max_rel_error": float(np.nanmax(rel)),
            "corr": corr}


def headline_change(reference: Mapping[str, float], other: Mapping[str, float]) -> pd.DataFrame:
    """Headline numbers side by side: -> DataFrame indexed by key (those in both) with columns ``reference``,
    ``other``, ``change`` (other - reference) and ``rel_change`` (change / abs(reference); NaN where 0)."""
    keys = [k for k in reference if k in other]
    ref = np.array([reference[k] for k in keys], dtype=np.float64)
    oth = np.array([other[k] for k in keys], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = oth - ref
        rel = np.where(ref != 0, change / np.abs(ref), np.nan)
    return pd.DataFrame({"reference": ref, "other": oth, "change": change, "rel_change": rel},
                        index=pd.Index(keys, name="key"))
