"""Loading a model by name (:func:`load_model`): dtype, device or device map, bitsandbytes quantisation, the hub
offline unless a download is asked for, and every load checked (weights matching the config, finite, no damaged
file)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .files import convert_gguf
from .names import DEFAULT_MODEL, DOWNLOAD_ENV, ModelError, _first_line, downloads_allowed, resolve

__all__ = ["load_model"]

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
    tokenizer, model, info = _from_pretrained(name, spec.kind, location, load_kwargs, download)
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


def _from_pretrained(name: str, kind: str, location: str, load_kwargs: dict[str, Any], download: bool | None):
    """``(tokenizer, model, loading info)`` from ``location`` (a folder, or a hub id: from the local Hugging Face
    cache only unless downloads are allowed), every failure a :class:`ModelError` naming the model and its folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    def attempt(**extra):
        tok = AutoTokenizer.from_pretrained(location, **extra)
        mdl, loading = AutoModelForCausalLM.from_pretrained(location, output_loading_info=True, **load_kwargs,
                                                            **extra)
        return tok, mdl, loading

    try:
        if kind != "hub":
            return attempt()
        try:
            return attempt(local_files_only=True)  # no network unless asked for
        except OSError:
            if not downloads_allowed(download):
                raise ModelError(
                    f"model {name!r} is not in the local Hugging Face cache and downloads are off: pass "
                    f"download=True (or set ${DOWNLOAD_ENV}=1) to download it, or "
                    "give a local folder or a short name") from None
            _hub_preflight(name)
            return attempt()
    except ModelError:
        raise
    except OSError as err:
        if kind == "hub":
            raise ModelError(f"could not load model {name!r} from the Hugging Face hub: {_first_line(err)}") from err
        raise ModelError(f"could not load model {name!r} from the folder {location}: {_first_line(err)}. It must "
                         "hold a causal LM saved with save_pretrained (config.json, weights, tokenizer files).") \
            from err
    except Exception as err:  # noqa: BLE001 - a damaged folder fails in many ways; each names the folder
        if kind == "hub":
            raise
        raise _folder_error(name, kind, location, err) from err


def _folder_error(name: str, kind: str, location: str, err: Exception) -> Exception:
    """What a failed load of the folder ``location`` says: a damaged weight file named, weights of other shapes
    than the config's, else the folder and the first line of ``err``."""
    broken = _broken_weight_file(location)
    if broken is not None:
        return ModelError(f"could not load model {name!r}: the weight file {broken}. It is truncated or "
                          "damaged; save or copy it again" + (" (convert_gguf(name, force=True))"
                                                              if kind == "packaged" else ""))
    if "ignore_mismatched_sizes" in str(err):
        return ModelError(f"the weights in {location} have other shapes than its config.json "
                          "gives (hidden_size, vocab_size, intermediate_size…; transformers' report above lists "
                          "them): make config.json describe these weights")
    return ModelError(
        f"could not load model {name!r} from the folder {location}: {_first_line(err)}. It must hold a causal "
        "LM saved with save_pretrained (config.json, weights, tokenizer files).")


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

