"""jPCA (Churchland et al., Nature 2012): how rotational the trajectories over sublayers are.

``rs: (n_samples, n_sublayers, d_model)``, texts as conditions and sublayers as time, reduced to the top ``k``
PCs (:func:`jpca_projection`); :func:`jpca` fits the steps by a skew-symmetric and an unconstrained linear
map and returns their R^2, the rotational planes and their frequencies (:class:`JPCAResult`);
:func:`jpca_shuffled` is the sublayer-shuffled control; :func:`jpca_resampled` gives the R^2 ratio minus its
layer-shuffled median (and the skew fit's R^2 minus its shuffled median, the evidence of the registry's
``jpca_rotational``) on the texts and on every bootstrap resample of them, from each text's moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_int, check_positive_int, check_seed

__all__ = ["JPCAResult", "JPCAResamples", "jpca", "jpca_projection", "jpca_resampled", "jpca_shuffled"]


@dataclass
class JPCAResult:
    """jPCA of trajectories. r2_skew / r2_full: fraction of the variance of ``dX`` explained by the best
    skew-symmetric / unconstrained ``M`` (``dX = X M``); ratio = r2_skew / r2_full. planes: ``(n_planes, k, 2)``
    orthonormal bases of the rotational planes (in PC coordinates), fastest first; frequencies:
    ``(n_planes,)`` radians per sublayer; components: ``(k, D)`` the PCs; explained: ``(k,)`` their variance
    ratio; M_skew, M_full: ``(k, k)``."""

    r2_skew: float
    r2_full: float
    ratio: float
    planes: np.ndarray
    frequencies: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    M_skew: np.ndarray
    M_full: np.ndarray


def _skew_basis(k: int) -> np.ndarray:
    """``(k(k-1)/2, k, k)`` basis of skew-symmetric matrices."""
    iu = np.triu_indices(k, 1)
    H = np.zeros((len(iu[0]), k, k))
    H[np.arange(len(iu[0])), iu[0], iu[1]] = 1.0
    H[np.arange(len(iu[0])), iu[1], iu[0]] = -1.0
    return H


def _fit_dynamics(X: np.ndarray, dX: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Least squares ``dX ~ X M`` for ``X, dX: (n, k)``: (M_skew, M_full, r2_skew, r2_full)."""
    M_full = np.linalg.lstsq(X, dX, rcond=None)[0]
    H = _skew_basis(X.shape[1])
    design = np.einsum("nk,pkj->pnj", X, H).reshape(len(H), -1).T
    m = np.linalg.lstsq(design, dX.ravel(), rcond=None)[0]
    M_skew = np.einsum("p,pkj->kj", m, H)
    tot = ((dX - dX.mean(0)) ** 2).sum()
    r2 = lambda M: 1.0 - ((dX - X @ M) ** 2).sum() / tot  # noqa: E731
    return M_skew, M_full, float(r2(M_skew)), float(r2(M_full))


