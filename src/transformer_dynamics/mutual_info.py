"""Mutual information between a unit's activations at two sublayers, in nats (paper section 2.5, Fig 1G/1H).

Entry points: :func:`mutual_information` (``rs: (n_samples, n_sublayers, d_model)`` -> one value per unit
and successive sublayer pair) and :func:`mutual_information_pairs` (``x, y: (n_samples, n_units)``).
Estimators (``method``):

- ``"kde"``: the paper's Gaussian-KDE plug-in estimate, scipy's ``gaussian_kde`` bandwidths; kernel sums on
  a grid (:func:`gauss_sums`, a small C kernel compiled at first use: O(N * 16^d) per point set instead of
  O(N^2)), within a bounded relative error (:func:`grid_error_bound`: 4.5e-6 in 2-D) of the exact sums,
  each set checked against the exact sum at its worst points;
- ``"kde_exact"``: the same estimate from the exact O(N^2) kernel sums (the reference);
- ``"ksg"``: Kraskov–Stögbauer–Grassberger k-nearest-neighbour estimate (k = 3, as scikit-learn); radii and
  counts by a sorted sweep in a second C kernel (``ksg_counts.c``: the brute force's numbers, bit for bit,
  in O(N log N + N m) per pair instead of O(N^2));
- ``"gcmi"``: Gaussian-copula MI (Ince et al. 2017), bias-corrected: a lower bound that is exact for
  Gaussian-copula data.

The compiled kernels (building, loading and binding the two C kernels, the exact sums compiled with ``torch.compile``)
are :mod:`transformer_dynamics.kernels`; this module holds the estimators and the grid's error control.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special, stats

from . import kernels
from .arrays import check_stream, check_units, unit_blocks
from .validation import check_positive_int

__all__ = ["MI_METHODS", "KDE_EPS", "mutual_information", "mutual_information_pairs", "gauss_sums", "grid_error_bound",
           "max_relative_difference"]

MI_METHODS = ("kde", "kde_exact", "ksg", "gcmi")
#: Added to every density before its log, as in the paper (section 2.5).
KDE_EPS = 1e-10
#: Precision of the KSG distances (float64: identical neighbour counts to scikit-learn's float64 trees).
KSG_DTYPE = torch.float64


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
# Gaussian kernel sums on a grid (the fast path of method "kde"; the kernel itself is kde_grid.c)
# ----------------------------------------------------------------------------------------------------
#: Grid step h, in bandwidths. The unit Gaussian kernel is split per axis as
#: exp(-(x - y)^2 / 2) = h sqrt(2 / pi) sum_g exp(-(x - g)^2) exp(-(g - y)^2) over the nodes g (a trapezoid
#: rule on a Gaussian of variance 1/4): the relative error of every pair's term is at most
#: :func:`grid_error_bound` (2.2e-6 per axis at h = 0.6); each point touches the 16 nodes around it per axis.
GRID_H = 0.6
#: Largest grid (nodes per axis) around a set's centre; points beyond it (extreme outliers) are summed exactly.
#: Whitened points lie within sqrt(N - 1) / Scott's factor of the mean (100 bandwidths at N = 1000), so at
#: the paper's N no point is ever beyond.
GRID_MAX_NODES = {1: 8192, 2: 512}
#: Smallest point set (N) summed on the grid (below, the exact sum: a few microseconds either way).
GRID_MIN_N = 32
#: Largest fraction of a point set beyond the grid (summed exactly) before the whole set is summed exactly.
GRID_MAX_FAR = 0.05
#: Every gridded point set is checked against the exact sum at ``GRID_CHECK_POINTS`` of its points (those
#: with the smallest sums, where the relative error is largest); above ``GRID_CHECK_RTOL`` relative error
#: the set is recomputed exactly.
GRID_CHECK_POINTS = 8
GRID_CHECK_RTOL = 2e-4
def grid_error_bound(h: float = GRID_H, d: int = 1) -> float:
    """Largest relative error of the gridded kernel sums (:func:`gauss_sums`) for a grid step ``h``
    (bandwidths) in ``d`` dimensions, before float32 rounding: the trapezoid rule's
    ``2 sum_k exp(-pi^2 k^2 / (2 h^2))`` per axis, compounded over the axes."""
    e = 2.0 * sum(math.exp(-math.pi**2 * k * k / (2.0 * h * h)) for k in range(1, 20))
    return (1.0 + e) ** d - 1.0


def gauss_sums(z: torch.Tensor, *, exact: bool = False, compile: bool | None = None, h: float = GRID_H,
               max_nodes: int | None = None, max_far: float = GRID_MAX_FAR, check_points: int = GRID_CHECK_POINTS,
               check_rtol: float = GRID_CHECK_RTOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian kernel sums ``S[b, i] = sum_j exp(-|z[b, i] - z[b, j]|^2 / 2)`` (self term included).

    z: (B, N, d) float64 whitened, bandwidth-scaled points, d in (1, 2) -> (S: (B, N) float64,
    gridded: (B,) bool, True where the grid was used). ``exact=True``: the exact O(N^2) sums (float32,
    the fused ``torch.compile`` kernel of ``compile``); so are sets smaller than :data:`GRID_MIN_N`.
    Otherwise every set is summed on a grid of step ``h`` bandwidths by the C kernel (kde_grid.c):
    O(N 16^d) per set, relative error at most :func:`grid_error_bound` (plus float32 rounding, ~1e-6).
    The grid spans at most ``max_nodes`` per axis (default :data:`GRID_MAX_NODES`) around the set's
    centre (the median where the set is wider); points beyond it are summed exactly, and a set with
    more than a fraction ``max_far`` of them is summed exactly as a whole. Every gridded set is checked
    against the exact sum at its ``check_points`` points of smallest sum: a relative error above
    ``check_rtol`` there sends the set to the exact sum too. Non-finite sets give NaN sums.
    """
    B, N, d = z.shape
    if d not in (1, 2):
        raise ValueError(f"gauss_sums sums 1-D or 2-D points; got d={d}")
    gmax = GRID_MAX_NODES[d] if max_nodes is None else int(max_nodes)
    if not (h > 0 and gmax > 17):
        raise ValueError(f"need a grid step h > 0 and max_nodes > 17 (a point touches 16 nodes per axis); "
                         f"got h={h}, max_nodes={max_nodes}")
    z = z.double()
    lib = None if exact or B == 0 or N < GRID_MIN_N else kernels.library("kde_grid")
    gridded = torch.zeros(B, dtype=torch.bool)
    out = torch.full((B, N), float("nan"), dtype=torch.float64)
    finite = torch.isfinite(z.sum((1, 2)))  # (B,): whitened points are small, so a finite sum means finite points
    if lib is not None and finite.any():
        idx = torch.nonzero(finite)[:, 0]
        zf = np.ascontiguousarray(z[idx].numpy())
        s, status = kernels.grid_sums(lib, zf, h, gmax, int(max_far * N), int(check_points), float(check_rtol))
        out[idx] = torch.from_numpy(s)
        gridded[idx] = torch.from_numpy(status.astype(bool))
    rest = torch.nonzero(~gridded & finite)[:, 0]  # non-finite sets stay NaN
    if rest.numel():
        out[rest] = kernels.gauss_rowsum(z[rest].float(), compile=compile).double()
    return out, gridded


