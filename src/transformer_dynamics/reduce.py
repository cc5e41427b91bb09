"""Dimensionality reduction of the residual stream: PCA (Figure 4 A–C) and the compressing autoencoder
(CAE, Figure 3), paper sections 2.7, 2.8 and 3.3.

Both methods treat **every sublayer vector as one sample**: ``rs: (n_samples, n_sublayers, d_model)`` is
flattened to ``(n_samples * n_sublayers, d_model)`` rows, one map is fitted to all rows, and the trajectory of
a text is the image of its ``n_sublayers`` vectors under that single map.

PCA
    :class:`PCA` is a scikit-learn-like estimator (``fit``/``partial_fit``/``transform``/``inverse_transform``,
    attributes ``mean_``, ``components_``, ``explained_variance_``, ``explained_variance_ratio_``,
    ``n_features_in_``). ``fit`` on an in-memory array uses an SVD (or the covariance eigendecomposition when
    rows far outnumber features); ``partial_fit`` streams chunks and accumulates the sum and ``X^T X`` in
    float64, so it fits data that never sits in memory (the paper's scale is ~100 GB). Both agree with
    :class:`sklearn.decomposition.PCA` (components up to sign; here the largest-magnitude entry of each
    component is positive, scikit-learn's convention since 1.5).

CAE
    :class:`CompressingAutoencoder` has encoder widths in the geometric progression of :func:`geometric_widths`
    and a mirrored decoder; its input scaler lives inside the module as buffers, so ``state_dict()`` plus
    :meth:`CompressingAutoencoder.config` is the whole trained model, and ``encode``/``forward`` take raw
    residual-stream vectors. :func:`fit_cae` trains it with the paper's recipe (Adam 1e-3, MSE, at most 100
    epochs, early stopping with patience 10 on a validation split, best weights kept), splitting train /
    validation / test **by text**, and streams chunks of texts so ``rs`` may be a memory map.

Explained variance per sublayer (Fig 3D, Fig 4C) has one definition for both methods, see
:func:`explained_variance_from_reconstruction`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "PCA",
    "pca_trajectories",
    "cumulative_explained_variance",
    "explained_variance_curve_per_sublayer",
    "explained_variance_per_sublayer",
    "components_for_variance",
    "sublayer_explained_variance_ratio",
    "turning_angle",
    "explained_variance_from_reconstruction",
    "Standardizer",
    "geometric_widths",
    "CompressingAutoencoder",
    "CAEResult",
    "split_by_sample",
    "fit_cae",
    "bottleneck_trajectories",
    "reconstruct",
    "successive_distance",
    "explained_variance_per_sublayer_cae",
]


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------

def _as_rows(X: Any, name: str = "X") -> np.ndarray:
    """``(n_rows, d)`` or ``(n_samples, n_sublayers, d)`` -> ``(n_rows, d)`` (a view where possible)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim == 3:
        X = X.reshape(-1, X.shape[-1])
    if X.ndim != 2:
        raise ValueError(f"{name} must be (n_rows, d_model) or (n_samples, n_sublayers, d_model); got shape "
                         f"{X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    return X


def _check_rs(rs: Any, name: str = "rs") -> None:
    shape = getattr(rs, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"{name} must be an array (n_samples, n_sublayers, d_model); got shape {shape}")
    if shape[0] < 1 or shape[1] < 1 or shape[2] < 1:
        raise ValueError(f"{name} has an empty axis: shape {tuple(shape)}")


def _read(rs: Any, start: int, stop: int) -> np.ndarray:
    """Samples ``start … stop-1`` of ``rs`` as a writable float32 array ``(m, n_sublayers, d_model)``.

    ``rs`` may be a numpy array or memory map, a torch tensor, or a store with ``read(start, stop)`` and
    ``shape`` (e.g. :class:`transformer_dynamics.cache.ActivationStore`, which reads only the shards needed).
    """
    if isinstance(rs, torch.Tensor):
        return rs[start:stop].detach().cpu().numpy().astype(np.float32)
    if not isinstance(rs, np.ndarray) and hasattr(rs, "read"):
        return np.array(rs.read(start, stop), dtype=np.float32)
    return np.array(rs[start:stop], dtype=np.float32)  # a copy (memmap slices are read-only views)


def _iter_selected(rs: Any, samples: np.ndarray | None, chunk_samples: int | None,
                   gen: torch.Generator | None = None) -> Iterable[np.ndarray]:
    """Blocks ``(m, n_sublayers, d_model)`` of the texts in ``samples`` (all if None), read as contiguous ranges
    of ``chunk_samples`` texts (in a random order when ``gen`` is given), each filtered to ``samples``."""
    n = rs.shape[0]
    mask = np.ones(n, dtype=bool)
    if samples is not None:
        mask[:] = False
        mask[np.asarray(samples, dtype=np.int64)] = True
    starts = np.arange(0, n, n if not chunk_samples else max(1, int(chunk_samples)))
    if gen is not None:
        starts = starts[torch.randperm(len(starts), generator=gen).numpy()]
    step = n if not chunk_samples else max(1, int(chunk_samples))
    for a in starts:
        b = min(n, int(a) + step)
        sel = np.nonzero(mask[a:b])[0]
        if len(sel) == 0:
            continue
        if isinstance(rs, np.ndarray) and not isinstance(rs, np.memmap):
            yield np.array(rs[a:b][sel], dtype=np.float32)
        else:
            block = _read(rs, int(a), b)
            yield block if len(sel) == b - a else block[sel]


def _sign_flip(components: torch.Tensor) -> torch.Tensor:
    """Make the largest-|.| entry of each row positive (scikit-learn's ``svd_flip(u_based_decision=False)``)."""
    idx = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


# ----------------------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------------------

class PCA:
    """Principal component analysis of residual-stream vectors (paper section 2.8), in torch with float64
    accumulation.

    Parameters
    ----------
    n_components: number of components kept (``None``: ``min(n_rows, d_model)``).
    svd_solver: ``"auto"`` (covariance eigendecomposition when ``n_rows >= d_model``, else SVD),
        ``"full"`` (SVD of the centred data) or ``"covariance"``. :meth:`partial_fit` always uses the
        covariance route.
    chunk_rows: rows per block when :meth:`fit` forms ``X^T X`` (bounds the float64 temporary).

    Attributes (after fitting; numpy float64)
    -----------------------------------------
    mean_: ``(d_model,)``; components_: ``(n_components, d_model)``, orthonormal rows;
    explained_variance_: ``(n_components,)``, variance along each component (denominator ``n_rows - 1``,
    like scikit-learn); explained_variance_ratio_: ``(n_components,)``, fraction of the total variance;
    singular_values_: ``(n_components,)``; n_components_; n_features_in_; n_samples_seen_ (rows).

    ``fit(X)`` takes ``X: (n_rows, d_model)`` or ``rs: (n_samples, n_sublayers, d_model)`` (flattened to
    ``(n_samples * n_sublayers, d_model)`` as in the paper). ``partial_fit(chunk)`` accumulates the (shifted)
    sum and ``X^T X`` in float64 over chunks; the attributes are computed lazily from the accumulators, so
    streaming many chunks costs one eigendecomposition at the end.
    """

    def __init__(self, n_components: int | None = None, *, svd_solver: str = "auto", chunk_rows: int = 16384):
        if n_components is not None and (not isinstance(n_components, (int, np.integer)) or n_components < 1):
            raise ValueError(f"n_components must be a positive int or None; got {n_components!r}")
        if svd_solver not in ("auto", "full", "covariance"):
            raise ValueError(f"svd_solver must be 'auto', 'full' or 'covariance'; got {svd_solver!r}")
        self.n_components = n_components
        self.svd_solver = svd_solver
        self.chunk_rows = int(chunk_rows)
        self._reset()

    # -- state ----------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._n = 0
        self._shift: torch.Tensor | None = None  # (d,) float64, first chunk's mean (numerical stability)
        self._sum: torch.Tensor | None = None    # (d,) float64, sum of (x - shift)
        self._gram: torch.Tensor | None = None   # (d, d) float64, sum of (x - shift)(x - shift)^T
        self._dirty = False
        self._fitted: dict[str, np.ndarray] | None = None

    def _check_fitted(self) -> dict[str, np.ndarray]:
        if self._dirty:
            self._finalize_from_gram()
        if self._fitted is None:
            raise ValueError("this PCA is not fitted yet; call fit(X) or partial_fit(chunk) first")
        return self._fitted

    def __getattr__(self, name: str) -> Any:  # fitted attributes, computed lazily
        if name in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_",
                    "singular_values_", "n_components_", "n_features_in_", "n_samples_seen_", "noise_variance_"):
            fitted = self.__dict__.get("_fitted")
            if fitted is None and not self.__dict__.get("_dirty", False):
                raise AttributeError(f"{name} is not available: the PCA is not fitted yet")
            return self._check_fitted()[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"PCA(n_components={self.n_components!r}, svd_solver={self.svd_solver!r})"

    # -- fitting --------------------------------------------------------------------------------------
    def _accumulate(self, X: np.ndarray) -> None:
        d = X.shape[1]
        if self._shift is None:
            self._shift = torch.as_tensor(X.mean(axis=0, dtype=np.float64))
            self._sum = torch.zeros(d, dtype=torch.float64)
            self._gram = torch.zeros(d, d, dtype=torch.float64)
        elif self._shift.shape[0] != d:
            raise ValueError(f"chunk has {d} features but the PCA was started with {self._shift.shape[0]}")
        for start in range(0, X.shape[0], self.chunk_rows):
            block = torch.as_tensor(np.asarray(X[start:start + self.chunk_rows]), dtype=torch.float64)
            block = block - self._shift
            self._sum += block.sum(0)
            self._gram.addmm_(block.T, block)
        self._n += X.shape[0]
        self._dirty = True

    def partial_fit(self, X: Any) -> "PCA":
        """Add a chunk ``X: (n_rows, d_model)`` or ``(n_samples, n_sublayers, d_model)`` to the fit."""
        self._accumulate(_as_rows(X))
        return self

    def fit(self, X: Any) -> "PCA":
        """Fit on all of ``X: (n_rows, d_model)`` or ``rs: (n_samples, n_sublayers, d_model)``."""
        X = _as_rows(X)
        self._reset()
        n, d = X.shape
        solver = self.svd_solver
        if solver == "auto":
            solver = "covariance" if n >= d else "full"
        if solver == "covariance":
            self._accumulate(X)
            self._finalize_from_gram()
            return self
        Xt = torch.as_tensor(X, dtype=torch.float64)
        mean = Xt.mean(0)
        Xc = Xt - mean
        _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
        self._n = n
        self._set(mean, S ** 2, Vh, n)
        return self

    def fit_transform(self, X: Any) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``: ``(..., d_model) -> (..., n_components)``."""
        return self.fit(X).transform(X)

    def _finalize_from_gram(self) -> None:
        n = self._n
        if n < 1:
            raise ValueError("no data seen; call partial_fit(chunk) first")
        mean_shifted = self._sum / n
        cov_sum = self._gram - n * torch.outer(mean_shifted, mean_shifted)  # sum of centred outer products
        cov_sum = 0.5 * (cov_sum + cov_sum.T)
        evals, evecs = torch.linalg.eigh(cov_sum)
        evals = evals.flip(0).clamp_min(0.0)
        Vh = evecs.flip(1).T
        self._set(self._shift + mean_shifted, evals, Vh, n)

    def _set(self, mean: torch.Tensor, sq_sing: torch.Tensor, Vh: torch.Tensor, n: int) -> None:
        """Store the fitted attributes from ``mean (d,)``, squared singular values (desc) and ``Vh``."""
        d = mean.shape[0]
        k_max = min(n, d)
        k = k_max if self.n_components is None else int(self.n_components)
        if k > k_max:
            raise ValueError(f"n_components={k} exceeds min(n_rows, d_model)={k_max}; lower it or add rows")
        denom = max(n - 1, 1)
        var = sq_sing / denom
        total = var.sum()
        comps = _sign_flip(Vh[:k].contiguous())
        noise = var[k:k_max].mean() if k < k_max else torch.tensor(0.0, dtype=torch.float64)
        self._fitted = {
            "mean_": mean.numpy().copy(),
            "components_": comps.numpy().copy(),
            "explained_variance_": var[:k].numpy().copy(),
            "explained_variance_ratio_": (var[:k] / total if total > 0 else torch.zeros(k, dtype=var.dtype)).numpy(),
            "singular_values_": sq_sing[:k].clamp_min(0).sqrt().numpy().copy(),
            "n_components_": k,
            "n_features_in_": d,
            "n_samples_seen_": n,
            "noise_variance_": float(noise),
        }
        self._dirty = False

    # -- projecting -----------------------------------------------------------------------------------
    def transform(self, X: Any, n_components: int | None = None) -> np.ndarray:
        """Project ``X: (..., d_model)`` onto the first ``n_components`` (default all kept) components.

        Returns ``(..., n_components)`` in ``X``'s float dtype (float32 stays float32); computed in float64.
        """
        f = self._check_fitted()
        X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        if X.shape[-1] != f["n_features_in_"]:
            raise ValueError(f"X has {X.shape[-1]} features; this PCA was fitted on {f['n_features_in_']}")
        k = f["n_components_"] if n_components is None else int(n_components)
        if not 1 <= k <= f["n_components_"]:
            raise ValueError(f"n_components must be in [1, {f['n_components_']}]; got {k}")
        out_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        V = torch.as_tensor(f["components_"][:k])
        mu = torch.as_tensor(f["mean_"])
        flat = X.reshape(-1, X.shape[-1])
        out = np.empty((flat.shape[0], k), dtype=out_dtype)
        for start in range(0, flat.shape[0], self.chunk_rows):
            block = torch.as_tensor(np.asarray(flat[start:start + self.chunk_rows]), dtype=torch.float64)
            out[start:start + block.shape[0]] = ((block - mu) @ V.T).numpy()
        return out.reshape(*X.shape[:-1], k)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Map ``Z: (..., k)`` back to ``(..., d_model)``: ``Z @ components_[:k] + mean_`` (paper eq. for
        teleportation, ``x = z V[:, :k]^T + mu``). ``k`` may be fewer than ``n_components_`` (the first k)."""
        f = self._check_fitted()
        as_torch = isinstance(Z, torch.Tensor)
        Zn = Z.detach().cpu().numpy() if as_torch else np.asarray(Z)
        k = Zn.shape[-1]
        if not 1 <= k <= f["n_components_"]:
            raise ValueError(f"Z's last axis ({k}) must be between 1 and n_components_={f['n_components_']}")
        out_dtype = Zn.dtype if np.issubdtype(Zn.dtype, np.floating) else np.float64
        Zt = torch.as_tensor(Zn, dtype=torch.float64)
        X = Zt @ torch.as_tensor(f["components_"][:k]) + torch.as_tensor(f["mean_"])
        out = X.numpy().astype(out_dtype, copy=False)
        return torch.as_tensor(out) if as_torch else out


def pca_trajectories(pca: PCA, rs: Any, n_components: int | None = None) -> np.ndarray:
    """Trajectories in PCA space: ``rs: (n_samples, n_sublayers, d_model)`` ->
    ``(n_samples, n_sublayers, k)`` with ``k = n_components`` (default: all the PCA keeps)."""
    _check_rs(rs)
    return pca.transform(np.asarray(rs), n_components=n_components)


def cumulative_explained_variance(pca_or_ratio: PCA | np.ndarray) -> np.ndarray:
    """Cumulative explained-variance ratio over components (Fig 4B): ``(n_components,)``, non-decreasing,
    ending at the fraction of the total variance the kept components explain (1 if all are kept)."""
    ratio = pca_or_ratio.explained_variance_ratio_ if isinstance(pca_or_ratio, PCA) else np.asarray(pca_or_ratio)
    if ratio.ndim != 1:
        raise ValueError(f"expected a 1-D explained_variance_ratio_; got shape {ratio.shape}")
    return np.cumsum(ratio)


CENTERS = ("sublayer", "global")


def _sst(sum_y2: torch.Tensor, sum_y: torch.Tensor, n: int, center: str) -> torch.Tensor:
    """Total sum of squares per sublayer from shifted sums: ``sum_y2 (s,)`` = sum_i ||y_is||^2 and
    ``sum_y (s, d)`` = sum_i y_is, about each sublayer's own mean or the mean of all rows; NaN where zero."""
    if center == "sublayer":
        sst = sum_y2 - (sum_y ** 2).sum(1) / n
    elif center == "global":
        m = sum_y.sum(0) / (n * sum_y.shape[0])
        sst = sum_y2 - 2 * (sum_y @ m) + n * (m ** 2).sum()
    else:
        raise ValueError(f"center must be one of {CENTERS}; got {center!r}")
    return torch.where(sst > 1e-12 * sst.abs().max().clamp_min(1e-300), sst, torch.full_like(sst, float("nan")))


def explained_variance_curve_per_sublayer(pca: PCA, rs: Any, max_components: int | None = None, *,
                                          center: str = "sublayer", chunk_samples: int | None = 256) -> np.ndarray:
    """Explained variance of each sublayer by the first k global components, for every k.

    ``rs: (n_samples, n_sublayers, d_model)`` -> ``(n_sublayers, max_components)``; entry ``[s, k-1]`` is
    :func:`explained_variance_from_reconstruction` of sublayer s reconstructed with components ``0..k-1``:
    ``1 - sum_i ||x_is - x̂_is||^2 / sum_i ||x_is - m_s||^2``, where ``x̂ = mu + P_k (x - mu)`` (``mu`` the
    global PCA mean, ``P_k`` the projector onto the first k components) and ``m_s`` the **sublayer's own
    mean** over samples. So it is the fraction of that sublayer's across-text variance the reconstruction
    captures; it can be negative when the k components miss the sublayer's offset from the global mean.
    ``center="global"`` measures instead against the mean of all vectors of ``rs`` (a sublayer's offset
    from it then counts as variance to explain); NaN for a sublayer without variance.

    Because the components are orthonormal, ``||y - P_k y||^2 = ||y||^2 - sum_{j<k} z_j^2`` with
    ``y = x - mu`` and ``z = V y``, so all k come from one projection. Streams ``rs`` in chunks of samples.
    """
    _check_rs(rs)
    f = pca._check_fitted()
    n, s, d = rs.shape
    K = f["n_components_"] if max_components is None else int(max_components)
    if not 1 <= K <= f["n_components_"]:
        raise ValueError(f"max_components must be in [1, {f['n_components_']}]; got {K}")
    V = torch.as_tensor(f["components_"][:K])
    mu = torch.as_tensor(f["mean_"])
    sum_y2 = torch.zeros(s, dtype=torch.float64)       # sum_i ||y_is||^2
    sum_z2 = torch.zeros(s, K, dtype=torch.float64)    # sum_i z_isj^2
    sum_x = torch.zeros(s, d, dtype=torch.float64)
    for block in _iter_selected(rs, None, chunk_samples):
        x = torch.as_tensor(block, dtype=torch.float64)
        y = x - mu
        z = y @ V.T
        sum_y2 += (y ** 2).sum(dim=(0, 2))
        sum_z2 += (z ** 2).sum(0)
        sum_x += y.sum(0)
    sst = _sst(sum_y2, sum_x, n, center)                # from y = x - mu (shift invariant)
    sse = sum_y2[:, None] - torch.cumsum(sum_z2, dim=1)
    return (1.0 - sse / sst[:, None]).numpy()


def explained_variance_per_sublayer(pca: PCA, rs: Any, n_components: int = 100, *, center: str = "sublayer",
                                    chunk_samples: int | None = 256) -> np.ndarray:
    """Fraction of each sublayer's variance captured by the first ``n_components`` PCs (Fig 4C).

    ``rs: (n_samples, n_sublayers, d_model)`` -> ``(n_sublayers,)``; the definition (variance about the
    sublayer's own mean, reconstruction through the global mean) is in
    :func:`explained_variance_curve_per_sublayer`. ``n_components`` is clipped to the number the PCA keeps.
    """
    k = min(int(n_components), pca._check_fitted()["n_components_"])
    return explained_variance_curve_per_sublayer(pca, rs, k, center=center, chunk_samples=chunk_samples)[:, k - 1]


def components_for_variance(curve: np.ndarray, threshold: float = 0.9, *,
                            not_reached: float = np.nan) -> np.ndarray:
    """Smallest number of components reaching ``threshold`` explained variance.

    ``curve: (..., K)`` cumulative explained variance over k = 1..K (e.g. from
    :func:`explained_variance_curve_per_sublayer`, or :func:`cumulative_explained_variance`) ->
    ``(...)`` float array of counts in ``1..K`` (a numpy float for a 1-D curve); ``not_reached`` (default NaN;
    ``np.inf`` to count it as "more than K") where K components do not reach the threshold, and NaN where the
    curve is undefined (all NaN, e.g. a sublayer without variance).
    """
    curve = np.asarray(curve, dtype=float)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    reached = curve >= threshold
    first = np.argmax(reached, axis=-1).astype(float) + 1
    out = np.where(reached.any(axis=-1), first, not_reached)
    return np.where(np.isnan(curve).all(axis=-1), np.nan, out)[()]  # a numpy scalar for a 1-D curve


def sublayer_explained_variance_ratio(rs: Any, *, sublayers_per_batch: int = 4) -> np.ndarray:
    """Spectrum of each sublayer's **own** PCA (a check on Fig 4C that does not depend on the global fit).

    ``rs: (n_samples, n_sublayers, d_model)`` -> ``(n_sublayers, min(n_samples, d_model))``: row s is the
    explained-variance ratio (descending, summing to 1) of the vectors of sublayer s centred on their own mean,
    from the eigenvalues of the smaller of the Gram (``n x n``) and scatter (``d x d``) matrices in float64,
    batched over sublayers. Rows of a sublayer without variance are NaN. ``np.cumsum(..., axis=1)`` with
    :func:`components_for_variance` gives each sublayer's number of components for a variance fraction.
    """
    _check_rs(rs)
    n, s, d = rs.shape
    if n < 2:
        raise ValueError("need at least 2 samples for a per-sublayer PCA")
    out = np.empty((s, min(n, d)))
    for a in range(0, s, sublayers_per_batch):
        x = torch.as_tensor(np.asarray(rs[:, a:a + sublayers_per_batch]), dtype=torch.float64).transpose(0, 1)
        x = x - x.mean(1, keepdim=True)                              # (b, n, d)
        g = x @ x.transpose(1, 2) if n <= d else x.transpose(1, 2) @ x
        ev = torch.linalg.eigvalsh(g).flip(-1).clamp_min(0.0)        # (b, min(n, d)), descending
        tot = ev.sum(1, keepdim=True)
        out[a:a + x.shape[0]] = torch.where(tot > 0, ev / tot, torch.full_like(ev, float("nan"))).numpy()
    return out


def turning_angle(traj: np.ndarray) -> np.ndarray:
    """Angle between successive steps of a trajectory, in degrees (0 = straight on, 180 = reversal).

    ``traj: (n_samples, n_sublayers, k)`` (or one trajectory ``(n_sublayers, k)``) ->
    ``(n_samples, n_sublayers - 2)`` (or ``(n_sublayers - 2,)``); entry ``t`` is the angle between the steps
    ``t -> t+1`` and ``t+1 -> t+2``; NaN where a step has zero length. Falling angles = straightening (Fig 3B).
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


def explained_variance_from_reconstruction(rs: np.ndarray, recon: np.ndarray, *,
                                           center: str = "sublayer") -> np.ndarray:
    """Explained variance per sublayer of a reconstruction (one definition for PCA and CAE).

    ``rs, recon: (n_samples, n_sublayers, d_model)`` -> ``(n_sublayers,)``:
    ``EV_s = 1 - sum_i ||x_is - x̂_is||^2 / sum_i ||x_is - m_s||^2`` with ``m_s`` the sublayer's own mean
    over samples (the coefficient of determination of sublayer s, pooled over features; 1 is perfect,
    0 is no better than predicting the sublayer's mean, negative is worse). ``center="global"``: ``m_s``
    replaced by the mean of all vectors of ``rs``. NaN for a sublayer without variance.

    Why "own mean" by default: it asks how much of the across-text variation *at that depth* survives the
    reduction. Where texts barely differ at a sublayer (e.g. the first ones when every text ends with the same
    token) the value is low or negative even if the sublayer's position is reproduced well; the global centre
    rewards getting that position right.
    """
    rs = np.asarray(rs, dtype=np.float64)
    recon = np.asarray(recon, dtype=np.float64)
    if rs.shape != recon.shape or rs.ndim != 3:
        raise ValueError(f"rs and recon must both be (n_samples, n_sublayers, d_model); got {rs.shape} and "
                         f"{recon.shape}")
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}; got {center!r}")
    sse = ((rs - recon) ** 2).sum(axis=(0, 2))
    m = rs.mean(axis=0, keepdims=True) if center == "sublayer" else rs.mean(axis=(0, 1), keepdims=True)
    sst = ((rs - m) ** 2).sum(axis=(0, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 1e-12 * max(sst.max(), 1e-300), 1.0 - sse / sst, np.nan)


# ----------------------------------------------------------------------------------------------------------
# CAE: scaling and architecture
# ----------------------------------------------------------------------------------------------------------

class Standardizer:
    """Invertible affine input scaling for the CAE, ``z = (x - mean_) / scale_``, fitted on training rows.

    kind: ``"standard"`` (per-feature mean and standard deviation: every feature weighs equally in the MSE,
    which keeps a few huge "massive activation" features from owning the loss), ``"global"`` (per-feature
    mean, one scalar scale = the RMS of the centred data: preserves the geometry of the residual stream up to
    a shift and a zoom) or ``"none"``. The same map is applied to every sublayer (it does not know a vector's
    depth), so the bottleneck trajectory is the image of the RS trajectory under one fixed function and the
    growth of the RS norm over depth stays visible in it. Features with zero variance get scale 1.

    ``fit``/``partial_fit`` take ``(n_rows, d)`` or ``(n_samples, n_sublayers, d)``; sums accumulate in
    float64. Attributes: ``mean_ (d,)``, ``scale_ (d,)`` float64.
    """

    KINDS = ("standard", "global", "none")

    def __init__(self, kind: str = "standard"):
        if kind not in self.KINDS:
            raise ValueError(f"scaling must be one of {self.KINDS}; got {kind!r}")
        self.kind = kind
        self._n = 0
        self._shift = None
        self._s1 = None
        self._s2 = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def partial_fit(self, X: Any) -> "Standardizer":
        X = _as_rows(X).astype(np.float64)
        if self._shift is None:
            self._shift = X.mean(0)
            self._s1 = np.zeros(X.shape[1])
            self._s2 = np.zeros(X.shape[1])
        Y = X - self._shift
        self._s1 += Y.sum(0)
        self._s2 += (Y ** 2).sum(0)
        self._n += X.shape[0]
        m = self._s1 / self._n
        var = np.maximum(self._s2 / self._n - m ** 2, 0.0)
        d = X.shape[1]
        if self.kind == "none":
            self.mean_, self.scale_ = np.zeros(d), np.ones(d)
            return self
        self.mean_ = self._shift + m
        if self.kind == "standard":
            std = np.sqrt(var)
            self.scale_ = np.where(std > 1e-12 * max(std.max(), 1e-300), std, 1.0)
        else:
            rms = math.sqrt(var.sum() / d)
            self.scale_ = np.full(d, rms if rms > 0 else 1.0)
        return self

    def fit(self, X: Any) -> "Standardizer":
        self.__init__(self.kind)
        return self.partial_fit(X)

    def _check(self) -> None:
        if self.mean_ is None:
            raise ValueError("the Standardizer is not fitted; call fit(X) first")

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(..., d) -> (..., d)``: ``(X - mean_) / scale_``."""
        self._check()
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """``(..., d) -> (..., d)``: ``Z * scale_ + mean_``."""
        self._check()
        return np.asarray(Z, dtype=np.float64) * self.scale_ + self.mean_


def geometric_widths(d_in: int, d_bottle: int = 2, k: int = 10) -> list[int]:
    """Layer widths of the CAE encoder (paper 2.7): ``d_i = d_in * r**i`` for ``i = 0 … k-1`` with
    ``r = (d_bottle / d_in) ** (1 / (k - 1))``, rounded to integers, so ``d_0 = d_in`` and
    ``d_{k-1} = d_bottle``.

    Returns ``k`` ints (``k`` layers of units, input and bottleneck included, hence ``k - 1`` Linear maps in
    the encoder and ``k - 1`` in the mirrored decoder). Widths never go below ``d_bottle`` and never increase.
    """
    if not (isinstance(k, (int, np.integer)) and k >= 2):
        raise ValueError(f"k (number of layers, input and bottleneck included) must be an int >= 2; got {k!r}")
    if not (1 <= d_bottle <= d_in):
        raise ValueError(f"need 1 <= d_bottle <= d_in; got d_in={d_in}, d_bottle={d_bottle}")
    r = (d_bottle / d_in) ** (1.0 / (k - 1))
    widths = [int(round(d_in * r ** i)) for i in range(k)]
    widths[0], widths[-1] = int(d_in), int(d_bottle)
    out = []
    for w in widths:
        w = max(w, d_bottle)
        out.append(min(w, out[-1]) if out else w)
    return out


def _stack(widths: Sequence[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU between consecutive widths; the last layer is Linear only."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.LayerNorm(b), nn.ReLU()]
    return nn.Sequential(*layers)


class CompressingAutoencoder(nn.Module):
    """The paper's compressing autoencoder (section 2.7).

    Encoder: widths ``geometric_widths(d_model, d_bottle, k)``; each Linear is followed by LayerNorm and ReLU
    except the last (the bottleneck is linear). Decoder: the mirrored widths, same rule (linear output).
    The input scaler is stored as buffers ``input_mean``/``input_scale`` (``(d_model,)``), so ``encode`` and
    ``forward`` take **raw** residual-stream vectors and ``forward`` returns raw reconstructions;
    ``encode_scaled``/``forward_scaled`` work in the scaled space the loss is computed in.

    Shapes: ``encode: (..., d_model) -> (..., d_bottle)``, ``decode: (..., d_bottle) -> (..., d_model)``.
    """

    def __init__(self, d_model: int, d_bottle: int = 2, k: int = 10, widths: Sequence[int] | None = None):
        super().__init__()
        widths = list(widths) if widths is not None else geometric_widths(d_model, d_bottle, k)
        if widths[0] != d_model or widths[-1] != d_bottle:
            raise ValueError(f"widths must run from d_model={d_model} to d_bottle={d_bottle}; got {widths}")
        self.widths = widths
        self.encoder = _stack(widths)
        self.decoder = _stack(widths[::-1])
        self.register_buffer("input_mean", torch.zeros(d_model))
        self.register_buffer("input_scale", torch.ones(d_model))

    @property
    def d_model(self) -> int:
        return self.widths[0]

    @property
    def d_bottle(self) -> int:
        return self.widths[-1]

    def config(self, scaling: str | None = None) -> dict[str, Any]:
        """JSON-able description: enough, with ``state_dict()``, to rebuild the module."""
        return {"class": "CompressingAutoencoder", "widths": list(map(int, self.widths)),
                "d_model": self.d_model, "d_bottle": self.d_bottle, "k": len(self.widths),
                **({"scaling": scaling} if scaling else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CompressingAutoencoder":
        widths = config["widths"]
        return cls(widths[0], widths[-1], widths=widths)

    def set_scaler(self, scaler: Standardizer) -> "CompressingAutoencoder":
        scaler._check()
        self.input_mean.copy_(torch.as_tensor(scaler.mean_, dtype=self.input_mean.dtype))
        self.input_scale.copy_(torch.as_tensor(scaler.scale_, dtype=self.input_scale.dtype))
        return self

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.input_scale + self.input_mean

    def encode_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.scale(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.unscale(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# ----------------------------------------------------------------------------------------------------------
# CAE: training
# ----------------------------------------------------------------------------------------------------------

def split_by_sample(n_samples: int, *, test_fraction: float = 0.15, val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split text indices ``0 … n_samples-1`` into (train, validation, test), sorted int arrays.

    All sublayers of a text go to the same side (the paper: 85k train / 15k test texts). ``test_fraction`` and
    ``val_fraction`` are fractions of all texts; each non-zero fraction gets at least one text.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError(f"need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1; got "
                         f"{test_fraction}, {val_fraction}")
    n_test = int(round(test_fraction * n_samples)) if test_fraction else 0
    n_val = int(round(val_fraction * n_samples)) if val_fraction else 0
    n_test = max(n_test, 1) if test_fraction else 0
    n_val = max(n_val, 1) if val_fraction else 0
    if n_samples - n_test - n_val < 1:
        raise ValueError(f"n_samples={n_samples} is too small for the split (test {n_test}, val {n_val}); "
                         "use more texts or smaller fractions")
    perm = np.random.default_rng(seed).permutation(n_samples)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test:n_test + n_val])
    train = np.sort(perm[n_test + n_val:])
    return train, val, test


@dataclass
class CAEResult:
    """A trained CAE and how it was trained.

    model: the :class:`CompressingAutoencoder` with the best validation weights (scaler inside);
    config: JSON-able (widths, scaling, hyper-parameters); history: per-epoch ``train_loss``/``val_loss``
    (MSE in the scaled space); best_epoch (0-based); train_idx/val_idx/test_idx: text indices of the split;
    test_loss: scaled-space MSE on the test texts; test_ev: explained variance of all test vectors about their
    mean (raw space); train_time_s: wall time of training.
    """

    model: CompressingAutoencoder
    config: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    test_idx: np.ndarray | None = None
    test_loss: float = float("nan")
    test_ev: float = float("nan")
    train_time_s: float = float("nan")

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: the model's ``state_dict`` (keys prefixed ``model.``) plus the split indices as
        tensors, and a JSON-able dict with the config (architecture, scaling, hyper-parameters), history and
        metrics. :meth:`from_state` inverts it (tensors may also be numpy arrays), so the pair goes straight
        through ``cache.save_module(root, identity, tensors, meta)`` / ``cache.load_module(root, identity)``."""
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        for name in ("train_idx", "val_idx", "test_idx"):
            idx = getattr(self, name)
            if idx is not None:
                tensors[name] = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        meta = {"config": self.config, "history": self.history, "best_epoch": int(self.best_epoch),
                "test_loss": float(self.test_loss), "test_ev": float(self.test_ev),
                "train_time_s": float(self.train_time_s)}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "CAEResult":
        model = CompressingAutoencoder.from_config(meta["config"])
        model.load_state_dict({k[len("model."):]: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()
                               if k.startswith("model.")})
        model.eval()
        idx = {n: (np.asarray(tensors[n]) if n in tensors else None) for n in ("train_idx", "val_idx", "test_idx")}
        return cls(model=model, config=meta["config"], history=meta.get("history", {}),
                   best_epoch=meta.get("best_epoch", -1), test_loss=meta.get("test_loss", float("nan")),
                   test_ev=meta.get("test_ev", float("nan")), train_time_s=meta.get("train_time_s", float("nan")),
                   **idx)


def _batches(rs: Any, samples: np.ndarray, chunk_samples: int, batch_size: int, gen: torch.Generator | None,
             device: torch.device) -> Iterable[torch.Tensor]:
    """Rows (sublayer vectors) of ``rs[samples]`` in mini-batches; blocks and rows shuffled when ``gen``."""
    for block in _iter_selected(rs, samples, chunk_samples, gen):
        rows = torch.from_numpy(block.reshape(-1, block.shape[-1])).to(device)
        if gen is not None:
            rows = rows[torch.randperm(rows.shape[0], generator=gen).to(device)]
        for b in range(0, rows.shape[0], batch_size):
            yield rows[b:b + batch_size]


@torch.no_grad()
def _mean_loss(model: CompressingAutoencoder, rs: Any, samples: np.ndarray, chunk_samples: int,
               batch_size: int, device: torch.device) -> float:
    total, count = 0.0, 0
    for x in _batches(rs, samples, chunk_samples, max(batch_size, 4096), None, device):
        xs = model.scale(x)
        total += float(((model.forward_scaled(xs) - xs) ** 2).sum(dtype=torch.float64))
        count += x.numel()
    return total / max(count, 1)


def fit_cae(rs: Any, *, k: int = 10, d_bottle: int = 2, epochs: int = 100, patience: int = 10,
            lr: float = 1e-3, batch_size: int = 256, test_fraction: float = 0.15, val_fraction: float = 0.1,
            seed: int = 0, scaling: str = "standard", chunk_samples: int | None = None,
            device: str | torch.device | None = None, num_threads: int | None = None,
            progress: bool = True) -> CAEResult:
    """Train the compressing autoencoder on residual-stream vectors (paper section 2.7).

    Parameters
    ----------
    rs: ``(n_samples, n_sublayers, d_model)``: a numpy array, ``np.memmap``, torch tensor, or a store with
        ``shape`` and ``read(start, stop)`` (:class:`transformer_dynamics.cache.ActivationStore`), so a cached
        capture streams from disk with ``chunk_samples``.
    k: layers of units per half, input and bottleneck included (:func:`geometric_widths`; the paper's Fig 3
        used 10). d_bottle: bottleneck width (2).
    epochs, patience, lr: at most ``epochs`` epochs of Adam(lr) on the MSE; stop when the validation loss
        has not improved for ``patience`` epochs; the best-validation weights are kept.
    batch_size: sublayer vectors per step. Every sublayer vector is one training sample.
    test_fraction, val_fraction: fractions of **texts** held out (:func:`split_by_sample`); all sublayers of
        a text land on one side. Validation drives early stopping; test is only evaluated at the end.
    seed: seeds the split, the initial weights and the shuffling (same seed and data -> same weights on the
        same machine and thread count).
    scaling: input scaling fitted on the training texts only (:class:`Standardizer`): ``"standard"``
        (default, per-feature standardisation), ``"global"`` or ``"none"``. The loss is the MSE in the
        scaled space; outputs (trajectories, reconstructions, explained variance) are in raw RS units.
    chunk_samples: texts read at a time (default: all, i.e. in memory). Set it to stream ``rs`` from disk:
        each epoch reads contiguous blocks of ``chunk_samples`` texts in a random block order, keeps the
        training texts of each block and shuffles their rows (memory holds one block).
    device: torch device (default CPU). num_threads: torch CPU threads while training (default: leave as
        is); the network is small, so 1 thread is often as fast and far faster on a busy machine.
    progress: a tqdm bar over epochs showing the losses.

    Returns a :class:`CAEResult` (model in eval mode).
    """
    _check_rs(rs)
    _kw = dict(k=k, d_bottle=d_bottle, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size,
               test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, scaling=scaling,
               chunk_samples=chunk_samples, device=device, progress=progress)
    if num_threads is None:
        return _fit_cae(rs, **_kw)
    old = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        return _fit_cae(rs, **_kw)
    finally:
        torch.set_num_threads(old)


def _fit_cae(rs, *, k, d_bottle, epochs, patience, lr, batch_size, test_fraction, val_fraction, seed, scaling,
             chunk_samples, device, progress) -> CAEResult:
    from tqdm.auto import tqdm

    n, s, d = rs.shape
    if epochs < 1 or patience < 1:
        raise ValueError(f"epochs and patience must be >= 1; got {epochs}, {patience}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    chunk = n if not chunk_samples else int(chunk_samples)
    train_idx, val_idx, test_idx = split_by_sample(n, test_fraction=test_fraction, val_fraction=val_fraction,
                                                   seed=seed)
    scaler = Standardizer(scaling)
    for block in _iter_selected(rs, train_idx, chunk):
        scaler.partial_fit(block)

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CompressingAutoencoder(d, d_bottle, k)
    model.set_scaler(scaler)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    eval_samples = val_idx if len(val_idx) else train_idx

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best, best_epoch, best_state, waited = math.inf, -1, None, 0
    bar = tqdm(range(epochs), desc="CAE", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        tot, cnt = 0.0, 0
        for x in _batches(rs, train_idx, chunk, batch_size, gen, dev):
            xs = model.scale(x)
            loss = ((model.forward_scaled(xs) - xs) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * x.numel()
            cnt += x.numel()
        model.eval()
        val = _mean_loss(model, rs, eval_samples, chunk, batch_size, dev)
        history["train_loss"].append(tot / cnt)
        history["val_loss"].append(val)
        if val < best:
            best, best_epoch, waited = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        bar.set_postfix(train=f"{tot / cnt:.4f}", val=f"{val:.4f}", best=best_epoch)
        if waited >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    train_time = time.perf_counter() - t0

    test_loss, test_ev = float("nan"), float("nan")
    if len(test_idx):
        test_loss = _mean_loss(model, rs, test_idx, chunk, batch_size, dev)
        test_ev = _total_ev(model, rs, test_idx, chunk, dev)
    config = {**model.config(scaling), "epochs": epochs, "patience": patience, "lr": lr,
              "batch_size": batch_size, "test_fraction": test_fraction, "val_fraction": val_fraction,
              "seed": seed, "n_samples": n, "n_sublayers": s}
    return CAEResult(model=model.cpu(), config=config, history=history, best_epoch=best_epoch,
                     train_idx=train_idx, val_idx=val_idx, test_idx=test_idx, test_loss=test_loss,
                     test_ev=test_ev, train_time_s=train_time)


@torch.no_grad()
def _total_ev(model: CompressingAutoencoder, rs: Any, samples: np.ndarray, chunk: int, dev: torch.device) -> float:
    """EV of all vectors of ``rs[samples]`` pooled (about their overall mean), raw space, streamed."""
    sse, s1, s2, cnt = 0.0, None, 0.0, 0
    for block in _iter_selected(rs, samples, chunk):
        x = torch.as_tensor(block, device=dev).reshape(-1, rs.shape[-1])
        r = model(x).double()
        x = x.double()
        sse += float(((x - r) ** 2).sum())
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 += float((x ** 2).sum())
        cnt += x.shape[0]
    sst = s2 - float((s1 ** 2).sum()) / cnt
    return 1.0 - sse / sst if sst > 0 else float("nan")


def _model_of(model: CompressingAutoencoder | CAEResult) -> CompressingAutoencoder:
    if isinstance(model, CAEResult):
        return model.model
    if isinstance(model, CompressingAutoencoder):
        return model
    raise ValueError(f"expected a CompressingAutoencoder or CAEResult; got {type(model).__name__}")


@torch.no_grad()
def _apply(model: CompressingAutoencoder, rs: Any, fn: str, chunk_samples: int | None) -> np.ndarray:
    _check_rs(rs)
    n, s, d = rs.shape
    if d != model.d_model:
        raise ValueError(f"rs has d_model={d}; the CAE was trained on {model.d_model}")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for block in _iter_selected(rs, None, chunk_samples):
        x = torch.as_tensor(block, device=dev)
        out.append(getattr(model, fn)(x).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out, axis=0)


def bottleneck_trajectories(model: CompressingAutoencoder | CAEResult, rs: Any, *,
                            chunk_samples: int | None = 1024) -> np.ndarray:
    """Bottleneck coordinates of every sublayer vector: ``rs: (n_samples, n_sublayers, d_model)`` ->
    ``(n_samples, n_sublayers, d_bottle)`` (Fig 3B plots the mean over test texts)."""
    return _apply(_model_of(model), rs, "encode", chunk_samples)


def reconstruct(model: CompressingAutoencoder | CAEResult, rs: Any, *, chunk_samples: int | None = 1024) -> np.ndarray:
    """CAE reconstruction in raw RS units: ``(n_samples, n_sublayers, d_model)`` -> same shape."""
    return _apply(_model_of(model), rs, "forward", chunk_samples)


def successive_distance(traj: np.ndarray) -> np.ndarray:
    """Euclidean distance between successive sublayers of each trajectory (Fig 3C).

    ``traj: (n_samples, n_sublayers, k)`` -> ``(n_samples, n_sublayers - 1)``; column ``t`` is the step from
    sublayer ``t`` to ``t + 1`` (even t within-layer, odd t cross-layer).
    """
    traj = np.asarray(traj)
    if traj.ndim != 3 or traj.shape[1] < 2:
        raise ValueError(f"traj must be (n_samples, n_sublayers >= 2, k); got shape {traj.shape}")
    return np.linalg.norm(np.diff(traj, axis=1), axis=-1)


@torch.no_grad()
def explained_variance_per_sublayer_cae(model: CompressingAutoencoder | CAEResult, rs: Any, *,
                                        center: str = "sublayer", chunk_samples: int | None = 1024) -> np.ndarray:
    """Explained variance of each sublayer by the CAE reconstruction (Fig 3D), raw RS units.

    ``rs: (n_samples, n_sublayers, d_model)`` — pass the **test** texts, e.g. ``rs[result.test_idx]`` ->
    ``(n_sublayers,)``, with the definition of :func:`explained_variance_from_reconstruction` (variance about
    the sublayer's own mean; ``center="global"``: the mean of all vectors of ``rs``). Streams in chunks of
    samples with float64 sums.
    """
    m = _model_of(model)
    _check_rs(rs)
    n, s, d = rs.shape
    dev = next(m.parameters()).device
    sse = torch.zeros(s, dtype=torch.float64)
    s1 = torch.zeros(s, d, dtype=torch.float64)
    s2 = torch.zeros(s, dtype=torch.float64)
    shift = None
    m.eval()
    for block in _iter_selected(rs, None, chunk_samples):
        x = torch.as_tensor(block, device=dev)
        r = m(x).double().cpu()
        x = x.double().cpu()
        if shift is None:
            shift = x.mean(dim=(0, 1))  # one shift for all sublayers (the global centre needs it)
        y = x - shift
        sse += ((x - r) ** 2).sum(dim=(0, 2))
        s1 += y.sum(0)
        s2 += (y ** 2).sum(dim=(0, 2))
    return (1.0 - sse / _sst(s2, s1, n, center)).numpy()
