"""The claims' evidence on one stream, stored in the cache and read back: computed once for the same stream, claims
and options, and read by every later chapter or rebuild that asks for it again (:func:`cached_evidence`, used by
:func:`~.evidence.claim_evidence_runs`).

An entry is keyed by what the evidence depends on: the stream's bytes (sha256 of the float array, its shape and
dtype), the keywords of :func:`~.evidence.claim_evidence` (claims, run, resamples, seed, MI units and estimators,
massive units...) and the package's source (:func:`transformer_dynamics.provenance.package_source_hash`), so a
change of any of them computes afresh. Entries are written through :func:`transformer_dynamics.cache.save_module`
(kind ``"evidence"``: checked by sha256 when read; a damaged entry is reported and computed again).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import cache
from ..models.names import cache_root
from ..provenance import package_source_hash
from ..verdicts import Evidence

__all__ = ["KIND", "stream_digest", "evidence_identity", "load_evidence", "save_evidence", "cached_evidence"]

#: The cache kind (folder) of stored evidence.
KIND = "evidence"


def stream_digest(rs: Any) -> str:
    """sha256 of a stream's values: a cache entry's identity and shard digests (no read), an array's bytes with its
    shape and dtype. rs: (n_samples, n_sublayers, d_model) array or
    :class:`~transformer_dynamics.cache.ActivationStore`."""
    h = hashlib.sha256()
    if hasattr(rs, "identity") and hasattr(rs, "meta"):
        h.update(cache._canonical({"identity": rs.identity, "shards": [s.get("sha256") for s in rs.meta["shards"]]})
                 .encode())
        return "entry:" + h.hexdigest()
    a = np.ascontiguousarray(rs)
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _plain(x: Any) -> Any:
    """A keyword's value as JSON: arrays and tuples as lists, numpy scalars as Python numbers."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in sorted(x.items())}
    if isinstance(x, np.generic):
        return x.item()
    return x


def evidence_identity(rs: Any, kwargs: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """The cache identity of :func:`~.evidence.claim_evidence` ``(rs, **kwargs)``: the stream's digest, the keywords
    and the package's source hash (``source``; None: this package's)."""
    return {"what": "claim_evidence", "stream": stream_digest(rs), "kwargs": _plain(dict(kwargs)),
            "source": source or package_source_hash()}


def save_evidence(root: str | os.PathLike, identity: dict[str, Any], evidence: list[Evidence]) -> None:
    """Store ``evidence`` under ``identity`` (a cache that cannot be written only warns: the evidence is kept)."""
    state: dict[str, np.ndarray] = {
        "value": np.array([e.value for e in evidence], dtype=np.float64),
        "n": np.array([e.n for e in evidence], dtype=np.int64),
        "recentred": np.array([e.recentred for e in evidence], dtype=np.int8)}
    for i, e in enumerate(evidence):
        state[f"replicates.{i}"] = np.asarray(e.replicates, dtype=np.float64)
        if e.jackknife is not None:
            state[f"jackknife.{i}"] = np.asarray(e.jackknife, dtype=np.float64)
    rows = [{"claim": e.claim, "reading": e.reading, "run": e.run, "extra": _plain(e.extra)} for e in evidence]
    cache.save_module(root, identity, state, {"rows": rows}, kind=KIND)


def load_evidence(root: str | os.PathLike, identity: dict[str, Any]) -> list[Evidence] | None:
    """The evidence stored under ``identity``, or None (absent, or damaged: reported by the cache)."""
    found = cache.load_module(root, identity, kind=KIND)
    if found is None:
        return None
    state, config = found
    rows = config.get("rows")
    if not isinstance(rows, list) or len(rows) != len(state.get("value", ())):
        return None
    return [Evidence(r["claim"], r["reading"], r["run"], float(state["value"][i]), state[f"replicates.{i}"],
                     int(state["n"][i]), recentred=bool(state["recentred"][i]), extra=dict(r["extra"]),
                     jackknife=state.get(f"jackknife.{i}")) for i, r in enumerate(rows)]


def cached_evidence(runs: Mapping[Any, Any], kwargs_of: Mapping[Any, dict[str, Any]], compute,
                    cache_dir: str | os.PathLike | None | bool = None) -> dict[Any, list[Evidence]]:
    """``{key: [Evidence]}`` for the streams ``runs`` ({key: rs}) with keywords ``kwargs_of[key]``: read from the cache
    where stored, the others computed by ``compute({key: rs}) -> {key: [Evidence]}`` (all together, so they still run
    side by side) and stored. cache_dir: the cache (None: the default, :func:`transformer_dynamics.models.cache_root`);
    False: compute everything, store nothing."""
    if cache_dir is False:
        return compute(dict(runs))
    root = cache_root(cache_dir)
    source = package_source_hash()
    ids = {k: evidence_identity(rs, kwargs_of[k], source) for k, rs in runs.items()}
    out: dict[Any, list[Evidence]] = {}
    for k in runs:
        found = load_evidence(root, ids[k])
        if found is not None:
            out[k] = found
    missing = {k: rs for k, rs in runs.items() if k not in out}
    if missing:
        computed = compute(missing)
        for k, ev in computed.items():
            save_evidence(root, ids[k], ev)
        out.update(computed)
    return {k: out[k] for k in runs}
