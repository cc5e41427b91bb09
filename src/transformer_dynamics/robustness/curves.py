"""The curves behind the claims, for the full data and for every bootstrap resample of the texts.

A residual stream ``rs: (n_samples, n_sublayers, d_model)`` gives, per group (what each curve is):

- ``"mean"``: ``mag`` (L,) mean over units of ``|mean over texts|`` (Fig 1B), ``mag_nomassive`` the same without the
  massive units, ``mag_rise_share`` () the share of units whose ``|mean|`` over the last third of the sublayers
  exceeds that over the first third, ``sign`` (L,) the share of units with the last sublayer's sign,
  ``density`` (L,) the mean over texts of the participation ratio ``(sum h^2)^2 / (D' sum h^4)`` of the
  non-massive units (1: every unit equally large; small: a few units carry the vector), ``density_all`` with
  every unit;
- ``"r"``: ``r`` (T,) median over units of the successive Pearson r (Fig 1C), ``units_high_r`` () the share of
  units whose median r exceeds 0.8 (Fig 1D);
- ``"cos"``: ``cos`` / ``ccos`` (T,) mean over texts of the raw / centred cosine of successive vectors (Fig 1E);
- ``"vel"``: ``vel`` / ``vel_nomassive`` (T,) mean over texts of the velocity (Fig 1F), ``norm`` (L,) mean over
  texts of the vector's norm;
- ``"mi"``: ``mi:{method}`` (T,) mean over the MI units of each unit's MI between successive sublayers (Fig 1H);
  on resamples only the early window is recomputed (every MI claim reads only it; the rest is NaN);
- ``"rot"``: rotation counts of the mean trajectory per unit (Fig 2): ``rot_abs`` () mean ``|R|``,
  ``rot_null_abs:{kind}`` () the mean ``|R|`` of a surrogate, ``rot_exceed:{kind}`` () the share of units whose ``|R|``
  exceeds their own surrogate's 95th percentile, for ``kind`` in :data:`ROTATION_NULLS`, and ``rot_spiral`` ()
  the median over units of log(mean ``|gradient|`` over the last third / over the first third);
- ``"pca"``: ``pcs`` / ``pcs_own`` (L,) how many global / own PCs each sublayer needs for ``variance`` of its
  variance (Fig 4C; ``inf``: not reached with the kept components), ``pcs_total_frac`` () the global PCs (of all
  of them) for ``variance`` of all the variance over D (Fig 4B), ``pca_ev`` (L,) each sublayer's explained
  variance with the kept components (Fig 4C), ``ev_ratio`` (k,) the global PCA's explained-variance ratios.

Every curve has a leading resample axis ``(B, ...)``. The groups in :data:`FAST` come for all bootstrap resamples
at once from resampling weights (one matrix product per batch). The others (MI, rotations and their surrogates,
PCA) are recomputed, on ``n_boot_slow`` half-samples of the texts without replacement
(:func:`transformer_dynamics.bootstrap.half_samples`: a repeated text would distort them), and on those
half-samples every requested group is computed, so that a statistic mixing slow and fast curves reads them all
from the same texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import bootstrap, metrics, mutual_info, phase, reduce
from ..arrays import check_rs, is_entry, nanmedian, read
from ..validation import check_number, check_positive_int
from ..effects import early_window, thirds_of

__all__ = ["GROUPS", "FAST", "ROTATION_NULLS", "Curves", "CurveOptions", "group_of", "rs_curves", "stream_curves",
           "mean_curves", "cae_curves"]

GROUPS = ("mean", "r", "cos", "vel", "mi", "rot", "pca")
FAST = ("mean", "r", "cos", "vel")
#: Surrogates the rotation count is compared with: each unit's activations in shuffled layer order
#: ("sublayers", the paper's control), its (a, grad a) points in shuffled order ("points"), and a random walk
#: with the unit's own steps in shuffled order ("steps").
ROTATION_NULLS = ("sublayers", "points", "steps")
_MIN_RS = {"min_samples": 4, "min_sublayers": 6}
#: Texts left out one at a time for the statistics that must be recomputed (every text is left out for the fast
#: ones): the farthest from the mean, where one text's pull on a statistic comes from.
SLOW_LEAVE_OUT = 5


def outlying_texts(rs: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` texts farthest from the mean: each text's squared deviation from its sublayer's mean over texts,
    relative to that sublayer's mean squared deviation, summed over sublayers. rs: (n, L, D) -> (m,) indices,
    farthest first."""
    x = rs.astype(np.float64)
    dev = ((x - x.mean(0)) ** 2).sum(2)                                    # (n, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.nan_to_num(dev / dev.mean(0))
    return np.argsort(rel.sum(1))[::-1][:m]


