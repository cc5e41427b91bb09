"""The claims' effect sizes: functions from curves to one number per bootstrap resample.

Every claim of the registry (:mod:`.claims`) is decided from one of these. A statistic takes a dict of curves,
each with a leading resample axis ``(B, ...)`` (``B = 1`` for the full data), and returns ``(B,)``: the value
on the full data and its bootstrap replicates come from one function, so a figure's number and its verdict's
interval are the same computation. Curves come from :mod:`transformer_dynamics.robustness` (a residual stream), the
teleport, the autoencoder or the Jacobians; their keys are named in each statistic's docstring.

Effect sizes, never rank tests over layers: a trend is the mean over the last third of depth minus the mean over
the first third (:func:`contrast`); an ordering is the mean over layers of the within-minus-cross difference
(:func:`kind_difference`). Transition ``t`` is within-layer for even ``t`` and cross-layer for odd ``t``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["within", "cross", "thirds_of", "contrast", "kind_difference", "kind_share", "first_defined",
           "first_each_kind", "bounded_contrast", "steepest_third_margin", "last_third_margin", "cv_early_minus_late",
           "early_window", "early_drop", "drop_at_cross_margin", "early_difference_correlation", "curve", "Stat",
           "depth_contrast", "early_rate_minus_later", "middle_minus_ends", "second_half_mean", "first_column",
           "last_minus_first", "lower_minus_upper", "rank_correlation"]
#: A statistic: curves -> (B,).
Stat = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            return f(*a, **k)


def _2d(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y[None] if y.ndim == 1 else y


def within(y) -> np.ndarray:
    """The within-layer transitions (even t) of ``y: (B, n_transitions)`` -> (B, ceil(n / 2))."""
    return _2d(y)[:, 0::2]


def cross(y) -> np.ndarray:
    """The cross-layer transitions (odd t) of ``y: (B, n_transitions)`` -> (B, floor(n / 2))."""
    return _2d(y)[:, 1::2]


def thirds_of(n: int) -> list[np.ndarray]:
    """Positions ``0 .. n - 1`` in three near-equal consecutive parts (the first parts one longer when ``n`` is
    not a multiple of 3). ``n >= 3``."""
    if n < 3:
        raise ValueError(f"need at least 3 positions for thirds; got {n}")
    return np.array_split(np.arange(int(n)), 3)


def contrast(y) -> np.ndarray:
    """Trend effect size: mean over the last third minus mean over the first third of ``y: (B, n)`` (NaN ignored)
    -> (B,). In the units of ``y``; > 0: y rises with depth."""
    y = _2d(y)
    first, _, last = thirds_of(y.shape[1])
    return _quiet(lambda: np.nanmean(y[:, last], 1) - np.nanmean(y[:, first], 1))


def bounded_contrast(y) -> np.ndarray:
    """:func:`contrast` of counts that may be "not reached" (``inf``: more than were kept): NaN for a resample with
    an ``inf`` in the first or the last third, since a difference of lower bounds says nothing. (B, n) -> (B,)."""
    y = _2d(y)
    first, _, last = thirds_of(y.shape[1])
    saturated = np.isposinf(y[:, np.r_[first, last]]).any(1)
    return np.where(saturated, np.nan, contrast(np.where(np.isposinf(y), np.nan, y)))


def kind_difference(y, sign: int = 1) -> np.ndarray:
    """Ordering effect size: mean over layers of (within - cross) of ``y: (B, n_transitions)``, pairing transition
    2l with 2l + 1 (NaN pairs ignored); ``sign=-1`` gives cross - within. -> (B,)."""
    w, c = within(y), cross(y)
    k = min(w.shape[1], c.shape[1])
    return _quiet(lambda: sign * np.nanmean(w[:, :k] - c[:, :k], 1))


def kind_share(y, sign: int = 1) -> np.ndarray:
    """Share of layers whose within-layer value exceeds the cross-layer one (``sign=-1``: the reverse), NaN
    pairs left out. ``y: (B, n_transitions)`` -> (B,)."""
    w, c = within(y), cross(y)
    k = min(w.shape[1], c.shape[1])
    d = sign * (w[:, :k] - c[:, :k])
    ok = np.isfinite(d)
    return _quiet(lambda: np.where(ok, d > 0, 0).sum(1) / ok.sum(1))


def first_defined(y) -> np.ndarray:
    """The first finite value of each row of ``y: (B, n)`` -> (B,) (NaN for a row with none)."""
    y = _2d(y)
    ok = np.isfinite(y)
    idx = ok.argmax(1)
    out = np.take_along_axis(y, idx[:, None], 1)[:, 0]
    return np.where(ok.any(1), out, np.nan)


def first_each_kind(y) -> np.ndarray:
    """The smaller of the first defined within-layer and the first defined cross-layer value -> (B,)."""
    return np.minimum(first_defined(within(y)), first_defined(cross(y)))


def _third_increase(y) -> np.ndarray:
    """Mean increase per step within each third of ``y: (B, n)`` -> (B, 3)."""
    y = _2d(y)
    steps = _quiet(np.diff, y, axis=1)
    parts = thirds_of(steps.shape[1])
    return _quiet(lambda: np.stack([np.nanmean(steps[:, p], 1) for p in parts], 1))


def steepest_third_margin(y) -> np.ndarray:
    """How much steeper ``y: (B, n)`` rises in its last third than in the steeper of the other two: the mean
    increase per step in the last third minus the larger of those in the first and middle thirds -> (B,).
    > 0: the steepest rise is in the last third."""
    inc = _third_increase(y)
    return inc[:, 2] - np.fmax(inc[:, 0], inc[:, 1])


def last_third_margin(y) -> np.ndarray:
    """How much steeper ``y: (B, n)`` rises in its last third than in the other two: the mean increase per step in the
    last third minus the mean of those in the first and middle thirds -> (B,). Unbiased when the three rise alike
    (unlike the larger of the other two, :func:`steepest_third_margin`)."""
    inc = _third_increase(y)
    return inc[:, 2] - 0.5 * (inc[:, 0] + inc[:, 1])


def cv_early_minus_late(y) -> np.ndarray:
    """Relative constancy early: the coefficient of variation (sd / mean) of ``y: (B, n)`` over its first third
    minus that over its last third -> (B,). < 0: flatter early than late."""
    y = _2d(y)
    first, _, last = thirds_of(y.shape[1])

    def cv(p):
        return np.nanstd(y[:, p], 1) / np.abs(np.nanmean(y[:, p], 1))

    return _quiet(lambda: cv(first) - cv(last))


def early_window(n_transitions: int, minimum: int = 4) -> int:
    """End (exclusive) of the "early layers": the first third of the transitions, at least ``minimum``."""
    if n_transitions < 1:
        raise ValueError(f"need at least one transition; got {n_transitions}")
    return max(int(minimum), int(n_transitions) // 3)


def early_drop(y) -> np.ndarray:
    """Size of the early drop of ``y: (B, n_transitions)``: 1 - (smallest value in the early window) / (the first
    transition's value) -> (B,). 0: no drop; 0.7: 70 % of the first value lost. Undefined (NaN) where the first
    transition is: a decline from the start cannot be measured without the start."""
    y = _2d(y)
    e = early_window(y.shape[1])
    return _quiet(lambda: 1.0 - np.nanmin(y[:, :e], 1) / y[:, 0])


def drop_at_cross_margin(y) -> np.ndarray:
    """Where the early drops of ``y: (B, n_transitions)`` are steepest: the largest drop into a cross-layer
    transition minus the largest into a within-layer one, within the early window -> (B,). A drop into t is
    ``y[t - 1] - y[t]``; > 0: the steepest early drop lands on a cross-layer transition."""
    y = _2d(y)
    e = early_window(y.shape[1])
    into = np.arange(1, e)

    def margin():
        drops = y[:, : e - 1] - y[:, 1:e]                # drop into t = 1 .. e - 1
        return np.nanmax(drops[:, into % 2 == 1], 1) - np.nanmax(drops[:, into % 2 == 0], 1)

    return _quiet(margin)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``a, b: (B, k)`` over the finite pairs -> (B,)."""
    ok = np.isfinite(a) & np.isfinite(b)
    n = ok.sum(1)
    a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)

    def f():
        ma, mb = a.sum(1) / n, b.sum(1) / n
        da, db = np.where(ok, a - ma[:, None], 0), np.where(ok, b - mb[:, None], 0)
        r = (da * db).sum(1) / np.sqrt((da ** 2).sum(1) * (db ** 2).sum(1))
        return np.where(n >= 3, r, np.nan)

    return _quiet(f)


