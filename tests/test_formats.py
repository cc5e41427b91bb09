"""The book's one number formatter: closed cases, and the verdict tables and ledger pages use it."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_dynamics import formats, ledger, verdicts


@pytest.mark.parametrize("value, expected", [
    (0.123456, "0.123"), (12345.678, "12346"), (1280.4, "1280"), (2.5e6, "2.50e+06"), (1e-7, "1.00e-07"), (0.0, "0"),
    (-0.5, "-0.5"), (np.float32(2.5), "2.5"), (float("nan"), "nan"), ("inf", "inf"), (None, "None"),
])
def test_number(value, expected):
    assert formats.number(value) == expected


def test_number_undefined_and_intervals():
    assert formats.number(float("nan"), undefined="undefined") == "undefined"
    assert formats.with_interval(0.5123, 0.48, 0.55) == "0.512 [0.48, 0.55]"
    assert formats.with_interval(0.5, float("nan"), 1.0) == "0.5"
    assert formats.with_interval(float("nan"), 0.1, 0.2) == "undefined"
    assert formats.with_interval(None, None, None) == "undefined"


def test_one_formatter_behind_ledger_and_verdicts():
    assert ledger.format_value is formats.format_value
    assert verdicts.with_interval is formats.with_interval


def test_numbers_in_a_sentence():
    assert formats.numbers([0.51234, 0.48, 1280.4]) == "0.512, 0.48, 1280"
    assert formats.numbers(np.array([1e-5])) == "1.00e-05"


def test_robustness_tables_and_lines_write_numbers_by_formats():
    import pandas as pd

    from transformer_dynamics import claims, robustness
    from transformer_dynamics.robustness import lines

    key = next(iter(claims.REGISTRY))
    frame = pd.DataFrame({"claim": [key], "reading": [claims.get(key).headline], "value": [1280.4],
                          "low": [1000.2], "high": [1500.7], "model": ["m"]})
    # "%.3g" would write 1.28e+03 [1e+03, 1.5e+03]
    assert robustness.value_table(frame, "model").iloc[0]["m"] == "1280 [1000, 1501]"
    assert lines._numbers(frame.iloc[0]) == "1280 [1000, 1501]"
