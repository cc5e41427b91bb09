"""Mutual information between a unit's activations at two sublayers, in nats (paper section 2.5, Fig 1G/1H).

Entry points: :func:`mutual_information` (``rs: (n_samples, n_sublayers, d_model)`` -> one value per unit
and successive sublayer pair) and :func:`mutual_information_pairs` (``x, y: (n_samples, n_units)``).
Estimators (``method``):

- ``"kde"``: the paper's Gaussian-KDE plug-in estimate, scipy's ``gaussian_kde`` bandwidths; kernel sums on
  a grid where that is the faster (:func:`gauss_sums`: O(N * nodes^d) per point set instead of O(N^2),
  from :data:`GRID_MIN_N` samples; below, e.g. at the paper's N = 1000, the exact sums), each gridded set
  checked against the exact sum (a measured 2e-6 largest relative difference in MI on SmolLM2's residual
  stream with the grid forced at N = 1000);
- ``"kde_exact"``: the same estimate from the exact O(N^2) kernel sums (the reference);
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

from .arrays import check_rs, check_units

__all__ = ["MI_METHODS", "KDE_EPS", "mutual_information", "mutual_information_pairs", "gauss_sums"]

MI_METHODS = ("kde", "kde_exact", "ksg", "gcmi")
#: Added to every density before its log, as in the paper (section 2.5).
KDE_EPS = 1e-10
#: Set this environment variable to 1 to never use ``torch.compile`` for the KDE kernel sums.
NO_COMPILE_ENV = "TRANSFORMER_DYNAMICS_NO_COMPILE"
#: Precision of the KSG distances (float64: identical neighbour counts to scikit-learn's float64 trees).
KSG_DTYPE = torch.float64


def _check_rs(rs, min_sublayers: int = 2, min_samples: int = 4) -> np.ndarray:
    return check_rs(rs, min_sublayers=min_sublayers, min_samples=min_samples)


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
    compile: use the fused ``torch.compile`` kernel (None: when the work is large, > 1e8 kernel terms:
    e.g. the default chunk of 256 unit pairs at N = 1000).
    """
    B, N, d = z.shape
    fn = None
    if d in (1, 2) and (compile or (compile is None and B * N * N > 1e8)):
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


# ----------------------------------------------------------------------------------------------------
# Gaussian kernel sums on a grid (the fast path of method "kde")
# ----------------------------------------------------------------------------------------------------
#: Spreading variance tau (in bandwidths^2) and grid step h (bandwidths) of :func:`gauss_sums`. The unit
#: Gaussian kernel is split as K_1 = K_tau * K_(1 - 2 tau) * K_tau (K_s: the normal density of variance s),
#: the outer two evaluated exactly between points and grid nodes, the convolution integrals as sums over the
#: nodes (a trapezoid rule on a Gaussian integrand: error ~ exp(-2 pi^2 s / h^2), s its variance). With
#: tau = 1/2 there is no middle kernel, s = 1/4 and the error is ~1e-6 (measured: <= 5e-6 relative).
GRID_TAU = 0.5
GRID_H = 0.6
#: The grid reaches this many spreading standard deviations beyond the outermost points.
GRID_REACH = 5.5
#: Largest grid (nodes per axis) before a point set falls back to the exact sum (e.g. an extreme outlier
#: stretches the grid, whose cost grows as nodes^2 in 2-D).
GRID_MAX_NODES = {1: 1024, 2: 96}
#: Smallest point set (N) summed on the grid, per dimension: below it the compiled exact sum is faster.
#: Measured on this 2-core machine (idle, 1 thread, warm kernels; ms per point set, grid vs exact): 1-D
#: 0.29 vs 0.51 at N = 1000, 0.73 vs 3.2 at 2000; 2-D 0.65 vs 0.57 at N = 1000, 1.55 vs 2.55 at 2000,
#: 3.3 vs 10.7 at 4000 (the 2-D grid's ~2 N nodes^2 multiply-adds, ~55 nodes at N = 1000, grow as N^(4/3)).
#: Inside ``mutual_information`` at N = 1000 (idle, 2 threads) the 1-D grid still lost (2.09 vs 1.67 ms per
#: unit pair with the 1-D grid on), so both start at N = 2000.
GRID_MIN_N = {1: 2000, 2: 2000}
#: Largest fraction of a point set outside that grid (summed exactly) before the whole set is.
GRID_MAX_FAR = 0.05
#: Every gridded point set is checked against the exact sum at ``GRID_CHECK_POINTS`` of its points (those
#: with the smallest sums, where the relative error is largest); above ``GRID_CHECK_RTOL`` relative error
#: the set is recomputed exactly.
GRID_CHECK_POINTS = 8
GRID_CHECK_RTOL = 2e-4


