"""Bootstrap confidence intervals over text samples (axis 0 of ``rs``).

Every number the book states about the paper's claims comes with a percentile bootstrap interval where
it is cheap: the texts are resampled with replacement and the statistic recomputed.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["bootstrap", "bootstrap_indices"]

_VECTORISED = ("mean",)


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Resampling indices: (n_boot, n) ints drawn with replacement from ``range(n)``."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1 and n_boot >= 1; got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap(statistic: Callable[[np.ndarray], Any] | str, rs, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95, *, return_samples: bool = False):
    """Percentile bootstrap over texts.

    statistic: a function ``rs_resampled -> scalar or array`` (called once per resample; keep it cheap,
    e.g. pass only the sublayers it needs), or ``"mean"`` for the mean over axis 0, which is computed
    for all resamples at once from the resampling counts (vectorised).
    rs: (n_samples, ...) array; axis 0 (texts) is resampled with replacement.
    -> (estimate, low, high): the statistic on the full data and the ``ci`` percentile interval, each a
    float or an array of the statistic's shape. NaN resamples are ignored in the percentiles. With
    ``return_samples=True`` a fourth item holds the (n_boot, ...) bootstrap replicates.
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
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (n_boot, n)
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
    alpha = (1.0 - ci) / 2.0
    low, high = np.nanquantile(reps, [alpha, 1.0 - alpha], axis=0)
    if estimate.ndim == 0:
        estimate, low, high = float(estimate), float(low), float(high)
    return (estimate, low, high, reps) if return_samples else (estimate, low, high)
