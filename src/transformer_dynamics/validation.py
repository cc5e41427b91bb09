"""The one check of count, size, seed and path arguments where the package is entered (in the manner of
scikit-learn's parameter constraints): every public function that takes a count calls these, so a bad value
gives one line naming the argument and the range it accepts, before any work, never numpy's or Python's
own error from deep inside (``range() arg 3 must not be zero``), and never a silently wrong result (a
negative chunk returning memory that was never computed, ``n=2.7`` taken as 2).

- :func:`check_int` (and :func:`check_positive_int`, :func:`check_nonnegative_int`, :func:`check_seed`):
  a Python or numpy integer in a range; floats (even ``16.0``), strings and booleans are refused.
- :func:`check_number`: a finite real number in a range (fractions, scales).
- :func:`check_allocation`: an array a count would make, checked against this machine's memory before it
  is allocated (a huge count gives a one-line error with the size, not a ``MemoryError`` of 291 TiB).
- :func:`check_path`: a file or folder argument (``str`` or ``os.PathLike``; not ``5``, not ``""``).

The input arrays themselves are checked by :func:`transformer_dynamics.arrays.check_rs`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_int", "check_positive_int", "check_nonnegative_int", "check_seed", "check_number",
           "check_allocation", "check_path", "format_bytes", "memory_bytes"]


def _accepts(kind: str, low: float | None, high: float | None, none: bool) -> str:
    if low is not None and high is not None:
        what = f"{kind} in [{low}, {high}]"
    elif low is not None:
        what = f"{kind} >= {low}"
    elif high is not None:
        what = f"{kind} <= {high}"
    else:
        what = kind
    return what + (" or None" if none else "")


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None,
              none: bool = False) -> int | None:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be None), else a one-line ValueError
    naming ``name`` and the accepted range. Floats (``2.7``, and ``16.0`` too), strings and booleans are
    refused: a count given as a float is a mistake somewhere upstream. ``none=True`` lets None through."""
    if value is None and none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be {_accepts('an integer', low, high, none)}; got {value!r} "
                         f"({type(value).__name__})")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be {_accepts('an integer', low, high, none)}; got {v}")
    return v


def check_positive_int(value: Any, name: str, *, high: int | None = None, none: bool = False) -> int | None:
    """A count or size: an integer >= 1 (``high``: an upper bound; ``none``: None allowed)."""
    return check_int(value, name, low=1, high=high, none=none)


def check_nonnegative_int(value: Any, name: str, *, high: int | None = None, none: bool = False) -> int | None:
    """An integer >= 0 (an offset, a trim, a count that may be zero)."""
    return check_int(value, name, low=0, high=high, none=none)


def check_seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer >= 0 (what ``numpy.random.default_rng`` accepts), not a float."""
    return check_int(value, name, low=0)


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, none: bool = False) -> float | None:
    """``value`` as a finite ``float`` in the interval given by ``low``/``high`` (open ends with
    ``low_open``/``high_open``), else a one-line ValueError naming ``name`` and the interval."""
    if value is None and none:
        return None
    lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
    hi = "" if high is None else f"{high}" + (")" if high_open else "]")
    interval = (f" in {lo}, {hi}" if low is not None and high is not None
                else f" {'>' if low_open else '>='} {low}" if low is not None
                else f" {'<' if high_open else '<='} {high}" if high is not None else "")
    accepts = f"a finite number{interval}" + (" or None" if none else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be {accepts}; got {value!r} ({type(value).__name__})")
    v = float(value)
    bad = (not math.isfinite(v)
           or (low is not None and (v <= low if low_open else v < low))
           or (high is not None and (v >= high if high_open else v > high)))
    if bad:
        raise ValueError(f"{name} must be {accepts}; got {v!r}")
    return v


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def format_bytes(n: float) -> str:
    """``3.2e14`` -> ``"291 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_allocation(shape: tuple[int, ...], dtype: Any, *, what: str, name: str,
                     limit: int | None = None) -> int:
    """The bytes of an array of ``shape`` and ``dtype`` that a count argument ``name`` would make; a
    one-line ValueError (saying the size, this machine's memory and to lower ``name``) when it exceeds
    ``limit`` (default: the physical memory), checked before anything is allocated."""
    nbytes = np.dtype(dtype).itemsize * math.prod(int(s) for s in shape)
    limit = memory_bytes() if limit is None else int(limit)
    if limit is not None and nbytes > limit:
        raise ValueError(f"{name} is too large: {what} {tuple(int(s) for s in shape)} {np.dtype(dtype).name} would "
                         f"need {format_bytes(nbytes)}, more than this machine's {format_bytes(limit)} of memory; "
                         f"lower {name}")
    return nbytes


def check_path(value: Any, name: str, *, none: bool = True) -> Path | None:
    """A file or folder argument as a :class:`~pathlib.Path` (``~`` expanded): a ``str`` or ``os.PathLike``,
    not empty; None passes when ``none`` (the caller's default applies). Anything else is a one-line error
    (``cache_dir=5`` would otherwise fail deep inside ``pathlib``; ``""`` would mean the working directory)."""
    if value is None and none:
        return None
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or os.PathLike){' or None' if none else ''}; got {value!r} "
                         f"({type(value).__name__})")
    text = os.fspath(value)
    if isinstance(text, bytes) or not text.strip():
        raise ValueError(f"{name} must be a non-empty path{'; pass None for the default' if none else ''}; "
                         f"got {value!r}")
    return Path(text).expanduser()