def group_of(key: str) -> str:
    """The group a curve key belongs to (``"mi:kde"`` -> ``"mi"``, ``"rot_null_abs:points"`` -> ``"rot"``)."""
    head = key.split(":")[0]
    if key in ("r_b", "mag_b") or head == "mi_a":
        return "mi"                                     # computed with the MI, on the other half of the texts
    for prefix, group in (("mag", "mean"), ("sign", "mean"), ("density", "mean"), ("units_high_r", "r"),
                          ("ccos", "cos"), ("cos", "cos"), ("vel", "vel"), ("norm", "vel"), ("mi", "mi"),
                          ("rot", "rot"),
                          ("pcs", "pca"), ("pca", "pca"), ("r", "r")):
        if head == prefix or head.startswith(prefix + "_"):
            return group
    raise KeyError(f"{key!r} is not a residual-stream curve (see transformer_dynamics.robustness.curves)")


@dataclass
class Curves:
    """A source's curves: ``full[key]`` ``(1, ...)`` on all its units (texts, prompts); ``boot[key]`` ``(B, ...)`` on
    bootstrap resamples; ``half[key]`` on half-samples (the statistics that must be recomputed; every curve there);
    ``jack[key]`` ``(n, ...)`` without each unit in turn (leave-one-out), where it is cheap. Iterating gives
    ``(full, boot)``."""

    full: dict[str, np.ndarray]
    boot: dict[str, np.ndarray] = field(default_factory=dict)
    half: dict[str, np.ndarray] = field(default_factory=dict)
    jack: dict[str, np.ndarray] = field(default_factory=dict)

    def __iter__(self):
        yield self.full
        yield self.boot


@dataclass
class CurveOptions:
    """What the curves depend on beyond the texts. massive: the massive units (left out of ``*_nomassive`` and
    ``density``); mi_units: the units the MI is averaged over (None: all); mi_methods: estimators;
    n_shuffles: surrogates per unit for the rotation nulls; variance: the PCA threshold; pca_components: kept
    components (None: all); seed: the MI units' draw and the surrogates; keys: the curves wanted (None: every
    curve of the groups; else costly curves not named are skipped: ``pcs_own``, the rotation surrogates)."""

    massive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mi_units: np.ndarray | None = None
    mi_methods: tuple[str, ...] = ("kde",)
    n_shuffles: int = 100
    variance: float = 0.9
    pca_components: int | None = None
    seed: int = 0
    keys: frozenset[str] | None = None

    def __post_init__(self):
        self.n_shuffles = check_positive_int(self.n_shuffles, "n_shuffles")
        self.pca_components = check_positive_int(self.pca_components, "pca_components", none=True)
        self.variance = check_number(self.variance, "variance", low=0, high=1, low_open=True)

    def wants(self, key: str) -> bool:
        return self.keys is None or key in self.keys


def _keep(D: int, massive: np.ndarray) -> np.ndarray:
    keep = np.ones(D, dtype=bool)
    keep[np.asarray(massive, dtype=np.int64)] = False
    return keep


def _participation(rs: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """(n, L) participation ratio of each text's vector at each sublayer, over the units ``keep``."""
    out = np.empty(rs.shape[:2])
    for s in range(rs.shape[1]):
        x = rs[:, s].astype(np.float64)
        if keep is not None:
            x = x[:, keep]
        x2 = x * x
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, s] = x2.sum(1) ** 2 / (x.shape[1] * (x2 * x2).sum(1))
    return out


