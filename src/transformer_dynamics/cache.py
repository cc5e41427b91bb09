"""The on-disk cache: activation arrays as sharded safetensors with JSON metadata, and trained modules.

An entry is a folder named by a key derived from its *identity* (a JSON-able dict: model and weight
fingerprint, rows hash, N, seed, condition, dtype, package version…)::

    <root>/<kind>/<key>/meta.json            identity, shape, dtype, shards with sha256, "complete": true
    <root>/<kind>/<key>/shard-00000.safetensors   tensor "rs": (m, n_sublayers, d_model)

Each shard carries its own row range (``start``, ``stop``) in its safetensors metadata (:func:`shard_bytes`),
so a shard read where ``meta.json`` places other rows is an error, not rows served in the wrong order
(entries of format 1, written before, carry none and are read as they are).

Writes go to a temporary folder of a unique name renamed into place when complete, so a crash never leaves
an entry that looks whole. Writers of one entry may race (threads, processes, ranks): the first rename wins;
a writer that finds a complete, verified entry already in place discards its own work and uses that one,
one that finds a broken entry moves it aside first (:func:`publish`), and none sees a raw ``OSError``.
Reads check the identity (a hit only when every field matches), that ``meta.json`` has every key with its
type and that its shards tile ``[0, n)`` exactly, in order, with the identity's ``n`` (:func:`meta_problem`),
and each shard's sha256 and row range; a stale, inconsistent or corrupt entry is reported with a warning and
treated as a miss, never used. A cache folder that cannot be written is reported, not fatal.
Shards let N grow beyond memory: :meth:`ActivationStore.iter_chunks` reads one shard at a time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
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
    "entry_path",
    "meta_problem",
    "remove_stale_partials",
    "writable",
    "open_store",
    "publish",
    "save_module",
    "shard_bytes",
    "load_module",
]

#: 2: each shard carries its row range in its safetensors metadata. Entries of format 1 are still read.
FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)


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


def shard_bytes(rs: np.ndarray, start: int) -> bytes:
    """One shard file: ``rs: (m, n_sublayers, d_model)`` float32 as safetensors tensor ``"rs"``, with the
    rows it holds in its metadata, ``{"rows": "start:stop"}`` (checked against ``meta.json`` on every read).
    One metadata key: safetensors writes several in a random order, and the file's bytes (its sha256) must
    not depend on the process that wrote it."""
    from safetensors.numpy import save  # noqa: PLC0415

    rs = np.ascontiguousarray(rs, dtype=np.float32)
    return save({"rs": rs}, metadata={"rows": f"{int(start)}:{int(start) + len(rs)}"})


def _shard_rows(data: bytes) -> tuple[int, int] | None:
    """The ``(start, stop)`` a shard file carries in its safetensors metadata (None when it carries none)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    rows = (header.get("__metadata__") or {}).get("rows")
    if rows is None:
        return None
    start, stop = str(rows).split(":")
    return int(start), int(stop)


def entry_path(root: str | os.PathLike, identity: dict[str, Any], kind: str = "activations") -> Path:
    """The folder of the entry for ``identity``: ``<root>/<kind>/<cache_key(identity)>``."""
    return Path(root) / kind / cache_key(identity)


def _reject(path: Path, why: str) -> None:
    warnings.warn(f"cache entry {path} {why}; it will be recomputed", CacheWarning, stacklevel=3)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_sha(x: Any) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def _plain_name(x: Any) -> bool:
    return isinstance(x, str) and x != "" and "/" not in x and "\\" not in x and not x.startswith(".")


