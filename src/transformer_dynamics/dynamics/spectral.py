"""Spectral geometry of square matrices ``J: (..., D, D)`` (the per-sublayer Jacobians and their products).

:func:`spectra`: spectral radius, rotation dominance and angle, Henrici's departure from normality, the
antisymmetric share and the effective rank, each ``(...)``, of ``J`` and (``update=True``) of ``J - I``;
:func:`update_spectra`: the same measures from the update ``A = J - I`` itself (one eigenvalue problem, of ``A``,
for both; norms in float64 without the identity's rounding). :func:`effective_rank` of singular values;
:func:`cumulative_products` ``P[:, s] = J[:, S-1] ... J[:, s]``; :func:`product_measures`: growth, finite-time exponents
and effective rank of such products.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from ..workers import thread_pool

__all__ = ["cumulative_products", "effective_rank", "product_measures", "spectra", "update_spectra", "MEASURES"]

#: The measures :func:`spectra` and :func:`update_spectra` return per matrix (and with the suffix ``_update``).
MEASURES = ("spectral_radius", "rotation_dominance", "rotation_angle", "departure", "antisymmetric_share")


def effective_rank(sv: np.ndarray) -> np.ndarray:
    """Roy & Vetterli's effective rank ``exp(H(p))``, ``p = sigma / sum(sigma)``, of singular values
    ``sv: (..., D)`` -> ``(...)``. A rank-r matrix with equal singular values has effective rank r."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, sv / total, 0.0)
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
    return np.exp(h)


def spectra(J: torch.Tensor | np.ndarray, *, tol: float = 1e-6, update: bool = False, singular: bool = True,
            eigenvalues: bool = False) -> dict[str, np.ndarray]:
    """Spectral measures of square matrices ``J: (..., D, D)`` (computed in float64), each ``(...)``:

    - ``spectral_radius``: ``max |lambda|``;
    - ``rotation_dominance``: fraction of eigenvalues in complex-conjugate pairs
      (``|Im lambda| > tol * max(1, |lambda|)``);
    - ``rotation_angle``: mean ``|arg lambda|`` over the complex ones (radians; 0 if none);
    - ``departure``: Henrici's departure from normality ``sqrt(||J||_F^2 - sum |lambda|^2) / ||J||_F``
      (0 for normal matrices);
    - ``antisymmetric_share``: ``||(J - J^T) / 2||_F / ||J||_F``;
    - ``effective_rank`` (``singular=True``): :func:`effective_rank` of the singular values.

    update: also the same measures of the update ``J - I`` (suffix ``_update``; shares the eigenvalues:
    ``eig(J - I) = eig(J) - 1``) -- the residual connection's identity dominates ``J`` itself.
    eigenvalues: also ``eigenvalues: (..., D)`` complex.
    """
    A = torch.as_tensor(J).to(torch.float64)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"J must be (..., D, D) square matrices, got {tuple(A.shape)}")
    lam, sv = _decompose(A, singular)
    out = _eig_measures(A, lam, tol)
    if eigenvalues:
        out["eigenvalues"] = lam.numpy()
    if singular:
        out["effective_rank"] = effective_rank(sv.numpy())
    if update:
        eye = torch.eye(A.shape[-1], dtype=A.dtype)
        for k, v in _eig_measures(A - eye, lam - 1, tol).items():
            out[f"{k}_update"] = v
    return out


def update_spectra(A: torch.Tensor | np.ndarray, *, tol: float = 1e-6, precision: str = "double",
                   eigenvalues: bool = False) -> dict[str, np.ndarray]:
    """:func:`spectra` of ``J = I + A`` and of ``A`` (``update=True``'s keys) from the updates ``A: (..., D, D)``.

    One eigenvalue problem per matrix, of ``A`` (``eig(J) = 1 + eig(A)``); Frobenius norms in float64 from ``A``
    (``||J||_F^2 = D + 2 tr A + ||A||_F^2``; Henrici's numerator ``||A||_F^2 - sum |lambda_A|^2`` is that of ``J``
    too, the departure being shift-invariant). precision: ``"double"`` computes the eigenvalues in float64,
    ``"single"`` in float32 LAPACK (about half the time; its backward error, ``~1e-7 ||A||``, is that of a float32
    Jacobian itself, but the counts move: a close real pair can split into a complex one, 0.1 % of the rotation
    dominance of SmolLM2's Jacobians, and Henrici's departure has a floor of ``~sqrt(eps32)`` relative under a
    normal matrix). eigenvalues: also ``eigenvalues: (..., D)`` complex, of ``A``.
    Returns every key of :data:`MEASURES`, with and without the suffix ``_update``, each ``(...)``.
    """
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    A = torch.as_tensor(A)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be (..., D, D) square matrices, got {tuple(A.shape)}")
    lam, _ = _decompose(A.to(torch.float32 if precision == "single" else torch.float64), False)
    lam = lam.to(torch.complex128)
    A = A.to(torch.float64)
    D = A.shape[-1]
    fro2_A = (A ** 2).sum(dim=(-2, -1))
    tr = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1)
    fro2_J = D + 2 * tr + fro2_A
    anti = ((A - A.mT) / 2).pow(2).sum(dim=(-2, -1)).sqrt()
    numerator = (fro2_A - (lam.abs() ** 2).sum(-1)).clamp(min=0).sqrt()
    out = {}
    for suffix, mu, fro2 in (("", lam + 1, fro2_J), ("_update", lam, fro2_A)):
        absl = mu.abs()
        complex_ = mu.imag.abs() > tol * torch.clamp(absl, min=1.0)
        n_c = complex_.sum(-1)
        fro = fro2.clamp(min=0).sqrt()
        safe = torch.where(fro > 0, fro, torch.ones_like(fro))
        angle = torch.where(complex_, mu.angle().abs(), torch.zeros_like(absl)).sum(-1) / n_c.clamp(min=1)
        out |= {f"spectral_radius{suffix}": absl.amax(-1).numpy(),
                f"rotation_dominance{suffix}": complex_.double().mean(-1).numpy(),
                f"rotation_angle{suffix}": angle.numpy(),
                f"departure{suffix}": (numerator / safe).numpy(),
                f"antisymmetric_share{suffix}": (anti / safe).numpy()}
    if eigenvalues:
        out["eigenvalues"] = lam.numpy()
    return out


