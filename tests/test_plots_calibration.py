"""plots.calibration: chapter 10's figure of the calibration table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from transformer_dynamics import claims  # noqa: E402
from transformer_dynamics.plots import calibration as C  # noqa: E402


def _table(power: bool = True) -> pd.DataFrame:
    t = pd.DataFrame({"claim": ["r_early", "mi_early_drop"], "reading": ["first_each_kind", "kde"],
                      "worst": [0.03, 0.12], "worst_low": [0.01, 0.06], "worst_high": [0.08, 0.2]})
    if power:
        t = t.assign(power=[1.0, np.nan], power_low=[0.9, np.nan], power_high=[1.0, np.nan])
    return t


def test_rows_rates_and_bars():
    fig = C.plot_calibration(_table())
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["r_early: first_each_kind", "mi_early_drop: kde"]
    xs = sorted(line.get_xdata()[0] for line in left.lines if len(set(line.get_xdata())) == 1)
    assert xs == pytest.approx([claims.ALPHA, 2 * claims.ALPHA])
    dots = left.lines[0].get_xdata()
    assert list(dots) == pytest.approx([0.03, 0.12])
    assert list(right.lines[0].get_xdata()) == pytest.approx([1.0])     # the undefined power is left out
    C.plot_calibration(_table(power=False))                              # no planted effects: an empty panel


def test_refuses_what_is_not_a_calibration_table():
    with pytest.raises(ValueError, match="calibration.table"):
        C.plot_calibration(pd.DataFrame({"claim": ["r_early"]}))
    with pytest.raises(ValueError, match="no rows"):
        C.plot_calibration(_table().iloc[:0])