def meta_problem(meta: Any, identity: dict[str, Any] | None = None) -> str | None:
    """Why an activation entry's ``meta.json`` cannot be trusted, or None when it is consistent.

    Checks every key and type, that the shards tile ``[0, shape[0])`` exactly and in order, and (when the
    identity has an integer ``n``) that ``shape[0]`` is that ``n``. Called before any read.
    """
    if not isinstance(meta, dict):
        return f"has a meta.json that is a {type(meta).__name__}, not an object"
    shape, shards = meta.get("shape"), meta.get("shards")
    if not (isinstance(shape, list) and len(shape) >= 2 and all(_is_int(d) and d >= 0 for d in shape)):
        return f"has no valid shape in meta.json (got {shape!r})"
    if meta.get("dtype") != "float32":
        return f"has dtype {meta.get('dtype')!r} in meta.json, not 'float32'"
    if not isinstance(shards, list) or not shards:
        return f"lists no shards in meta.json (got {type(shards).__name__})"
    expected_start, files = 0, set()
    for i, sh in enumerate(shards):
        if not (isinstance(sh, dict) and _plain_name(sh.get("file")) and _is_int(sh.get("start"))
                and _is_int(sh.get("stop")) and _is_sha(sh.get("sha256"))):
            return f"has a malformed shard entry {i} in meta.json (needs file, start, stop, sha256)"
        if sh["start"] != expected_start or sh["stop"] <= sh["start"]:
            return (f"has shards that do not tile [0, {shape[0]}) in order: shard {i} covers "
                    f"[{sh['start']}, {sh['stop']}), expected a start of {expected_start}")
        if sh["file"] in files:
            return f"lists the file {sh['file']} twice in meta.json"
        files.add(sh["file"])
        expected_start = sh["stop"]
    if expected_start != shape[0]:
        return f"has shards covering [0, {expected_start}) but a shape of {shape[0]} rows"
    n = (identity or {}).get("n")
    if _is_int(n) and shape[0] != n:
        return f"holds {shape[0]} rows but its identity asks for n = {n}"
    return None


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
        try:
            arr = load(data)["rs"]
            rows = _shard_rows(data)
        except Exception as err:  # noqa: BLE001 - any parse failure means the same thing
            raise CacheError(f"{file} is not a readable shard ({err}); delete {self.path} and rerun") from err
        if rows is None and self.meta.get("format") != 1:
            raise CacheError(f"{file} does not carry its row range (format {self.meta.get('format')}); delete "
                             f"{self.path} and rerun")
        if rows is not None and rows != (shard["start"], shard["stop"]):
            raise CacheError(f"{file} holds rows [{rows[0]}, {rows[1]}) but meta.json places it at "
                             f"[{shard['start']}, {shard['stop']}): its records were edited; delete {self.path} "
                             "and rerun")
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
    path = entry_path(root, identity, kind)
    if not path.exists():
        return None
    store, problem = _check_entry(path, identity, verify)
    if problem is not None:
        _reject(path, problem)
    return store


