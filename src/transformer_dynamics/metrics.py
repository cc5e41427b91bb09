"""Figure 1 statistics of the residual stream: means, correlations, cosine similarity, velocity and massive units
(paper sections 2.2–2.4, results 3.1); the mutual information of Fig 1G/1H is :mod:`transformer_dynamics.mutual_info`.

Every function takes ``rs: (n_samples, n_sublayers, d_model)`` unless it says otherwise. Sublayer ``2l``
is the residual stream before layer ``l``'s attention, ``2l + 1`` before its MLP. Transition ``t`` goes
from sublayer ``t`` to ``t + 1``; even ``t`` (attn -> mlp of the same layer) is *within-layer*, odd ``t``
(mlp -> next layer's attn) is *cross-layer* (:func:`transformer_dynamics.arrays.split_transitions`).

Units whose activation is constant over the samples have no correlation; they give NaN (never an exception).
NaN in ``rs`` gives NaN where it enters (a unit's mean, a text's cosine), never a silent number. Use ``np.nan*``
reductions.

Every statistic of ``rs`` also takes a cache entry (:class:`cache.ActivationStore`, e.g. from
``pipeline.residual_stream_store``): each reads ``rs`` through :func:`transformer_dynamics.arrays.chunks`, one
code path for an array (one chunk) and an entry (its shards: memory flat in N), so the values agree up to the
order of float64 sums. """

from __future__ import annotations

import warnings

import numpy as np
import torch

from .arrays import check_rs as _check_rs
from .arrays import check_stream, chunks, nanmedian, split_transitions
from .arrays import check_units as _check_units
from .validation import check_int, check_number, check_positive_int, check_seed

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
    "median_by_transition",
    "mean_by_transition",
    "thirds",
    "first_last_third",
    "unit_magnitude",
    "massive_units",
    "without_units",
    "subsample_units",
]



# ----------------------------------------------------------------------------------------------------
# means (Fig 1B)
# ----------------------------------------------------------------------------------------------------
def _float64(chunk: np.ndarray) -> torch.Tensor:
    """A chunk as a float64 tensor (sharing the chunk's memory when it is float64 already; a read-only memory map
    is copied first, never shared with torch)."""
    chunk = np.ascontiguousarray(chunk)
    return torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy()).double()


def _sample_sum(rs, f=lambda c: c) -> np.ndarray:
    """``sum over samples of f(chunk)`` in float64, chunk by chunk: ``f`` maps ``(m, n_sublayers, d_model)`` to
    ``(m, ...)``."""
    total = None
    for _, c in chunks(rs):
        part = f(c).sum(axis=0, dtype=np.float64)
        total = part if total is None else total + part
    return total


def mean_activations(rs) -> np.ndarray:
    """Mean activation of each unit at each sublayer over the samples (Fig 1B, section 2.2).

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_sublayers, d_model), float64.
    """
    rs = check_stream(rs)
    return _sample_sum(rs) / rs.shape[0]


def unit_order(rs) -> np.ndarray:
    """Order of the units by their mean activation at the last sublayer, ``argsort(mean[-1])`` (Fig 1B).

    rs: (n_samples, n_sublayers, d_model) -> (d_model,) int indices, ascending.
    """
    rs = check_stream(rs)
    last = _sample_sum(rs, lambda c: c[:, -1]) / rs.shape[0]
    if not np.isfinite(last).all():
        raise ValueError(f"rs has NaN or inf at the last sublayer ({int((~np.isfinite(last)).sum())} of {last.size} "
                         "units): their order is undefined; drop or impute those values first")
    return np.argsort(last, kind="stable")


# ----------------------------------------------------------------------------------------------------
# correlations (Fig 1C, 1D)
# ----------------------------------------------------------------------------------------------------
#: Float64 work per chunk of samples in the streamed sums (bounds the temporaries; not the result).
WORK_BYTES = 2**27