def _per_text(rs: np.ndarray, groups: Sequence[str], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The per-text (n, ...) arrays whose weighted means are fast curves."""
    out: dict[str, np.ndarray] = {}
    if "mean" in groups:
        out["density"] = _participation(rs, keep)
        out["density_all"] = _participation(rs, None)
    if "cos" in groups:
        out["cos"] = np.nan_to_num(metrics.cosine_similarity(rs))
        out["ccos"] = np.nan_to_num(metrics.centered_cosine_similarity(rs))
    if "vel" in groups:
        out["vel"] = metrics.velocity(rs)
        out["vel_nomassive"] = metrics.velocity(rs[:, :, keep]) if not keep.all() else out["vel"]
        out["norm"] = np.linalg.norm(rs.astype(np.float64), axis=2)
    return out


def _mean_curves(mean: np.ndarray, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Curves of mean trajectories ``mean: (b, L, D)``."""
    L = mean.shape[1]
    a = np.abs(mean)
    first, _, last = thirds_of(L)
    return {"mag": a.mean(2), "mag_nomassive": a[:, :, keep].mean(2),
            "mag_rise_share": (a[:, last].mean(1) > a[:, first].mean(1)).mean(1),
            "sign": (np.sign(mean) == np.sign(mean[:, -1:])).mean(2)}


def _fast(rs: np.ndarray, w: np.ndarray, groups: Sequence[str], per_text: dict[str, np.ndarray],
          keep: np.ndarray) -> dict[str, np.ndarray]:
    """Fast curves for resample weights ``w: (B, n)`` (rows summing to 1) -> {key: (B, ...)}."""
    n, L, D = rs.shape
    B = w.shape[0]
    out: dict[str, np.ndarray] = {k: w @ v for k, v in per_text.items()}
    if "mean" in groups:
        flat = rs.reshape(n, L * D)
        wide = bootstrap.batch_rows(L * D)
        parts = [_mean_curves((w[s:s + wide] @ flat).reshape(-1, L, D), keep) for s in range(0, B, wide)]
        out.update({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    if "r" in groups:
        med = np.empty((B, L - 1))
        r_all = np.empty((B, L - 1, D), dtype=np.float32)
        x = rs.astype(np.float64)
        x -= x.mean(0)
        narrow = bootstrap.batch_rows(5 * D)
        for t in range(L - 1):
            a, b = x[:, t], x[:, t + 1]
            moments = np.concatenate([a, b, a * a, b * b, a * b], axis=1)
            for s in range(0, B, narrow):
                r = bootstrap.weighted_correlation(moments, w[s:s + narrow])
                r_all[s:s + narrow, t] = r
                with np.errstate(invalid="ignore"):
                    med[s:s + narrow, t] = nanmedian(r, 1)
        with np.errstate(invalid="ignore"):
            out["units_high_r"] = (nanmedian(r_all, 1) > 0.8).mean(1)
        out["r"] = med
    return out


def _steps_null(traj: np.ndarray, n_shuffles: int, seed: int) -> np.ndarray:
    """Rotation counts of random walks made of each trajectory's own steps in shuffled order.
    traj: (U, L) -> (n_shuffles, U)."""
    U, L = traj.shape
    steps = np.diff(traj, axis=1)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    out = np.empty((n_shuffles, U))
    for k in range(n_shuffles):
        perm = np.argsort(rng.random((U, L - 1)), axis=1)
        walk = np.concatenate([traj[:, :1], traj[:, :1] + np.cumsum(np.take_along_axis(steps, perm, 1), 1)], 1)
        out[k] = phase.count_rotations(walk)
    return out


def _rot(mean_traj: np.ndarray, opts: CurveOptions) -> dict[str, float]:
    """Rotation curves of one mean trajectory ``(L, D)``."""
    traj = np.ascontiguousarray(mean_traj.T)                              # (D, L)
    rot = np.asarray(phase.count_rotations(traj), dtype=np.float64)
    out = {"rot_abs": float(np.abs(rot).mean())}
    kinds = [k for k in ROTATION_NULLS if opts.wants(f"rot_null_abs:{k}") or opts.wants(f"rot_exceed:{k}")]
    nulls = {k: (_steps_null(traj, opts.n_shuffles, opts.seed) if k == "steps" else
                 np.asarray(phase.shuffle_null(traj, opts.n_shuffles, seed=opts.seed, what=k), dtype=np.float64))
             for k in kinds}
    for k, nul in nulls.items():
        out[f"rot_null_abs:{k}"] = float(np.abs(nul).mean())
        out[f"rot_exceed:{k}"] = float(phase.exceeds_null(rot, nul).mean())
    grad = np.abs(np.gradient(traj, axis=1))
    first, _, last = thirds_of(traj.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.log(grad[:, last].mean(1) / grad[:, first].mean(1))
    out["rot_spiral"] = float(nanmedian(ratio[np.isfinite(ratio)], 0)) if np.isfinite(ratio).any() else np.nan
    return out


def _mi_curve(x: np.ndarray, method: str, units, T: int) -> np.ndarray:
    """(T,) mean MI over ``units`` per transition of ``x`` (its transitions; NaN beyond them)."""
    mi = mutual_info.mutual_information(x, method, units=units)             # (t, U)
    curve = np.full(T, np.nan)
    curve[:mi.shape[0]] = _nanmean(mi, 1)
    return curve


def _mi(x: np.ndarray, opts: CurveOptions, window: int | None) -> dict[str, np.ndarray]:
    """Mean MI over the MI units per transition, for each method; only the first ``window`` transitions (the
    rest NaN) when given. Also, where asked for, the curves that a correlation *with* the MI reads, on disjoint
    halves of the texts so that the two share no sampling noise: ``mi_a:{method}`` the MI on the even-numbered
    texts, ``r_b`` the median successive r and ``mag_b`` the mean ``|mean activation|`` on the odd-numbered ones."""
    T = x.shape[1] - 1
    sub = x if window is None else x[:, :window + 1]
    out = {f"mi:{m}": _mi_curve(sub, m, opts.mi_units, T) for m in opts.mi_methods}
    a, b = sub[0::2], sub[1::2]
    for m in opts.mi_methods:
        if opts.wants(f"mi_a:{m}"):
            out[f"mi_a:{m}"] = _mi_curve(a, m, opts.mi_units, T)
    if opts.wants("r_b"):
        r = np.full(T, np.nan)
        r[:b.shape[1] - 1] = metrics.median_by_transition(metrics.successive_correlation(b))["all"]
        out["r_b"] = r
    if opts.wants("mag_b"):
        mag = np.full(T + 1, np.nan)
        mag[:b.shape[1]] = np.abs(b.mean(0, dtype=np.float64)).mean(1)
        out["mag_b"] = mag
    return out


def _nanmean(x, axis):
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _pca(x: np.ndarray, opts: CurveOptions) -> dict[str, Any]:
    n, L, D = x.shape
    k_all = min(n * L, D)
    k = k_all if opts.pca_components is None else min(int(opts.pca_components), k_all)
    pca = reduce.PCA(n_components=k_all).fit(x)       # every component: the total variance's count reads them all
    curve = reduce.explained_variance_curve_per_sublayer(pca, x, k)  # Fig 4C: the first k (the kept ones)
    # fractional counts (interpolated): integer counts would put the replicates on a lattice
    pcs = reduce.components_for_variance(curve, opts.variance, not_reached=np.inf, fractional=True)
    own = (reduce.components_for_variance(np.cumsum(reduce.sublayer_explained_variance_ratio(x), axis=1),
                                          opts.variance, not_reached=np.inf, fractional=True)
           if opts.wants("pcs_own") else np.full(L, np.nan))
    total = reduce.components_for_variance(np.cumsum(pca.explained_variance_ratio_), opts.variance,
                                           not_reached=np.inf, fractional=True)
    # inf: not reached with the kept components (the claims' statistics treat it as a lower bound)
    return {"pcs": np.asarray(pcs, dtype=np.float64), "pcs_own": np.asarray(own, dtype=np.float64),
            "pca_ev": np.asarray(curve[:, -1], dtype=np.float64),
            "pcs_total_frac": float(total) / D,
            "ev_ratio": pca.explained_variance_ratio_[:k]}


def _slow(x: np.ndarray, groups: Sequence[str], opts: CurveOptions, full: bool) -> dict[str, Any]:
    """Slow curves of one (resampled) stream ``x``; ``full``: the whole MI curve (for the figure)."""
    out: dict[str, Any] = {}
    if "mi" in groups:
        out.update(_mi(x, opts, None if full else early_window(x.shape[1] - 1)))
    if "rot" in groups:
        out.update(_rot(x.mean(0, dtype=np.float64), opts))
    if "pca" in groups:
        out.update(_pca(x, opts))
    return out


def _stack(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k], dtype=np.float64) for r in rows]) for k in rows[0]}