def early_difference_correlation(a, b) -> np.ndarray:
    """Whether two per-transition curves move together in the early layers: within and cross transitions
    separately, the Pearson r of the first differences of ``a`` and ``b`` (both ``(B, n_transitions)``) over the
    early window, then the mean of the two -> (B,). < 0: when one rises the other falls."""
    a, b = _2d(a), _2d(b)
    e = early_window(a.shape[1])

    def corr():
        rs = [_row_corr(np.diff(pick(a[:, :e]), axis=1), np.diff(pick(b[:, :e]), axis=1)) for pick in (within, cross)]
        return np.nanmean(np.stack(rs, 1), 1)

    return _quiet(corr)


def curve(key: str, f: Callable[[np.ndarray], np.ndarray] | None = None) -> Stat:
    """The statistic ``f(curves[key])`` (``f`` None: the curve itself, a (B,) or (B, 1) scalar curve)."""
    def stat(c: Mapping[str, np.ndarray]) -> np.ndarray:
        y = np.asarray(c[key], dtype=np.float64)
        if f is None:
            return y.reshape(y.shape[0], -1)[:, 0]
        return f(y)

    stat.__name__ = f"{getattr(f, '__name__', 'value')}({key})"
    stat.keys = (key,)
    return stat


def depth_contrast(y, a: str = "early", b: str = "late") -> np.ndarray:
    """Mean over the ``a`` third of depth minus over the ``b`` third, the thirds taken by layer (sublayers 2l
    and 2l + 1 together), of ``y: (B, n_sublayers)`` -> (B,)."""
    y = _2d(y)
    layer = np.arange(y.shape[1]) // 2
    n_layers = y.shape[1] // 2
    third = np.minimum((3 * layer) // max(n_layers, 1), 2)
    pick = {"early": third == 0, "middle": third == 1, "late": third == 2}
    return _quiet(lambda: np.nanmean(y[:, pick[a]], 1) - np.nanmean(y[:, pick[b]], 1))


def early_rate_minus_later(y) -> np.ndarray:
    """A jump early, slower after: the mean increase per step over the first third of ``y: (B, n)`` minus that over
    the remaining two thirds -> (B,). > 0: the early rise is steeper."""
    y = _2d(y)
    steps = _quiet(np.diff, y, axis=1)
    first, middle, last = thirds_of(steps.shape[1])
    rest = np.concatenate([middle, last])
    return _quiet(lambda: np.nanmean(steps[:, first], 1) - np.nanmean(steps[:, rest], 1))


def middle_minus_ends(y) -> np.ndarray:
    """Mean over the middle columns of ``y: (B, k)`` (k >= 3; e.g. teleport layers in depth order) minus the mean
    of the first and the last column -> (B,). < 0: the middle is lower than the ends on average."""
    y = _2d(y)
    if y.shape[1] < 3:
        raise ValueError(f"need at least 3 columns (first, middle, last); got {y.shape[1]}")
    return _quiet(lambda: np.nanmean(y[:, 1:-1], 1) - 0.5 * (y[:, 0] + y[:, -1]))


def second_half_mean(y) -> np.ndarray:
    """Mean of ``y: (B, L)`` over the second half of its positions, the last excluded -> (B,)."""
    y = _2d(y)
    L = y.shape[1]
    return _quiet(lambda: np.nanmean(y[:, L // 2:-1], 1))


def first_column(y) -> np.ndarray:
    """The first column of ``y: (B, k)`` (e.g. the first teleport layer) -> (B,); NaN stays NaN."""
    return _2d(y)[:, 0]


def last_minus_first(y) -> np.ndarray:
    """The last column of ``y: (B, k)`` minus the first (k >= 2; e.g. the deepest teleport layer against layer 0)
    -> (B,). > 0: the last is higher."""
    y = _2d(y)
    if y.shape[1] < 2:
        raise ValueError(f"need at least 2 columns (first, last); got {y.shape[1]}")
    return y[:, -1] - y[:, 0]


def lower_minus_upper(y) -> np.ndarray:
    """Mean over the lower half of the columns of ``y: (B, k)`` (k >= 2, in depth order) minus the mean over the
    upper half, the middle column left out when k is odd (NaN ignored) -> (B,). < 0: lower in the lower layers."""
    y = _2d(y)
    k = y.shape[1]
    if k < 2:
        raise ValueError(f"need at least 2 columns (lower, upper); got {k}")
    h = k // 2
    return _quiet(lambda: np.nanmean(y[:, :h], 1) - np.nanmean(y[:, k - h:], 1))


def rank_correlation(a, b) -> np.ndarray:
    """Spearman's rank correlation over the columns of each row pair of ``a, b: (B, k)`` (e.g. a curve per layer,
    for every bootstrap resample), ties given their average rank, columns undefined in either left out -> (B,).
    NaN for a row with fewer than 3 defined columns or a constant one. > 0: where one is higher, so is the other."""
    from scipy.stats import rankdata  # noqa: PLC0415

    a, b = _2d(a), _2d(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (B, k); got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    # the undefined columns ranked last (inf), so that the defined ones hold ranks 1..m of their own row
    ra = np.where(ok, rankdata(np.where(ok, a, np.inf), axis=1), np.nan)
    rb = np.where(ok, rankdata(np.where(ok, b, np.inf), axis=1), np.nan)
    return _row_corr(ra, rb)
