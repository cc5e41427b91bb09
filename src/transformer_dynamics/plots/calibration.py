"""Chapter 10: the calibration table as a figure -- per claim and reading, the worst false-decision rate over the
nulls and the power on the planted effects, each with its 95 % binomial interval (:func:`plot_calibration`).

Table in (:func:`transformer_dynamics.calibration.table`), a matplotlib figure out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..claims import ALPHA
from .style import subplots

__all__ = ["POWER_GOAL", "plot_calibration"]

#: The power every claim is asked for at the trained models' effect size (issue 23; tests/test_calibration.py).
POWER_GOAL = 0.8


def _panel(ax, y: np.ndarray, rate, low, high, color: str) -> None:
    rate, low, high = (np.asarray(v, dtype=float) for v in (rate, low, high))
    ok = np.isfinite(rate)
    err = np.vstack([rate - low, high - rate])[:, ok]
    ax.errorbar(rate[ok], y[ok], xerr=np.clip(err, 0, None), fmt="o", ms=3.5, color=color, ecolor=color,
                elinewidth=1, capsize=0)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", alpha=0.3)


def plot_calibration(table: pd.DataFrame, *, alpha: float = ALPHA, title: str | None = None) -> Figure:
    """Two panels sharing the rows (one per claim and reading, registry order, top to bottom): the worst
    false-decision rate over the nulls with its interval, against ``alpha`` and ``2 alpha`` (the bar the tests
    hold every claim to), and the power after Benjamini-Hochberg with its interval, against :data:`POWER_GOAL`.

    table: :func:`transformer_dynamics.calibration.table` (columns ``claim``, ``reading``, ``worst``,
    ``worst_low``, ``worst_high``, and where effects were planted ``power``, ``power_low``, ``power_high``).
    """
    need = {"claim", "reading", "worst", "worst_low", "worst_high"}
    if not need <= set(table.columns):
        raise ValueError(f"table lacks columns {sorted(need - set(table.columns))}: pass calibration.table(run)")
    if table.empty:
        raise ValueError("the calibration table has no rows: nothing was simulated")
    t = table.reset_index(drop=True)
    y = np.arange(len(t))[::-1].astype(float)
    fig, (left, right) = subplots(1, 2, sharey=True, figsize=(9.0, 1.2 + 0.22 * len(t)), layout="constrained")
    _panel(left, y, t["worst"], t["worst_low"], t["worst_high"], "#d62728")
    left.axvline(alpha, color="0.4", lw=1, ls=":", label=f"α = {alpha:g}")
    left.axvline(2 * alpha, color="k", lw=1, ls="--", label=f"2α = {2 * alpha:g}")
    left.set_xlabel("worst false-decision rate over the nulls")
    left.legend(loc="lower right", fontsize=7)
    if "power" in t:
        _panel(right, y, t["power"], t.get("power_low", t["power"]), t.get("power_high", t["power"]), "#2ca02c")
    right.axvline(POWER_GOAL, color="k", lw=1, ls="--", label=f"power {POWER_GOAL:g}")
    right.set_xlabel("power after Benjamini-Hochberg (planted effects)")
    right.legend(loc="lower left", fontsize=7)
    left.set_yticks(y, [f"{c}: {r}" for c, r in zip(t["claim"], t["reading"])], fontsize=7)
    left.set_ylim(-0.7, len(t) - 0.3)
    fig.suptitle(title or "Calibration: false decisions on the nulls and power on planted effects", fontsize=9)
    return fig
