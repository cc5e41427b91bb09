"""Principal component analysis of residual-stream vectors (paper section 2.8, Figure 4 A–C).

Every sublayer vector is one sample: ``rs: (n_samples, n_sublayers, d_model)`` is fitted as
``(n_samples * n_sublayers, d_model)`` rows, and a text's trajectory is the image of its ``n_sublayers``
vectors. :class:`PCA` is scikit-learn-like (``fit``/``partial_fit``/``transform``/``inverse_transform``,
``mean_``, ``components_``, ``explained_variance_ratio_``) with float64 accumulation, so ``partial_fit`` fits
data that never sits in memory; it agrees with :class:`sklearn.decomposition.PCA` (components up to sign:
here the largest-magnitude entry of each component is positive, scikit-learn's convention since 1.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..arrays import chunks, rs_shape, take
from ..validation import check_int, check_number, check_positive_int
from ._common import _iter_selected, _row_blocks, _sst

__all__ = [
    "PCA",
    "pca_trajectories",
    "cumulative_explained_variance",
    "explained_variance_curve_per_sublayer",
    "explained_variance_per_sublayer",
    "components_for_variance",
    "sublayer_explained_variance_ratio",
]


def _sign_flip(components: torch.Tensor) -> torch.Tensor:
    """Make the largest-|.| entry of each row positive (scikit-learn's ``svd_flip(u_based_decision=False)``)."""
    idx = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _check_fits(values: np.ndarray, dtype: np.dtype, what: str) -> None:
    """A ValueError when finite float64 ``values`` would overflow to inf in ``dtype`` (float16's max is 65504)."""
    if np.dtype(dtype).itemsize >= 4:  # float32 input cannot project beyond float32's range
        return
    big = np.finfo(dtype).max
    if np.isfinite(values).all() and np.abs(values).max(initial=0.0) > big:
        raise ValueError(f"PCA.{what}: the result (max |value| {np.abs(values).max():.4g}) overflows {np.dtype(dtype)} "
                         f"(max {float(big):.4g}); pass float32 input, e.g. X.astype(np.float32)")


class PCA:
    """Principal component analysis of residual-stream vectors (paper section 2.8), in torch with float64
    accumulation.

    ``fit(X)`` takes ``X: (n_rows, d_model)`` or ``rs: (n_samples, n_sublayers, d_model)`` (flattened to
    ``(n_samples * n_sublayers, d_model)`` as in the paper). ``partial_fit(chunk)`` accumulates the (shifted)
    sum and ``X^T X`` in float64 over chunks; the attributes are computed lazily from the accumulators, so
    streaming many chunks costs one eigendecomposition at the end.

    Attributes after fitting (numpy float64): ``mean_``: ``(d_model,)``; ``components_``:
    ``(n_components, d_model)``, orthonormal rows; ``explained_variance_``: ``(n_components,)``, variance along
    each component (denominator ``n_rows - 1``, like scikit-learn); ``explained_variance_ratio_``:
    ``(n_components,)``, fraction of the total variance; ``singular_values_``: ``(n_components,)``;
    ``n_components_``; ``n_features_in_``; ``n_samples_seen_`` (rows).

    Parameters
    ----------
    n_components: number of components kept (``None``: ``min(n_rows, d_model)``).
    svd_solver: ``"auto"`` (covariance eigendecomposition when ``n_rows >= d_model``, else SVD),
        ``"full"`` (SVD of the centred data) or ``"covariance"``. :meth:`partial_fit` always uses the
        covariance route.
    chunk_rows: rows per block when :meth:`fit` forms ``X^T X`` (bounds the float64 temporary).
    """

    def __init__(self, n_components: int | None = None, *, svd_solver: str = "auto", chunk_rows: int = 16384):
        n_components = check_positive_int(n_components, "n_components", none=True)
        if svd_solver not in ("auto", "full", "covariance"):
            raise ValueError(f"svd_solver must be 'auto', 'full' or 'covariance'; got {svd_solver!r}")
        self.n_components = n_components
        self.svd_solver = svd_solver
        self.chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
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
        """Add a chunk ``X: (n_rows, d_model)`` or ``(n_samples, n_sublayers, d_model)`` (or a cache entry) to
        the fit."""
        for rows in _row_blocks(X):
            self._accumulate(rows)
        return self

    def fit(self, X: Any) -> "PCA":
        """Fit on all of ``X: (n_rows, d_model)`` or ``rs: (n_samples, n_sublayers, d_model)`` (an array or a
        cache entry, read in chunks of samples with the covariance solver)."""
        shape = X.shape if hasattr(X, "shape") else np.shape(X)
        if len(shape) not in (2, 3):
            raise ValueError(f"X must be (n_rows, d_model) or (n_samples, n_sublayers, d_model); got shape {shape}")
        n, d = int(np.prod(shape[:-1])), int(shape[-1])
        self._reset()
        solver = self.svd_solver
        if solver == "auto":
            solver = "covariance" if n >= d else "full"
        if solver == "covariance":
            self.partial_fit(X)
            self._finalize_from_gram()
            return self
        blocks = list(_row_blocks(X))
        X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        n = X.shape[0]
        Xt = torch.as_tensor(X, dtype=torch.float64)
        mean = Xt.mean(0)
        Xc = Xt - mean
        _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
        self._n = n
        self._set(mean, S ** 2, Vh, n)
        return self

    @classmethod
    def from_components(cls, mean: Any, components: Any) -> "PCA":
        """A fitted PCA from another fit's ``mean: (d,)`` and orthonormal ``components: (k, d)`` (e.g. a
        scikit-learn PCA's ``mean_``/``components_``), so its ``transform``/``inverse_transform`` are these.
        The variance attributes are unknown (NaN)."""
        mean = np.asarray(mean, dtype=np.float64)
        comps = np.asarray(components, dtype=np.float64)
        if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0] or comps.shape[0] < 1:
            raise ValueError(f"need mean (d,) and components (k, d); got {mean.shape} and {comps.shape}")
        k, d = comps.shape
        pca = cls(k)
        nan = np.full(k, np.nan)
        pca._fitted = {"mean_": mean.copy(), "components_": comps.copy(), "explained_variance_": nan,
                       "explained_variance_ratio_": nan.copy(), "singular_values_": nan.copy(), "n_components_": k,
                       "n_features_in_": d, "n_samples_seen_": 0, "noise_variance_": float("nan")}
        return pca

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
        k = check_int(f["n_components_"] if n_components is None else n_components, "n_components", low=1,
                      high=f["n_components_"])
        out_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        V = torch.as_tensor(f["components_"][:k])
        mu = torch.as_tensor(f["mean_"])
        flat = X.reshape(-1, X.shape[-1])
        out = np.empty((flat.shape[0], k), dtype=out_dtype)
        for start in range(0, flat.shape[0], self.chunk_rows):
            block = torch.as_tensor(np.asarray(flat[start:start + self.chunk_rows]), dtype=torch.float64)
            z = ((block - mu) @ V.T).numpy()
            _check_fits(z, out_dtype, "transform")
            out[start:start + block.shape[0]] = z
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
        _check_fits(X.numpy(), out_dtype, "inverse_transform")
        out = X.numpy().astype(out_dtype, copy=False)
        return torch.as_tensor(out) if as_torch else out


