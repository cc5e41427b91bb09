"""The on-disk cache: activation arrays as sharded safetensors with JSON metadata, and trained modules.

An entry is a folder named by a key derived from its *identity* (a JSON-able dict: model and weight
fingerprint, rows hash, N, seed, condition, dtype, package version…)::

    <root>/<kind>/<key>/meta.json            identity, shape, dtype, shards with sha256, "complete": true
    <root>/<kind>/<key>/shard-00000.safetensors   tensor "rs": (m, n_sublayers, d_model)

Writes go to a temporary folder renamed into place when complete, so a crash never leaves an entry
that looks whole. Reads check the identity (a hit only when every field matches) and each shard's
sha256; a stale or corrupt entry is reported with a warning and treated as a miss, never used.
Shards let N grow beyond memory: :meth:`ActivationStore.iter_chunks` reads one shard at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CacheError",
    "CacheWarning",
    "ActivationStore",
    "ShardWriter",
    "cache_key",
    "open_store",
    "save_module",
    "load_module",
]

FORMAT_VERSION = 1


class CacheError(RuntimeError):
    """A cache entry is corrupt or does not match what was asked for."""


class CacheWarning(UserWarning):
    """A stale or corrupt cache entry was found and will be recomputed."""


def _canonical(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(identity: dict[str, Any]) -> str:
    """A short stable key for an identity dict (sha256 of its canonical JSON, 20 hex digits)."""
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()[:20]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_dir(root: str | os.PathLike, kind: str, identity: dict[str, Any]) -> Path:
    return Path(root) / kind / cache_key(identity)


def _reject(path: Path, why: str) -> None:
    warnings.warn(f"cache entry {path} {why}; it will be recomputed", CacheWarning, stacklevel=3)


@dataclass
class ActivationStore:
    """A complete, verified activation entry. ``shape``: ``(n_samples, n_sublayers, d_model)``."""

    path: Path
    meta: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])

    @property
    def identity(self) -> dict[str, Any]:
        return self.meta["identity"]

    def _read_shard(self, shard: dict[str, Any]) -> np.ndarray:
        from safetensors.numpy import load  # noqa: PLC0415

        file = self.path / shard["file"]
        try:
            data = file.read_bytes()
        except OSError as err:
            raise CacheError(f"{file} cannot be read ({err}); delete {self.path} and rerun") from err
        if _sha256(data) != shard["sha256"]:
            raise CacheError(f"{file} is corrupt (sha256 mismatch); delete {self.path} and rerun")
        arr = load(data)["rs"]
        if arr.shape[0] != shard["stop"] - shard["start"] or tuple(arr.shape[1:]) != self.shape[1:]:
            raise CacheError(f"{file} has shape {arr.shape}, not what meta.json says; delete {self.path}")
        return arr

    def iter_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rs_chunk)`` shard by shard, each verified: memory holds one shard at a time."""
        for shard in self.meta["shards"]:
            yield shard["start"], self._read_shard(shard)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``start … stop-1`` as ``(m, n_sublayers, d_model)`` (reads only the shards needed)."""
        n = self.shape[0]
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise IndexError(f"rows {start}:{stop} out of range for {n} samples")
        out = np.empty((stop - start, *self.shape[1:]), dtype=np.float32)
        for shard in self.meta["shards"]:
            lo, hi = max(start, shard["start"]), min(stop, shard["stop"])
            if lo < hi:
                arr = self._read_shard(shard)
                out[lo - start:hi - start] = arr[lo - shard["start"]:hi - shard["start"]]
        return out

    def to_numpy(self) -> np.ndarray:
        """The whole array ``(n_samples, n_sublayers, d_model)``."""
        return self.read()

    def verify(self) -> None:
        """Read and check every shard; raises :class:`CacheError` on the first bad one."""
        for _ in self.iter_chunks():
            pass


def open_store(root: str | os.PathLike, identity: dict[str, Any], *, kind: str = "activations",
               verify: bool = True) -> ActivationStore | None:
    """The entry for ``identity``, or None when absent, incomplete, stale or corrupt (with a warning).

    verify: hash every shard now (one full read). With ``verify=False`` only meta.json and the presence of
    the shard files are checked; every later read still checks each shard's sha256 and raises
    :class:`CacheError` on a bad one, so a caller that reads the whole entry anyway reads it once, not twice.
    """
    path = _entry_dir(root, kind, identity)
    meta_file = path / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        _reject(path, "has no readable meta.json")
        return None
    if meta.get("format") != FORMAT_VERSION or not meta.get("complete"):
        _reject(path, "is incomplete or of another format")
        return None
    if _canonical(meta.get("identity", {})) != _canonical(identity):
        diff = sorted(k for k in set(identity) | set(meta.get("identity", {}))
                      if meta.get("identity", {}).get(k) != identity.get(k))
        _reject(path, f"is stale (differs in {diff})")
        return None
    missing = [sh["file"] for sh in meta.get("shards", []) if not (path / sh["file"]).is_file()]
    if missing or not meta.get("shards"):
        _reject(path, f"is incomplete (missing {missing[:3] or 'shards'})")
        return None
    store = ActivationStore(path, meta)
    if verify:
        try:
            store.verify()
        except CacheError as err:
            _reject(path, f"is corrupt: {err}")
            return None
    return store


class ShardWriter:
    """Write an activation entry shard by shard (a context manager); it appears only when complete.

    >>> with ShardWriter(root, identity) as w:          # doctest: +SKIP
    ...     for start, chunk in iter_residual_stream(...):
    ...         w.write(start, chunk)
    >>> store = w.store                                  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, identity: dict[str, Any], *, kind: str = "activations",
                 extra_meta: dict[str, Any] | None = None):
        self.final = _entry_dir(root, kind, identity)
        self.tmp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}.partial")
        self.identity = identity
        self.extra_meta = extra_meta or {}
        self.shards: list[dict[str, Any]] = []
        self.tail_shape: tuple[int, ...] | None = None
        self.next_start = 0
        self.store: ActivationStore | None = None

    def __enter__(self) -> ShardWriter:
        self.tmp.mkdir(parents=True)
        return self

    def write(self, start: int, rs: np.ndarray) -> None:
        """Append samples ``start … start + len(rs) - 1``; ``rs: (m, n_sublayers, d_model)``, in order."""
        from safetensors.numpy import save  # noqa: PLC0415

        rs = np.ascontiguousarray(rs, dtype=np.float32)
        if rs.ndim != 3:
            raise ValueError(f"rs must be (m, n_sublayers, d_model), got shape {rs.shape}")
        if start != self.next_start:
            raise ValueError(f"shards must be written in order: expected start {self.next_start}, got {start}")
        if self.tail_shape is None:
            self.tail_shape = rs.shape[1:]
        elif rs.shape[1:] != self.tail_shape:
            raise ValueError(f"shard shape {rs.shape[1:]} differs from earlier {self.tail_shape}")
        data = save({"rs": rs})
        name = f"shard-{len(self.shards):05d}.safetensors"
        (self.tmp / name).write_bytes(data)
        self.shards.append({"file": name, "start": start, "stop": start + len(rs), "sha256": _sha256(data)})
        self.next_start += len(rs)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.shards:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        meta = {"format": FORMAT_VERSION, "complete": True, "identity": self.identity,
                "shape": [self.next_start, *self.tail_shape], "dtype": "float32", "shards": self.shards,
                **self.extra_meta}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        self.store = ActivationStore(self.final, meta)


