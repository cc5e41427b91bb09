"""A model's files: the packaged GGUF dequantised once into a verified folder (:func:`convert_gguf`), the whole-file
digests of a model folder (:func:`file_digests`) and the fingerprint of the files a load reads
(:func:`source_fingerprint`), which a capture's identity holds."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import torch

from .names import SHORT_NAMES, ModelError, _first_line, cache_root, resolve

__all__ = ["convert_gguf", "file_digests", "source_fingerprint"]


def _gguf_path(name: str, cache_dir: str | os.PathLike | None) -> Path:
    info = SHORT_NAMES[name]
    spec = importlib.util.find_spec(info.package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"model {name!r} needs the package {info.package!r}: {info.install}")
    if info.assemble:
        # Import only this small assembler package (its chunk packages hold the data).
        module = __import__(info.package)
        target = cache_root(cache_dir) / "gguf" / f"{name}.gguf"
        expected = getattr(module, "EXPECTED_SHA256", None)
        if expected and target.is_file() and file_digests(target.parent, cache_dir).get(target.name) == expected:
            return target  # assembled and verified before, unchanged since (a stat, not a 250 MB hash)
        if expected and target.is_file():
            warnings.warn(f"{target} is not the GGUF {info.package} assembles (sha256 differs); assembling it "
                          "again", UserWarning, stacklevel=3)
            target.unlink()
        return Path(module.assemble(output_path=target))
    path = Path(spec.submodule_search_locations[0]) / info.filename
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall the model's wheel: {info.install}")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


#: Files of a model folder that decide what is loaded: weights, config, tokenizer, templates.
_MODEL_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".tiktoken",
                   ".jinja"}
_OWN_FILES = {"source.json"}  # written by convert_gguf, not read by from_pretrained
# (path, size, mtime_ns, ctime_ns, inode, device) -> sha256 of the whole file, for this process
_DIGESTS: dict[tuple, str] = {}


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in _MODEL_SUFFIXES and p.name not in _OWN_FILES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file())


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    # ctime changes on every write and cannot be set back by a user (unlike mtime): an in-place edit
    # that keeps the size and restores the mtime is still seen.
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def file_digests(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """``{relative path: sha256 of the whole file}`` for every file of a model folder that loading reads.

    A file is hashed whole once; the digest is remembered (in this process and in
    ``<cache>/fingerprints/``) with the file's size, mtime, ctime, inode and device, and hashed again
    only when one of them changes, so a re-check costs a ``stat`` per file.
    """
    folder = Path(folder)
    memo_file = cache_root(cache_dir) / "fingerprints" / (hashlib.sha256(
        str(folder.resolve()).encode()).hexdigest()[:20] + ".json")
    try:
        stored = json.loads(memo_file.read_text())
        stored = stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        stored = {}
    out, changed = {}, False
    for p in _model_files(folder):
        rel = p.relative_to(folder).as_posix()
        key = _stat_key(p)
        rec = stored.get(rel)
        if key in _DIGESTS:
            digest = _DIGESTS[key]
        elif isinstance(rec, dict) and rec.get("stat") == list(key) and isinstance(rec.get("sha256"), str):
            digest = rec["sha256"]
        else:
            digest = _file_digest(p)
        _DIGESTS[key] = digest
        if not (isinstance(rec, dict) and rec.get("stat") == list(key) and rec.get("sha256") == digest):
            changed = True
        out[rel] = digest
        stored[rel] = {"stat": list(key), "sha256": digest}
    if changed:
        with contextlib.suppress(OSError):  # a read-only cache: the in-process memo still works
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_name(f".{memo_file.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps({k: stored[k] for k in out}, indent=0))
            os.replace(tmp, memo_file)
    return out


def _folder_fingerprint(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(rel.encode() + b"\0" + digests[rel].encode() + b"\n")
    return h.hexdigest()


def _converted_ok(out: Path, src: dict, cache_dir) -> str | None:
    """Why the converted folder ``out`` cannot be used as recorded in ``source.json``, or None."""
    if not ((out / "model.safetensors").is_file() and (out / "config.json").is_file()):
        return "has no model.safetensors or config.json"
    recorded = src.get("files")
    digests = file_digests(out, cache_dir)
    if not isinstance(recorded, dict):
        # made before file digests were recorded: record the files as they are now (trusted once)
        src["files"] = digests
        with contextlib.suppress(OSError):
            tmp = out / f".source.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_text(json.dumps(src, indent=1))
            os.replace(tmp, out / "source.json")
        return None
    if recorded != digests:
        bad = sorted(k for k in set(recorded) | set(digests) if recorded.get(k) != digests.get(k))
        return f"differs from what was converted in {bad} (sha256)"
    return None


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (POSIX); yields whether it is held (False without fcntl)."""
    try:
        import fcntl  # noqa: PLC0415
        fh = open(path, "a")  # noqa: SIM115
    except (ImportError, OSError):
        yield False
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield True
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def convert_gguf(name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Dequantise a packaged GGUF once into ``<cache>/models/<name>/`` (safetensors, config, tokenizer).

    The folder records the GGUF's sha256 and every written file's sha256 in ``source.json``. Each use
    verifies the folder's files against those digests (:func:`file_digests`: a ``stat`` per file unless a
    file changed); a folder made from another GGUF, edited, or left half-written is reported and rebuilt.
    Two conversions at once take turns (a file lock); each writes to its own ``.partial`` folder, renamed
    into place when complete; ``.partial`` folders left by killed runs are removed.
    Returns the folder, loadable with ``from_pretrained``.
    """
    gguf = _gguf_path(name, cache_dir)
    out = cache_root(cache_dir) / "models" / name
    if not force:
        why = _usable_conversion(out, gguf, cache_dir)
        if why is None:
            return out
    else:
        why = "was asked to be rebuilt"
    from ..cache import writable  # noqa: PLC0415

    if not writable(out.parent.parent, out.parent.name):
        out = _scratch_models() / name
        warnings.warn(f"cache folder {cache_root(cache_dir)} is not writable: converting {name!r} into {out}, "
                      "removed when this process exits; pass a writable cache_dir / --cache-dir to keep it",
                      UserWarning, stacklevel=2)
        if not force and _usable_conversion(out, gguf, cache_dir) is None:
            return out
    with _lock(out.parent / f".{name}.lock") as locked:
        # another process may have converted it while we waited for the lock
        if not force and _usable_conversion(out, gguf, cache_dir) is None:
            return out
        if why is not None and out.exists():
            warnings.warn(f"converted model {out} {why}; converting {gguf.name} again", UserWarning,
                          stacklevel=2)
        # under the lock no other conversion of this model runs: every .partial of it is left by a killed run
        from ..cache import remove_stale_partials  # noqa: PLC0415

        remove_stale_partials(out.parent, f".{name}.*.partial", max_age_s=0 if locked else 3600)
        shutil.rmtree(out.with_name(name + ".partial"), ignore_errors=True)  # the name before unique ones
        return _convert(name, gguf, out, cache_dir)


_SCRATCH: list[Path] = []


def _scratch_models() -> Path:
    """A temporary models folder for this process (removed at exit), for a cache that cannot be written."""
    if not _SCRATCH:
        import atexit  # noqa: PLC0415
        import tempfile  # noqa: PLC0415

        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="transformer-dynamics-models-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
    return _SCRATCH[0]


def _usable_conversion(out: Path, gguf: Path, cache_dir) -> str | None:
    """None when ``out`` holds a verified conversion of ``gguf``; else why not."""
    marker = out / "source.json"
    if not marker.is_file():
        return "is missing or incomplete"
    try:
        src = json.loads(marker.read_text())
    except (ValueError, OSError):
        return "has an unreadable source.json"
    if not isinstance(src, dict):
        return "has a malformed source.json"
    stat = gguf.stat()
    if not ((src.get("size"), src.get("mtime")) == (stat.st_size, stat.st_mtime)
            or src.get("sha256") == _file_digest(gguf)):
        return f"was made from another GGUF than {gguf}"
    return _converted_ok(out, src, cache_dir)


def _dequantise(gguf: Path, folder: Path) -> None:
    """Write ``gguf`` dequantised to float32 into ``folder`` (model.safetensors, config, tokenizer)."""
    from safetensors.torch import save_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers 5 refuses save_pretrained on a GGUF-loaded model: write the weights and a config
    # without its quantization_config ourselves. save_model handles tied embeddings.
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _convert(name: str, gguf: Path, out: Path, cache_dir) -> Path:
    """Write the conversion into a unique ``.partial`` folder, then rename it into place."""
    stat = gguf.stat()
    tmp = out.with_name(f".{name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir(parents=True)
    try:
        try:
            _dequantise(gguf, tmp)
        except Exception as err:  # noqa: BLE001 - the reader's own errors ("cannot reshape array") name no file
            info = SHORT_NAMES.get(name)
            raise ModelError(f"could not convert the GGUF {gguf} of model {name!r}: {_first_line(err)}. The file "
                             "is truncated or damaged" + (f"; reinstall it: {info.install}" if info else "")) from err
        files = {p.relative_to(tmp).as_posix(): _file_digest(p) for p in _model_files(tmp)}
        (tmp / "source.json").write_text(json.dumps(
            {"name": name, "gguf": str(gguf), "sha256": _file_digest(gguf), "size": stat.st_size,
             "mtime": stat.st_mtime, "files": files}, indent=1))
        old = out.with_name(f".{name}.{uuid.uuid4().hex[:8]}.old.partial")
        if out.exists():
            out.rename(old)  # each rename is atomic: a reader sees the old folder, none, or the new one
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for rel, digest in files.items():  # just hashed: the first verification needs no second read
        _DIGESTS[_stat_key(out / rel)] = digest
    return out


def source_fingerprint(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A fingerprint of the files a load reads, computed without loading the model.

    Packaged models: the GGUF's sha256, once the converted folder that is loaded has been verified against
    the digests recorded at conversion (:func:`convert_gguf`). Local folders: sha256 over every model
    file's name and whole-file sha256 (:func:`file_digests`: hashed once, re-hashed when a file's size,
    mtime, ctime or inode changes). Hub ids: the resolved commit of the local hub snapshot (else the id).
    """
    spec = resolve(name)
    if spec.kind == "packaged":
        folder = convert_gguf(name, cache_dir)
        return "gguf:" + json.loads((folder / "source.json").read_text())["sha256"]
    if spec.kind == "local":
        digests = file_digests(spec.location, cache_dir)
        if not digests:
            raise ValueError(f"{spec.location} holds no model files (*.safetensors, *.bin, config.json…)")
        return "local:" + _folder_fingerprint(digests)
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        cfg = try_to_load_from_cache(spec.location, "config.json")
        if isinstance(cfg, str):
            return f"hub:{spec.location}@{Path(cfg).parent.name}"
    except Exception:  # pragma: no cover - hub layout may vary
        pass
    return f"hub:{spec.location}"