def rs_curves(rs, groups: Sequence[str], opts: CurveOptions, *, n_boot: int = 0, n_boot_slow: int | None = None,
              seed: int = 0) -> Curves:
    """The curves of ``groups`` on the full data, on ``n_boot`` bootstrap resamples, on half-samples and without each
    text in turn.

    rs: (n_samples, n_sublayers, d_model). -> :class:`Curves`: ``full[key]`` ``(1, ...)``; ``boot[key]``
    ``(n_boot, ...)`` and ``jack[key]`` ``(n_samples, ...)`` (leave-one-out) for the fast groups only (``seed``);
    ``half[key]`` ``(n_boot_slow, ...)`` for every group when a slow group is requested (None: ``n_boot``
    half-samples), else empty: the slow groups recomputed on each half-sample, the fast ones weighted over the texts
    as the bootstrap's are (so ``ccos`` keeps the centring of all the texts). ``n_boot=0``: only ``full``. A cache
    entry is read whole: every resample draws from all the texts.
    """
    rs = check_rs(read(rs) if is_entry(rs) else rs, **_MIN_RS)
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown curve groups {bad}; use a subset of {GROUPS}")
    n, L, D = rs.shape
    keep = _keep(D, opts.massive)
    fast = [g for g in groups if g in FAST]
    slow = [g for g in groups if g not in FAST]
    per_text = _per_text(rs, fast, keep)
    full = _fast(rs, np.full((1, n), 1.0 / n), fast, per_text, keep) if fast else {}
    if slow:
        full.update({k: np.asarray(v)[None] for k, v in _slow(rs, slow, opts, full=True).items()})
    reps: dict[str, np.ndarray] = {}
    half: dict[str, np.ndarray] = {}
    jack: dict[str, np.ndarray] = {}
    if n_boot:
        if fast:
            reps.update(_fast(rs, bootstrap.bootstrap_counts(n, n_boot, seed) / n, fast, per_text, keep))
            jack.update(_fast(rs, bootstrap.LeaveOneOut(n), fast, per_text, keep))
        n_slow = n_boot if n_boot_slow is None else int(n_boot_slow)
        if slow and n_slow:
            halves = bootstrap.half_samples(n, n_slow, seed)
            half = _stack([_slow(rs[i], slow, opts, full=False) for i in halves])
            if fast:  # the fast curves of the same half-samples, as weights over the texts (as the bootstrap's)
                w = np.zeros((n_slow, n))
                np.put_along_axis(w, halves, 1.0 / halves.shape[1], axis=1)
                half.update(_fast(rs, w, fast, per_text, keep))
            # leave-one-out of the slow statistics for the few texts that could pull them (NaN for the others)
            out = outlying_texts(rs, min(SLOW_LEAVE_OUT, n))
            left = _stack([_slow(np.delete(rs, i, axis=0), slow, opts, full=False) for i in out])
            for k, v in left.items():
                if k not in jack:
                    jack[k] = np.full((n,) + v.shape[1:], np.nan)
                    jack[k][out] = v
    return Curves(full, reps, half, jack)