def pca_trajectories(pca: PCA, rs: Any, n_components: int | None = None) -> np.ndarray:
    """Trajectories in PCA space: ``rs: (n_samples, n_sublayers, d_model)`` ->
    ``(n_samples, n_sublayers, k)`` with ``k = n_components`` (default: all the PCA keeps); ``rs`` may be a cache
    entry (projected shard by shard)."""
    rs_shape(rs)
    return np.concatenate([pca.transform(c, n_components=n_components) for _, c in chunks(rs)])


def cumulative_explained_variance(pca_or_ratio: PCA | np.ndarray) -> np.ndarray:
    """Cumulative explained-variance ratio over components (Fig 4B): ``(n_components,)``, non-decreasing,
    ending at the fraction of the total variance the kept components explain (1 if all are kept)."""
    ratio = pca_or_ratio.explained_variance_ratio_ if isinstance(pca_or_ratio, PCA) else np.asarray(pca_or_ratio)
    if ratio.ndim != 1:
        raise ValueError(f"expected a 1-D explained_variance_ratio_; got shape {ratio.shape}")
    return np.cumsum(ratio)


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
    rs_shape(rs)
    f = pca._check_fitted()
    n, s, d = rs.shape
    K = check_int(f["n_components_"] if max_components is None else max_components, "max_components", low=1,
                  high=f["n_components_"])
    chunk_samples = check_positive_int(chunk_samples, "chunk_samples", none=True)
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
    k = min(check_positive_int(n_components, "n_components"), pca._check_fitted()["n_components_"])
    return explained_variance_curve_per_sublayer(pca, rs, k, center=center, chunk_samples=chunk_samples)[:, k - 1]