def _check_entry(path: Path, identity: dict[str, Any], verify: bool) -> tuple[ActivationStore | None, str | None]:
    """``(store, None)`` for a usable activation entry at ``path``, else ``(None, why not)``; no warning."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None, "has no readable meta.json"
    if not isinstance(meta, dict) or meta.get("format") not in _READABLE_FORMATS or meta.get("complete") is not True:
        return None, "is incomplete or of another format"
    found = meta.get("identity")
    if not isinstance(found, dict) or _canonical(found) != _canonical(identity):
        found = found if isinstance(found, dict) else {}
        diff = sorted(k for k in set(identity) | set(found) if found.get(k) != identity.get(k))
        return None, f"is stale (differs in {diff})"
    problem = meta_problem(meta, identity)
    if problem is not None:
        return None, f"is corrupt: it {problem}"
    missing = [sh["file"] for sh in meta["shards"] if not (path / sh["file"]).is_file()]
    if missing:
        return None, f"is incomplete (missing {missing[:3] or 'shards'})"
    store = ActivationStore(path, meta)
    if verify:
        try:
            store.verify()
        except CacheError as err:
            return None, f"is corrupt: {err}"
    return store, None


def publish(tmp: Path, final: Path, usable: Callable[[Path], Any]) -> Any:
    """Move the complete temporary folder ``tmp`` into place as ``final``, tolerating writers of the same
    entry that finish first. Returns None when ``tmp`` is now ``final``; when a peer's entry is already in
    place and ``usable(final)`` accepts it (returns anything but None), ``tmp`` is discarded and that value is
    returned, so the caller uses the winner's entry. A broken ``final`` is moved aside and replaced. Every
    failure is a :class:`CacheError` naming the folders, never a raw ``OSError``."""
    for _ in range(16):
        try:
            os.rename(tmp, final)  # atomic; onto a non-empty folder it fails with ENOTEMPTY / EEXIST
            return None
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                shutil.rmtree(tmp, ignore_errors=True)
                raise CacheError(f"cannot move the new cache entry {tmp} into place as {final} ({err}); "
                                 "check that the cache folder is writable") from err
        peer = usable(final)
        if peer is not None:  # a peer finished first with a good entry: ours is the same, keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return peer
        aside = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old.partial")
        try:
            os.rename(final, aside)  # a broken entry (or a file): out of the way, then retry
        except FileNotFoundError:
            continue  # a peer moved it first
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CacheError(f"cannot replace the broken cache entry {final} ({err}); delete it and rerun") from err
        if aside.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    raise CacheError(f"cannot move the new cache entry into place as {final}: it kept changing under concurrent "
                     "writers; rerun")


#: A ``.partial`` folder untouched this long is left by a killed run (a live writer touches it per shard).
STALE_PARTIAL_S = 24 * 3600


def remove_stale_partials(folder: str | os.PathLike, pattern: str = ".*.partial",
                          max_age_s: float = STALE_PARTIAL_S) -> list[Path]:
    """Delete the temporary ``pattern`` folders in ``folder`` not modified for ``max_age_s`` seconds."""
    import time  # noqa: PLC0415

    removed = []
    now = time.time()
    for tmp in Path(folder).glob(pattern):
        try:
            if tmp.is_dir() and now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        except OSError:
            pass
    return removed


def writable(root: str | os.PathLike, kind: str = "activations") -> bool:
    """Whether entries of ``kind`` can be written under ``root`` (creates ``root/kind`` if needed)."""
    folder = Path(root) / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


class ShardWriter:
    """Write an activation entry shard by shard (a context manager); it appears only when complete.

    >>> with ShardWriter(root, identity) as w:          # doctest: +SKIP
    ...     for start, chunk in iter_residual_stream(...):
    ...         w.write(start, chunk)
    >>> store = w.store                                  # doctest: +SKIP

    Several writers (processes, ranks) may write one entry together: each opens a ShardWriter on the same
    ``folder`` (a temporary folder next to the entry, :meth:`partial_folder`) and writes its shards with their
    ``index``; the one with ``publish=True`` then takes every writer's :attr:`shards` records and, on exit, writes
    ``meta.json`` and moves the folder into place. The others leave the folder as it is.
    """

    def __init__(self, root: str | os.PathLike, identity: dict[str, Any], *, kind: str = "activations",
                 extra_meta: dict[str, Any] | None = None, folder: str | os.PathLike | None = None,
                 publish: bool = True):
        self.final = entry_path(root, identity, kind)
        self.tmp = Path(folder) if folder is not None else self.partial_folder(root, identity, kind)
        self.shared = folder is not None
        self.publish = publish
        self.identity = identity
        self.extra_meta = extra_meta or {}
        self.shards: list[dict[str, Any]] = []
        self.tail_shape: tuple[int, ...] | None = None
        self.next_start = 0
        self.store: ActivationStore | None = None

    @staticmethod
    def partial_folder(root: str | os.PathLike, identity: dict[str, Any], kind: str = "activations") -> Path:
        """A new temporary folder name (not created) next to the entry for ``identity``."""
        final = entry_path(root, identity, kind)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")

    def __enter__(self) -> ShardWriter:
        try:
            self.tmp.mkdir(parents=True, exist_ok=self.shared)
        except OSError as err:
            raise CacheError(f"cannot create {self.tmp} ({err}); pass a writable cache_dir") from err
        remove_stale_partials(self.tmp.parent)
        return self

    def write(self, start: int, rs: np.ndarray, index: int | None = None) -> None:
        """Write samples ``start … start + len(rs) - 1``; ``rs: (m, n_sublayers, d_model)``. Without ``index``:
        the next shard, in order; with it: shard ``index`` (writers sharing a folder write their own shards)."""
        rs = np.ascontiguousarray(rs, dtype=np.float32)
        if rs.ndim != 3:
            raise ValueError(f"rs must be (m, n_sublayers, d_model), got shape {rs.shape}")
        if index is None and start != self.next_start:
            raise ValueError(f"shards must be written in order: expected start {self.next_start}, got {start}")
        if self.tail_shape is None:
            self.tail_shape = rs.shape[1:]
        elif rs.shape[1:] != self.tail_shape:
            raise ValueError(f"shard shape {rs.shape[1:]} differs from earlier {self.tail_shape}")
        data = shard_bytes(rs, start)
        name = f"shard-{len(self.shards) if index is None else int(index):05d}.safetensors"
        try:
            (self.tmp / name).write_bytes(data)
        except OSError as err:
            raise CacheError(f"cannot write {self.tmp / name} ({err}); free some space or pass another "
                             "cache_dir") from err
        self.shards.append({"file": name, "start": start, "stop": start + len(rs), "sha256": _sha256(data)})
        self.next_start = start + len(rs)

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.publish:
            return
        if exc_type is not None or not self.shards:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.shards.sort(key=lambda sh: sh["start"])
        meta = {"format": FORMAT_VERSION, "complete": True, "identity": self.identity,
                "shape": [self.shards[-1]["stop"], *self.tail_shape], "dtype": "float32", "shards": self.shards,
                **self.extra_meta}
        problem = meta_problem(meta, self.identity)
        if problem is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise CacheError(f"refusing to write cache entry {self.final}: it {problem}")
        try:
            (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        except OSError as err:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise CacheError(f"cannot write {self.tmp / 'meta.json'} ({err}); pass a writable cache_dir") from err
        peer = publish(self.tmp, self.final, lambda p: _check_entry(p, self.identity, verify=True)[0])
        self.store = peer if peer is not None else ActivationStore(self.final, meta)


def save_module(root: str | os.PathLike, identity: dict[str, Any], state: dict[str, Any],
                config: dict[str, Any], *, kind: str = "modules") -> Path | None:
    """Save a trained module's ``state`` (name -> tensor/array) and JSON ``config`` under ``identity``.

    Returns the entry's folder, or None (with a :class:`CacheWarning`) when the cache is not writable."""
    from safetensors.numpy import save  # noqa: PLC0415

    final = entry_path(root, identity, kind)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        warnings.warn(f"cache folder {root} is not writable ({err}); the {kind} entry is not cached",
                      CacheWarning, stacklevel=2)
        return None
    arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in state.items()}
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    meta = {"format": FORMAT_VERSION, "complete": True, "identity": identity, "config": config,
            "sha256": _sha256(data)}
    try:
        (tmp / "state.safetensors").write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        publish(tmp, final, lambda p: p if _module_problem(p, identity)[1] is None else None)
    except (OSError, CacheError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"the {kind} entry {final} could not be written ({err}); it is not cached", CacheWarning,
                      stacklevel=2)
        return None
    return final


