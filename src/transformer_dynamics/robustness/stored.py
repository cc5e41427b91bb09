"""The claims' evidence, stored in the cache and read back: each claim reading's evidence on a stream is computed
once and read by every later chapter or rebuild that asks for it again (:func:`cached_evidence`, used by
:func:`~.evidence.claim_evidence_runs`): chapter 8's headline run reads what chapter 2 computed on the same stream
with the same settings.

One entry per (stream, claim, reading), keyed by what that evidence depends on (:func:`pair_identity`): the stream's
bytes (sha256 of the float array, its shape and dtype), the claim and reading, the seed and the resample counts it
uses (the bootstrap's for the fast curves, the half-samples' for MI, rotations and PCA), the options of the curves
the reading reads (massive units for the fast curves; MI units; rotation surrogates; the PCA
threshold and components) and the package's source (:func:`transformer_dynamics.provenance.package_source_hash`). A
reading's evidence does not depend on which other claims are computed beside it, nor on the options of curves it
does not read (tested), so the key leaves them out. Entries go through :func:`transformer_dynamics.cache.save_module`
(under ``evidence/<package source>/``: sha256-checked when read, a damaged entry reported and computed again; the
evidence of all but the :data:`KEEP_SOURCES` most recent package sources is removed, :func:`prune_sources`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import cache
from .. import claims as _claims
from ..models.names import cache_root
from ..provenance import package_source_hash
from ..verdicts import Evidence
from .curves import FAST, group_of

__all__ = ["KIND", "KEEP_SOURCES", "prune_sources", "stream_digest", "pair_identity", "load_evidence",
           "save_evidence", "cached_evidence"]

#: The cache kind (folder) of stored evidence: ``<cache>/evidence/<package source>/<entry>``.
KIND = "evidence"
#: Package sources whose evidence is kept: a new one removes the folders of all but the most recent (each
#: change of the package's source makes the older evidence unreachable; a few recent ones serve a switch back).
KEEP_SOURCES = 3


def _kind(source: str) -> str:
    return f"{KIND}/{source[:16]}"


def prune_sources(root: str | os.PathLike, source: str, keep: int = KEEP_SOURCES) -> list[Path]:
    """Remove the evidence of package sources other than ``source`` and the ``keep - 1`` most recently written
    ones (by folder time); returns the folders removed. A folder removed while another process writes into it
    only costs that process its storing (the cache warns) and a later reader a recomputation."""
    base = Path(root) / KIND
    if not base.is_dir():
        return []
    others = sorted((d for d in base.iterdir() if d.is_dir() and d.name != source[:16]),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    removed = others[max(keep - 1, 0):]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


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


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    from .evidence import claim_evidence  # noqa: PLC0415

    sig = inspect.signature(claim_evidence)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def pair_identity(stream: str, claim: str, reading: str, kwargs: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The cache identity of one reading's evidence on the stream with digest ``stream`` (:func:`stream_digest`),
    computed by :func:`~.evidence.claim_evidence` with ``kwargs`` (its defaults filled in), package source ``source``:
    only the keywords the reading's curves depend on."""
    kw = {**_defaults(), **kwargs}
    groups = {group_of(k) for k in _claims.get(claim).reading(reading).keys}
    n_boot = int(kw["n_boot"])
    # the bootstrap's count reaches only the fast curves: a reading of slow curves alone (MI, rotations, PCA) takes
    # its replicates from the half-samples, the same for every n_boot > 0 (chapter 8 reads what chapters 3-4
    # decided with another n_boot)
    params: dict[str, Any] = {"seed": kw["seed"], "resampled": n_boot > 0}
    if groups & set(FAST):
        params.update(n_boot=n_boot, massive=kw["massive"])
    if groups - set(FAST):
        params["n_slow"] = n_boot if kw["n_boot_slow"] is None else int(kw["n_boot_slow"])
    if "mi" in groups:
        params["mi_units"] = kw["mi_units"]
    if "rot" in groups:
        params["n_shuffles"] = kw["n_shuffles"]
    if "pca" in groups:
        params.update(variance=kw["variance"], pca_components=kw["pca_components"])
    return {"what": "claim_evidence", "stream": stream, "claim": claim, "reading": reading,
            "params": _plain(params), "source": source}


