"""What PCA and the autoencoder share: ``rs`` read as rows or in blocks of texts through
:mod:`transformer_dynamics.arrays`' reader (an array, a memory map or a cache entry), and the one definition of
explained variance per sublayer (Fig 3D, Fig 4C)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..arrays import chunks, is_entry, read

__all__ = ["CENTERS", "explained_variance_from_reconstruction"]


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
    step = 16384  # rows per finiteness check: no temporary the size of X
    if not all(np.isfinite(X[a:a + step]).all() for a in range(0, X.shape[0], step)):
        raise ValueError(f"{name} contains NaN or inf ({int((~np.isfinite(X)).sum())} entries); drop or impute "
                         "those rows before fitting")
    return X


def _row_blocks(X: Any, name: str = "X") -> Iterator[np.ndarray]:
    """``X: (n_rows, d)`` (one block), or ``rs: (n_samples, n_sublayers, d)`` as an array or a cache entry read
    through :func:`transformer_dynamics.arrays.chunks` (an array is one block), as ``(m, d)`` row blocks."""
    if is_entry(X) or np.ndim(X) == 3:
        for _, c in chunks(X):
            yield _as_rows(c, name)
    else:
        yield _as_rows(X, name)


def _iter_selected(rs: Any, samples: np.ndarray | None, chunk_samples: int | None,
                   gen: torch.Generator | None = None) -> Iterable[np.ndarray]:
    """Blocks ``(m, n_sublayers, d_model)`` float32 (writable copies) of the texts in ``samples`` (all if None),
    read as contiguous ranges of ``chunk_samples`` texts (in a random order when ``gen`` is given) through
    :func:`transformer_dynamics.arrays.read` (an array, a memory map, a tensor or a cache entry), each filtered
    to ``samples``."""
    if isinstance(rs, torch.Tensor):
        rs = rs.detach().cpu().numpy()
    n = rs.shape[0]
    mask = np.ones(n, dtype=bool)
    if samples is not None:
        mask[:] = False
        mask[np.asarray(samples, dtype=np.int64)] = True
    step = n if not chunk_samples else max(1, int(chunk_samples))
    starts = np.arange(0, n, step)
    if gen is not None:
        starts = starts[torch.randperm(len(starts), generator=gen).numpy()]
    for a in starts:
        b = min(n, int(a) + step)
        sel = np.nonzero(mask[a:b])[0]
        if len(sel) == 0:
            continue
        block = read(rs, int(a), b)
        yield np.array(block if len(sel) == b - a else block[sel], dtype=np.float32)


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