def stream_curves(rs, groups: Sequence[str], *, massive: np.ndarray | None = None, mi_units=None,
                  mi_methods: Sequence[str] = ("kde",), n_shuffles: int = 100, variance: float = 0.9,
                  pca_components: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The full-data curves of ``groups`` (no resamples), each without the resample axis: the numbers the
    figures draw. Keywords as :class:`CurveOptions`; ``massive`` None: the stream's own massive units. A cache entry
    is read whole (as :func:`rs_curves`)."""
    rs = check_rs(read(rs) if is_entry(rs) else rs, **_MIN_RS)
    opts = CurveOptions(massive=metrics.massive_units(rs) if massive is None else np.asarray(massive),
                        mi_units=mi_units, mi_methods=tuple(mi_methods), n_shuffles=n_shuffles, variance=variance,
                        pca_components=pca_components, seed=seed)
    return {k: v[0] for k, v in rs_curves(rs, groups, opts).full.items()}


def mean_curves(per_unit: dict[str, Any], *, n_boot: int = 0, seed: int = 0) -> Curves:
    """Curves that are means over the sampling unit (texts, prompts) of per-unit arrays, for the full data and for
    ``n_boot`` resamples of the units: the curves of the claims whose sources are not a residual stream (the
    teleport's per-prompt recovery, the Jacobians' per-text measures...).

    per_unit: {key: (n, ...)} with the units on axis 0 (NaN entries are left out of that entry's mean). ->
    :class:`Curves`: ``full[key]`` ``(1, ...)``, ``boot[key]`` ``(n_boot, ...)`` (the resamples of
    :func:`transformer_dynamics.bootstrap.bootstrap_counts` with ``seed``), ``jack[key]`` ``(n, ...)`` without each
    unit in turn; unpacks as ``full, boot``.
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in per_unit.items()}
    if not arrays:
        raise ValueError("per_unit is empty: give at least one (n, ...) array")
    ns = {v.shape[0] for v in arrays.values() if v.ndim}
    if len(ns) != 1 or any(v.ndim == 0 for v in arrays.values()):
        raise ValueError(f"every per-unit array needs the same number of units on axis 0; got shapes "
                         f"{ {k: v.shape for k, v in arrays.items()} }")
    n = ns.pop()
    if n < 2:
        raise ValueError(f"need at least 2 units (texts or prompts) to resample; got {n}")

    def weighted(w):
        out = {}
        for k, v in arrays.items():
            flat = v.reshape(n, -1)
            ok = np.isfinite(flat)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k] = ((w @ np.where(ok, flat, 0.0)) / (w @ ok)).reshape((w.shape[0],) + v.shape[1:])
        return out

    full = weighted(np.full((1, n), 1.0 / n))
    if not n_boot:
        return Curves(full)
    return Curves(full, weighted(bootstrap.bootstrap_counts(n, n_boot, seed) / n), {},
                  weighted(bootstrap.LeaveOneOut(n)))