def jpca_projection(rs: np.ndarray, k: int = 6, *, soft_norm: float | None = 5.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jPCA's preprocessing of ``rs: (n_samples, n_sublayers, d_model)``: optional soft normalisation of each
    unit (divide by its range + ``soft_norm`` times the median range: the RS's massive units would otherwise be
    the whole PCA), subtraction of the cross-text mean at each sublayer, projection on the top ``k`` PCs.
    Returns ``(Z: (n_samples, n_sublayers, k), components: (k, d_model), explained: (k,))``."""
    rs = np.asarray(rs, dtype=np.float64)
    if rs.ndim != 3 or rs.shape[1] < 3 or rs.shape[0] < 1:
        raise ValueError(f"rs must be (n_samples, n_sublayers >= 3, d_model), got shape {rs.shape}")
    k = check_int(k, "k", low=2)
    if not np.isfinite(rs).all():
        raise ValueError("rs contains NaN or inf; drop or impute those values first")
    if k < 2 or k % 2 or k > min(rs.shape[0] * rs.shape[1], rs.shape[2]):
        raise ValueError(f"k must be even (rotational planes come in pairs), >= 2 and at most the number of "
                         f"units and points; got {k}")
    if soft_norm is not None:
        flat = rs.reshape(-1, rs.shape[-1])
        span = flat.max(0) - flat.min(0)
        rs = rs / (span + soft_norm * np.median(span) + 1e-300)
    Xc = rs - rs.mean(axis=0, keepdims=True)
    n, S, D = Xc.shape
    flat = Xc.reshape(-1, D)
    _, sv, Vt = np.linalg.svd(flat, full_matrices=False)
    comps = Vt[:k]
    return (flat @ comps.T).reshape(n, S, k), comps, (sv[:k] ** 2) / (sv ** 2).sum()


def jpca(rs: np.ndarray, k: int = 6, *, soft_norm: float | None = 5.0, projected: bool = False) -> JPCAResult:
    """jPCA (Churchland et al., Nature 2012) on trajectories over sublayers.

    rs: ``(n_samples, n_sublayers, d_model)`` (texts play the role of conditions, sublayers of time), reduced by
    :func:`jpca_projection`; or, with ``projected=True``, already ``Z: (n_samples, n_sublayers, k)``.
    ``dX = Z[:, 1:] - Z[:, :-1]`` is fitted against the midpoints ``(Z[:, 1:] + Z[:, :-1]) / 2`` by an
    unconstrained and a skew-symmetric ``M`` (least squares; the skew one over the ``k(k-1)/2`` free entries).
    The rotational planes are the eigenvector pairs of ``M_skew`` (eigenvalues ``±i omega``), fastest first.
    """
    if projected:
        Z = np.asarray(rs, dtype=np.float64)
        if Z.ndim != 3 or Z.shape[1] < 3 or Z.shape[2] % 2:
            raise ValueError(f"projected Z must be (n_samples, n_sublayers >= 3, even k), got {Z.shape}")
        comps, explained = np.full((Z.shape[2], 0), np.nan), np.full(Z.shape[2], np.nan)
    else:
        Z, comps, explained = jpca_projection(rs, k, soft_norm=soft_norm)
    k = Z.shape[2]
    dX = (Z[:, 1:] - Z[:, :-1]).reshape(-1, k)
    X = ((Z[:, 1:] + Z[:, :-1]) / 2).reshape(-1, k)
    M_skew, M_full, r2s, r2f = _fit_dynamics(X, dX)
    w, V = np.linalg.eig(M_skew)
    planes, freqs = [], []
    for i in np.argsort(-w.imag):
        if w[i].imag > 1e-12:
            q, _ = np.linalg.qr(np.stack([V[:, i].real, V[:, i].imag], axis=1))
            planes.append(q)
            freqs.append(float(w[i].imag))
    return JPCAResult(r2_skew=r2s, r2_full=r2f, ratio=r2s / r2f if r2f > 0 else float("nan"),
                      planes=np.asarray(planes).reshape(-1, k, 2), frequencies=np.asarray(freqs),
                      components=comps, explained=explained, M_skew=M_skew, M_full=M_full)


def jpca_shuffled(rs: np.ndarray, k: int = 6, *, n_shuffles: int = 20, seed: int = 0,
                  soft_norm: float | None = 5.0, projected: bool = False) -> np.ndarray:
    """The layer-shuffled control: :func:`jpca`'s fits after permuting the sublayer order (one random
    permutation per shuffle, the same for every text: each text keeps its states and loses their order; the
    PCA is unchanged, so it is done once; ``projected=True``: ``rs`` is already :func:`jpca_projection`'s
    ``Z``). Returns ``(n_shuffles, 3)``: r2_skew, r2_full, ratio."""
    n_shuffles, seed = check_positive_int(n_shuffles, "n_shuffles"), check_seed(seed)
    Z = np.asarray(rs, dtype=np.float64) if projected else jpca_projection(rs, k, soft_norm=soft_norm)[0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_shuffles):
        res = jpca(Z[:, rng.permutation(Z.shape[1])], projected=True)
        out.append((res.r2_skew, res.r2_full, res.ratio))
    return np.asarray(out).reshape(-1, 3)


@dataclass
class JPCAResamples:
    """jPCA's rotation against its layer-shuffled control, on the texts and on each bootstrap resample.

    r2_skew, ratio: the skew-symmetric fit's R^2 and its ratio to the unconstrained fit's, on the texts;
    shuffled_r2_skew, shuffled: ``(n_shuffles,)`` the same for each shuffled sublayer order; excess:
    ``r2_skew - median(shuffled_r2_skew)``, how much more of the steps a rotation explains in depth order than in a
    shuffled one; replicates: ``(n_boot,)`` the excess on each resample (the texts drawn by
    :func:`transformer_dynamics.bootstrap.bootstrap_counts` with ``seed``), each recomputed from scratch: the
    cross-text centring, both fits of the real order and of every shuffle; n: texts.

    The excess, not the ratio, is what the control can be compared on: a shuffled order has almost no linear
    dynamics (both R^2 near 0), so its ratio is that of two numbers near 0.
    """

    r2_skew: float
    ratio: float
    shuffled_r2_skew: np.ndarray
    shuffled: np.ndarray
    excess: float
    replicates: np.ndarray
    n: int

    def curves(self):
        """The curves as the registry reads them (a :class:`transformer_dynamics.robustness.Curves`):
        ``{"jpca_skew_excess": (1,)}`` and its ``(B,)`` replicates."""
        from ..robustness.curves import Curves  # noqa: PLC0415

        return Curves({"jpca_skew_excess": np.array([self.excess])},
                      {"jpca_skew_excess": np.asarray(self.replicates)})


def _moments(Z: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``(n, 3 k^2)`` each text's ``sum_t m m^T``, ``sum_t m d^T``, ``sum_t d d^T`` over the transitions of ``Z: (n, S,
    k)`` taken in sublayer ``order`` (midpoints ``m``, steps ``d``)."""
    n, _, k = Z.shape
    Zp = Z[:, order]
    d = Zp[:, 1:] - Zp[:, :-1]
    m = (Zp[:, 1:] + Zp[:, :-1]) / 2
    return np.concatenate([(a.transpose(0, 2, 1) @ b).reshape(n, k * k) for a, b in ((m, m), (m, d), (d, d))],
                          axis=1)