def _decompose(A: torch.Tensor, singular: bool, eig: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Eigenvalues ``(..., D)`` complex and singular values ``(..., D)`` of ``A: (..., D, D)`` (float64, or float32
    in single precision), one LAPACK call per matrix spread over ``torch.get_num_threads()`` threads (LAPACK
    releases the GIL)."""
    import scipy.linalg  # noqa: PLC0415

    flat = A.reshape(-1, *A.shape[-2:]).numpy()
    # scipy keeps float32 in single precision (numpy's eigvals computes in float64 whatever the input)
    eigvals = lambda M: scipy.linalg.eigvals(M, check_finite=False)  # noqa: E731
    svd = lambda M: np.linalg.svd(M, compute_uv=False)  # noqa: E731
    workers = max(1, min(torch.get_num_threads(), len(flat)))
    # one BLAS thread per matrix, the matrices in parallel: a multi-threaded OpenBLAS eig on busy cores spins
    # (measured 10x slower with 2 threads on 2 loaded cores)
    pool = thread_pool(workers)  # kept: new threads for every sublayer cost a tenth of the eigenvalues' time
    with _blas_threads(1):
        lam = np.stack(list(pool.map(eigvals, flat))) if eig else None
        sv = np.stack(list(pool.map(svd, flat))) if singular else None
    lam = None if lam is None else torch.as_tensor(lam).reshape(*A.shape[:-1])
    return lam, (None if sv is None else torch.as_tensor(sv).reshape(*A.shape[:-1]))


@contextmanager
def _blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _eig_measures(A: torch.Tensor, lam: torch.Tensor, tol: float) -> dict[str, np.ndarray]:
    absl = lam.abs()
    complex_ = lam.imag.abs() > tol * torch.clamp(absl, min=1.0)
    fro2 = (A ** 2).sum(dim=(-2, -1))
    anti = ((A - A.mT) / 2).pow(2).sum(dim=(-2, -1)).sqrt()
    n_c = complex_.sum(-1)
    angle = torch.where(complex_, lam.angle().abs(), torch.zeros_like(absl)).sum(-1) / n_c.clamp(min=1)
    fro = fro2.sqrt()
    safe = torch.where(fro > 0, fro, torch.ones_like(fro))
    return {"spectral_radius": absl.amax(-1).numpy(),
            "rotation_dominance": complex_.double().mean(-1).numpy(),
            "rotation_angle": angle.numpy(),
            "departure": ((fro2 - (absl ** 2).sum(-1)).clamp(min=0).sqrt() / safe).numpy(),
            "antisymmetric_share": (anti / safe).numpy()}


def cumulative_products(J: torch.Tensor) -> torch.Tensor:
    """``P: (B, S, D, D)`` with ``P[:, s] = J[:, S-1] @ ... @ J[:, s]``: the end-to-end last-token Jacobian
    from sublayer ``s`` to the last layer's output, for ``J: (B, S, D, D)``."""
    P = torch.empty_like(J)
    acc = J[:, -1]
    P[:, -1] = acc
    for s in range(J.shape[1] - 2, -1, -1):
        acc = acc @ J[:, s]
        P[:, s] = acc
    return P


def product_measures(P: torch.Tensor | np.ndarray, n_steps, k: int) -> dict[str, np.ndarray]:
    """Measures of products ``P: (B, D, D)`` of ``n_steps`` (an int or ``(B,)``) Jacobians, from their singular
    values (chapter 7's cumulative measures, :func:`~.local.local_dynamics`):

    - ``cumulative_effective_rank``: ``(B,)`` :func:`effective_rank` of ``P``;
    - ``cumulative_growth``: ``(B,)`` ``||P||_F / sqrt(D)`` (the mean gain of a random unit perturbation);
    - ``exponents``: ``(B, k)`` the finite-time Lyapunov exponents ``log sigma_i(P) / n_steps``, decreasing.
    """
    P = torch.as_tensor(P).to(torch.float64)
    D = P.shape[-1]
    svP = _decompose(P, singular=True, eig=False)[1].numpy()
    n = np.asarray(n_steps, dtype=np.float64)
    return {"cumulative_effective_rank": effective_rank(svP),
            "cumulative_growth": np.sqrt((svP ** 2).sum(-1) / D),
            "exponents": np.log(np.maximum(svP[:, :k], 1e-300)) / (n[:, None] if n.ndim else n)}