def load_module(root: str | os.PathLike, identity: dict[str, Any], *, kind: str = "modules"
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(state, config)`` saved under ``identity``, or None when absent, stale or corrupt (warned)."""
    path = entry_path(root, identity, kind)
    if not path.exists():
        return None
    found, problem = _module_problem(path, identity)
    if problem is not None:
        _reject(path, problem)
        return None
    return found


def _module_problem(path: Path, identity: dict[str, Any]) -> tuple[tuple[dict, dict] | None, str | None]:
    """``((state, config), None)`` for a usable module entry at ``path``, else ``(None, why not)``; no warning."""
    from safetensors.numpy import load  # noqa: PLC0415

    try:
        meta = json.loads((path / "meta.json").read_text())
        data = (path / "state.safetensors").read_bytes()
    except (OSError, ValueError):
        return None, "is unreadable"
    if not isinstance(meta, dict) or meta.get("complete") is not True or \
            not isinstance(meta.get("identity"), dict) or _canonical(meta["identity"]) != _canonical(identity):
        return None, "is incomplete or stale"
    if not isinstance(meta.get("config"), dict) or not _is_sha(meta.get("sha256")):
        return None, "is corrupt: its meta.json lacks a config object or a sha256"
    if _sha256(data) != meta["sha256"]:
        return None, "is corrupt (sha256 mismatch)"
    try:
        state = load(data)
    except Exception as err:  # noqa: BLE001 - a parse failure with a matching hash: written corrupt
        return None, f"is corrupt: {err}"
    return (state, meta["config"]), None