def _work_samples(rs, max_samples: int | None) -> int:
    """Samples per chunk: ``max_samples``, else as many as fill :data:`WORK_BYTES` in float64."""
    _, L, D = rs.shape
    return max(1, int(WORK_BYTES // (L * D * 8))) if max_samples is None else max_samples


def successive_correlation(rs, max_samples: int | None = None) -> np.ndarray:
    """Pearson r of every unit between sublayer ``t`` and ``t + 1`` across samples (Fig 1C, section 2.3).

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_sublayers - 1, d_model). A unit that is
    constant over the samples at either sublayer gives NaN. One pass of float64 sums over chunks of
    ``max_samples`` samples (None: as many as fill :data:`WORK_BYTES`; see :func:`_correlation_sums`).
    """
    return _correlation(rs, max_samples, successive=True)


def pair_indices(n_sublayers: int) -> tuple[np.ndarray, np.ndarray]:
    """Sublayer index pairs ``(l, m)`` with ``l < m`` in the order :func:`pairwise_correlation` uses.

    -> (l: (n_pairs,), m: (n_pairs,)) with n_pairs = n_sublayers (n_sublayers - 1) / 2.
    """
    return np.triu_indices(int(n_sublayers), k=1)


def pairwise_correlation(rs, max_samples: int | None = None) -> np.ndarray:
    """Pearson r of every unit between every pair of sublayers ``l < m`` (the per-unit distribution
    :math:`\\mathcal{C}^i` of section 2.3).

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_pairs, d_model), pairs ordered as
    :func:`pair_indices`. Constant units give NaN. One batched matrix product per chunk of ``max_samples``
    samples (as :func:`successive_correlation`).
    """
    return _correlation(rs, max_samples, successive=False)


def _correlation(rs, max_samples: int | None, successive: bool) -> np.ndarray:
    """Pearson r from one pass of float64 sums over chunks of samples, each shifted by the first chunk's mean
    (no cancellation for units with a large mean): successive (n_sublayers - 1, d_model) or pairwise
    (n_pairs, d_model)."""
    max_samples = check_positive_int(max_samples, "max_samples", none=True)
    rs = check_stream(rs, min_sublayers=2, min_samples=2)
    n, L, D = rs.shape
    shift = None
    s1, s2 = np.zeros((L, D)), np.zeros((L, D))
    sxy = np.zeros((L - 1, D)) if successive else torch.zeros((D, L, L), dtype=torch.float64)
    for _, chunk in chunks(rs, _work_samples(rs, max_samples)):
        x = np.array(chunk, dtype=np.float64)
        if shift is None:
            shift = x.mean(0)
        x -= shift
        s1 += x.sum(0)
        s2 += np.einsum("ntu,ntu->tu", x, x)
        if successive:
            sxy += np.einsum("ntu,ntu->tu", x[:, :-1], x[:, 1:])
        else:
            xu = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 1, 0)))  # (D, L, m): bmm wants it contiguous
            sxy += torch.bmm(xu, xu.transpose(1, 2))
    mean = s1 / n
    var = s2 / n - mean * mean
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.where(var > 0, np.sqrt(np.maximum(var, 0)), np.nan)
        if successive:
            return (sxy / n - mean[:-1] * mean[1:]) / (sd[:-1] * sd[1:])
        li, mi = pair_indices(L)
        cov = sxy.numpy()[:, li, mi].T / n - mean[li] * mean[mi]  # (n_pairs, D)
        return cov / (sd[li] * sd[mi])


