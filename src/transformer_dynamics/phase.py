"""Figure 2: phase portraits of single residual-stream units and their rotation counts (paper §2.6, §3.2).

A unit's trajectory over sublayers ``a_0 … a_{n-1}`` is drawn in the plane of its activation and the
gradient of that activation over sublayers (the *activation-gradient* phase space). The gradient is
``numpy.gradient`` along the sublayer axis: central differences ``(a_{l+1} - a_{l-1}) / 2`` inside,
one-sided first differences at the two ends (``edge_order=1``, unit spacing). Following the methods, the
portrait is centred at its initial point::

    x_l = a_l - a_0,    y_l = g_l - g_0,    g = gradient(a)

The rotation count is the accumulated turning of the tangent vector of this polyline::

    theta_l = atan2(y_{l+1} - y_l, x_{l+1} - x_l)          l = 0 … n-2   (tangent angles)
    dtheta_l = wrap(theta_{l+1} - theta_l) in (-pi, pi]      l = 0 … n-3
    R = sum_l dtheta_l / (2 pi)

``R`` is **signed**: positive for counter-clockwise turning. Note that in activation-gradient space an
oscillation ``a_l = cos(w l)`` runs **clockwise** (where the gradient is positive the activation grows), so
smooth oscillations give *negative* counts; reversing the sublayer order does not change the sign (it
reflects the portrait and reverses its direction), only reflecting the portrait (swapping the roles of the
axes, or negating one of them) does. The paper reports a positive mean (10.74) without saying which
orientation it counts as positive; :func:`rotation_summary` therefore reports the mean of ``R`` and of
``|R|``. The centring by the initial point is a translation and does not change ``R``.

Zero-length tangent steps (two consecutive identical portrait points) have no direction; we skip them:
the angle change is measured between consecutive *defined* tangents (an undefined tangent takes the last
defined angle, or the first defined one if none came before). A trajectory without any defined tangent
has ``R = 0``. A tangent that reverses exactly (``dtheta = ±pi``) counts as ``+pi`` (the wrap interval is
``(-pi, pi]``).

The null (:func:`shuffle_null`) permutes each unit's sublayer order independently per unit and per
shuffle (the paper: "randomly permuting the layer ordering 1000 times for each unit"), then recounts.
Two versions: ``what="sublayers"`` (default, literal) permutes the activations and recomputes the gradient;
``what="points"`` permutes the portrait's points ``(a_l, g_l)`` with the gradient of the original order.
They differ a lot: the activation-gradient plane favours clockwise turning even for noise (for i.i.d.
activations ``E[g_l (a_{l+1} - a_l)] = var/2 > 0``), so the ``"sublayers"`` null of 64 i.i.d. values
has mean ``R`` near -15, not 0; the ``"points"`` null is symmetric (a permutation and its reverse are
equally likely and give opposite counts), so its mean is 0 -- the paper's "~0" for its control fits
this version. Random permutations are argsorts of uniform random keys drawn in fixed blocks, so results
depend only on ``seed`` (not on threads or memory). numpy does the work (its SIMD ``arctan2`` and
small-row ``argsort`` beat torch's on the CPU); blocks run on a thread pool.

Two readings of "a unit's trajectory" (the paper does not say which it used):

- ``mode="mean"``: the unit's trajectory is its mean over samples, ``rs.mean(0)[:, i]``; one count per unit.
- ``mode="per_sample"``: every sample has its own trajectory and count; a unit's value is the mean of its
  samples' counts (:func:`rotations_per_sample` gives the full ``(n_samples, d_model)`` array). In the
  null, one permutation per unit and shuffle is applied to all samples of that unit.

Everything is vectorised over leading axes; inputs may be numpy arrays or torch tensors (the output has
the input's kind; numpy in, numpy out).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .arrays import check_stream, chunks, read
from .validation import check_allocation, check_int, check_number, check_positive_int, check_seed

__all__ = [
    "phase_portrait",
    "count_rotations",
    "shuffle_null",
    "rotations_per_sample",
    "rotations_per_unit",
    "null_per_unit",
    "empirical_p_values",
    "exceeds_null",
    "null_band",
    "rotation_summary",
    "reference_counts",
]

MODES = ("mean", "per_sample")
NULLS = ("sublayers", "points")
# Fixed block sizes that define the random stream of the null (do not depend on memory): one torch
# generator per block of _SHUFFLE_BLOCK shuffles x _UNIT_BLOCK units, seeded from (seed, block indices).
_SHUFFLE_BLOCK = 16
_UNIT_BLOCK = 4096
# Largest number of array elements one vectorised step works on (bounds memory to a few hundred MB).
_MAX_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------------------------------
# array plumbing (numpy inside; numpy's SIMD arctan2 and small-row argsort beat torch's on the CPU)
# --------------------------------------------------------------------------------------------------
def _as_array(a: Any, name: str = "traj", min_len: int = 3) -> tuple[np.ndarray, bool]:
    """Return ``(float array, was_torch)``; validates a last axis of at least ``min_len`` entries."""
    was_torch = isinstance(a, torch.Tensor)
    if was_torch:
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be a numeric array; got dtype {a.dtype}")
    if a.dtype != np.float64:
        a = a.astype(np.float32, copy=False)
    if a.ndim < 1 or a.shape[-1] < min_len:
        raise ValueError(f"{name} must have shape (..., n_sublayers) with n_sublayers >= {min_len}; "
                         f"got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute those values first")
    if a.dtype == np.float32 and a.size and np.abs(a).max() > np.finfo(np.float32).max / 8:
        a = a.astype(np.float64)  # differences of differences would overflow float32 (counts are scale-free)
    return a, was_torch


def _out(a, as_torch: bool):
    a = np.asarray(a)
    return torch.from_numpy(np.ascontiguousarray(a)) if as_torch else a


def _gradient(a: np.ndarray) -> np.ndarray:
    """``numpy.gradient(a, axis=-1)``: central differences inside, first differences at the ends."""
    return np.gradient(a, axis=-1)


def _ix(axis: int, ndim: int, i) -> tuple:
    """Index ``i`` along ``axis`` (non-negative) of an ``ndim``-array."""
    return (slice(None),) * axis + (i,) + (slice(None),) * (ndim - axis - 1)


def _wrapped_sum(theta: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum_l wrap(theta_{l+1} - theta_l) / 2pi for angles in (-pi, pi]: reduces ``axis``."""
    axis = axis % theta.ndim
    d = np.diff(theta, axis=axis)
    # wrap into (-pi, pi]: the sum telescopes to theta_last - theta_first plus 2pi per wrap
    wraps = np.count_nonzero(d <= -math.pi, axis=axis) - np.count_nonzero(d > math.pi, axis=axis)
    last, first = theta[_ix(axis, theta.ndim, -1)], theta[_ix(axis, theta.ndim, 0)]
    return ((last - first) / (2.0 * math.pi) + wraps).astype(theta.dtype, copy=False)