def save_evidence(root: str | os.PathLike, identity: dict[str, Any], evidence: Evidence) -> None:
    """Store one reading's ``evidence`` under ``identity`` (a cache that cannot be written only warns)."""
    state = {"value": np.array([evidence.value], dtype=np.float64),
             "replicates": np.asarray(evidence.replicates, dtype=np.float64)}
    if evidence.jackknife is not None:
        state["jackknife"] = np.asarray(evidence.jackknife, dtype=np.float64)
    config = {"n": int(evidence.n), "recentred": bool(evidence.recentred), "extra": _plain(evidence.extra)}
    cache.save_module(root, identity, state, config, kind=_kind(identity["source"]))


def load_evidence(root: str | os.PathLike, identity: dict[str, Any], run: str) -> Evidence | None:
    """The evidence stored under ``identity`` as run ``run``, or None (absent, or damaged: reported by the cache)."""
    found = cache.load_module(root, identity, kind=_kind(identity["source"]))
    if found is None:
        return None
    state, config = found
    return Evidence(identity["claim"], identity["reading"], run, float(state["value"][0]), state["replicates"],
                    int(config["n"]), recentred=bool(config["recentred"]), extra=dict(config["extra"]),
                    jackknife=state.get("jackknife"))


def cached_evidence(runs: Mapping[Any, Any], kwargs_of: Mapping[Any, dict[str, Any]], compute,
                    cache_dir: str | os.PathLike | None | bool = None) -> dict[Any, list[Evidence]]:
    """``{key: [Evidence]}`` for the streams ``runs`` ({key: rs}) with :func:`~.evidence.claim_evidence`'s keywords
    ``kwargs_of[key]``: each reading read from the cache where stored; the claims with a reading missing computed by
    ``compute({key: rs}, {key: kwargs}) -> {key: [Evidence]}`` (every run at once, so they still run side by side)
    and stored. cache_dir: the cache (None: the default, :func:`transformer_dynamics.models.cache_root`); False:
    compute everything, store nothing. The lists are in :func:`~.evidence.rs_readings` order, as computed."""
    from .evidence import rs_readings  # noqa: PLC0415

    if cache_dir is False:
        return compute(dict(runs), dict(kwargs_of))
    root, source, defaults = cache_root(cache_dir), package_source_hash(), _defaults()
    pairs, ids, found = {}, {}, {}
    for k, rs in runs.items():
        kw = {**defaults, **kwargs_of[k]}
        pairs[k] = rs_readings(kw["keys"], mi_methods=kw["mi_methods"], headline_only=kw["headline_only"])
        digest = stream_digest(rs)
        ids[k] = {p: pair_identity(digest, *p, kw, source) for p in pairs[k]}
        found[k] = {p: e for p in pairs[k] if (e := load_evidence(root, ids[k][p], kw["run"])) is not None}
    todo = {k: sorted({c for c, r in pairs[k] if (c, r) not in found[k]}) for k in runs}  # a reading missing
    todo = {k: claims for k, claims in todo.items() if claims}
    if todo:
        if not (Path(root) / _kind(source)).is_dir():  # the first evidence of this source: drop the old ones
            prune_sources(root, source)
        computed = compute({k: runs[k] for k in todo}, {k: {**kwargs_of[k], "keys": todo[k]} for k in todo})
        for k, evidence in computed.items():
            for e in evidence:
                p = (e.claim, e.reading)
                if p in ids[k] and p not in found[k]:
                    save_evidence(root, ids[k][p], e)
                    found[k][p] = e
    return {k: [found[k][p] for p in pairs[k]] for k in runs}
