"""Headline statistics of the paper for one residual-stream array, the evidence behind each claim of the
registry (:mod:`transformer_dynamics.claims`), and their robustness: across models, numerical precisions,
bootstrap resamples of the texts, the number of texts N and the open choices of the pipeline (notebooks 06, 08).

The paper's results (section 3) rest on a handful of statistics of ``rs: (n_samples, n_sublayers, d_model)``.
:func:`curves` computes the per-transition / per-unit curves behind them (the data of Fig 1C, 1E, 1F, 1H, 2B
and 4B) and :func:`headlines_from_curves` reduces those to scalars, one per statement:

====================================  ======  ======================================================
key                                   figure  meaning
====================================  ======  ======================================================
``r_first`` / ``r_last``              1C      median over units of the successive Pearson r at the first
                                              defined / the last transition
``r_first_transition``                1C      ... at transition 0 (NaN: sublayer 0 constant)
``r_first_each_kind``                 1C      the smaller of the first defined within / cross medians
``mag_trend`` / ``sign_preserved``    1B      rho of mean |activation| with depth; sign agreement with the
                                              last sublayer, second half of the sublayers
``r_within_above_cross``              1C      fraction of layers whose within-layer median r exceeds the
                                              cross-layer one
``r_trend``                           1C      Spearman rho of the median r with depth
``cos_within`` / ``cos_cross``        1E      mean raw cosine of successive RS vectors, within / cross
``cos_within_above_cross``            1E      fraction of layers with within-layer cosine > cross-layer
``vel_steepest_third_within|cross``   1F      third (1, 2, 3) with the largest mean velocity increase
``vel_cross_above_within``            1F      fraction of layers with cross-layer velocity > within
``mi_first`` / ``mi_min_early``       1H      mean MI over units at the first defined transition / its
                                              minimum over the first third of transitions
``mi_drop``                           1H      relative early drop ``1 - mi_min_early / mi_first``
``mi_steepest_drop_cross``            1H      1 if the largest early drop is into a cross-layer
                                              transition, else 0
``rot_mean`` / ``rot_mean_abs``       2B      mean R / mean abs(R) per unit (mean trajectory over texts)
``rot_null_mean_abs``                 2B      mean abs(R) of the layer-order shuffle null
``rot_minus_null``                    2B      ``rot_mean_abs - rot_null_mean_abs``
``pcs_total``                         4B      global PCA components for ``variance`` of the total variance
``pcs_first_third|last_third``        4C      mean over the first / last third of the sublayers of the
                                              global components each sublayer needs for ``variance`` of
                                              its own variance
``pcs_last_minus_first``              4C      their difference (< 0: later layers need fewer); "not
                                              reached" counts as one more than the kept components in
                                              the thirds, and makes the difference undefined
``units_high_r``                      1D      fraction of units whose median successive r > 0.8
====================================  ======  ======================================================

:data:`STATISTICS` says what each key is; whether a value supports the paper is decided in one place, the claim
registry (:func:`claim_evidence` gives each claim's value with its interval or p-value, :func:`verdict_table` the
verdicts, :func:`robustness_lines` one line per claim and model over the open choices).

Robustness: :func:`bootstrap_headlines` (percentile intervals over texts; the cheap groups mean, r, cos, vel
and rot are computed for all resamples at once from resampling counts, the costly ones -- MI, PCA, the rotation
null -- on ``n_boot_slow`` resamples through :func:`transformer_dynamics.bootstrap.bootstrap`),
:func:`n_dependence` (nested subsamples of the texts), :func:`precision_difference` (two captures of the same
texts at two precisions) and :func:`relative_depth` (to line up models of different depth).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import bootstrap, metrics, phase, reduce
from . import claims as _claims

__all__ = [
    "GROUPS",
    "FAST_GROUPS",
    "STATISTICS",
    "Statistic",
    "claim_evidence",
    "rotation_evidence",
    "teleport_evidence",
    "verdict_table",
    "robustness_lines",
    "first_transitions",
    "first_transitions_table",
    "relative_depth",
    "precision_kwargs",
    "curves",
    "headlines_from_curves",
    "headline_numbers",
    "bootstrap_headlines",
    "nested_subsamples",
    "n_dependence",
    "precision_difference",
    "headline_change",
]

#: Groups of headline numbers, by the figure they come from.
GROUPS = ("mean", "r", "cos", "vel", "mi", "rot", "pca")
#: Groups whose bootstrap is computed for all resamples at once (the rest loop over ``n_boot_slow``).
FAST_GROUPS = ("mean", "r", "cos", "vel", "rot")


@dataclass(frozen=True)
class Statistic:
    """What a headline statistic is (the verdict on the paper's claims lives in :mod:`.claims`)."""

    group: str
    figure: str
    description: str
    unit: str = ""
    #: True where repeated texts in a bootstrap resample shift the statistic itself (KDE MI, PCA counts):
    #: :func:`bootstrap_headlines` then gives a re-centred interval (see there).
    resample_biased: bool = False

    @property
    def claim(self) -> str:  # the name the plots use
        return self.description


def _st(group, figure, description, unit="", biased=False):
    return Statistic(group, figure, description, unit, biased)


STATISTICS: dict[str, Statistic] = {
    "mag_trend": _st("mean", "1B", "Spearman rho of the mean |activation| over units with depth"),
    "sign_preserved": _st("mean", "1B", "fraction of units with the last sublayer's sign, second half of the "
                          "sublayers"),
    "r_first": _st("r", "1C", "median r over units at the first defined transition"),
    "r_first_transition": _st("r", "1C", "median r over units at transition 0 (NaN: sublayer 0 constant)"),
    "r_first_each_kind": _st("r", "1C", "the smaller of the first defined within- and cross-layer median r"),
    "r_last": _st("r", "1C", "median r over units at the last transition"),
    "units_high_r": _st("r", "1D", "fraction of units whose median successive r exceeds 0.8"),
    "r_within_above_cross": _st("r", "1C", "fraction of layers whose within-layer median r exceeds the cross-layer "
                                "one"),
    "r_trend": _st("r", "1C", "Spearman rho of the median r with depth"),
    "cos_within": _st("cos", "1E", "mean raw cosine of successive RS vectors, within-layer transitions"),
    "cos_cross": _st("cos", "1E", "mean raw cosine of successive RS vectors, cross-layer transitions"),
    "cos_within_above_cross": _st("cos", "1E", "fraction of layers whose within-layer mean cosine exceeds the "
                                  "cross-layer one"),
    "vel_steepest_third_within": _st("vel", "1F", "third of the model (1-3) with the largest increase of the mean "
                                     "velocity, within-layer", "third"),
    "vel_steepest_third_cross": _st("vel", "1F", "third of the model (1-3) with the largest increase of the mean "
                                    "velocity, cross-layer", "third"),
    "vel_cross_above_within": _st("vel", "1F", "fraction of layers whose cross-layer mean velocity exceeds the "
                                  "within-layer one"),
    "mi_first": _st("mi", "1H", "mean MI over units at the first defined transition", "nats", True),
    "mi_min_early": _st("mi", "1H", "smallest mean MI in the first third of the transitions", "nats", True),
    "mi_drop": _st("mi", "1H", "relative early drop of the mean MI, 1 - min(first third) / first", "", True),
    "mi_steepest_drop_cross": _st("mi", "1H", "1 if the largest early drop of the mean MI is into a cross-layer "
                                  "transition"),
    "rot_mean": _st("rot", "2B", "mean signed rotation count R per unit (mean trajectory over texts)"),
    "rot_mean_abs": _st("rot", "2B", "mean |R| per unit (mean trajectory over texts)"),
    "rot_null_mean_abs": _st("rot_null", "2B", "mean |R| of the layer-order shuffle null"),
    "rot_minus_null": _st("rot_null", "2B", "mean |R| minus the null's mean |R|"),
    "pcs_total": _st("pca", "4B", "global PCA components for the variance threshold of the total variance", "", True),
    "pcs_first_third": _st("pca", "4C", "mean number of global PCs a sublayer needs for the variance threshold of "
                           "its own variance, first third of the sublayers", "", True),
    "pcs_last_third": _st("pca", "4C", "the same, last third of the sublayers", "", True),
    "pcs_last_minus_first": _st("pca", "4C", "pcs_last_third - pcs_first_third", "", True),
}


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------
def relative_depth(n: int, *, transitions: bool = False) -> np.ndarray:
    """x-coordinates that line up models of different depth.

    Sublayers (``transitions=False``): ``s / n_sublayers`` for s = 0 .. n-1 -> (n,) in [0, 1).
    Transitions (``transitions=True``, ``n = n_transitions``): the midpoint of sublayers t and t + 1,
    ``(t + 0.5) / (n + 1)`` -> (n,).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need n >= 1; got {n}")
    if transitions:
        return (np.arange(n) + 0.5) / (n + 1)
    return np.arange(n) / n


def precision_kwargs(precision: str) -> dict[str, Any]:
    """``pipeline.residual_stream`` keywords for a precision name: ``"float32"``, ``"bfloat16"``,
    ``"float16"`` -> ``{"dtype": precision, "quantization": None}``; ``"4bit"`` / ``"8bit"`` ->
    ``{"dtype": "float32", "quantization": precision}`` (bitsandbytes, float32 compute)."""
    if precision in ("4bit", "8bit"):
        return {"dtype": "float32", "quantization": precision}
    if precision in ("float32", "bfloat16", "float16"):
        return {"dtype": precision, "quantization": None}
    raise ValueError(f"unknown precision {precision!r}; use 'float32', 'bfloat16', 'float16', '4bit' or '8bit'")


def _check_rs(rs, min_samples: int = 4) -> np.ndarray:
    rs = np.asarray(rs)
    if rs.ndim != 3:
        raise ValueError(f"rs must be (n_samples, n_sublayers, d_model); got shape {rs.shape}")
    if rs.shape[1] < 6:
        raise ValueError(f"need at least 6 sublayers (3 layers) for the headline numbers; got {rs.shape[1]}")
    if rs.shape[0] < min_samples:
        raise ValueError(f"need at least {min_samples} texts; got {rs.shape[0]}")
    return rs


def _check_groups(groups) -> tuple[str, ...]:
    groups = tuple(groups)
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown headline groups {bad}; use a subset of {GROUPS}")
    return groups


def _nanmedian(x, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def _nanmean(x, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _first_finite(y: np.ndarray) -> int | None:
    ok = np.flatnonzero(np.isfinite(y))
    return int(ok[0]) if ok.size else None


# ----------------------------------------------------------------------------------------------------------
# curves and headline numbers
# ----------------------------------------------------------------------------------------------------------
def curves(rs, *, groups: Iterable[str] = GROUPS, mi_units: int | Sequence[int] | None = 256,
           mi_method: str = "kde", n_shuffles: int = 100, variance: float = 0.9, pca_components: int | None = None,
           seed: int = 0) -> dict[str, Any]:
    """The curves behind the headline numbers of one residual-stream array.

    rs: (n_samples, n_sublayers, d_model). Returns a dict with (only for the requested ``groups``):

    - ``"r_median"``: (n_sublayers - 1,) median over units of the successive r (Fig 1C);
    - ``"cos_mean"``: (n_sublayers - 1,) mean over texts of the raw cosine (Fig 1E);
    - ``"vel_mean"``: (n_sublayers - 1,) mean over texts of the velocity (Fig 1F);
    - ``"mi_mean"``: (n_sublayers - 1,) mean over ``mi_units`` units of the MI (``mi_method``, Fig 1H);
      ``mi_units``: an int (that many random units, ``seed``), indices, or None (all units);
    - ``"rot"``: (d_model,) rotation count per unit of its mean trajectory, and ``"rot_null"``:
      (n_shuffles, d_model) its layer-order shuffle null (skipped when ``n_shuffles`` is 0) (Fig 2B), and
      ``"rot_null_points"`` the null that shuffles the (a, grad a) points instead (chapter 3's second null);
    - ``"ev_ratio"``: (k,) explained-variance ratio of the global PCA of all sublayer vectors (Fig 4B), k =
      ``pca_components`` (None: min(rows, d_model)); ``"sublayer_pcs"``: (n_sublayers,) how many of those
      global components each sublayer needs for ``variance`` of its own variance (about its mean, Fig 4C;
      ``reduce.explained_variance_curve_per_sublayer``; inf: not reached with k components).

    Also ``"n_sublayers"`` and ``"variance"``.
    """
    rs = _check_rs(rs)
    groups = _check_groups(groups)
    n, L, D = rs.shape
    out: dict[str, Any] = {"n_sublayers": L, "variance": float(variance)}
    if "mean" in groups:
        mean = rs.mean(0, dtype=np.float64)
        out["mag_mean"] = np.abs(mean).mean(1)
        out["sign_agreement"] = metrics.sign_agreement(mean)
    if "r" in groups:
        r = metrics.successive_correlation(rs)                            # (n_sublayers - 1, d_model)
        out["r_median"] = metrics.median_by_transition(r)["all"]
        out["units_high_r"] = np.atleast_1d(_units_high_r(r[None]))
    if "cos" in groups:
        out["cos_mean"] = _nanmean(metrics.cosine_similarity(rs), 0)
        out["ccos_mean"] = _nanmean(metrics.centered_cosine_similarity(rs), 0)
    if "vel" in groups:
        out["vel_mean"] = metrics.velocity(rs).mean(0)
    if "mi" in groups:
        units = (metrics.subsample_units(D, mi_units, seed=seed) if mi_units is None or np.isscalar(mi_units)
                 else np.asarray(mi_units, dtype=np.int64))
        mi = metrics.mutual_information(rs, mi_method, units=units)
        out["mi_mean"] = _nanmean(mi, 1)
    if "rot" in groups:
        # = phase.rotations_per_unit(rs, "mean"), with the mean trajectory accumulated in float64
        out["rot"] = np.asarray(phase.count_rotations(rs.mean(0, dtype=np.float64).T), dtype=np.float64)
        if n_shuffles:
            out["rot_null"] = np.asarray(phase.null_per_unit(rs, "mean", n_shuffles, seed=seed), dtype=np.float64)
            out["rot_null_points"] = np.asarray(
                phase.null_per_unit(rs, "mean", n_shuffles, seed=seed, what="points"), dtype=np.float64)
    if "pca" in groups:
        k = min(n * L, D) if pca_components is None else min(int(pca_components), n * L, D)
        pca = reduce.PCA(n_components=k).fit(rs)
        out["ev_ratio"] = pca.explained_variance_ratio_
        curve = reduce.explained_variance_curve_per_sublayer(pca, rs)       # (n_sublayers, k)
        out["sublayer_pcs"] = np.asarray(reduce.components_for_variance(curve, variance, not_reached=np.inf),
                                         dtype=np.float64)
    return out


def first_transitions(med) -> dict[str, float]:
    """The readings of "the earliest layers" on a per-transition curve ``med: (n_transitions,)``:
    ``first_transition`` (t = 0, NaN if undefined), ``first_defined`` (the first finite value) and
    ``first_each_kind`` (the smaller of the first finite within- and cross-layer values)."""
    med = np.asarray(med, dtype=np.float64)
    t0 = _first_finite(med)
    w, c = metrics.split_transitions(med)
    tw, tc = _first_finite(w), _first_finite(c)
    each = np.nan if tw is None or tc is None else float(min(w[tw], c[tc]))
    return {"first_transition": float(med[0]), "first_defined": np.nan if t0 is None else float(med[t0]),
            "first_each_kind": each}


def _r_headlines(med: np.ndarray) -> dict[str, float]:
    f = first_transitions(med)
    return {"r_first": f["first_defined"], "r_first_transition": f["first_transition"],
            "r_first_each_kind": f["first_each_kind"], "r_last": float(med[-1]),
            "r_within_above_cross": metrics.within_above_cross(med), "r_trend": metrics.depth_trend(med)}


def _mean_headlines(mag: np.ndarray, sign: np.ndarray) -> dict[str, float]:
    L = sign.size
    return {"mag_trend": metrics.depth_trend(mag), "sign_preserved": float(np.mean(sign[L // 2:-1]))}


def _units_high_r(r: np.ndarray, level: float = 0.8) -> np.ndarray:
    """r: (b, n_transitions, d_model) -> (b,) fraction of units whose median r over transitions exceeds
    ``level`` (units never defined count as not high)."""
    with np.errstate(invalid="ignore"):
        return (_nanmedian(r, 1) > level).mean(1)


def _cos_headlines(cos: np.ndarray) -> dict[str, float]:
    w, c = metrics.split_transitions(cos)
    return {"cos_within": float(np.nanmean(w)), "cos_cross": float(np.nanmean(c)),
            "cos_within_above_cross": metrics.within_above_cross(cos)}


def _vel_headlines(vel: np.ndarray) -> dict[str, float]:
    w, c = metrics.split_transitions(vel)

    def third(y):  # NaN when too short to split into thirds (fewer than 6 transitions of a kind)
        return float(metrics.steepest_segment(y) + 1) if y.size >= 6 else np.nan

    return {"vel_steepest_third_within": third(w), "vel_steepest_third_cross": third(c),
            "vel_cross_above_within": 1.0 - metrics.within_above_cross(vel)}


def _mi_headlines(mi: np.ndarray) -> dict[str, float]:
    T = mi.size
    early = max(4, T // 3)
    t0 = _first_finite(mi)
    if t0 is None or not np.isfinite(mi[:early]).any():
        return {k: np.nan for k in ("mi_first", "mi_min_early", "mi_drop", "mi_steepest_drop_cross")}
    first, low = float(mi[t0]), float(np.nanmin(mi[:early]))
    kinds = metrics.transition_kind(T + 1)
    t = metrics.largest_drop(mi, stop=early)
    return {"mi_first": first, "mi_min_early": low, "mi_drop": 1.0 - low / first if first != 0 else np.nan,
            "mi_steepest_drop_cross": float(kinds[t] == "cross")}


def _rot_headlines(rot: np.ndarray, null: np.ndarray | None) -> dict[str, float]:
    out = {"rot_mean": float(rot.mean()), "rot_mean_abs": float(np.abs(rot).mean())}
    if null is not None:
        out["rot_null_mean_abs"] = float(np.abs(null).mean())
        out["rot_minus_null"] = out["rot_mean_abs"] - out["rot_null_mean_abs"]
    return out


def _pca_headlines(ev_ratio: np.ndarray, sublayer_pcs: np.ndarray, variance: float) -> dict[str, float]:
    thirds = np.array_split(np.arange(sublayer_pcs.size), 3)
    # "not reached with the kept components" counts as one more than kept (a lower bound, as in chapter 4) in
    # the thirds' means; their difference is undefined when a sublayer of either third is not reached (a
    # difference of lower bounds says nothing)
    saturated = bool(np.isposinf(sublayer_pcs[np.r_[thirds[0], thirds[2]]]).any())
    sublayer_pcs = np.where(np.isposinf(sublayer_pcs), ev_ratio.size + 1, sublayer_pcs)
    total = reduce.components_for_variance(np.cumsum(ev_ratio), variance, not_reached=np.inf)
    first, last = float(_nanmean(sublayer_pcs[thirds[0]], 0)), float(_nanmean(sublayer_pcs[thirds[2]], 0))
    return {"pcs_total": float(total), "pcs_first_third": first, "pcs_last_third": last,
            "pcs_last_minus_first": np.nan if saturated else last - first}


def headlines_from_curves(c: Mapping[str, Any]) -> dict[str, float]:
    """Headline numbers (see the module docstring and :data:`STATISTICS`) from :func:`curves`' output.

    -> {key: float}, only the keys whose curves are present, in :data:`STATISTICS` order.
    """
    out: dict[str, float] = {}
    if "mag_mean" in c:
        out.update(_mean_headlines(np.asarray(c["mag_mean"], dtype=np.float64),
                                   np.asarray(c["sign_agreement"], dtype=np.float64)))
    if "r_median" in c:
        out.update(_r_headlines(np.asarray(c["r_median"], dtype=np.float64)))
    if "units_high_r" in c:
        out["units_high_r"] = float(np.asarray(c["units_high_r"]).ravel()[0])
    if "cos_mean" in c:
        out.update(_cos_headlines(np.asarray(c["cos_mean"], dtype=np.float64)))
    if "vel_mean" in c:
        out.update(_vel_headlines(np.asarray(c["vel_mean"], dtype=np.float64)))
    if "mi_mean" in c:
        out.update(_mi_headlines(np.asarray(c["mi_mean"], dtype=np.float64)))
    if "rot" in c:
        out.update(_rot_headlines(np.asarray(c["rot"]), c.get("rot_null")))
    if "ev_ratio" in c:
        out.update(_pca_headlines(np.asarray(c["ev_ratio"]), np.asarray(c["sublayer_pcs"]), c.get("variance", 0.9)))
    return {k: out[k] for k in STATISTICS if k in out}


def headline_numbers(rs, **kwargs: Any) -> dict[str, float]:
    """The paper's headline statistics for one RS array: ``headlines_from_curves(curves(rs, **kwargs))``.

    rs: (n_samples, n_sublayers, d_model); keywords as :func:`curves` (groups, mi_units, mi_method,
    n_shuffles, variance, pca_components, seed). -> {key: float}.
    """
    return headlines_from_curves(curves(rs, **kwargs))


# ----------------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------------
def _fast_replicates(rs: np.ndarray, counts: np.ndarray, groups: tuple[str, ...], batch: int = 50
                     ) -> dict[str, np.ndarray]:
    """Curves of the fast groups for every resample, from resampling counts (n_boot, n) -> {name: (n_boot, ...)}.

    r: per transition, the weighted moments of every unit (one matrix product); cos / vel: weighted means of
    the per-text values; rot: rotation counts of the weighted mean trajectories.
    """
    n, L, D = rs.shape
    w = counts / n                                                   # (B, n), rows sum to 1
    B = w.shape[0]
    out: dict[str, np.ndarray] = {}
    if "mean" in groups:
        flat = rs.reshape(n, L * D)
        mag, sign = np.empty((B, L)), np.empty((B, L))
        for s in range(0, B, batch):
            mean = (w[s:s + batch] @ flat).reshape(-1, L, D)
            mag[s:s + batch] = np.abs(mean).mean(2)
            sign[s:s + batch] = (np.sign(mean) == np.sign(mean[:, -1:])).mean(2)
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
        for t in range(L - 1):
            a, b = x[:, t], x[:, t + 1]
            moments = np.concatenate([a, b, a * a, b * b, a * b], axis=1)  # (n, 5 D)
            for s in range(0, B, batch):
                r = bootstrap.weighted_correlation(moments, w[s:s + batch])
                r_all[s:s + batch, t] = r
                med[s:s + batch, t] = _nanmedian(r, 1)
        out["units_high_r"] = _units_high_r(r_all)[:, None]
        out["r_median"] = med
    if "rot" in groups:
        flat = rs.reshape(n, L * D).astype(np.float64)
        rot = np.empty((B, D))
        for s in range(0, B, batch):
            mean = (w[s:s + batch] @ flat).reshape(-1, L, D)         # (b, L, D) mean trajectories
            rot[s:s + batch] = phase.count_rotations(np.ascontiguousarray(mean.transpose(0, 2, 1)))
        out["rot"] = rot
    return out


def bootstrap_headlines(rs, n_boot: int = 1000, seed: int = 0, *, ci: float = 0.95,
                        groups: Iterable[str] = GROUPS, n_boot_slow: int | None = 50,
                        return_samples: bool = False, base: Mapping[str, Any] | None = None, **kwargs: Any):
    """Percentile bootstrap intervals over texts of every headline number.

    rs: (n_samples, n_sublayers, d_model). The groups in :data:`FAST_GROUPS` are computed for all ``n_boot``
    resamples at once from resampling counts (:func:`transformer_dynamics.bootstrap.bootstrap_counts`, the same
    resamples as :func:`transformer_dynamics.bootstrap.bootstrap` with the same seed); the rotation null, MI and
    PCA are recomputed on the first ``min(n_boot, n_boot_slow)`` of those resamples (None: all) through
    :func:`transformer_dynamics.bootstrap.bootstrap`.

    A resample repeats texts (about 37% of them are missing), and for some statistics that shifts the value
    itself, not only its spread: the KDE MI (a resubstitution estimate: a repeated point is its own close
    neighbour) rises and the PCA counts fall (fewer distinct texts span fewer directions). For those keys
    (``STATISTICS[key].resample_biased``) the interval is *re-centred*: the percentile interval of the
    replicates shifted by ``estimate - median(replicates)``, i.e. their spread around the estimate without
    the duplicate-induced shift (column ``interval`` = ``"recentred"``; else ``"percentile"``). It is an
    approximation; :func:`n_dependence` shows how these numbers move with N. ``seed`` draws the resamples and
    is passed to :func:`curves` (MI units, null); other
    keywords go to :func:`curves` (mi_units, mi_method, n_shuffles, variance, pca_components).

    -> DataFrame indexed by headline key with columns ``estimate``, ``low``, ``high``, ``n_boot``,
    ``interval``, ``group``, ``figure``; with ``return_samples=True`` also ``{key: (n_boot_of_key,) replicates}``.
    ``base``: :func:`curves` of ``rs`` already computed with the same keywords (skips recomputing them).
    """
    rs = _check_rs(rs)
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

    alpha = (1.0 - ci) / 2.0
    records = []
    for k, v in estimate.items():
        r = reps.get(k)
        h = STATISTICS[k]
        kind = "recentred" if h.resample_biased else "percentile"
        if r is None or not np.isfinite(r).any():
            lo = hi = np.nan
            nb = 0 if r is None else r.size
        else:
            lo, hi = np.nanquantile(r, [alpha, 1.0 - alpha])
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
    Keywords as :func:`curves`. -> DataFrame indexed by N (sorted ascending), one column per headline key.
    """
    rs = _check_rs(rs)
    ns = sorted(int(v) for v in ns)
    rows = {}
    for v, idx in zip(ns, nested_subsamples(rs.shape[0], ns, seed)):
        rows[v] = headline_numbers(rs[idx], seed=seed, **kwargs)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "n"
    return df


# ----------------------------------------------------------------------------------------------------------
# precision
# ----------------------------------------------------------------------------------------------------------
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
    return {"rel_error": rel, "rel_error_per_text": _nanmedian(per_text, 0), "max_rel_error": float(np.nanmax(rel)),
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


# ----------------------------------------------------------------------------------------------------------
# claims: evidence, verdicts, robustness over the open choices
# ----------------------------------------------------------------------------------------------------------
#: claim -> (reading -> headline statistic) for the claims decided from a bootstrap interval
_INTERVAL_CLAIMS = {
    "r_early": {"first_each_kind": "r_first_each_kind", "first_transition": "r_first_transition",
                "first_defined": "r_first"},
    "sign_preserved": {"second_half": "sign_preserved"},
    "units_high_r": {"median": "units_high_r"},
    "vel_last_third": {"within": "vel_steepest_third_within", "cross": "vel_steepest_third_cross"},
    "mi_drop_at_cross": {"*": "mi_steepest_drop_cross"},
    "pcs_fewer_later": {"global": "pcs_last_minus_first"},
}


def _early(n_transitions: int) -> int:
    return max(4, n_transitions // 3)


def _p_rows(c: Mapping[str, Any], mi_method: str, seed: int) -> list[tuple[str, str, float, float]]:
    """(claim, reading, value, p) of the claims decided by a permutation / sign test, from one set of curves."""
    rows = []
    if "mag_mean" in c:
        rows.append(("magnitude_increases", "mean_abs") + bootstrap.trend_test(c["mag_mean"], seed=seed))
    if "r_median" in c:
        w, x = metrics.split_transitions(np.asarray(c["r_median"]))
        rows.append(("r_increases_within", "median") + bootstrap.trend_test(w, seed=seed))
        rows.append(("r_increases_cross", "median") + bootstrap.trend_test(x, seed=seed))
        k = min(w.size, x.size)
        rows.append(("r_within_above_cross", "median") + bootstrap.sign_test(w[:k], x[:k]))
    for reading, key in (("raw", "cos_mean"), ("centred", "ccos_mean")):
        if key in c:
            w, x = metrics.split_transitions(np.asarray(c[key]))
            k = min(w.size, x.size)
            rows.append(("cos_increases", reading) + bootstrap.trend_test(c[key], seed=seed))
            rows.append(("cos_within_above_cross", reading) + bootstrap.sign_test(w[:k], x[:k]))
    if "vel_mean" in c:
        w, x = metrics.split_transitions(np.asarray(c["vel_mean"]))
        k = min(w.size, x.size)
        rows.append(("vel_increases", "within") + bootstrap.trend_test(w, seed=seed))
        rows.append(("vel_increases", "cross") + bootstrap.trend_test(x, seed=seed))
        rows.append(("vel_cross_above_within", "median") + bootstrap.sign_test(x[:k], w[:k]))
    if "mi_mean" in c:
        mi = np.asarray(c["mi_mean"], dtype=np.float64)
        rows.append(("mi_early_drop", mi_method) + bootstrap.trend_test(mi[:_early(mi.size)], seed=seed))
        if "r_median" in c:
            rows.append(("mi_vs_r", mi_method) + bootstrap.trend_test(mi, np.asarray(c["r_median"]), seed=seed))
    if "rot" in c and c.get("rot_null") is not None:
        rows += rotation_evidence(c["rot"], c["rot_null"])
    if "rot" in c and c.get("rot_null_points") is not None:
        rows += rotation_evidence(c["rot"], c["rot_null_points"], "points")
    return rows


def rotation_evidence(rot, null, reading: str = "sublayers") -> list[tuple[str, str, float, float]]:
    """The rotation claims from counts and their layer-shuffle null.

    rot: (d_model,) rotation count per unit; null: (n_shuffles, d_model). -> [(claim, reading, value, p)]:
    ``rotations_beat_null`` (mean |R| minus the null's; p: the fraction of shuffles whose mean |R| over
    units reaches the observed one, a permutation test) and ``rotations_majority`` (fraction of units beyond
    their null's 95th percentile of |R|; p: a sign test over units against one half).
    """
    rot, null = np.asarray(rot, dtype=np.float64), np.asarray(null, dtype=np.float64)
    obs, per_shuffle = np.abs(rot).mean(), np.abs(null).mean(1)      # the null's mean |R| of each shuffle
    p = (1.0 + np.sum(per_shuffle >= obs)) / (1.0 + per_shuffle.size)
    exceeds = phase.exceeds_null(rot, null).astype(np.float64)
    return [("rotations_beat_null", reading, float(obs - np.abs(null).mean()), float(p)),
            ("rotations_majority", reading) + bootstrap.sign_test(exceeds, np.full(exceeds.size, 0.5))]


def teleport_evidence(per_layer: Sequence[np.ndarray]) -> tuple[float, float]:
    """The teleport claim (Fig 4D) from per-grid-point errors, one array per teleport layer in depth order.

    per_layer: [(n_points,)] e.g. ``TeleportResult.mse_pc`` (lower: better recovery), at least 3 layers. ->
    (fraction of the middle layers' points below the smaller of the first and the last layer's medians,
    the sign test's p against one half). NaN points are dropped.
    """
    if len(per_layer) < 3:
        raise ValueError(f"need at least 3 teleport layers (first, middle, last); got {len(per_layer)}")
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in per_layer]
    ref = min(np.nanmedian(arrays[0]), np.nanmedian(arrays[-1]))
    mid = np.concatenate(arrays[1:-1])
    mid = mid[np.isfinite(mid)]
    return bootstrap.sign_test(np.full(mid.size, ref), mid)


def claim_evidence(rs, *, n_boot: int = 1000, n_boot_slow: int | None = 50, seed: int = 0,
                   groups: Iterable[str] = GROUPS, mi_methods: Sequence[str] = ("kde",), **kwargs: Any
                   ) -> pd.DataFrame:
    """The value of every registered claim computable from one residual-stream array, with its evidence.

    rs: (n_samples, n_sublayers, d_model); keywords as :func:`bootstrap_headlines` / :func:`curves`;
    ``mi_methods``: the MI estimators (the MI claims' readings; the first with the bootstrap of the drop's
    location for each). -> DataFrame with columns ``claim``, ``reading``, ``value``, ``low``, ``high``
    (bootstrap interval, claims with ``evidence="interval"``) and ``p`` (permutation / sign test, the others),
    one row per (claim, reading) in registry order.
    """
    rs = _check_rs(rs)
    groups = _check_groups(groups)
    methods = list(mi_methods) if "mi" in groups else []
    first = [g for g in groups if g != "mi"] + (["mi"] if methods else [])
    kw = {**kwargs, "mi_method": methods[0]} if methods else kwargs
    base = curves(rs, groups=first, seed=seed, **kw)
    # the rotation claims are decided by permutation tests on ``base``: no bootstrap of the rotation null
    boot_groups = [g for g in first if g != "rot"]
    boot = (bootstrap_headlines(rs, n_boot, seed, groups=boot_groups, n_boot_slow=n_boot_slow, base=base, **kw)
            if boot_groups else pd.DataFrame(columns=["estimate", "low", "high"]))
    rows = []
    for claim, readings in _INTERVAL_CLAIMS.items():
        for reading, key in readings.items():
            if key in boot.index:
                r = boot.loc[key]
                rows.append({"claim": claim, "reading": methods[0] if reading == "*" else reading,
                             "value": r["estimate"], "low": r["low"], "high": r["high"], "p": np.nan})
    rows += [{"claim": k, "reading": rd, "value": v, "low": np.nan, "high": np.nan, "p": p}
             for k, rd, v, p in _p_rows(base, methods[0] if methods else "", seed)]
    for m in methods[1:]:
        kw_m = {**kwargs, "mi_method": m}
        c_m = {**curves(rs, groups=("mi",), seed=seed, **kw_m), "r_median": base.get("r_median")}
        if c_m["r_median"] is None:
            del c_m["r_median"]
        b_m = bootstrap_headlines(rs, n_boot, seed, groups=("mi",), n_boot_slow=n_boot_slow, base=c_m, **kw_m)
        if "mi_steepest_drop_cross" in b_m.index:
            r = b_m.loc["mi_steepest_drop_cross"]
            rows.append({"claim": "mi_drop_at_cross", "reading": m, "value": r["estimate"], "low": r["low"],
                         "high": r["high"], "p": np.nan})
        rows += [{"claim": k, "reading": rd, "value": v, "low": np.nan, "high": np.nan, "p": p}
                 for k, rd, v, p in _p_rows(c_m, m, seed) if k in ("mi_early_drop", "mi_vs_r")]
    order = {k: i for i, k in enumerate(_claims.REGISTRY)}
    df = pd.DataFrame(rows, columns=["claim", "reading", "value", "low", "high", "p"])
    return df.sort_values("claim", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def verdict_table(evidence: pd.DataFrame) -> pd.DataFrame:
    """Verdicts from the registry for a table of evidence.

    evidence: rows with ``claim``, ``reading``, ``value``, ``low``, ``high``, ``p`` and any other columns that
    name a run (model, choice, setting...): a claim's premise is looked up among the rows of the same run and
    reading. -> a copy with ``verdict`` and ``reason`` columns.
    """
    ev = evidence.reset_index(drop=True).copy()
    run_cols = [c for c in ev.columns if c not in ("claim", "value", "low", "high", "p")]
    index = {tuple(r[c] for c in run_cols) + (r["claim"],): i for i, r in ev.iterrows()}
    verdicts, reasons = [None] * len(ev), [""] * len(ev)

    def decide(i):
        if verdicts[i] is not None:
            return verdicts[i]
        r = ev.loc[i]
        c = _claims.get(r["claim"])
        premise = None
        if c.premise is not None:
            j = index.get(tuple(r[col] for col in run_cols) + (c.premise,))
            premise = None if j is None else decide(j)
        ci = (r["low"], r["high"]) if c.evidence == "interval" else None
        v = _claims.verdict(r["claim"], r["value"], ci=ci, p=r["p"], premise=premise)
        verdicts[i], reasons[i] = v.verdict, v.reason
        return v.verdict

    for i in range(len(ev)):
        decide(i)
    ev["verdict"], ev["reason"] = verdicts, reasons
    return ev


def _fmt(v) -> str:
    return "undefined" if v is None or not np.isfinite(v) else f"{v:.3g}"


def robustness_lines(verdicts: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """One line per (claim, model) over the open choices.

    verdicts: :func:`verdict_table` output with columns ``model``, ``choice`` (the open choice a row varies:
    ``"baseline"`` for the book's headline settings, else e.g. ``"strip"``, ``"reading"``) and ``setting`` (its
    value there); the baseline rows of the claim's other readings count as the choice ``"reading"``, and
    its other readings under another choice X as ``"X & reading"`` (readings crossed with the other choices).
    The headline verdict is the baseline row of the claim's headline reading. -> DataFrame with ``claim``,
    ``model``, ``headline`` (its verdict), ``status`` (``"robust"`` holds or fails everywhere, ``"undecided"`` nowhere decided,
    ``"hinges"``), ``hinges_on`` (the choices whose setting changes the verdict), ``line`` (e.g. "robust ✓",
    "hinges on strip (True: holds, 0.91); headline: undecided, undefined"), ``settings`` (rows compared) and
    ``flips`` (rows whose verdict differs from the headline).
    """
    out = []
    for (claim, model), g in verdicts.groupby(["claim", "model"], sort=False):
        c = _claims.get(claim)
        g = g.copy()
        g["setting"] = g["setting"].astype(str)
        other = g["reading"] != c.headline                                   # the claim's other readings
        crossed = other & (g["choice"] != baseline)                           # ... under another choice too
        g.loc[crossed, "setting"] = g.loc[crossed, "setting"] + ", " + g.loc[crossed, "reading"]
        g.loc[crossed, "choice"] = g.loc[crossed, "choice"] + " & reading"
        plain = other & (g["choice"] == baseline)
        g.loc[plain, "choice"], g.loc[plain, "setting"] = "reading", g.loc[plain, "reading"]
        base = g[(g["choice"] == baseline) & (g["reading"] == c.headline)]
        head = base["verdict"].iloc[0] if len(base) else "undecided"
        head_value = base["value"].iloc[0] if len(base) else np.nan
        rows = g[~((g["choice"] == baseline) & (g["reading"] == c.headline))]
        flips = rows[rows["verdict"] != head]
        seen = set(rows["verdict"]) | {head}
        if not len(flips):
            status = "robust" if head in ("holds", "fails") else "undecided"
            line = {"holds": "robust ✓", "fails": "robust ✗"}.get(head, "undecided under every choice")
            on = ""
        else:
            status = "hinges"
            parts = []
            for choice, f in flips.groupby("choice", sort=False):
                vals = "; ".join(f"{s}: {v}, {_fmt(x)}" for s, v, x in zip(f["setting"], f["verdict"], f["value"]))
                parts.append(f"{choice} ({vals})")
            on = ", ".join(dict.fromkeys(flips["choice"]))
            line = f"hinges on {'; '.join(parts)}; headline: {head}, {_fmt(head_value)}"
            if seen <= {"undecided", head} and head == "undecided":
                line = "hinges on " + "; ".join(parts) + " (headline undecided)"
        out.append({"claim": claim, "model": model, "headline": head, "status": status, "hinges_on": on,
                    "line": line, "settings": int(len(rows)), "flips": int(len(flips))})
    return pd.DataFrame(out, columns=["claim", "model", "headline", "status", "hinges_on", "line", "settings",
                                      "flips"])


def first_transitions_table(rs_by_variant: Mapping[Any, np.ndarray], n_first: int = 4,
                            mi_units: int | Sequence[int] | None = 64, seed: int = 0) -> pd.DataFrame:
    """Median r over units and mean KDE MI over units at the first ``n_first`` transitions, per variant.

    rs_by_variant: {variant label (e.g. ``"strip=False, add_bos=True"``): rs (n_samples, n_sublayers, d_model)}.
    -> long DataFrame with columns ``variant``, ``transition`` (0 .. n_first - 1), ``kind`` (within / cross),
    ``r_median`` and ``mi_mean`` (NaN where undefined: a constant sublayer).
    """
    rows = []
    for label, rs in rs_by_variant.items():
        rs = _check_rs(rs)
        k = min(int(n_first), rs.shape[1] - 1)
        sub = rs[:, :k + 1]
        units = (metrics.subsample_units(rs.shape[2], mi_units, seed=seed) if mi_units is None
                 or np.isscalar(mi_units) else np.asarray(mi_units, dtype=np.int64))
        med = metrics.median_by_transition(metrics.successive_correlation(sub))["all"]
        mi = _nanmean(metrics.mutual_information(sub, "kde", units=units), 1)
        kinds = metrics.transition_kind(rs.shape[1])[:k]
        rows += [{"variant": label, "transition": t, "kind": kinds[t], "r_median": float(med[t]),
                  "mi_mean": float(mi[t])} for t in range(k)]
    return pd.DataFrame(rows, columns=["variant", "transition", "kind", "r_median", "mi_mean"])
