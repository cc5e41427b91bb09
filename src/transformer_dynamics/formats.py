"""How the book writes a number: one rule for every table, verdict line and chapter.

:func:`number` writes one value to 3 significant digits (whole from 1000 on, scientific below 1e-3 and from 1e6 on);
:func:`with_interval` a value with its interval, ``"0.512 [0.48, 0.55]"``; :func:`format_value` any recorded
value (numbers, booleans, lists, dicts, the strings ``"nan"``/``"inf"`` a ledger stores for non-finite values);
:func:`numbers` several values in a sentence (``"0.512, 0.48"``); :func:`p_value` a test's p- or q-value; :func:`finite`
whether a value is a number to write at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["number", "numbers", "with_interval", "format_value", "p_value", "finite"]


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite number (None, text that is no number, NaN and inf are not)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def number(value: Any, digits: int = 3, undefined: str | None = None) -> str:
    """``value`` to ``digits`` significant digits (a whole number from ``10**digits`` on: ``1280.4`` -> ``"1280"``),
    in scientific notation when it is nonzero and below ``10**-digits`` or at least a million. A non-finite value
    (or None, or text that is no number): ``undefined`` when given, else as Python writes it (``"nan"``,
    ``"inf"``)."""
    if not finite(value):
        return undefined if undefined is not None else str(value)
    v = float(value)
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -digits):
        return f"{v:.{digits - 1}e}"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def numbers(values: Any, digits: int = 3) -> str:
    """Several values for a sentence, each by :func:`number`, joined by commas: ``[0.5123, 0.48]`` ->
    ``"0.512, 0.48"``. values: any iterable of numbers (a list, an array, a pandas Series)."""
    return ", ".join(number(v, digits) for v in values)


def with_interval(value: Any, low: Any, high: Any, digits: int = 3, undefined: str = "undefined") -> str:
    """``"value [low, high]"`` (each by :func:`number`); the value alone when the interval is not finite;
    ``undefined`` when the value is not."""
    if not finite(value):
        return undefined
    if not (finite(low) and finite(high)):
        return number(value, digits)
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"


def format_value(value: Any, digits: int = 3, max_items: int = 6) -> str:
    """A short human-readable form of a recorded value: numbers by :func:`number`, booleans as yes/no, None as
    "–", non-finite values (stored as the strings ``"nan"``, ``"inf"``) as they are, long lists abbreviated."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return number(value, digits)
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        shown = ", ".join(format_value(v, digits, max_items) for v in items[:max_items])
        more = f", … ({len(items)} values)" if len(items) > max_items else ""
        return f"[{shown}{more}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v, digits, max_items)}" for k, v in value.items())
    return str(value)


def p_value(p: Any, digits: int = 2) -> str:
    """A test's p-value (or a Benjamini-Hochberg q-value) to ``digits`` significant digits in the general format
    (``0.012``, ``0.0005``, ``1.2e-05``: a small p keeps its size readable)."""
    return f"{float(p):.{digits}g}"