def _fits(moments: np.ndarray, order: np.ndarray, weights: np.ndarray, mean: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """R^2 of the skew-symmetric and the unconstrained fit of :func:`jpca` for trajectories in sublayer
    ``order: (S,)`` with per-text ``moments: (n, 3 k^2)`` (:func:`_moments`), under resample weights ``weights: (B, n)``
    (counts), each sublayer re-centred by its weighted cross-text mean ``mean: (B, S, k)``. Everything is a weighted sum
    of per-text moments of the midpoints ``m`` and steps ``d``: ``S_xx = sum_t sum_i w_i (m - mu_t)(m - mu_t)^T`` (and
    ``S_xd``, ``S_dd``), with the transition means ``mu_t`` read off the sublayer means -> ``(B,)``, ``(B,)``."""
    k = mean.shape[2]
    W = weights.sum(1)[:, None, None]
    raw = (weights @ moments).reshape(-1, 3, k, k)
    mz = mean[:, order]                                                                 # (B, S, k)
    mu = np.concatenate([(mz[:, 1:] + mz[:, :-1]) / 2, mz[:, 1:] - mz[:, :-1]], axis=2)    # (B, S - 1, 2k)
    centre = W * (mu.transpose(0, 2, 1) @ mu)
    Sxx = raw[:, 0] - centre[:, :k, :k]
    Sxd = raw[:, 1] - centre[:, :k, k:]
    Sdd = raw[:, 2] - centre[:, k:, k:]
    tot = np.trace(Sdd, axis1=1, axis2=2)
    full = tot - np.einsum("bij,bij->b", Sxd, np.linalg.solve(Sxx, Sxd))
    # the skew fit's normal equations over its free entries: with H_p = E_ij - E_ji (i < j, :func:`_skew_basis`),
    # G_pq = tr(H_p^T S_xx H_q) and h_p = tr(H_p^T S_xd) = S_xd[i, j] - S_xd[j, i]
    i, j = np.triu_indices(k, 1)
    a, b = i[None, :], j[None, :]
    i, j = i[:, None], j[:, None]
    G = (Sxx[:, i, a] * (j == b) - Sxx[:, i, b] * (j == a) - Sxx[:, j, a] * (i == b) + Sxx[:, j, b] * (i == a))
    h = Sxd[:, i[:, 0], j[:, 0]] - Sxd[:, j[:, 0], i[:, 0]]
    skew = tot - np.einsum("bp,bp->b", np.linalg.solve(G, h[..., None])[..., 0], h)
    return 1.0 - skew / tot, 1.0 - full / tot


def jpca_resampled(Z: np.ndarray, *, n_boot: int = 1000, n_shuffles: int = 100, seed: int = 0,
                   batch: int = 1024) -> JPCAResamples:
    """The skew-symmetric fit's R^2 of :func:`jpca` minus its median over ``n_shuffles`` sublayer orders (the
    permutations of :func:`jpca_shuffled` with ``seed``), on ``Z: (n_samples, n_sublayers, k)``
    (:func:`jpca_projection`'s PCs, held fixed) and on ``n_boot`` resamples of the texts
    (:func:`transformer_dynamics.bootstrap.bootstrap_counts` with ``seed``), each recomputed from per-text moments (the
    fits' least squares need only sums over texts of ``m m^T``, ``m d^T``, ``d d^T`` and the per-sublayer means),
    ``batch`` resamples at a time. Equal to :func:`jpca` and :func:`jpca_shuffled` on the texts themselves to round-off.
    -> :class:`JPCAResamples`."""
    from ..bootstrap import bootstrap_counts  # noqa: PLC0415

    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 3 or Z.shape[0] < 2 or Z.shape[1] < 3 or Z.shape[2] < 2 or Z.shape[2] % 2:
        raise ValueError(f"Z must be (n_samples >= 2, n_sublayers >= 3, even k), got {Z.shape}")
    if n_shuffles < 1 or n_boot < 1:
        raise ValueError(f"need n_shuffles >= 1 and n_boot >= 1, got {n_shuffles} and {n_boot}")
    n, S, k = Z.shape
    rng = np.random.default_rng(seed)
    orders = [np.arange(S)] + [rng.permutation(S) for _ in range(n_shuffles)]
    counts = bootstrap_counts(n, n_boot, seed)
    weights = np.concatenate([np.ones((1, n)), counts])                                   # row 0: the texts
    mean = (weights @ Z.reshape(n, S * k)).reshape(-1, S, k) / n                           # (1 + B, S, k)
    skew, full = np.empty((2, weights.shape[0], len(orders)))
    for j, order in enumerate(orders):
        moments = _moments(Z, order)
        for b0 in range(0, weights.shape[0], batch):
            sl = slice(b0, b0 + batch)
            skew[sl, j], full[sl, j] = _fits(moments, order, weights[sl], mean[sl])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(full[0] > 0, skew[0] / full[0], np.nan)
    excess = skew[:, 0] - np.median(skew[:, 1:], axis=1)
    return JPCAResamples(r2_skew=float(skew[0, 0]), ratio=float(ratio[0]), shuffled_r2_skew=skew[0, 1:].copy(),
                         shuffled=ratio[1:].copy(), excess=float(excess[0]), replicates=excess[1:], n=n)