def _grid_log_density(x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fast path of :func:`_kde_log_density_1d` (y None) and :func:`_kde_log_density_2d`: whitening,
    gridded sums and logs in one C call per set. x, y: (B, N) float64 -> (log density (B, N), done (B,) bool),
    or None when the kernel is unavailable. Sets not done (constant or collinear data, or a set the grid
    could not serve) are the caller's."""
    B, N = x.shape
    lib = None if B == 0 or N < GRID_MIN_N else kernels.library("kde_grid")
    if lib is None:
        return None
    d = 1 if y is None else 2
    xa = np.ascontiguousarray(x.numpy(), dtype=np.float64)
    ya = None if y is None else np.ascontiguousarray(y.numpy(), dtype=np.float64)
    out, status = kernels.grid_log_density(lib, xa, ya, KDE_EPS, GRID_H, GRID_MAX_NODES[d], int(GRID_MAX_FAR * N),
                                           GRID_CHECK_POINTS, GRID_CHECK_RTOL)
    return torch.from_numpy(out), torch.from_numpy(status.astype(bool))


def _kde_log_density_1d(v: torch.Tensor, compile: bool | None = None, exact: bool = True) -> torch.Tensor:
    """Log of scipy's ``gaussian_kde(v_b)(v_b)`` (+ KDE_EPS) for every row: v (B, N) float64 -> (B, N).
    exact: exact kernel sums; False: gridded ones (:func:`_grid_log_density`, the same whitening in C).

    Bandwidth: Scott's factor n^(-1/5) times the unbiased sample standard deviation. Constant rows: NaN.
    """
    fast = None if exact else _grid_log_density(v)
    if fast is not None:
        out, done = fast
        if not done.all():
            out[~done] = _kde_log_density_1d(v[~done], compile, exact=True)
        return out
    n = v.shape[-1]
    f = n ** (-1.0 / 5.0)
    sd = v.std(dim=-1, correction=1, keepdim=True)
    sd = torch.where(sd > 0, sd, torch.full_like(sd, float("nan")))
    z = (v - v.mean(dim=-1, keepdim=True)) / (sd * f)
    s = gauss_sums(z[..., None], exact=exact, compile=compile)[0]
    dens = s / (n * math.sqrt(2 * math.pi) * f * sd)
    return torch.log(dens + KDE_EPS)


def _kde_log_density_2d(x: torch.Tensor, y: torch.Tensor, compile: bool | None = None, exact: bool = True
                        ) -> torch.Tensor:
    """Log of scipy's 2-D ``gaussian_kde([x_b, y_b])`` at its own points (+ KDE_EPS).

    x, y: (B, N) float64 -> (B, N). Bandwidth: Scott's factor n^(-1/6) times the full unbiased 2x2 data
    covariance. Points are whitened with its Cholesky factor. Singular covariance: NaN. exact as in
    :func:`_kde_log_density_1d`.
    """
    fast = None if exact else _grid_log_density(x, y)
    if fast is not None:
        out, done = fast
        if not done.all():
            out[~done] = _kde_log_density_2d(x[~done], y[~done], compile, exact=True)
        return out
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
    z = torch.stack([a, b], dim=-1).div_(f)
    s = gauss_sums(z, exact=exact, compile=compile)[0]
    dens = s / (n * 2 * math.pi * f * f * l11 * l22)
    return torch.log(dens + KDE_EPS)


def _kde_mi_from_logs(lxy: torch.Tensor, lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    return (lxy - lx - ly).mean(-1)


# ----------------------------------------------------------------------------------------------------
# mutual information: KSG and Gaussian copula
# ----------------------------------------------------------------------------------------------------
def _ksg(x: torch.Tensor, y: torch.Tensor, k: int = 3, compile: bool | None = None,
         mem_bytes: int = 32 * 2**20, brute: bool = False) -> torch.Tensor:
    """KSG (Kraskov et al. 2004, algorithm 1) MI in nats. x, y: (B, N) float64 -> (B,).

    x and y are scaled to unit standard deviation; distances in ``KSG_DTYPE`` (float64 by default; the
    radius and the marginal counts come from the same differences, so they are consistent).
    The radii and counts come from the C kernel (ksg_counts.c: a sorted sweep, O(N log N + N m) per pair,
    the same numbers as the brute force), else (``brute=True``, no compiler, float32 distances) from the
    O(N^2) distance matrix, whose marginal counts run as a fused ``torch.compile`` kernel when the work is
    large (or compile=True).
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
    const = special.digamma(n) + special.digamma(k)
    lib = None if brute or KSG_DTYPE != torch.float64 or B == 0 else kernels.library("ksg_counts")
    if lib is not None:
        nx, ny = kernels.ksg_counts(lib, np.ascontiguousarray(x.numpy()), np.ascontiguousarray(y.numpy()), k)
        out = const - torch.special.digamma(torch.from_numpy(nx).double()).mean(-1) \
            - torch.special.digamma(torch.from_numpy(ny).double()).mean(-1)
        return out.masked_fill(bad, float("nan"))
    fused = bool(compile or (compile is None and B * n * n > 2e8))
    out = torch.empty(B, dtype=torch.float64)
    chunk = max(1, int(mem_bytes // (n * n * 8 * 2)))
    for s in range(0, B, chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        dz = torch.maximum((xb[:, :, None] - xb[:, None, :]).abs_(), (yb[:, :, None] - yb[:, None, :]).abs_())
        # the point itself is at distance 0, so the k-th neighbour is the (k+1)-th smallest
        radius = torch.topk(dz, k + 1, dim=-1, largest=False).values[..., k].contiguous()
        del dz
        nx = kernels.count_within(xb, radius, fused, chunk)  # n_x + 1
        ny = kernels.count_within(yb, radius, fused, chunk)  # n_y + 1
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
    Kernel sums run batched on whitened data, on a grid (:func:`gauss_sums`: the compiled C kernel,
    relative error <= :func:`grid_error_bound`, checked against the exact sum); densities and logs in
    float64. ``method="kde_exact"``: the same with every kernel sum exact (float32, a fused
    ``torch.compile`` kernel for large work). ``$TRANSFORMER_DYNAMICS_NO_COMPILE=1`` turns both compilers
    off ("kde" then sums exactly, eagerly). The 1e-10 makes this estimate depend on
    the activation scale (as in the paper).

    ``method="ksg"``: Kraskov k-NN estimator (algorithm 1, Chebyshev norm, x and y each scaled to unit
    standard deviation), the same computation as scikit-learn's ``mutual_info_regression(n_neighbors=k)``
    but without its 1e-10 jitter and without clipping negative values to 0 (identical on continuous
    data without near-ties).

    ``method="gcmi"``: bias-corrected Gaussian-copula MI (Ince et al. 2017).

    Units constant in x or y (or, for "kde", with perfectly collinear x and y) give NaN.
    """
    _check_method(method)
    k, chunk = check_positive_int(k, "k"), check_positive_int(chunk, "chunk")
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
            exact = method == "kde_exact"
            lx = _kde_log_density_1d(xb, compile, exact)
            ly = _kde_log_density_1d(yb, compile, exact)
            lxy = _kde_log_density_2d(xb, yb, compile, exact)
            out[s:s + chunk] = _kde_mi_from_logs(lxy, lx, ly).numpy()
    return out


def mutual_information(rs, method: str = "kde", *, units=None, k: int = 3, chunk: int = 64,
                       compile: bool | None = None, progress: bool = False,
                       max_bytes: int = 512 * 2**20) -> np.ndarray:
    """Mutual information (nats) of each unit between successive sublayers t and t + 1 (Fig 1G, 1H).

    rs: (n_samples, n_sublayers, d_model) or a cache entry -> (n_sublayers - 1, n_units) float64, where the units
    are ``units`` (indices; None = all d_model). ``method``: "kde" (the paper's), "kde_exact", "ksg" or "gcmi";
    see :func:`mutual_information_pairs` for each estimator. Work runs over chunks of ``chunk`` units, all
    sublayer pairs at once; for "kde" each sublayer's 1-D density is computed once and shared by the two
    transitions that touch it, every density of a chunk in one C call that reads the stream in place
    (:func:`_grid_mi`; the per-set path where the kernel is unavailable or hands a unit back). Each unit needs
    all its samples at once: a cache entry is read in blocks of units of at most ``max_bytes`` (float32, all
    samples and sublayers), one pass over its shards per block (:func:`transformer_dynamics.arrays.unit_blocks`);
    an array is used as it is.
    """
    _check_method(method)
    k, chunk = check_positive_int(k, "k"), check_positive_int(chunk, "chunk")
    rs = check_stream(rs, min_sublayers=2, min_samples=4)
    n, L, D = rs.shape
    units = np.arange(D) if units is None else check_units(units, D)
    out = np.empty((L - 1, units.size), dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=-(-units.size // chunk), desc=f"MI ({method})", unit="chunk")
    for pos, source, columns in unit_blocks(rs, units, max_bytes):
        for s in range(0, columns.size, chunk):
            mi = _grid_mi(source, columns[s:s + chunk], k, compile) if method == "kde" else None
            if mi is None:
                mi = _unit_mi(source[:, :, columns[s:s + chunk]], method, k, compile)
            out[:, pos.start + s:pos.start + s + mi.shape[1]] = mi
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return out


def _grid_mi(source: np.ndarray, columns: np.ndarray, k: int, compile: bool | None) -> np.ndarray | None:
    """The "kde" MI of the units ``columns`` of ``source: (n_samples, n_sublayers, D)`` read in place by the C kernel
    (:func:`transformer_dynamics.kernels.grid_mi_units`: no transposed float64 copy, every density as
    :func:`_grid_log_density` computes it) -> (n_sublayers - 1, U), the units it could not grid computed by
    :func:`_unit_mi`; None when the kernel is unavailable or the sets are too small for the grid."""
    n = source.shape[0]
    lib = None if n < GRID_MIN_N or not len(columns) else kernels.library("kde_grid")
    if lib is None:
        return None
    mi, done = kernels.grid_mi_units(lib, source, columns, KDE_EPS, GRID_H, GRID_MAX_NODES[1], GRID_MAX_NODES[2],
                                     int(GRID_MAX_FAR * n), GRID_CHECK_POINTS, GRID_CHECK_RTOL)
    if not done.all():
        mi[:, ~done] = _unit_mi(source[:, :, columns[~done]], "kde", k, compile)
    return mi


def _unit_mi(v: np.ndarray, method: str, k: int, compile: bool | None) -> np.ndarray:
    """MI of each unit of ``v: (n_samples, n_sublayers, U)`` between successive sublayers -> (n_sublayers - 1, U)."""
    n, L, U = v.shape
    v = torch.from_numpy(np.ascontiguousarray(v.transpose(1, 2, 0), dtype=np.float64))  # (L, U, n)
    x, y = v[:-1].reshape(-1, n), v[1:].reshape(-1, n)
    if method in ("kde", "kde_exact"):
        exact = method == "kde_exact"
        lv = _kde_log_density_1d(v.reshape(-1, n), compile, exact).reshape(L, U, n)
        lxy = _kde_log_density_2d(x, y, compile, exact).reshape(L - 1, U, n)
        mi = _kde_mi_from_logs(lxy, lv[:-1], lv[1:])
    elif method == "ksg":
        mi = _ksg(x, y, k=k, compile=compile).reshape(L - 1, U)
    else:
        vn = v.numpy()
        cv = _copnorm(vn)  # each sublayer ranked once, shared by its two transitions
        mi = torch.from_numpy(_gcmi(vn[:-1], vn[1:], cv[:-1], cv[1:]))
    return mi.numpy()


def max_relative_difference(a, b) -> float:
    """Largest ``|a - b| / |b|`` over the entries where both are finite and ``b != 0`` (e.g. "kde" against
    "kde_exact" MI). a, b: arrays of one shape -> float (NaN when no entry qualifies)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape; got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok]))) if ok.any() else float("nan")
