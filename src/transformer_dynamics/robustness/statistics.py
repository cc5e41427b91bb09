"""The headline statistics of one residual-stream array ``rs: (n_samples, n_sublayers, d_model)``.

:func:`curves` computes the per-transition / per-unit curves behind the paper's statements (the data of
Fig 1B-1H, 2B and 4B-4C), :func:`headlines_from_curves` reduces them to one scalar per statement, and
:data:`STATISTICS` says what each key is (group, figure, meaning, unit). Whether a value supports the paper
is decided by the claim registry (:mod:`transformer_dynamics.claims`) from the evidence of :mod:`.evidence`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import metrics, phase, reduce
from ..arrays import check_rs, split_transitions, transition_kind

__all__ = ["GROUPS", "FAST_GROUPS", "STATISTICS", "Statistic", "relative_depth", "curves", "first_transitions",
           "headlines_from_curves", "headline_numbers"]

#: The smallest ``rs`` the headline numbers are defined on: 4 texts, 6 sublayers (3 layers).
_MIN_RS = {"min_samples": 4, "min_sublayers": 6}

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
    #: :func:`~.resampling.bootstrap_headlines` then gives a re-centred interval (see there).
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
    t = metrics.defined_transitions(y)
    return int(t[0]) if t.size else None


def _mi_units(d_model: int, mi_units: int | Sequence[int] | None, seed: int) -> np.ndarray:
    """The units the MI is averaged over: an int (that many random units, ``seed``), indices, or None (all)."""
    return (metrics.subsample_units(d_model, mi_units, seed=seed) if mi_units is None or np.isscalar(mi_units)
            else np.asarray(mi_units, dtype=np.int64))


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
    rs = check_rs(rs, **_MIN_RS)
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
        mi = metrics.mutual_information(rs, mi_method, units=_mi_units(D, mi_units, seed))
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
    w, c = split_transitions(med)
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
    w, c = split_transitions(cos)
    return {"cos_within": float(np.nanmean(w)), "cos_cross": float(np.nanmean(c)),
            "cos_within_above_cross": metrics.within_above_cross(cos)}


def _vel_headlines(vel: np.ndarray) -> dict[str, float]:
    w, c = split_transitions(vel)

    def third(y):  # NaN when too short to split into thirds (fewer than 6 transitions of a kind)
        return float(metrics.steepest_segment(y) + 1) if y.size >= 6 else np.nan

    return {"vel_steepest_third_within": third(w), "vel_steepest_third_cross": third(c),
            "vel_cross_above_within": 1.0 - metrics.within_above_cross(vel)}


def _mi_headlines(mi: np.ndarray) -> dict[str, float]:
    T = mi.size
    early = metrics.early_stop(T)
    t0 = _first_finite(mi)
    if t0 is None or not np.isfinite(mi[:early]).any():
        return {k: np.nan for k in ("mi_first", "mi_min_early", "mi_drop", "mi_steepest_drop_cross")}
    first, low = float(mi[t0]), float(np.nanmin(mi[:early]))
    kinds = transition_kind(T + 1)
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
    thirds = metrics.thirds(sublayer_pcs.size)
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
