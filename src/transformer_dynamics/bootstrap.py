"""Uncertainty of the book's numbers: bootstrap resamples over texts (axis 0 of ``rs``), the sampling unit.

- :func:`bootstrap_indices` / :func:`bootstrap_counts`: the resamples (the same draw as indices or as counts);
- :func:`bootstrap` / :func:`bootstrap_correlation`: percentile intervals, the texts resampled with
  replacement; :func:`weighted_correlation` is the one resample-weighted per-unit Pearson r that both the
  correlation bootstrap here and :mod:`transformer_dynamics.robustness` use.

Layers are never permuted to get a p-value (adjacent layers are not exchangeable); layer-order surrogates are
nulls to compare against (:mod:`transformer_dynamics.robustness.curves`). :mod:`transformer_dynamics.verdicts`
turns replicates into a verdict.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import warnings

import numpy as np

from .arrays import nanmedian
from .validation import check_allocation, check_int, check_positive_int, check_seed

__all__ = ["Interval", "bootstrap", "percentile_interval", "bootstrap_indices", "bootstrap_counts", "half_samples",
           "jackknife_weights", "LeaveOneOut", "bootstrap_correlation", "weighted_correlation",
           "batch_rows"]

_VECTORISED = ("mean",)


class Interval(NamedTuple):
    """A statistic on the full data with its percentile interval: ``estimate``, ``low``, ``high`` (floats, or
    arrays of the statistic's shape; NaN where undefined); a tuple, so ``est, lo, hi = interval`` works too."""

    estimate: Any
    low: Any
    high: Any


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Resampling indices: (n_boot, n) ints drawn with replacement from ``range(n)``."""
    n, n_boot, seed = check_positive_int(n, "n (texts)"), check_positive_int(n_boot, "n_boot"), check_seed(seed)
    check_allocation((n_boot, n), np.int64, what="the resampling indices", name="n_boot")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def half_samples(n: int, n_samples: int = 200, seed: int = 0) -> np.ndarray:
    """Half-samples of the texts without replacement: (n_samples, n // 2) sorted indices (``seed``).

    For statistics that must be recomputed and that a repeated text distorts (the KDE and k-NN mutual information
    count a duplicate as a perfect neighbour; PCA counts fall with fewer distinct texts). The spread of a statistic
    over half-samples around its centre estimates its sampling spread at n (half-sampling: the delete-d
    jackknife with d = n / 2 needs no rescaling), and re-centring on the full-data value removes the shift that
    the smaller sample itself causes."""
    n, n_samples, seed = check_int(n, "n (texts)", low=2), check_positive_int(n_samples, "n_samples"), check_seed(seed)
    check_allocation((n_samples, n), np.float64, what="the half-samples' keys", name="n_samples")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    keys = rng.random((int(n_samples), n))
    return np.sort(np.argsort(keys, axis=1)[:, : n // 2], axis=1)


def jackknife_weights(n: int) -> np.ndarray:
    """Leave-one-out weights: (n, n) float64, row i giving every text but i the weight ``1 / (n - 1)``. A statistic
    on row i is the statistic without text i (how far one text moves it: :func:`transformer_dynamics.verdicts.decide`
    refuses a verdict that one text decides)."""
    n = check_int(n, "n (texts)", low=2)
    check_allocation((n, n), np.float64, what="the leave-one-out weights", name="n (texts)")
    w = np.full((n, n), 1.0 / (n - 1))
    np.fill_diagonal(w, 0.0)
    return w


class LeaveOneOut:
    """The leave-one-out weights of :func:`jackknife_weights` without their (n, n) matrix: ``w @ v`` is
    ``(v.sum(0) - v) / (n - 1)``, O(n) per column instead of O(n^2) (equal to the product to round-off), for ``v:
    (n, ...)`` -> ``(rows, ...)`` float64. ``w[lo:hi]``: rows lo..hi (texts left out), sharing the column sums of
    the last ``v`` multiplied (so a product taken in row blocks sums ``v`` once; only that one ``v`` is held);
    ``shape``: (rows, n); ``np.asarray(w)``: the matrix itself."""

    def __init__(self, n: int, rows: range | None = None, _last: list | None = None):
        self.n = check_int(n, "n (texts)", low=2)
        self.rows = range(self.n) if rows is None else rows
        self._last = [None, None] if _last is None else _last  # [v, its column sums], shared with the slices

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.n)

    def __getitem__(self, key: slice) -> "LeaveOneOut":
        if not isinstance(key, slice):
            raise TypeError("LeaveOneOut takes row slices only (w[lo:hi])")
        return LeaveOneOut(self.n, self.rows[key], self._last)

    def __matmul__(self, v) -> np.ndarray:
        v = np.asarray(v)
        if v.ndim < 1 or v.shape[0] != self.n:
            raise ValueError(f"v must have the {self.n} texts on axis 0, got {v.shape}")
        flat = v.reshape(self.n, -1)
        if self._last[0] is not v:
            self._last[:] = [v, flat.sum(0, dtype=np.float64)]
        out = (self._last[1] - flat[self.rows.start:self.rows.stop:self.rows.step]) / (self.n - 1)
        return out.reshape((len(self.rows),) + v.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return jackknife_weights(self.n)[self.rows.start:self.rows.stop:self.rows.step].astype(dtype or np.float64)


def bootstrap_counts(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """How often each text appears in each resample: (n_boot, n) float64 counts, rows summing to n.
    The same resamples as :func:`bootstrap_indices` with the same seed."""
    idx = bootstrap_indices(n, n_boot, seed)
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def percentile_interval(estimate, reps, ci: float = 0.95):
    """Percentile interval of bootstrap replicates. estimate: scalar or (...,); reps: (n_boot, ...) ->
    :class:`Interval` (estimate, low, high), NaN where every replicate is NaN."""
    alpha = (1.0 - ci) / 2.0
    with warnings.catch_warnings():  # all-NaN replicates (e.g. a constant unit) give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(reps, [alpha, 1.0 - alpha], axis=0)
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.ndim == 0:
        return Interval(float(estimate), float(low), float(high))
    return Interval(estimate, low, high)


def bootstrap(statistic: Callable[[np.ndarray], Any] | str, rs, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95, *, return_samples: bool = False):
    """Percentile bootstrap over texts.

    statistic: a function ``rs_resampled -> scalar or array`` (called once per resample; keep it cheap,
    e.g. pass only the sublayers it needs), or ``"mean"`` for the mean over axis 0, which is computed
    for all resamples at once from the resampling counts (vectorised).
    rs: (n_samples, ...) array; axis 0 (texts) is resampled with replacement.
    -> :class:`Interval` (estimate, low, high): the statistic on the full data and the ``ci`` percentile
    interval, each a float or an array of the statistic's shape. NaN resamples are ignored in the percentiles.
    ``return_samples=True``: ``(interval, reps)``, with the (n_boot, ...) bootstrap replicates.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")
    rs = np.asarray(rs)
    if rs.ndim == 0 or rs.shape[0] < 2:
        raise ValueError(f"rs needs at least 2 samples along axis 0; got shape {rs.shape}")
    n = rs.shape[0]
    if isinstance(statistic, str):
        if statistic not in _VECTORISED:
            raise ValueError(f"statistic must be a callable or one of {_VECTORISED}; got {statistic!r}")
        flat = rs.reshape(n, -1).astype(np.float64)
        estimate = flat.mean(axis=0)
        counts = bootstrap_counts(n, n_boot, seed)  # (n_boot, n)
        reps = (counts @ np.nan_to_num(flat)) / n
        reps[:, ~np.isfinite(estimate)] = np.nan
        reps = reps.reshape((n_boot,) + rs.shape[1:])
        estimate = estimate.reshape(rs.shape[1:])
    else:
        if not callable(statistic):
            raise ValueError("statistic must be a callable or 'mean'")
        estimate = np.asarray(statistic(rs), dtype=np.float64)
        idx = bootstrap_indices(n, n_boot, seed)
        reps = np.stack([np.asarray(statistic(rs[i]), dtype=np.float64) for i in idx])
    interval = percentile_interval(estimate, reps, ci)
    return (interval, reps) if return_samples else interval


def batch_rows(cols: int, max_bytes: int = 2**27, lo: int = 50, hi: int = 500) -> int:
    """Resamples per matrix product ``(b, n) @ (n, cols)`` in float64: as many as ``max_bytes`` of output allow,
    within [lo, hi] (a thin product wastes the BLAS kernel: 50 rows run at a third of 500's rate here)."""
    return int(min(hi, max(lo, max_bytes // (8 * max(cols, 1)))))


def bootstrap_correlation(x, y, reduce: str = "median", n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                          batch: int | None = None):
    """Bootstrap of a summary over units of the per-unit Pearson r between ``x`` and ``y``, vectorised.

    x, y: (n_samples, n_units), e.g. ``rs[:, t]`` and ``rs[:, t + 1]``. For each resample of the texts the
    r of every unit comes from resample-weighted moments (one matrix product for ``batch`` resamples, None:
    :func:`batch_rows`), then ``reduce`` ("median" or "mean", NaN-ignoring) over units. Same resamples as
    :func:`bootstrap` with the same seed. -> :class:`Interval` of floats; constant units are ignored (NaN r).
    """
    if reduce not in ("median", "mean"):
        raise ValueError(f"reduce must be 'median' or 'mean'; got {reduce!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"x and y must both be (n_samples >= 2, n_units); got {x.shape} and {y.shape}")
    n = x.shape[0]
    x = x - x.mean(0)
    y = y - y.mean(0)
    moments = np.concatenate([x, y, x * x, y * y, x * y], axis=1)  # (n, 5 d)
    batch = batch or batch_rows(moments.shape[1])
    red = nanmedian if reduce == "median" else np.nanmean

    def summary(w):  # w: (b, n) weights summing to 1 per row -> (b,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return red(weighted_correlation(moments, w), axis=1)

    estimate = summary(np.full((1, n), 1.0 / n))[0]
    counts = bootstrap_counts(n, n_boot, seed) / n
    reps = np.concatenate([summary(counts[s:s + batch]) for s in range(0, n_boot, batch)])
    return percentile_interval(estimate, reps, ci)


def weighted_correlation(moments, weights) -> np.ndarray:
    """Per-unit Pearson r under resample weights: the one resample-weighted correlation of the package.

    moments: (n_samples, 5 d), the columns ``[x, y, x*x, y*y, x*y]`` of centred x, y: (n_samples, d);
    weights: (b, n_samples), rows summing to 1 (``bootstrap_counts / n``, or a :class:`LeaveOneOut`). -> (b, d)
    float64; NaN where x or y is constant in that resample (variance below 1e-12 of its second moment).
    """
    moments = np.asarray(moments, dtype=np.float64)
    if moments.ndim != 2 or moments.shape[1] % 5:
        raise ValueError(f"moments must be (n_samples, 5 d) = [x, y, x*x, y*y, x*y]; got {moments.shape}")
    d = moments.shape[1] // 5
    m = weights @ moments if isinstance(weights, LeaveOneOut) else np.atleast_2d(weights) @ moments
    mx, my, sxx, syy, sxy = (m[:, i * d:(i + 1) * d] for i in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        vx, vy = sxx - mx * mx, syy - my * my
        r = (sxy - mx * my) / np.sqrt(vx * vy)
    r[(vx <= 1e-12 * np.maximum(sxx, 1e-300)) | (vy <= 1e-12 * np.maximum(syy, 1e-300))] = np.nan
    return r