def cae_curves(result, rs_test, *, n_boot: int = 0, seed: int = 0, chunk_samples: int | None = 256) -> Curves:
    """The autoencoder's curves (Fig 3B-D) on its test texts, for the data and ``n_boot`` resamples of the texts.

    result: a trained CAE (:class:`transformer_dynamics.reduce.CAEResult` or its module); rs_test: (n_test,
    n_sublayers, d_model) the texts it was not trained on. -> ``(full, replicates)`` with ``cae_angle`` (B, L - 2)
    the turning angle of the mean bottleneck trajectory, ``cae_dist`` (B, L - 1) the mean distance between
    successive sublayers in the bottleneck, and ``cae_ev`` (B, L) each sublayer's explained variance about its
    own mean (the reconstruction's errors and the sublayer's spread summed over the resample's texts, raw units); as a
    :class:`Curves` (``full``, ``boot`` and ``jack``, leave-one-out), which unpacks as ``full, boot``.
    """
    from .. import reduce  # noqa: PLC0415

    rs_test = check_rs(rs_test, min_samples=2, min_sublayers=3, name="rs_test")
    n, L, D = rs_test.shape
    z = reduce.bottleneck_trajectories(result, rs_test, chunk_samples=chunk_samples).astype(np.float64)
    recon = reduce.reconstruct(result, rs_test, chunk_samples=chunk_samples)
    x = rs_test.astype(np.float64)
    err = ((x - recon) ** 2).sum(2)                                         # (n, L)
    x -= x.mean(0)                                                          # SST is shift invariant per sublayer
    sq = (x ** 2).sum(2)                                                    # (n, L)
    flat_z, flat_x = z.reshape(n, -1), x.reshape(n, -1)
    dist = metrics.velocity(z)                                              # (n, L - 1)

    def curves(w):
        mean_z = (w @ flat_z).reshape(-1, L, z.shape[2])
        m = (w @ flat_x).reshape(-1, L, D)
        with np.errstate(invalid="ignore", divide="ignore"):
            sst = w @ sq - (m ** 2).sum(2)
            ev = np.where(sst > 1e-12 * np.nanmax(np.abs(sst)), 1.0 - (w @ err) / sst, np.nan)
        return {"cae_angle": metrics.turning_angle(mean_z), "cae_dist": w @ dist, "cae_ev": ev}

    def batched(w):
        step = bootstrap.batch_rows(L * D)
        parts = [curves(w[s:s + step]) for s in range(0, w.shape[0], step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    full = curves(np.full((1, n), 1.0 / n))
    if not n_boot:
        return Curves(full)
    return Curves(full, batched(bootstrap.bootstrap_counts(n, n_boot, seed) / n), {},
                  batched(bootstrap.LeaveOneOut(n)))
