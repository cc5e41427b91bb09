"""The headline numbers resampled over texts: bootstrap intervals (:func:`bootstrap_headlines`) and nested
subsamples of the texts (:func:`nested_subsamples`, :func:`n_dependence`), without recapturing.

The cheap groups (:data:`~.statistics.FAST_GROUPS`: mean, r, cos, vel, rot) are computed for all resamples
at once from resampling counts; the costly ones (MI, PCA, the rotation null) on ``n_boot_slow`` resamples through
:func:`transformer_dynamics.bootstrap.bootstrap`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import bootstrap, metrics, phase
from ..arrays import check_rs
from .statistics import (FAST_GROUPS, GROUPS, STATISTICS, _MIN_RS, _check_groups, _nanmedian, _units_high_r,
                         curves, headline_numbers, headlines_from_curves)

__all__ = ["bootstrap_headlines", "nested_subsamples", "n_dependence"]


# ----------------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------------
def _fast_replicates(rs: np.ndarray, counts: np.ndarray, groups: tuple[str, ...], batch: int | None = None
                     ) -> dict[str, np.ndarray]:
    """Curves of the fast groups for every resample, from resampling counts (n_boot, n) -> {name: (n_boot, ...)}.

    r: per transition, the weighted moments of every unit (one matrix product); cos / vel: weighted means of
    the per-text values; rot: rotation counts of the weighted mean trajectories. ``batch``: resamples per
    product (None: :func:`~transformer_dynamics.bootstrap.batch_rows` of the product's width).
    """
    n, L, D = rs.shape
    w = counts / n                                                   # (B, n), rows sum to 1
    B = w.shape[0]
    out: dict[str, np.ndarray] = {}
    wide = batch or bootstrap.batch_rows(L * D)                    # mean trajectories: (b, L D)
    if "mean" in groups:
        flat = rs.reshape(n, L * D)
        mag, sign = np.empty((B, L)), np.empty((B, L))
        for s in range(0, B, wide):
            mean = (w[s:s + wide] @ flat).reshape(-1, L, D)
            mag[s:s + wide] = np.abs(mean).mean(2)
            sign[s:s + wide] = (np.sign(mean) == np.sign(mean[:, -1:])).mean(2)
        out["mag_mean"], out["sign_agreement"] = mag, sign
    if "cos" in groups:
        out["cos_mean"] = w @ np.nan_to_num(metrics.cosine_similarity(rs))
    if "vel" in groups:
        out["vel_mean"] = w @ metrics.velocity(rs)
    if "r" in groups:
        med = np.empty((B, L - 1))
        r_all = np.empty((B, L - 1, D), dtype=np.float32)              # every unit's r, for units_high_r
        x = rs.astype(np.float64)
        x -= x.mean(0)
        narrow = batch or bootstrap.batch_rows(5 * D)              # moments: (b, 5 D)
        for t in range(L - 1):
            a, b = x[:, t], x[:, t + 1]
            moments = np.concatenate([a, b, a * a, b * b, a * b], axis=1)  # (n, 5 D)
            for s in range(0, B, narrow):
                r = bootstrap.weighted_correlation(moments, w[s:s + narrow])
                r_all[s:s + narrow, t] = r
                med[s:s + narrow, t] = _nanmedian(r, 1)
        out["units_high_r"] = _units_high_r(r_all)[:, None]
        out["r_median"] = med
    if "rot" in groups:
        flat = rs.reshape(n, L * D).astype(np.float64)
        rot = np.empty((B, D))
        for s in range(0, B, wide):
            mean = (w[s:s + wide] @ flat).reshape(-1, L, D)          # (b, L, D) mean trajectories
            rot[s:s + wide] = phase.count_rotations(np.ascontiguousarray(mean.transpose(0, 2, 1)))
        out["rot"] = rot
    return out


def bootstrap_headlines(rs, n_boot: int = 1000, seed: int = 0, *, ci: float = 0.95,
                        groups: Iterable[str] = GROUPS, n_boot_slow: int | None = 50,
                        return_samples: bool = False, base: Mapping[str, Any] | None = None, **kwargs: Any):
    """Percentile bootstrap intervals over texts of every headline number.

    rs: (n_samples, n_sublayers, d_model). The groups in :data:`~.statistics.FAST_GROUPS` are computed for all
    ``n_boot`` resamples at once from resampling counts (:func:`transformer_dynamics.bootstrap.bootstrap_counts`,
    the same resamples as :func:`transformer_dynamics.bootstrap.bootstrap` with the same seed); the rotation null,
    MI and PCA are recomputed on the first ``min(n_boot, n_boot_slow)`` of those resamples (None: all) through
    :func:`transformer_dynamics.bootstrap.bootstrap`.

    A resample repeats texts (about 37% of them are missing), and for some statistics that shifts the value
    itself, not only its spread: the KDE MI (a resubstitution estimate: a repeated point is its own close
    neighbour) rises and the PCA counts fall (fewer distinct texts span fewer directions). For those keys
    (``STATISTICS[key].resample_biased``) the interval is *re-centred*: the percentile interval of the
    replicates shifted by ``estimate - median(replicates)``, i.e. their spread around the estimate without
    the duplicate-induced shift (column ``interval`` = ``"recentred"``; else ``"percentile"``). It is an
    approximation; :func:`n_dependence` shows how these numbers move with N. ``seed`` draws the resamples and
    is passed to :func:`~.statistics.curves` (MI units, null); other
    keywords go to :func:`~.statistics.curves` (mi_units, mi_method, n_shuffles, variance, pca_components).

    -> DataFrame indexed by headline key with columns ``estimate``, ``low``, ``high``, ``n_boot``,
    ``interval``, ``group``, ``figure``; with ``return_samples=True`` also ``{key: (n_boot_of_key,) replicates}``.
    ``base``: :func:`~.statistics.curves` of ``rs`` already computed with the same keywords (skips recomputing them).
    """
    rs = check_rs(rs, **_MIN_RS)
    groups = _check_groups(groups)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2; got {n_boot}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")
    if base is None:
        base = curves(rs, groups=groups, seed=seed, **kwargs)
    estimate = headlines_from_curves(base)
    reps: dict[str, np.ndarray] = {}

    fast = tuple(g for g in groups if g in FAST_GROUPS)
    if fast:
        counts = bootstrap.bootstrap_counts(rs.shape[0], n_boot, seed)
        rep_curves = _fast_replicates(rs, counts, fast)
        rows = []
        for b in range(n_boot):
            c = {k: v[b] for k, v in rep_curves.items()}
            rows.append(headlines_from_curves(c))
        for k in rows[0]:
            reps[k] = np.array([r[k] for r in rows], dtype=np.float64)

    slow_groups = tuple(g for g in groups if g not in FAST_GROUPS)
    slow_keys = [k for k in estimate if k not in reps]
    n_slow = n_boot if n_boot_slow is None else min(n_boot, int(n_boot_slow))
    if slow_keys and n_slow >= 2:
        want_null = "rot" in groups and kwargs.get("n_shuffles", 100)
        slow = slow_groups + (("rot",) if want_null else ())

        def statistic(x):
            h = headlines_from_curves(curves(x, groups=slow, seed=seed, **kwargs))
            return np.array([h.get(k, np.nan) for k in slow_keys])

        _, _, _, samples = bootstrap.bootstrap(statistic, rs, n_boot=n_slow, seed=seed, ci=ci, return_samples=True)
        for i, k in enumerate(slow_keys):
            reps[k] = samples[:, i]

    records = []
    for k, v in estimate.items():
        r = reps.get(k)
        h = STATISTICS[k]
        kind = "recentred" if h.resample_biased else "percentile"
        if r is None or not np.isfinite(r).any():
            lo = hi = np.nan
            nb = 0 if r is None else r.size
        else:
            _, lo, hi = bootstrap.percentile_interval(v, r, ci)
            if h.resample_biased and np.isfinite(v):
                shift = v - np.nanmedian(r)
                lo, hi = lo + shift, hi + shift
            nb = r.size
        records.append({"key": k, "estimate": v, "low": float(lo), "high": float(hi), "n_boot": nb,
                        "interval": kind, "group": h.group, "figure": h.figure})
    df = pd.DataFrame.from_records(records).set_index("key")
    return (df, reps) if return_samples else df


# ----------------------------------------------------------------------------------------------------------
# N-dependence
# ----------------------------------------------------------------------------------------------------------
def nested_subsamples(n_total: int, ns: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Nested subsets of ``range(n_total)``: one random permutation (``seed``), subset i = its first ``ns[i]``
    entries (sorted). Every subset contains all smaller ones. -> list of (ns[i],) int arrays."""
    ns = [int(v) for v in ns]
    if not ns or min(ns) < 1 or max(ns) > n_total:
        raise ValueError(f"every N must be between 1 and the number of texts {n_total}; got {ns}")
    perm = np.random.default_rng(seed).permutation(n_total)
    return [np.sort(perm[:v]) for v in ns]


def n_dependence(rs, ns: Sequence[int], seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """Headline numbers on nested subsamples of the texts (no recapture).

    rs: (n_samples, n_sublayers, d_model); ns: numbers of texts, each <= n_samples. Subsample i is the first
    ``ns[i]`` texts of one random permutation (:func:`nested_subsamples`), so larger N only add texts.
    Keywords as :func:`~.statistics.curves`. -> DataFrame indexed by N (sorted ascending), one column per headline key.
    """
    rs = check_rs(rs, **_MIN_RS)
    ns = sorted(int(v) for v in ns)
    rows = {}
    for v, idx in zip(ns, nested_subsamples(rs.shape[0], ns, seed)):
        rows[v] = headline_numbers(rs[idx], seed=seed, **kwargs)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "n"
    return df