def _fill_undefined(theta: np.ndarray, undefined: np.ndarray, axis: int = -1) -> np.ndarray:
    """Replace undefined tangent angles by the last defined one (leading ones by the first defined)."""
    theta, undefined = np.moveaxis(theta, axis, -1), np.moveaxis(undefined, axis, -1)
    m = theta.shape[-1]
    idx = np.where(undefined, 0, np.arange(m))
    idx = np.maximum.accumulate(idx, axis=-1)
    first = np.argmax(~undefined, axis=-1)[..., None]
    idx = np.maximum(idx, first)
    return np.moveaxis(np.take_along_axis(theta, idx, axis=-1), -1, axis)


def _rotations_dxdy(dx: np.ndarray, dy: np.ndarray, atol: float, axis: int = -1) -> np.ndarray:
    theta = np.arctan2(dy, dx)
    undefined = (np.abs(dx) <= atol) & (np.abs(dy) <= atol) if atol > 0 else (dx == 0) & (dy == 0)
    if undefined.any():
        theta = _fill_undefined(theta, undefined, axis)
    return _wrapped_sum(theta, axis)


def _rotations_xy(x: np.ndarray, y: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Signed tangent-turning count of the polylines ``(x, y)``: (..., n) -> (...)."""
    return _rotations_dxdy(np.diff(x, axis=-1), np.diff(y, axis=-1), atol)


def _rotations(a: np.ndarray, atol: float = 0.0, axis: int = -1) -> np.ndarray:
    """Rotation count of trajectories along ``axis`` of ``a`` (that axis is reduced). Centring is a
    translation and is skipped.

    Uses dx = diff(a) and, for the central-difference gradient g, diff(g)_l = (dx_{l+1} - dx_{l-1}) / 2
    with dx_{-1} := dx_0 and dx_{n-1} := dx_{n-2} (numpy.gradient's one-sided ends).
    """
    axis = axis % a.ndim
    ix = lambda i: _ix(axis, a.ndim, i)  # noqa: E731
    dx = np.diff(a, axis=axis)
    dy = np.empty_like(dx)
    np.subtract(dx[ix(slice(2, None))], dx[ix(slice(None, -2))], out=dy[ix(slice(1, -1))])
    np.subtract(dx[ix(slice(1, 2))], dx[ix(slice(0, 1))], out=dy[ix(slice(0, 1))])
    np.subtract(dx[ix(slice(-1, None))], dx[ix(slice(-2, -1))], out=dy[ix(slice(-1, None))])
    dy *= 0.5
    return _rotations_dxdy(dx, dy, atol, axis)


# --------------------------------------------------------------------------------------------------
# portraits and counts
# --------------------------------------------------------------------------------------------------
def phase_portrait(traj):
    """Activation-gradient phase portrait, centred at the initial point (paper §2.6).

    traj: (..., n_sublayers) -> ``(x, y)``, each (..., n_sublayers), with ``x_l = a_l - a_0`` and
    ``y_l = g_l - g_0`` where ``g = numpy.gradient(a, axis=-1)`` (central differences).
    """
    a, tt = _as_array(traj, min_len=2)
    g = _gradient(a)
    return _out(a - a[..., :1], tt), _out(g - g[..., :1], tt)


def count_rotations(traj, *, atol: float = 0.0):
    """Signed number of rotations of each trajectory's activation-gradient portrait (paper §2.6).

    traj: (..., n_sublayers), n_sublayers >= 3 -> (...). ``R = sum_l wrap(theta_{l+1} - theta_l) / 2pi``
    with ``theta_l`` the tangent angles; counter-clockwise positive (oscillations run clockwise, so they
    count negative). Tangent steps with both components ``<= atol`` are skipped (module docstring).
    """
    a, tt = _as_array(traj)
    return _out(_rotations(a, atol), tt)


# --------------------------------------------------------------------------------------------------
# the shuffle null
# --------------------------------------------------------------------------------------------------
def _block_rng(seed: int, *indices: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(i) for i in indices]]))


def _null_block(a: np.ndarray, g: np.ndarray | None, s0: int, s1: int, u0: int, u1: int, seed: int,
                atol: float) -> np.ndarray:
    """Counts for shuffles [s0, s1) and units [u0, u1): (s1 - s0, u1 - u0)."""
    U, S, n = a.shape
    rng = _block_rng(seed, s0 // _SHUFFLE_BLOCK, u0 // _UNIT_BLOCK)
    keys = rng.random((_SHUFFLE_BLOCK, u1 - u0, n), dtype=np.float32)[: s1 - s0]
    perm = np.argsort(keys, axis=-1)  # (bs, bu, n): one random permutation per (shuffle, unit)
    out = np.empty((s1 - s0, u1 - u0), dtype=a.dtype)
    step = max(1, _MAX_ELEMENTS // ((s1 - s0) * S * n))  # bound memory: bs * bu' * S * n elements
    for v0 in range(0, u1 - u0, step):
        v1 = min(v0 + step, u1 - u0)
        p = perm[:, v0:v1, None, :]  # (bs, bu', 1, n), broadcast over the S samples of a unit
        sh = np.take_along_axis(a[None, u0 + v0: u0 + v1], p, axis=-1)  # (bs, bu', S, n)
        if g is None:
            r = _rotations(sh, atol)
        else:  # permute the portrait's points (a_l, g_l) jointly; g from the original order
            gs = np.take_along_axis(g[None, u0 + v0: u0 + v1], p, axis=-1)
            r = _rotations_xy(sh, gs, atol)
        out[:, v0:v1] = r.mean(-1)
    return out


def _null_core(a: np.ndarray, n_shuffles: int, seed: int, atol: float, what: str,
               n_jobs: int | None) -> np.ndarray:
    """a: (U, S, n) -> (n_shuffles, U): mean over S of the counts after permuting the last axis with one
    permutation per (shuffle, unit), shared by the S trajectories of a unit."""
    if what not in NULLS:
        raise ValueError(f"what must be one of {NULLS}; got {what!r}")
    U, S, n = a.shape
    g = _gradient(a) if what == "points" else None
    out = np.empty((n_shuffles, U), dtype=a.dtype)
    blocks = [(s0, min(s0 + _SHUFFLE_BLOCK, n_shuffles), u0, min(u0 + _UNIT_BLOCK, U))
              for s0 in range(0, n_shuffles, _SHUFFLE_BLOCK) for u0 in range(0, U, _UNIT_BLOCK)]

    def work(b):
        s0, s1, u0, u1 = b
        out[s0:s1, u0:u1] = _null_block(a, g, s0, s1, u0, u1, seed, atol)

    n_jobs = min(os.cpu_count() or 1, 8) if n_jobs is None else int(n_jobs)
    if n_jobs <= 1 or len(blocks) == 1:
        for b in blocks:
            work(b)
    else:  # numpy releases the GIL in its kernels; threads share `a` without copies
        with ThreadPoolExecutor(n_jobs) as ex:
            list(ex.map(work, blocks))
    return out


def _check_null_args(n_shuffles: int, seed: int, n_jobs: int | None, n_traj: int, dtype) -> int:
    """The null's count arguments, and its output ``(n_shuffles, n_traj)`` checked against the memory."""
    n_shuffles = check_positive_int(n_shuffles, "n_shuffles")
    check_seed(seed)
    check_positive_int(n_jobs, "n_jobs", none=True)
    check_allocation((n_shuffles, n_traj), dtype, what="the null", name="n_shuffles")
    return n_shuffles


def shuffle_null(traj, n_shuffles: int = 1000, seed: int = 0, *, what: str = "sublayers",
                 atol: float = 0.0, n_jobs: int | None = None):
    """Rotation counts after permuting the sublayer order, independently per unit and per shuffle.

    traj: (..., n_sublayers) -> (n_shuffles, ...). Each trajectory (each index of the leading axes) gets
    its own random permutation in each shuffle; deterministic given ``seed`` (independent of ``n_jobs``).

    what: ``"sublayers"`` (default, the literal reading of the methods) permutes the activations and
    recomputes the gradient over the permuted order; ``"points"`` permutes the portrait's points
    ``(a_l, g_l)`` jointly, the gradient taken in the original order. The two nulls differ: the
    activation-gradient plane itself favours clockwise turning (where g > 0 the activation tends to grow),
    so the ``"sublayers"`` null of rough trajectories is strongly negative, while the ``"points"`` null is
    symmetric (a permutation and its reverse are equally likely and give opposite counts): mean 0.
    n_jobs: threads (default: CPU count, at most 8).
    """
    a, tt = _as_array(traj)
    lead = a.shape[:-1]
    n_shuffles = _check_null_args(n_shuffles, seed, n_jobs, int(np.prod(lead)), a.dtype)
    flat = np.ascontiguousarray(a.reshape(-1, 1, a.shape[-1]))
    res = _null_core(flat, n_shuffles, seed, atol, what, n_jobs).reshape((n_shuffles, *lead))
    return _out(res, tt)


def reference_counts(n_sublayers: int, kind: str = "random_walk", n: int = 10000, seed: int = 0) -> np.ndarray:
    """Rotation counts of structureless reference trajectories with ``n_sublayers`` points: (n,).

    kind: ``"random_walk"`` (cumulative sums of i.i.d. Gaussian steps) or ``"iid"`` (i.i.d. Gaussian
    values). The count is invariant to shifting and scaling a trajectory (both portrait axes scale alike),
    so these need no parameters: they say how much a rough trajectory turns in activation-gradient space
    by itself (e.g. about -11 for a 64-step random walk).
    """
    if kind not in ("random_walk", "iid"):
        raise ValueError(f"kind must be 'random_walk' or 'iid'; got {kind!r}")
    n_sublayers = check_int(n_sublayers, "n_sublayers", low=3)
    n = check_positive_int(n, "n")
    check_allocation((n, n_sublayers), np.float64, what="the reference trajectories", name="n")
    x = np.random.default_rng(check_seed(seed)).standard_normal((n, n_sublayers))
    if kind == "random_walk":
        x = np.cumsum(x, axis=-1)
    return _rotations(x)


# --------------------------------------------------------------------------------------------------
# residual-stream helpers: (n_samples, n_sublayers, d_model)
# --------------------------------------------------------------------------------------------------
def _check_rs(rs) -> tuple[Any, bool]:
    """``(rs as chunks reads it, was_torch)``: :func:`transformer_dynamics.arrays.check_stream` with at least
    3 sublayers (NaN and inf are refused chunk by chunk as they are read)."""
    return check_stream(rs, min_sublayers=3), isinstance(rs, torch.Tensor)


def _float(chunk: np.ndarray) -> np.ndarray:
    """A chunk as float32 (float64 kept): the counts' working precision."""
    return chunk if chunk.dtype == np.float64 else chunk.astype(np.float32, copy=False)


def _mean_trajectory(rs) -> np.ndarray:
    """Each unit's mean trajectory over the samples, from float64 sums over chunks, in the chunks' working
    precision: (n_sublayers, d_model). The one definition both the counts and their null permute."""
    total, dtype = None, np.float32
    for _, c in chunks(rs, finite=True):
        c = _float(c)
        dtype = c.dtype
        part = c.sum(0, dtype=np.float64)
        total = part if total is None else total + part
    return (total / rs.shape[0]).astype(dtype)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    return mode


def _sample_counts(rs, atol: float) -> np.ndarray:
    """Every sample's count per unit, chunk by chunk: (n_samples, d_model) in the working precision."""
    S, n, D = rs.shape
    step = max(1, _MAX_ELEMENTS // (n * D))
    out = None
    for s0, c in chunks(rs, step, finite=True):
        c = _float(c)
        if out is None:
            out = np.empty((S, D), dtype=c.dtype)
        out[s0: s0 + len(c)] = _rotations(c, atol, axis=1)
    return out


def rotations_per_sample(rs, *, atol: float = 0.0):
    """Each sample's own rotation count per unit.

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_samples, d_model), in chunks of samples.
    """
    rs, tt = _check_rs(rs)
    return _out(_sample_counts(rs, atol), tt)


def rotations_per_unit(rs, mode: str = "mean", *, atol: float = 0.0):
    """Rotation count per unit.

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (d_model,). ``mode="mean"``: count of the
    unit's mean trajectory over samples (:func:`_mean_trajectory`: float64 sums); ``mode="per_sample"``: mean
    over samples of each sample's own count (float64).
    """
    _check_mode(mode)
    rs, tt = _check_rs(rs)
    if mode == "mean":
        res = _rotations(_mean_trajectory(rs), atol, axis=0)
    else:
        res = _sample_counts(rs, atol).mean(0, dtype=np.float64)
    return _out(res, tt)


def null_per_unit(rs, mode: str = "mean", n_shuffles: int = 1000, seed: int = 0, *,
                  what: str = "sublayers", max_samples: int | None = None, atol: float = 0.0,
                  n_jobs: int | None = None):
    """The shuffle null of :func:`rotations_per_unit`, in the same mode.

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_shuffles, d_model). ``mode="mean"``: the
    mean trajectory of each unit (the one :func:`rotations_per_unit` counts) is permuted.
    ``mode="per_sample"``: one permutation per unit and shuffle is applied to all samples of that unit and their
    counts are averaged; this costs ``n_samples`` times more, so ``max_samples`` (default: all) keeps the first
    ``max_samples`` samples. ``what``: see :func:`shuffle_null`.
    """
    _check_mode(mode)
    max_samples = check_positive_int(max_samples, "max_samples", none=True)
    rs, tt = _check_rs(rs)
    dtype = np.float64 if getattr(rs, "dtype", None) == np.float64 else np.float32  # the counts' precision
    n_shuffles = _check_null_args(n_shuffles, seed, n_jobs, rs.shape[2], dtype)
    if mode == "mean":
        u = np.ascontiguousarray(_mean_trajectory(rs).T)[:, None, :]  # (D, 1, n)
    else:
        stop = rs.shape[0] if max_samples is None else min(max_samples, rs.shape[0])
        first = np.concatenate([_float(c) for _, c in chunks(read(rs, 0, stop), finite=True)])
        u = np.ascontiguousarray(first.transpose(2, 0, 1))  # (D, S, n)
    return _out(_null_core(u, n_shuffles, seed, atol, what, n_jobs), tt)


# --------------------------------------------------------------------------------------------------
# summaries for the figure
# --------------------------------------------------------------------------------------------------
def _np(a) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _check_null(observed: np.ndarray, null: np.ndarray) -> None:
    if null.ndim != observed.ndim + 1 or null.shape[1:] != observed.shape:
        raise ValueError(f"null must have shape (n_shuffles, *observed.shape) = (n, {observed.shape}); "
                         f"got {null.shape}")
    if null.shape[0] < 1 or observed.size < 1:
        raise ValueError(f"need at least one shuffle and one unit; got null {null.shape}, observed {observed.shape}")


def empirical_p_values(observed, null, alternative: str = "two-sided") -> np.ndarray:
    """Per-unit empirical p-values of the observed count against its own null.

    observed: (...); null: (n_shuffles, ...) -> (...). ``p = (1 + #{null ≽ obs}) / (1 + n_shuffles)``
    where ``≽`` is ``|null| >= |obs|`` (two-sided), ``null >= obs`` (greater) or ``null <= obs`` (less).
    """
    obs, nul = _np(observed), _np(null)
    _check_null(obs, nul)
    if alternative == "two-sided":
        hits = np.abs(nul) >= np.abs(obs)
    elif alternative == "greater":
        hits = nul >= obs
    elif alternative == "less":
        hits = nul <= obs
    else:
        raise ValueError("alternative must be 'two-sided', 'greater' or 'less'")
    return (1.0 + hits.sum(0)) / (1.0 + nul.shape[0])


def exceeds_null(observed, null, q: float = 0.95) -> np.ndarray:
    """Whether ``|observed|`` exceeds the ``q`` quantile of its own null's ``|R|``: (...) bool."""
    obs, nul = _np(observed), _np(null)
    _check_null(obs, nul)
    q = check_number(q, "q", low=0, high=1, low_open=True, high_open=True)
    return np.abs(obs) > np.quantile(np.abs(nul), q, axis=0)


def null_band(null, percentiles: tuple[float, float] = (2.5, 97.5)) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit percentile band of the null: null (n_shuffles, ...) -> (low, high), each (...)."""
    nul = _np(null)
    if nul.ndim < 1 or nul.shape[0] < 1:
        raise ValueError(f"null must be (n_shuffles >= 1, ...); got shape {nul.shape}")
    lo, hi = np.percentile(nul, percentiles, axis=0)
    return lo, hi


def rotation_summary(observed, null, *, n_sublayers: int | None = None, q: float = 0.95) -> dict[str, float]:
    """Headline numbers for Figure 2.

    observed: (d_model,); null: (n_shuffles, d_model). Returns a dict of floats: ``mean`` and ``mean_abs``
    of the observed counts, ``median``, ``null_mean``, ``null_mean_abs``, ``null_sd`` (pooled),
    ``frac_exceeds`` (units whose ``|R|`` exceeds their null's ``q`` quantile of ``|R|``), ``frac_below`` (units
    whose ``|R|`` is below their null's ``1 - q`` quantile: turning less than shuffles), ``frac_p05`` (two-sided
    empirical p < 0.05), ``frac_negative`` (units with R < 0) and, when ``n_sublayers`` is given,
    ``mean_per_sublayer`` and ``mean_abs_per_sublayer`` (counts divided by ``n_sublayers``).
    """
    obs, nul = _np(observed).astype(np.float64), _np(null).astype(np.float64)
    _check_null(obs, nul)
    n_sublayers = check_positive_int(n_sublayers, "n_sublayers", none=True)
    out = {
        "mean": float(obs.mean()),
        "mean_abs": float(np.abs(obs).mean()),
        "median": float(np.median(obs)),
        "sd": float(obs.std()),
        "null_mean": float(nul.mean()),
        "null_mean_abs": float(np.abs(nul).mean()),
        "null_sd": float(nul.std()),
        "frac_exceeds": float(exceeds_null(obs, nul, q).mean()),
        "frac_below": float((np.abs(obs) < np.quantile(np.abs(nul), 1 - q, axis=0)).mean()),
        "frac_p05": float((empirical_p_values(obs, nul) < 0.05).mean()),
        "frac_negative": float((obs < 0).mean()),
    }
    if n_sublayers is not None:
        out["mean_per_sublayer"] = out["mean"] / n_sublayers
        out["mean_abs_per_sublayer"] = out["mean_abs"] / n_sublayers
    return out