def _kernel_sums_at(zi: torch.Tensor, zj: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
    """Exact ``sum_j wj[b, j] exp(-|zi[b, i] - zj[b, j]|^2 / 2)``. zi: (B, M, d), zj: (B, K, d), wj: (B, K)."""
    return (torch.exp(-0.5 * (zi[:, :, None, :] - zj[:, None, :, :]).square().sum(-1)) * wj[:, None, :]).sum(-1)


def _phi(frac: torch.Tensor, i0: torch.Tensor, w: torch.Tensor, G: int, c: float) -> torch.Tensor:
    """Spreading weights ``w_i exp(-c (frac_i + i0_i - k)^2)`` for nodes k < G: (B, N) x 3 -> (B, N, G)
    float32. The exponent is floored at -60 (a term of 1e-26 instead of a denormal, ~50x slower)."""
    k = torch.arange(G, dtype=frac.dtype, device=frac.device)
    dk = (i0[..., None] - k) + frac[..., None]
    return torch.exp(torch.clamp(-c * dk * dk, min=-60.0)) * w[..., None]


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _compiled_phi(name: str = "phi") -> Callable | None:
    """The fused kernel ``name`` ("phi": :func:`_phi`, "rowdot": :func:`_rowdot`), or None (eager)."""
    if os.environ.get(NO_COMPILE_ENV, "") not in ("", "0"):
        return None
    if name not in _COMPILED:
        try:
            _COMPILED[name] = torch.compile(_phi if name == "phi" else _rowdot, dynamic=True)
        except Exception as exc:  # pragma: no cover - depends on the platform
            warnings.warn(f"torch.compile unavailable ({exc}); gridded KDE runs eagerly")
            _COMPILED[name] = None
    return _COMPILED[name]


def _grid_sums(z: torch.Tensor, core: torch.Tensor, h: float, tau: float, reach: float) -> torch.Tensor:
    """Gridded Gaussian kernel sums. z: (B, N, d) float64, core: (B, N) bool -> (B, N) float64.

    The grid covers the ``core`` points; sums between a core point and the others (the far points, e.g. an
    extreme outlier, at most a few per set) and the whole sums of far points are exact.
    """
    B, N, d = z.shape
    pad = reach * math.sqrt(tau)
    inf = torch.tensor(float("inf"), dtype=z.dtype)
    lo = torch.where(core[..., None], z, inf).amin(1) - pad  # (B, d)
    hi = torch.where(core[..., None], z, -inf).amax(1) + pad
    G = int(((hi - lo).amax() / h).ceil().item()) + 1
    k = torch.arange(G, dtype=torch.float64) * h
    w = core.float()[..., None]
    # spreading weights exp(-(z - node)^2 / (2 tau)) per axis: (B, N, G)
    u = (z - lo[:, None, :]) / h  # node coordinates; integer part exact in float32, fraction from float64
    i0 = u.floor()
    frac, i0 = (u - i0).float(), i0.float()
    fn = _compiled_phi() or _phi
    phi = [fn(frac[..., a].contiguous(), i0[..., a].contiguous(), w[..., 0], G, h * h * 0.5 / tau)
           for a in range(d)]
    s2 = 1.0 - 2.0 * tau
    if s2 > 0:  # per axis: sqrt(2 pi) h^2 / (2 pi tau) times the middle kernel N(.; 1 - 2 tau) on the grid
        c = math.sqrt(2 * math.pi) * h * h / (2 * math.pi * tau) / math.sqrt(2 * math.pi * s2)
        C = (c * torch.exp(-0.5 / s2 * (k[:, None] - k[None, :]).square())).float()  # (G, G)
    else:  # tau = 1/2: no middle kernel, K_1 = K_(1/2) * K_(1/2)
        C = None
        c = math.sqrt(2 * math.pi) * h / (2 * math.pi * tau)
    if d == 1:
        mass = phi[0].sum(1)  # (B, G)
        mass = mass @ C if C is not None else mass * c
        out = (phi[0] @ mass[:, :, None])[..., 0].double()
    else:
        m = phi[0].transpose(1, 2) @ phi[1]  # (B, G, G): mass on the grid
        m = C @ m @ C if C is not None else m * (c * c)
        out = (_compiled_phi("rowdot") or _rowdot)(phi[0] @ m, phi[1]).double()
    n_far = (~core).sum(1)
    F = int(n_far.max())
    if F:
        far_idx = torch.argsort(core.to(torch.int8), dim=1, stable=True)[:, :F]  # far points first
        valid = torch.arange(F)[None, :] < n_far[:, None]  # (B, F)
        zf = torch.gather(z, 1, far_idx[..., None].expand(-1, -1, d))
        out += _kernel_sums_at(z, zf, valid.double())  # core (and far) points <- far sources
        whole = _kernel_sums_at(zf, z, torch.ones(B, N, dtype=torch.float64))  # (B, F): far points, exact
        cur = torch.gather(out, 1, far_idx)
        out.scatter_(1, far_idx, torch.where(valid, whole, cur))
    return out


def gauss_sums(z: torch.Tensor, *, exact: bool = False, compile: bool | None = None,
               h: float = GRID_H, tau: float = GRID_TAU, reach: float = GRID_REACH,
               max_nodes: int | None = None, max_far: float = GRID_MAX_FAR, check_points: int = GRID_CHECK_POINTS,
               check_rtol: float = GRID_CHECK_RTOL, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian kernel sums ``S[b, i] = sum_j exp(-|z[b, i] - z[b, j]|^2 / 2)`` (self term included).

    z: (B, N, d) float64 whitened, bandwidth-scaled points, d in (1, 2) -> (S: (B, N) float64,
    gridded: (B,) bool, True where the grid was used). ``exact=True``: the exact O(N^2) sums (the
    compiled kernel of ``compile``); so are sets smaller than :data:`GRID_MIN_N` (where the exact sum is
    the faster). Otherwise each point set is summed on a grid of step ``h`` (cost
    O(N * nodes * d) + matmuls of nodes^2), point sets sorted by grid size and summed ``batch`` at a time (None: ~64 MiB of weights).
    The grid spans at most ``max_nodes`` per axis (default :data:`GRID_MAX_NODES`) around the median;
    points beyond it (outliers) are summed exactly against all points, and a set with more than a
    fraction ``max_far`` of them is summed exactly as a whole. Every gridded set is checked against the
    exact sum at its ``check_points`` points of smallest sum: a relative error above ``check_rtol`` there
    sends the set to the exact sum too.
    Non-finite points give non-finite sums (callers mark those sets NaN).
    """
    B, N, d = z.shape
    z = z.double()
    if exact or B == 0 or N < GRID_MIN_N[d]:
        return _gauss_rowsum(torch.nan_to_num(z).float(), compile=compile).double(), torch.zeros(B, dtype=torch.bool)
    max_nodes = GRID_MAX_NODES[d] if max_nodes is None else max_nodes
    finite = torch.isfinite(z).all(-1).all(-1)
    zf = torch.nan_to_num(z)
    pad = reach * math.sqrt(tau)
    # the core: points within the widest allowed grid around the median; the rest (far) are summed exactly
    half = ((max_nodes - 1) * h - 2 * pad) / 2
    wide = ((zf.amax(1) - zf.amin(1)).amax(-1) + 2 * pad) / h + 1 > max_nodes  # (B,): needs a median
    core = torch.ones(B, N, dtype=torch.bool)
    if wide.any():
        zw = zf[wide]
        core[wide] = ((zw - zw.median(1, keepdim=True).values).abs() <= half).all(-1)
    core_z = torch.where(core[..., None], zf, torch.nan)
    nodes = ((core_z.nan_to_num(-math.inf).amax(1) - core_z.nan_to_num(math.inf).amin(1)).amax(-1)
             + 2 * pad) / h + 1  # (B,)
    use = finite & ((~core).sum(1) <= max_far * N)
    out = torch.empty(B, N, dtype=torch.float64)
    idx = torch.nonzero(use)[:, 0]
    if batch is None and idx.numel():  # ~64 MiB of spreading weights per batch
        batch = max(1, int(2**24 // (N * min(float(nodes[idx].max()), max_nodes) * d)))
    idx = idx[torch.argsort(nodes[idx] + N * (~core[idx]).sum(1))]  # similar grids and far counts together
    for s in range(0, idx.numel(), batch):
        sel = idx[s:s + batch]
        out[sel] = _grid_sums(zf[sel], core[sel], h, tau, reach)
    if check_points and idx.numel():
        k = min(check_points, N)
        pts = torch.topk(out[idx], k, dim=1, largest=False).indices  # (b, k)
        zi = torch.gather(zf[idx], 1, pts[..., None].expand(-1, -1, d))  # (b, k, d)
        exact_s = torch.exp(-0.5 * (zi[:, :, None, :] - zf[idx][:, None, :, :]).square().sum(-1)).sum(-1)
        err = (torch.gather(out[idx], 1, pts) / exact_s - 1).abs().amax(1)
        use[idx[~(err <= check_rtol)]] = False
    rest = torch.nonzero(~use)[:, 0]
    if rest.numel():
        out[rest] = _gauss_rowsum(zf[rest].float(), compile=compile).double()
    return out, use


def _kde_log_density_1d(v: torch.Tensor, compile: bool | None = None, exact: bool = True) -> torch.Tensor:
    """Log of scipy's ``gaussian_kde(v_b)(v_b)`` (+ KDE_EPS) for every row: v (B, N) float64 -> (B, N).
    exact: exact kernel sums; False: gridded ones (:func:`gauss_sums`).

    Bandwidth: Scott's factor n^(-1/5) times the unbiased sample standard deviation. Constant rows: NaN.
    """
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
    z = torch.stack([a, b], dim=-1).div_(f)
    s = gauss_sums(z, exact=exact, compile=compile)[0]
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
    Kernel sums run batched in float32 on whitened data, on a grid where that is the faster
    (:func:`gauss_sums`, checked against the exact sum), else exactly (a fused ``torch.compile`` kernel
    for large work; set ``$TRANSFORMER_DYNAMICS_NO_COMPILE=1`` to disable); densities and logs in float64.
    ``method="kde_exact"``: the same with every kernel sum exact. The 1e-10 makes this estimate depend on
    the activation scale (as in the paper).

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

    rs: (n_samples, n_sublayers, d_model) -> (n_sublayers - 1, n_units) float64, where the units are
    ``units`` (indices; None = all d_model). ``method``: "kde" (the paper's), "kde_exact", "ksg" or "gcmi"; see
    :func:`mutual_information_pairs` for each estimator. Work runs over chunks of ``chunk`` units, all
    sublayer pairs at once; for "kde" each sublayer's 1-D density is computed once and shared by the two
    transitions that touch it. ``rs`` may be a cache entry (:class:`cache.ActivationStore`): the units are
    then read in blocks of at most ``max_bytes`` (float32, all samples and sublayers), one pass over the
    shards per block.
    """
    _check_method(method)
    if hasattr(rs, "iter_chunks") and not isinstance(rs, np.ndarray):  # a cache entry: read unit blocks
        n, L, D = rs.shape
        units = np.arange(D) if units is None else check_units(units, D)
        block = max(1, int(max_bytes // (n * L * 4)))
        parts = []
        for b in range(0, units.size, block):
            idx = units[b:b + block]
            cols = np.concatenate([c[:, :, idx] for _, c in rs.iter_chunks()])  # one pass per block
            parts.append(mutual_information(cols, method, k=k, chunk=chunk, compile=compile, progress=progress))
        return np.concatenate(parts, axis=1)
    rs = _check_rs(rs, min_sublayers=2, min_samples=4)
    n, L, D = rs.shape
    units = np.arange(D) if units is None else check_units(units, D)
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
        out[:, s:s + chunk] = mi.numpy()
    return out