def correlation_histogram(r, bins: int = 20, range: tuple[float, float] = (0.0, 1.0)
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit density histogram of correlations (Fig 1D).

    r: (n_values, n_units), e.g. :func:`successive_correlation` or :func:`pairwise_correlation` output.
    Values outside ``range`` and NaN are left out, as ``np.histogram`` does.
    -> density: (n_units, bins) (each row integrates to 1 over the values in range; NaN if none),
    edges: (bins + 1,).
    """
    bins = check_positive_int(bins, "bins")
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2:
        raise ValueError(f"r must be (n_values, n_units); got shape {r.shape}")
    lo, hi = float(range[0]), float(range[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"range must be (low, high) with finite low < high; got {range!r}")
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
def _cosine(rs, mean: np.ndarray | None = None, chunk: int = 64) -> np.ndarray:
    """Cosine of successive sublayer vectors of ``rs - mean`` (an array or a cache entry, checked), in float64,
    ``chunk`` samples at a time: (n_samples, n_sublayers - 1)."""
    out = np.empty((rs.shape[0], rs.shape[1] - 1), dtype=np.float64)
    m = None if mean is None else torch.from_numpy(np.asarray(mean, dtype=np.float64))
    for s, c in chunks(rs, chunk):
        a = _float64(c)
        if m is not None:
            a = a - m  # not in place: a float64 chunk shares the caller's memory
        dots = (a[:, :-1] * a[:, 1:]).sum(-1)
        norms = a.norm(dim=-1)
        out[s:s + len(c)] = (dots / (norms[:, :-1] * norms[:, 1:])).numpy()
    return out


def cosine_similarity(rs) -> np.ndarray:
    """Cosine similarity between successive residual-stream vectors of each sample (Fig 1E).

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_samples, n_sublayers - 1). A zero vector gives
    NaN. Note: raw cosine is dominated by the residual stream's large mean direction (and its massive units);
    see :func:`centered_cosine_similarity`.
    """
    return _cosine(check_stream(rs, min_sublayers=2))


def centered_cosine_similarity(rs) -> np.ndarray:
    """Cosine similarity after subtracting each sublayer's mean vector over the samples.

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_samples, n_sublayers - 1). Measures whether the
    sample-specific part of the representation keeps its direction from one sublayer to the next.
    """
    rs = check_stream(rs, min_sublayers=2, min_samples=2)
    return _cosine(rs, mean=mean_activations(rs))  # two passes: the mean, then the cosines


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

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_samples, n_sublayers - 1); float64 work on
    ``chunk`` samples at a time.
    """
    chunk = check_positive_int(chunk, "chunk")
    rs = check_stream(rs, min_sublayers=2)
    out = np.empty((rs.shape[0], rs.shape[1] - 1), dtype=np.float64)
    for s, c in chunks(rs, chunk):
        a = _float64(c)
        out[s:s + len(c)] = (a[:, 1:] - a[:, :-1]).norm(dim=-1).numpy()
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
    med = nanmedian(x, axis=axis)
    within, cross = split_transitions(med)
    return {"all": med, "within": within, "cross": cross}