def components_for_variance(curve: np.ndarray, threshold: float = 0.9, *,
                            not_reached: float = np.nan, fractional: bool = False) -> np.ndarray:
    """Smallest number of components reaching ``threshold`` explained variance.

    ``curve: (..., K)`` cumulative explained variance over k = 1..K (e.g. from
    :func:`explained_variance_curve_per_sublayer`, or :func:`cumulative_explained_variance`) ->
    ``(...)`` float array of counts in ``1..K`` (a numpy float for a 1-D curve); ``not_reached`` (default NaN;
    ``np.inf`` to count it as "more than K") where K components do not reach the threshold, and NaN where the
    curve is undefined (all NaN, e.g. a sublayer without variance). ``fractional``: the count interpolated linearly
    between the two components the threshold falls between (``j + (t - c_j) / (c_{j+1} - c_j)``, from 0 at no
    component), a continuous quantity where integer counts would sit on a lattice.
    """
    curve = np.asarray(curve, dtype=float)
    threshold = check_number(threshold, "threshold", low=0, high=1, low_open=True)
    reached = curve >= threshold
    first = np.argmax(reached, axis=-1).astype(float) + 1
    if fractional:
        j = np.asarray(first, dtype=int) - 1                              # 0-based index of the first reached
        hi = np.take_along_axis(curve, j[..., None], -1)[..., 0]
        lo = np.where(j > 0, np.take_along_axis(curve, np.maximum(j - 1, 0)[..., None], -1)[..., 0], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            first = np.where(hi > lo, j + (threshold - lo) / (hi - lo), first)
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
    import scipy.linalg  # noqa: PLC0415

    rs_shape(rs)
    sublayers_per_batch = check_positive_int(sublayers_per_batch, "sublayers_per_batch")
    n, s, d = rs.shape
    if n < 2:
        raise ValueError("need at least 2 samples for a per-sublayer PCA")
    out = np.empty((s, min(n, d)))
    for a in range(0, s, sublayers_per_batch):
        slab = take(rs, sublayers=slice(a, a + sublayers_per_batch))
        if not np.isfinite(slab).all():
            raise ValueError(f"rs has NaN or inf at sublayers {a}..{a + slab.shape[1] - 1}: their spectra are "
                             "undefined; drop or impute those values first")
        x = torch.as_tensor(slab, dtype=torch.float64).transpose(0, 1)
        x = x - x.mean(1, keepdim=True)                              # (b, n, d)
        g = (x @ x.transpose(1, 2) if n <= d else x.transpose(1, 2) @ x).numpy()
        # scipy's divide-and-conquer (LAPACK syevd): 0.48 s for 60 Grams of 500 x 500 where torch.linalg.eigvalsh
        # takes 0.74 s; the same eigenvalues to float64 round-off (explained-variance ratios within 2e-15)
        ev = np.stack([scipy.linalg.eigvalsh(gi, driver="evd", check_finite=False) for gi in g])[:, ::-1]
        ev = np.maximum(ev, 0.0)                                     # (b, min(n, d)), descending
        tot = ev.sum(1, keepdims=True)
        out[a:a + len(g)] = np.where(tot > 0, ev / np.where(tot > 0, tot, 1.0), np.nan)
    return out
