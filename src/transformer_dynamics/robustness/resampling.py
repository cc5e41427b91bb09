"""Nested subsamples of the texts (:func:`nested_subsamples`) and how the claims' values move with N
(:func:`n_dependence`), without recapturing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..arrays import check_rs
from .curves import _MIN_RS
from .evidence import claim_evidence

__all__ = ["nested_subsamples", "n_dependence"]


def nested_subsamples(n_total: int, ns: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Nested subsets of ``range(n_total)``: one random permutation (``seed``), subset i = its first ``ns[i]``
    entries (sorted). Every subset contains all smaller ones. -> list of (ns[i],) int arrays."""
    ns = [int(v) for v in ns]
    if not ns or min(ns) < 1 or max(ns) > n_total:
        raise ValueError(f"every N must be between 1 and the number of texts {n_total}; got {ns}")
    perm = np.random.default_rng(seed).permutation(n_total)
    return [np.sort(perm[:v]) for v in ns]


def n_dependence(rs, ns: Sequence[int], keys: Iterable[str] | None = None, seed: int = 0, **kwargs: Any
                 ) -> pd.DataFrame:
    """The headline value of each residual-stream claim ``keys`` (None: all) on nested subsamples of the texts.

    rs: (n_samples, n_sublayers, d_model); ns: numbers of texts, each <= n_samples (subsample i: the first
    ``ns[i]`` texts of one random permutation, :func:`nested_subsamples`). Keywords as
    :func:`~.evidence.claim_evidence`. -> DataFrame indexed by N (ascending), one column per claim.
    """
    rs = check_rs(rs, **_MIN_RS)
    ns = sorted(int(v) for v in ns)
    rows = {}
    for v, idx in zip(ns, nested_subsamples(rs.shape[0], ns, seed)):
        ev = claim_evidence(rs[idx], keys, n_boot=0, seed=seed, headline_only=True, **kwargs)
        rows[v] = {e.claim: e.value for e in ev}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "n"
    return df