def mean_by_transition(x, axis: int = -1) -> dict[str, np.ndarray]:
    """NaN-mean over ``axis`` (units or samples) of a transition-indexed array, split by kind; NaN (no
    warning) where every value of a transition is NaN.

    x: (n_transitions, n_units) with axis=-1, or (n_samples, n_transitions) with axis=0.
    -> {"all": (n_transitions,), "within": (ceil(n_t / 2),), "cross": (floor(n_t / 2),)}.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (transitions x units or samples x transitions); got {x.shape}")
    # the averaged axis contiguous: each transition's sum is numpy's pairwise sum over its own values, the
    # same whatever the memory layout of x
    x = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=-1)
    within, cross = split_transitions(mean)
    return {"all": mean, "within": within, "cross": cross}


# ----------------------------------------------------------------------------------------------------
# thirds of the depth
# ----------------------------------------------------------------------------------------------------
def thirds(n: int) -> list[np.ndarray]:
    """Positions ``0 .. n - 1`` in three consecutive parts of near-equal length (the first parts one longer
    when ``n`` is not a multiple of 3): ``[(n0,), (n1,), (n2,)]`` int arrays. Thirds of the sublayers, not
    of the layers (for thirds of depth by layer see ``dynamics.depth_thirds``)."""
    n = check_int(n, "n (positions to split in thirds)", low=3)
    return np.array_split(np.arange(n), 3)


def first_last_third(y, stat: str = "mean", *, n: int | None = None, trim: int = 0) -> list[float]:
    """``[stat over the first third, stat over the last third]`` of ``y: (k,)``, NaN ignored.

    stat: ``"mean"`` or ``"median"``; the thirds are :func:`thirds` of ``n`` positions (default ``len(y)``),
    each without its last ``trim`` positions (chapter 4 reads the turning angles ``(n_sublayers - 2,)`` of a
    trajectory on the thirds of its ``n_sublayers`` with ``trim=2``). A third without a finite value gives
    NaN."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median'; got {stat!r}")
    y = np.asarray(y, dtype=np.float64).ravel()
    parts = thirds(y.size if n is None else n)
    trim = check_int(trim, "trim", low=0)
    if trim < 0 or trim >= min(p.size for p in parts):
        raise ValueError(f"trim must be in [0, {min(p.size for p in parts)}) for thirds of "
                         f"{sum(p.size for p in parts)} positions; got {trim}")
    if parts[2][-1 - trim] >= y.size:
        raise ValueError(f"y has {y.size} values; the last third (trim={trim}) needs {parts[2][-1 - trim] + 1}")
    f = np.nanmean if stat == "mean" else np.nanmedian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(f(y[p[:p.size - trim]])) for p in (parts[0], parts[2])]


# ----------------------------------------------------------------------------------------------------
# massive activations
# ----------------------------------------------------------------------------------------------------
def unit_magnitude(rs) -> np.ndarray:
    """Largest mean absolute activation of each unit over the sublayers: ``max_l mean_n |h|``.

    rs: (n_samples, n_sublayers, d_model) -> (d_model,).
    """
    rs = check_stream(rs)
    return (_sample_sum(rs, np.abs) / rs.shape[0]).max(axis=0)


def massive_units(rs, k: int | None = None, ratio: float = 20.0) -> np.ndarray:
    """Outlier ("massive activation", Sun et al. 2024) units, largest first.

    rs: (n_samples, n_sublayers, d_model). With ``k``: the k units of largest :func:`unit_magnitude`.
    Without: every unit whose magnitude exceeds ``ratio`` times the median unit's. -> (n_massive,) int.
    """
    k = check_int(k, "k", low=0, none=True)
    ratio = check_number(ratio, "ratio", low=0, low_open=True)
    mag = unit_magnitude(rs)
    if not np.isfinite(mag).all():
        raise ValueError(f"rs has NaN or inf in units {np.flatnonzero(~np.isfinite(mag))[:5].tolist()}: their "
                         "magnitude, and so the median unit's, is undefined; drop or impute those values first")
    order = np.argsort(-mag, kind="stable")
    if k is not None:
        check_int(k, "k", low=0, high=mag.size)
        return order[:k]
    return order[mag[order] > ratio * np.median(mag)]


def without_units(rs, units) -> np.ndarray:
    """rs with the given units (last axis) removed. rs: (..., d_model) -> (..., d_model - len(units))."""
    rs = np.asarray(rs)
    keep = np.ones(rs.shape[-1], dtype=bool)
    keep[_check_units(units, rs.shape[-1])] = False
    return rs[..., keep]


def subsample_units(d_model: int, n_units: int | None, seed: int = 0) -> np.ndarray:
    """Sorted random subset of ``n_units`` unit indices (all units when ``n_units`` is None or too big)."""
    d_model = check_positive_int(d_model, "d_model")
    n_units = check_positive_int(n_units, "n_units", none=True)
    seed = check_seed(seed)
    if n_units is None or n_units >= d_model:
        return np.arange(d_model)
    return np.sort(np.random.default_rng(seed).choice(d_model, size=n_units, replace=False))
