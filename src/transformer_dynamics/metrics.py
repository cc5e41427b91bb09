"""Figure 1 statistics of the residual stream: means, correlations, cosine similarity, velocity and
mutual information (paper sections 2.2–2.5, results 3.1).

Every function takes ``rs: (n_samples, n_sublayers, d_model)`` unless it says otherwise. Sublayer ``2l``
is the residual stream before layer ``l``'s attention, ``2l + 1`` before its MLP. Transition ``t`` goes
from sublayer ``t`` to ``t + 1``; even ``t`` (attn -> mlp of the same layer) is *within-layer*, odd ``t``
(mlp -> next layer's attn) is *cross-layer* (:func:`split_transitions`, :func:`transition_kind`).

Units whose activation is constant over the samples have no correlation and no density; they give NaN
(never an exception) in the correlation and mutual-information functions. Use ``np.nan*`` reductions.

Mutual information estimators (all in nats, per unit and successive sublayer pair):

- ``"kde"``: the paper's Gaussian-KDE plug-in estimate (see :func:`mutual_information_pairs`);
- ``"ksg"``: Kraskov–Stögbauer–Grassberger k-nearest-neighbour estimate (k = 3, as scikit-learn);
- ``"gcmi"``: Gaussian-copula MI (Ince et al. 2017), bias-corrected: a lower bound that is exact for
  Gaussian-copula data.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import numpy as np
import torch
from scipy import special, stats

from .arrays import check_rs as _check_rs
from .arrays import split_transitions, transition_kind

__all__ = [
    "mean_activations",
    "unit_order",
    "successive_correlation",
    "pairwise_correlation",
    "pair_indices",
    "correlation_histogram",
    "cosine_similarity",
    "centered_cosine_similarity",
    "velocity",
    "turning_angle",
    "transition_kind",
    "split_transitions",
    "median_by_transition",
    "mutual_information",
    "mutual_information_pairs",
    "MI_METHODS",
    "sign_agreement",
    "depth_trend",
    "within_above_cross",
    "steepest_segment",
    "largest_drop",
    "unit_magnitude",
    "massive_units",
    "without_units",
    "subsample_units",
]

MI_METHODS = ("kde", "ksg", "gcmi")
#: Added to every density before its log, as in the paper (section 2.5).
KDE_EPS = 1e-10
#: Set this environment variable to 1 to never use ``torch.compile`` for the KDE kernel sums.
NO_COMPILE_ENV = "TRANSFORMER_DYNAMICS_NO_COMPILE"
#: Precision of the KSG distances (float64: identical neighbour counts to scikit-learn's float64 trees).
KSG_DTYPE = torch.float64


# ----------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------
def _check_units(units, d_model: int) -> np.ndarray:
    """``units`` as int64 indices, each in ``[0, d_model)``: a one-line error otherwise. -> (n_units,)"""
    u = np.atleast_1d(np.asarray(units))
    if u.size and not (np.issubdtype(u.dtype, np.integer) or
                       (np.issubdtype(u.dtype, np.floating) and np.isfinite(u).all() and (u == np.round(u)).all())):
        raise ValueError(f"units must be integer unit indices in [0, {d_model}); got dtype {u.dtype}: {u[:5]}")
    u = u.astype(np.int64).ravel()
    bad = u[(u < 0) | (u >= d_model)]
    if bad.size:
        raise ValueError(f"units {bad[:5].tolist()} out of range: indices must be in [0, {d_model}) (d_model)")
    return u


def _check_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be (n_samples, n_units) with equal shapes; got {x.shape} "
                         f"and {y.shape}")
    if x.shape[0] < 4:
        raise ValueError(f"need at least 4 samples to estimate mutual information; got {x.shape[0]}")
    return x, y


# ----------------------------------------------------------------------------------------------------
# means (Fig 1B)
# ----------------------------------------------------------------------------------------------------
def mean_activations(rs) -> np.ndarray:
    """Mean activation of each unit at each sublayer over the samples (Fig 1B, section 2.2).

    rs: (n_samples, n_sublayers, d_model) -> (n_sublayers, d_model), float64.
    """
    rs = _check_rs(rs)
    return rs.mean(axis=0, dtype=np.float64)


def unit_order(rs) -> np.ndarray:
    """Order of the units by their mean activation at the last sublayer, ``argsort(mean[-1])`` (Fig 1B).

    rs: (n_samples, n_sublayers, d_model) -> (d_model,) int indices, ascending.
    """
    rs = _check_rs(rs)
    return np.argsort(rs[:, -1].mean(axis=0, dtype=np.float64), kind="stable")


# ----------------------------------------------------------------------------------------------------
# correlations (Fig 1C, 1D)
# ----------------------------------------------------------------------------------------------------
def _standardize(rs: np.ndarray) -> np.ndarray:
    """z-score every (sublayer, unit) over samples in float64; constant ones become NaN."""
    x = rs.astype(np.float64)
    x -= x.mean(axis=0)
    sd = np.sqrt((x * x).mean(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(sd > 0, 1.0 / sd, np.nan)
    x *= scale
    return x


def successive_correlation(rs, chunk: int = 512) -> np.ndarray:
    """Pearson r of every unit between sublayer ``t`` and ``t + 1`` across samples (Fig 1C, section 2.3).

    rs: (n_samples, n_sublayers, d_model) -> (n_sublayers - 1, d_model). A unit that is constant over the
    samples at either sublayer gives NaN.
    """
    rs = _check_rs(rs, min_sublayers=2, min_samples=2)
    n, L, D = rs.shape
    out = np.empty((L - 1, D), dtype=np.float64)
    for start in range(0, D, chunk):
        z = _standardize(rs[:, :, start:start + chunk])
        out[:, start:start + chunk] = np.einsum("ntu,ntu->tu", z[:, :-1], z[:, 1:]) / n
    return out


def pair_indices(n_sublayers: int) -> tuple[np.ndarray, np.ndarray]:
    """Sublayer index pairs ``(l, m)`` with ``l < m`` in the order :func:`pairwise_correlation` uses.

    -> (l: (n_pairs,), m: (n_pairs,)) with n_pairs = n_sublayers (n_sublayers - 1) / 2.
    """
    return np.triu_indices(int(n_sublayers), k=1)


def pairwise_correlation(rs, chunk: int = 512) -> np.ndarray:
    """Pearson r of every unit between every pair of sublayers ``l < m`` (the per-unit distribution
    :math:`\\mathcal{C}^i` of section 2.3).

    rs: (n_samples, n_sublayers, d_model) -> (n_pairs, d_model), pairs ordered as :func:`pair_indices`.
    Constant units give NaN. Computed as one batched matrix product per chunk of units.
    """
    rs = _check_rs(rs, min_sublayers=2, min_samples=2)
    n, L, D = rs.shape
    li, mi = pair_indices(L)
    out = np.empty((li.size, D), dtype=np.float64)
    for start in range(0, D, chunk):
        z = torch.from_numpy(_standardize(rs[:, :, start:start + chunk]))  # (n, L, U)
        zu = z.permute(2, 1, 0).contiguous()  # (U, L, n); bmm on a non-contiguous view is ~10x slower
        c = torch.bmm(zu, zu.transpose(1, 2)) / n  # (U, L, L)
        out[:, start:start + chunk] = c[:, li, mi].T.numpy()
    return out


def correlation_histogram(r, bins: int = 20, range: tuple[float, float] = (0.0, 1.0)
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit density histogram of correlations (Fig 1D).

    r: (n_values, n_units), e.g. :func:`successive_correlation` or :func:`pairwise_correlation` output.
    Values outside ``range`` and NaN are left out, as ``np.histogram`` does.
    -> density: (n_units, bins) (each row integrates to 1 over the values in range; NaN if none),
    edges: (bins + 1,).
    """
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2:
        raise ValueError(f"r must be (n_values, n_units); got shape {r.shape}")
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo or bins < 1:
        raise ValueError("need range[1] > range[0] and bins >= 1")
    edges = np.linspace(lo, hi, bins + 1)
    n_units = r.shape[1]
    ok = np.isfinite(r) & (r >= lo) & (r <= hi)
    idx = np.clip(np.floor((np.where(ok, r, lo) - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
    flat = (np.arange(n_units)[None, :] * bins + idx)[ok]
    counts = np.bincount(flat, minlength=n_units * bins).reshape(n_units, bins).astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        density = counts / (total * np.diff(edges)[None, :])
    return density, edges


# ----------------------------------------------------------------------------------------------------
# cosine similarity and velocity (Fig 1E, 1F)
# ----------------------------------------------------------------------------------------------------
def _cosine(rs: np.ndarray, mean: np.ndarray | None = None, chunk: int = 64) -> np.ndarray:
    """Cosine of successive sublayer vectors of ``rs - mean``, in float64, ``chunk`` samples at a time."""
    out = np.empty((rs.shape[0], rs.shape[1] - 1), dtype=np.float64)
    m = None if mean is None else torch.from_numpy(np.asarray(mean, dtype=np.float64))
    for s in range(0, rs.shape[0], chunk):
        a = torch.from_numpy(np.ascontiguousarray(rs[s:s + chunk])).double()
        if m is not None:
            a = a - m  # not in place: for float64 input, .double() shares the caller's memory
        dots = (a[:, :-1] * a[:, 1:]).sum(-1)
        norms = a.norm(dim=-1)
        out[s:s + chunk] = (dots / (norms[:, :-1] * norms[:, 1:])).numpy()
    return out


def cosine_similarity(rs) -> np.ndarray:
    """Cosine similarity between successive residual-stream vectors of each sample (Fig 1E).

    rs: (n_samples, n_sublayers, d_model) -> (n_samples, n_sublayers - 1). A zero vector gives NaN.
    Note: raw cosine is dominated by the residual stream's large mean direction (and its massive units);
    see :func:`centered_cosine_similarity`.
    """
    rs = _check_rs(rs, min_sublayers=2)
    return _cosine(rs)


def centered_cosine_similarity(rs) -> np.ndarray:
    """Cosine similarity after subtracting each sublayer's mean vector over the samples.

    rs: (n_samples, n_sublayers, d_model) -> (n_samples, n_sublayers - 1). Measures whether the
    sample-specific part of the representation keeps its direction from one sublayer to the next.
    """
    rs = _check_rs(rs, min_sublayers=2, min_samples=2)
    return _cosine(rs, mean=rs.mean(axis=0, dtype=np.float64))


def paired_cosine(a, b) -> np.ndarray:
    """Cosine between matching vectors of two captures of the same texts (e.g. two tokenisations).

    a, b: (n_samples, n_sublayers, d_model) -> (n_samples, n_sublayers), in float64.
    """
    a, b = _check_rs(a), _check_rs(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    ta, tb = torch.from_numpy(np.ascontiguousarray(a)).double(), torch.from_numpy(np.ascontiguousarray(b)).double()
    return ((ta * tb).sum(-1) / (ta.norm(dim=-1) * tb.norm(dim=-1))).numpy()


def velocity(rs, chunk: int = 64) -> np.ndarray:
    """Speed of the residual stream, ``||h_{t+1} - h_t||_2`` per sample and transition (Fig 1F, 2.4).

    rs: (n_samples, n_sublayers, d_model) -> (n_samples, n_sublayers - 1).
    """
    rs = _check_rs(rs, min_sublayers=2)
    out = np.empty((rs.shape[0], rs.shape[1] - 1), dtype=np.float64)
    for s in range(0, rs.shape[0], chunk):
        a = torch.from_numpy(np.ascontiguousarray(rs[s:s + chunk])).double()
        out[s:s + chunk] = (a[:, 1:] - a[:, :-1]).norm(dim=-1).numpy()
    return out


def turning_angle(traj: np.ndarray) -> np.ndarray:
    """Angle between successive steps of a trajectory, in degrees (0 = straight on, 180 = reversal).

    ``traj: (n_samples, n_sublayers, k)`` (or one trajectory ``(n_sublayers, k)``) ->
    ``(n_samples, n_sublayers - 2)`` (or ``(n_sublayers - 2,)``); entry ``t`` is the angle between the steps
    ``t -> t+1`` and ``t+1 -> t+2``; NaN where a step has zero length. Falling angles = straightening (Fig 3B).
    The step lengths of the same trajectories are :func:`velocity`.
    """
    traj = np.asarray(traj, dtype=np.float64)
    single = traj.ndim == 2
    traj = traj[None] if single else traj
    if traj.ndim != 3 or traj.shape[1] < 3:
        raise ValueError(f"traj must be (n_samples, n_sublayers >= 3, k); got shape {traj.shape}")
    v = np.diff(traj, axis=1)
    a, b = v[:, :-1], v[:, 1:]
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        u, w = a / na, b / nb
    # 2 atan2(|u - w|, |u + w|): accurate near 0 and 180 degrees, unlike arccos of the cosine
    ang = np.degrees(2 * np.arctan2(np.linalg.norm(u - w, axis=-1), np.linalg.norm(u + w, axis=-1)))
    ang = np.where((na[..., 0] > 0) & (nb[..., 0] > 0), ang, np.nan)
    return ang[0] if single else ang


# ----------------------------------------------------------------------------------------------------
# transitions (the rule itself lives in arrays: split_transitions, transition_kind)
# ----------------------------------------------------------------------------------------------------
def median_by_transition(x, axis: int = -1) -> dict[str, np.ndarray]:
    """NaN-median over ``axis`` (units or samples) of a transition-indexed array, split by kind.

    x: (n_transitions, n_units) with axis=-1, or (n_samples, n_transitions) with axis=0.
    -> {"all": (n_transitions,), "within": (ceil(n_t / 2),), "cross": (floor(n_t / 2),)}.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (transitions x units or samples x transitions); got {x.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=axis)
    within, cross = split_transitions(med)
    return {"all": med, "within": within, "cross": cross}


# ----------------------------------------------------------------------------------------------------
# summaries behind the section 3.1 statements
# ----------------------------------------------------------------------------------------------------
def sign_agreement(mean) -> np.ndarray:
    """Fraction of units whose mean activation at each sublayer has the sign it has at the last sublayer.

    mean: (n_sublayers, d_model) from :func:`mean_activations` -> (n_sublayers,) in [0, 1] (last = 1).
    Units that keep their sign over the layers (Fig 1B) push this towards 1; chance is about 0.5.
    """
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 2:
        raise ValueError(f"mean must be (n_sublayers, d_model); got {mean.shape}")
    return (np.sign(mean) == np.sign(mean[-1])).mean(axis=1)


def depth_trend(y) -> float:
    """Spearman rank correlation between ``y: (n,)`` and its index (depth); NaN entries are dropped.
    > 0: y rises with depth, < 0: it falls."""
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(np.flatnonzero(ok), y[ok])[0])


def within_above_cross(values) -> float:
    """Fraction of layers whose within-layer value (transition 2l) exceeds its cross-layer value (2l+1).

    values: (n_transitions,) per-transition summary (e.g. a median over units or samples).
    """
    within, cross = split_transitions(np.asarray(values, dtype=np.float64))
    k = min(within.size, cross.size)
    if k == 0:
        raise ValueError("need at least 2 transitions to compare within- and cross-layer values")
    return float(np.mean(within[:k] > cross[:k]))


def steepest_segment(y, n_segments: int = 3) -> int:
    """Which of ``n_segments`` equal stretches of ``y: (n,)`` has the largest mean increase per step
    (0 = first, n_segments - 1 = last). Used for 'steepest acceleration in the last third' (Fig 1F)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size < 2 * n_segments:
        raise ValueError(f"need at least {2 * n_segments} values for {n_segments} segments; got {y.size}")
    steps = np.diff(y)
    parts = np.array_split(np.arange(steps.size), n_segments)
    return int(np.nanargmax([np.nanmean(steps[p]) for p in parts]))


def largest_drop(y, stop: int | None = None) -> int:
    """Index t (>= 1) where ``y[t - 1] - y[t]`` is largest, among t < ``stop`` (None: all).

    y: (n_transitions,) e.g. mean MI over units per transition; combine with :func:`transition_kind` to
    ask whether the steepest MI drops land on cross-layer transitions (Fig 1H).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    drops = y[:-1] - y[1:]
    if stop is not None:
        drops = drops[:max(1, stop - 1)]
    return int(np.nanargmax(drops)) + 1


# ----------------------------------------------------------------------------------------------------
# massive activations
# ----------------------------------------------------------------------------------------------------
def unit_magnitude(rs) -> np.ndarray:
    """Largest mean absolute activation of each unit over the sublayers: ``max_l mean_n |h|``.

    rs: (n_samples, n_sublayers, d_model) -> (d_model,).
    """
    rs = _check_rs(rs)
    return np.abs(rs).mean(axis=0, dtype=np.float64).max(axis=0)


def massive_units(rs, k: int | None = None, ratio: float = 20.0) -> np.ndarray:
    """Outlier ("massive activation", Sun et al. 2024) units, largest first.

    rs: (n_samples, n_sublayers, d_model). With ``k``: the k units of largest :func:`unit_magnitude`.
    Without: every unit whose magnitude exceeds ``ratio`` times the median unit's. -> (n_massive,) int.
    """
    mag = unit_magnitude(rs)
    order = np.argsort(-mag, kind="stable")
    if k is not None:
        if not 0 <= k <= mag.size:
            raise ValueError(f"k must be between 0 and d_model={mag.size}; got {k}")
        return order[:k]
    if ratio <= 0:
        raise ValueError(f"ratio must be positive; got {ratio}")
    return order[mag[order] > ratio * np.median(mag)]


def without_units(rs, units) -> np.ndarray:
    """rs with the given units (last axis) removed. rs: (..., d_model) -> (..., d_model - len(units))."""
    rs = np.asarray(rs)
    keep = np.ones(rs.shape[-1], dtype=bool)
    keep[_check_units(units, rs.shape[-1])] = False
    return rs[..., keep]


def subsample_units(d_model: int, n_units: int | None, seed: int = 0) -> np.ndarray:
    """Sorted random subset of ``n_units`` unit indices (all units when ``n_units`` is None or too big)."""
    if n_units is None or n_units >= d_model:
        return np.arange(d_model)
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1 or None; got {n_units}")
    return np.sort(np.random.default_rng(seed).choice(d_model, size=n_units, replace=False))


# ----------------------------------------------------------------------------------------------------
# mutual information: Gaussian KDE (the paper's estimator)
# ----------------------------------------------------------------------------------------------------
def _rowsum_eager(z: torch.Tensor) -> torch.Tensor:
    """z: (B, N, d) float32 -> (B, N): sum_j exp(-|z_i - z_j|^2 / 2)."""
    d = z[:, :, None, :] - z[:, None, :, :]
    return d.square_().sum(-1).mul_(-0.5).exp_().sum(-1)


def _rowsum_fused_1d(a: torch.Tensor) -> torch.Tensor:
    # written so that inductor fuses difference, square, exp and the sum into one loop (no B x N x N)
    da = a[:, :, None] - a[:, None, :]
    return torch.exp(-0.5 * (da * da)).sum(-1)


def _rowsum_fused_2d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    da = a[:, :, None] - a[:, None, :]
    db = b[:, :, None] - b[:, None, :]
    return torch.exp(-0.5 * (da * da + db * db)).sum(-1)


_COMPILED: dict[int | str, Callable | None] = {}


def _compiled_rowsum(d: int) -> Callable | None:
    """The fused kernel for d = 1 or 2 coordinates, or None when compilation is off or unavailable."""
    if os.environ.get(NO_COMPILE_ENV, "") not in ("", "0"):
        return None
    if d not in _COMPILED:
        try:
            _COMPILED[d] = torch.compile(_rowsum_fused_1d if d == 1 else _rowsum_fused_2d, dynamic=False)
        except Exception as exc:  # pragma: no cover - depends on the platform
            warnings.warn(f"torch.compile unavailable ({exc}); KDE mutual information runs eagerly")
            _COMPILED[d] = None
    return _COMPILED[d]


def _gauss_rowsum(z: torch.Tensor, compile: bool | None = None, mem_bytes: int = 256 * 2**20
                  ) -> torch.Tensor:
    """Gaussian kernel row sums for a batch of point clouds.

    z: (B, N, d) float32 whitened and bandwidth-scaled points, d in (1, 2) -> (B, N) float32,
    ``S[b, i] = sum_j exp(-|z[b, i] - z[b, j]|^2 / 2)`` (self term included, as scipy's KDE).
    compile: use the fused ``torch.compile`` kernel (None: when the work is large, > 5e8 kernel terms).
    """
    B, N, d = z.shape
    fn = None
    if d in (1, 2) and (compile or (compile is None and B * N * N > 5e8)):
        fn = _compiled_rowsum(d)
    out = torch.empty(B, N, dtype=torch.float32)
    if fn is not None:
        coords = [z[..., c].contiguous() for c in range(d)]
        chunk = min(B, 64)
        for s in range(0, B, chunk):
            blk = [c[s:s + chunk] for c in coords]
            n_blk = blk[0].shape[0]
            if n_blk < chunk:  # pad to one fixed shape: no recompilation for the last chunk
                blk = [torch.cat([c, c.new_zeros(chunk - n_blk, N)]) for c in blk]
            try:
                out[s:s + n_blk] = fn(*blk)[:n_blk]
            except Exception as exc:  # pragma: no cover - compiler missing at run time
                warnings.warn(f"compiled KDE kernel failed ({exc}); falling back to eager torch")
                _COMPILED[d] = None
                return _gauss_rowsum(z, compile=False, mem_bytes=mem_bytes)
        return out
    chunk = max(1, int(mem_bytes // (N * N * 4 * max(d, 1))))
    for s in range(0, B, chunk):
        out[s:s + chunk] = _rowsum_eager(z[s:s + chunk])
    return out


def _kde_log_density_1d(v: torch.Tensor, compile: bool | None = None) -> torch.Tensor:
    """Log of scipy's ``gaussian_kde(v_b)(v_b)`` (+ KDE_EPS) for every row: v (B, N) float64 -> (B, N).

    Bandwidth: Scott's factor n^(-1/5) times the unbiased sample standard deviation. Constant rows: NaN.
    """
    n = v.shape[-1]
    f = n ** (-1.0 / 5.0)
    sd = v.std(dim=-1, correction=1, keepdim=True)
    sd = torch.where(sd > 0, sd, torch.full_like(sd, float("nan")))
    z = ((v - v.mean(dim=-1, keepdim=True)) / (sd * f)).float()
    s = _gauss_rowsum(torch.nan_to_num(z)[..., None], compile=compile).double()
    dens = s / (n * math.sqrt(2 * math.pi) * f * sd)
    return torch.log(dens + KDE_EPS)


def _kde_log_density_2d(x: torch.Tensor, y: torch.Tensor, compile: bool | None = None) -> torch.Tensor:
    """Log of scipy's 2-D ``gaussian_kde([x_b, y_b])`` at its own points (+ KDE_EPS).

    x, y: (B, N) float64 -> (B, N). Bandwidth: Scott's factor n^(-1/6) times the full unbiased 2x2 data
    covariance. Points are whitened with its Cholesky factor. Singular covariance: NaN.
    """
    n = x.shape[-1]
    f = n ** (-1.0 / 6.0)
    xc = x - x.mean(dim=-1, keepdim=True)
    yc = y - y.mean(dim=-1, keepdim=True)
    vx = (xc * xc).sum(-1, keepdim=True) / (n - 1)
    vy = (yc * yc).sum(-1, keepdim=True) / (n - 1)
    cxy = (xc * yc).sum(-1, keepdim=True) / (n - 1)
    nan = torch.full_like(vx, float("nan"))
    l11 = torch.where(vx > 0, vx.sqrt(), nan)
    l21 = cxy / l11
    r22 = vy - l21 * l21
    l22 = torch.where(r22 > 1e-12 * vy, r22.clamp_min(0).sqrt(), nan)
    a = xc / l11
    b = (yc - l21 * a) / l22
    z = torch.stack([a, b], dim=-1).div_(f).float()
    s = _gauss_rowsum(torch.nan_to_num(z), compile=compile).double()
    dens = s / (n * 2 * math.pi * f * f * l11 * l22)
    return torch.log(dens + KDE_EPS)


def _kde_mi_from_logs(lxy: torch.Tensor, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    return (lxy - lx - ly).mean(-1)


# ----------------------------------------------------------------------------------------------------
# mutual information: KSG and Gaussian copula
# ----------------------------------------------------------------------------------------------------
def _count_within(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """x: (B, N), r: (B, N) -> (B, N) int: #{j : |x_i - x_j| < r_i} (the point itself included)."""
    return ((x[:, :, None] - x[:, None, :]).abs() < r[:, :, None]).sum(-1)


def _compiled_count() -> Callable | None:
    if os.environ.get(NO_COMPILE_ENV, "") not in ("", "0"):
        return None
    if "count" not in _COMPILED:
        try:
            _COMPILED["count"] = torch.compile(_count_within, dynamic=False)
        except Exception as exc:  # pragma: no cover - depends on the platform
            warnings.warn(f"torch.compile unavailable ({exc}); KSG runs eagerly")
            _COMPILED["count"] = None
    return _COMPILED["count"]


def _ksg(x: torch.Tensor, y: torch.Tensor, k: int = 3, compile: bool | None = None,
         mem_bytes: int = 32 * 2**20) -> torch.Tensor:
    """KSG (Kraskov et al. 2004, algorithm 1) MI in nats. x, y: (B, N) float64 -> (B,).

    x and y are scaled to unit standard deviation; distances in ``KSG_DTYPE`` (float64 by default; the
    radius and the marginal counts come from the same differences, so they are consistent).
    The marginal counts run as a fused ``torch.compile`` kernel when the work is large (or compile=True).
    """
    B, n = x.shape
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n_samples); got k={k} with n_samples={n}")
    sx = x.std(dim=-1, correction=0, keepdim=True)
    sy = y.std(dim=-1, correction=0, keepdim=True)
    bad = ~((sx > 0) & (sy > 0) & torch.isfinite(x).all(-1, keepdim=True)
            & torch.isfinite(y).all(-1, keepdim=True))[:, 0]
    x = torch.nan_to_num(x / torch.where(sx > 0, sx, torch.ones_like(sx))).to(KSG_DTYPE)
    y = torch.nan_to_num(y / torch.where(sy > 0, sy, torch.ones_like(sy))).to(KSG_DTYPE)
    count = None
    if compile or (compile is None and B * n * n > 2e8):
        count = _compiled_count()
    out = torch.empty(B, dtype=torch.float64)
    chunk = max(1, int(mem_bytes // (n * n * 8 * 2)))
    const = special.digamma(n) + special.digamma(k)
    for s in range(0, B, chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        dz = torch.maximum((xb[:, :, None] - xb[:, None, :]).abs_(), (yb[:, :, None] - yb[:, None, :]).abs_())
        # the point itself is at distance 0, so the k-th neighbour is the (k+1)-th smallest
        radius = torch.topk(dz, k + 1, dim=-1, largest=False).values[..., k].contiguous()
        del dz
        fn = count
        if fn is not None and xb.shape[0] < chunk:  # pad: one compiled shape for every chunk
            pad = chunk - xb.shape[0]
            nx = fn(torch.cat([xb, xb.new_zeros(pad, n)]), torch.cat([radius, radius.new_ones(pad, n)]))
            ny = fn(torch.cat([yb, yb.new_zeros(pad, n)]), torch.cat([radius, radius.new_ones(pad, n)]))
            nx, ny = nx[:xb.shape[0]], ny[:xb.shape[0]]
        else:
            fn = fn or _count_within
            nx, ny = fn(xb, radius), fn(yb, radius)  # n_x + 1 and n_y + 1
        out[s:s + chunk] = const - torch.special.digamma(nx.double()).mean(-1) \
            - torch.special.digamma(ny.double()).mean(-1)
    return out.masked_fill(bad, float("nan"))


def _copnorm(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """Copula normalisation (Ince et al. 2017): standard-normal quantiles of the ranks / (n + 1)."""
    n = v.shape[axis]
    return special.ndtri(stats.rankdata(v, axis=axis) / (n + 1))


def _gcmi(x: np.ndarray, y: np.ndarray, cx: np.ndarray | None = None, cy: np.ndarray | None = None
          ) -> np.ndarray:
    """Bias-corrected Gaussian-copula MI in nats (Ince et al. 2017, ``gcmi_cc`` for 1-D x and y).

    x, y: (B, N) -> (B,); cx, cy: their copula-normalised versions if already computed. Equals
    ``-1/2 ln(1 - rho^2)`` of the copula-normalised data plus the analytic bias correction
    ``(psi((N - 2) / 2) - psi((N - 1) / 2)) / 2``. Rows constant in x or y give NaN.
    """
    n = x.shape[-1]
    cx = _copnorm(x) if cx is None else cx
    cy = _copnorm(y) if cy is None else cy
    cx = cx - cx.mean(-1, keepdims=True)
    cy = cy - cy.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (cx * cy).sum(-1) / np.sqrt((cx * cx).sum(-1) * (cy * cy).sum(-1))
        const = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0) \
            | ~np.isfinite(x).all(-1) | ~np.isfinite(y).all(-1)  # NaN like kde and ksg, not a rank-based value
        rho = np.where(const, np.nan, rho)
        mi = -0.5 * np.log1p(-np.minimum(rho * rho, 1.0))
    return mi + 0.5 * (special.digamma((n - 2) / 2.0) - special.digamma((n - 1) / 2.0))


def _check_method(method: str) -> str:
    if method not in MI_METHODS:
        raise ValueError(f"unknown mutual-information method {method!r}; use one of {MI_METHODS}")
    return method


def mutual_information_pairs(x, y, method: str = "kde", *, k: int = 3, chunk: int = 256,
                             compile: bool | None = None) -> np.ndarray:
    """Mutual information (nats) between ``x[:, u]`` and ``y[:, u]`` for every unit u.

    x, y: (n_samples, n_units) -> (n_units,) float64.

    ``method="kde"`` (the paper's, section 2.5): for each unit, 1-D Gaussian KDEs of x and y and a 2-D KDE
    of (x, y), bandwidths exactly as ``scipy.stats.gaussian_kde`` chooses them (Scott's factor
    ``n^(-1/(d+4))`` times the unbiased data covariance, the full 2x2 covariance in 2-D), evaluated at the
    samples themselves (a resubstitution estimate: each point's own kernel is included), then
    ``MI = mean_i[log(p(x_i, y_i) + 1e-10) - log(p(x_i) + 1e-10) - log(p(y_i) + 1e-10)]``. The reference
    is, per unit, ``kxy = gaussian_kde(np.vstack([x, y])); kx = gaussian_kde(x); ky = gaussian_kde(y);
    np.mean(np.log(kxy(np.vstack([x, y])) + 1e-10) - np.log(kx(x) + 1e-10) - np.log(ky(y) + 1e-10))``.
    Kernel sums run batched in float32 on whitened data (a fused ``torch.compile`` kernel for large
    work; set ``$TRANSFORMER_DYNAMICS_NO_COMPILE=1`` to disable), densities and logs in float64.
    The 1e-10 makes this estimate depend on the activation scale (as in the paper).

    ``method="ksg"``: Kraskov k-NN estimator (algorithm 1, Chebyshev norm, x and y each scaled to unit
    standard deviation), the same computation as scikit-learn's ``mutual_info_regression(n_neighbors=k)``
    but without its 1e-10 jitter and without clipping negative values to 0 (identical on continuous
    data without near-ties).

    ``method="gcmi"``: bias-corrected Gaussian-copula MI (Ince et al. 2017).

    Units constant in x or y (or, for "kde", with perfectly collinear x and y) give NaN.
    """
    _check_method(method)
    x, y = _check_pairs(x, y)
    xt = torch.from_numpy(np.ascontiguousarray(x.T))
    yt = torch.from_numpy(np.ascontiguousarray(y.T))
    if method == "gcmi":
        return _gcmi(x.T, y.T)
    out = np.empty(x.shape[1], dtype=np.float64)
    for s in range(0, x.shape[1], chunk):
        xb, yb = xt[s:s + chunk], yt[s:s + chunk]
        if method == "ksg":
            out[s:s + chunk] = _ksg(xb, yb, k=k, compile=compile).numpy()
        else:
            lx = _kde_log_density_1d(xb, compile)
            ly = _kde_log_density_1d(yb, compile)
            lxy = _kde_log_density_2d(xb, yb, compile)
            out[s:s + chunk] = _kde_mi_from_logs(lxy, lx, ly).numpy()
    return out


def mutual_information(rs, method: str = "kde", *, units=None, k: int = 3, chunk: int = 64,
                       compile: bool | None = None, progress: bool = False) -> np.ndarray:
    """Mutual information (nats) of each unit between successive sublayers t and t + 1 (Fig 1G, 1H).

    rs: (n_samples, n_sublayers, d_model) -> (n_sublayers - 1, n_units) float64, where the units are
    ``units`` (indices; None = all d_model). ``method``: "kde" (the paper's), "ksg" or "gcmi"; see
    :func:`mutual_information_pairs` for each estimator. Work runs over chunks of ``chunk`` units, all
    sublayer pairs at once; for "kde" each sublayer's 1-D density is computed once and shared by the two
    transitions that touch it.
    """
    _check_method(method)
    rs = _check_rs(rs, min_sublayers=2, min_samples=4)
    n, L, D = rs.shape
    units = np.arange(D) if units is None else _check_units(units, D)
    out = np.empty((L - 1, units.size), dtype=np.float64)
    starts = range(0, units.size, chunk)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"MI ({method})", unit="chunk")
    for s in starts:
        idx = units[s:s + chunk]
        U = idx.size
        v = torch.from_numpy(rs[:, :, idx].astype(np.float64)).permute(1, 2, 0).contiguous()  # (L, U, n)
        x, y = v[:-1].reshape(-1, n), v[1:].reshape(-1, n)
        if method == "kde":
            lv = _kde_log_density_1d(v.reshape(-1, n), compile).reshape(L, U, n)
            lxy = _kde_log_density_2d(x, y, compile).reshape(L - 1, U, n)
            mi = _kde_mi_from_logs(lxy, lv[:-1], lv[1:])
        elif method == "ksg":
            mi = _ksg(x, y, k=k, compile=compile).reshape(L - 1, U)
        else:
            vn = v.numpy()
            cv = _copnorm(vn)  # each sublayer ranked once, shared by its two transitions
            mi = torch.from_numpy(_gcmi(vn[:-1], vn[1:], cv[:-1], cv[1:]))
        out[:, s:s + chunk] = mi.numpy()
    return out