def save_module(root: str | os.PathLike, identity: dict[str, Any], state: dict[str, Any],
                config: dict[str, Any], *, kind: str = "modules") -> Path:
    """Save a trained module's ``state`` (name -> tensor/array) and JSON ``config`` under ``identity``."""
    from safetensors.numpy import save  # noqa: PLC0415

    final = _entry_dir(root, kind, identity)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in state.items()}
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    (tmp / "state.safetensors").write_bytes(data)
    meta = {"format": FORMAT_VERSION, "complete": True, "identity": identity, "config": config,
            "sha256": _sha256(data)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_module(root: str | os.PathLike, identity: dict[str, Any], *, kind: str = "modules"
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(state, config)`` saved under ``identity``, or None when absent, stale or corrupt (warned)."""
    from safetensors.numpy import load  # noqa: PLC0415

    path = _entry_dir(root, kind, identity)
    if not path.exists():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
        data = (path / "state.safetensors").read_bytes()
    except (OSError, ValueError):
        _reject(path, "is unreadable")
        return None
    if not meta.get("complete") or _canonical(meta.get("identity", {})) != _canonical(identity):
        _reject(path, "is incomplete or stale")
        return None
    if _sha256(data) != meta.get("sha256"):
        _reject(path, "is corrupt (sha256 mismatch)")
        return None
    return load(data), meta["config"]
