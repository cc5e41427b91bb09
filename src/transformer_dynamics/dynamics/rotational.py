"""jPCA (Churchland et al., Nature 2012): how rotational the trajectories over sublayers are.

``rs: (n_samples, n_sublayers, d_model)``, texts as conditions and sublayers as time, reduced to the top ``k``
PCs (:func:`jpca_projection`); :func:`jpca` fits the steps by a skew-symmetric and an unconstrained linear
map and returns their R^2, the rotational planes and their frequencies (:class:`JPCAResult`);
:func:`jpca_shuffled` is the sublayer-shuffled control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_int, check_positive_int, check_seed

__all__ = ["JPCAResult", "jpca", "jpca_projection", "jpca_shuffled"]


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
