"""A loaded model as its residual stream sees it, resolved once: :func:`of` ``(model, tokenizer)`` -> a
:class:`ResidualModel` that capture, perturb, attractors, dynamics, pipeline, notebooks and benchmarks take.

The residual stream is read at ``2L + 1`` *points* of a decoder of ``L`` layers, named as TransformerLens names
them (the one vocabulary; :func:`hook_names`): point ``2l`` is the input of layer ``l``'s norm before attention
(``blocks.l.hook_resid_pre``), ``2l + 1`` the input of its norm before the MLP (``blocks.l.hook_resid_mid``), and
``2L`` the decoder stack's output, the final norm's input (``blocks.{L-1}.hook_resid_post``). The first ``2L``
are the *sublayers* of every captured array ``rs: (n_samples, 2L, d_model)``; the book's short labels (``"L0.attn"``,
``"L0.mlp"``, ``"L{L-1}.out"``) are derived from the hook names by :func:`short_label`.

Where a model keeps its layers and the two norms depends on its architecture: :data:`ARCHITECTURES` (by
``config.model_type``; unknown layouts are found by the usual names, :func:`architecture`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ARCHITECTURES", "Architecture", "ResidualModel", "architecture", "hook_names", "of", "pad_token",
           "short_label", "sublayer_labels"]


# --------------------------------------------------------------------------------------------------
# The one vocabulary of points
# --------------------------------------------------------------------------------------------------
def hook_names(n_layers: int, *, output: bool = False) -> list[str]:
    """TransformerLens names of the points of a decoder of ``n_layers``: ``blocks.l.hook_resid_pre`` /
    ``blocks.l.hook_resid_mid`` per layer (``2 * n_layers``), and with ``output`` the stack's output
    ``blocks.{n_layers-1}.hook_resid_post`` last."""
    names = [f"blocks.{l}.hook_resid_{kind}" for l in range(n_layers) for kind in ("pre", "mid")]
    return names + ([f"blocks.{n_layers - 1}.hook_resid_post"] if output and n_layers else [])


_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|mid|post)")
_SHORT = {"pre": "attn", "mid": "mlp", "post": "out"}


def short_label(hook_name: str) -> str:
    """The book's label of a point: ``"blocks.3.hook_resid_pre"`` -> ``"L3.attn"`` (before attention),
    ``hook_resid_mid`` -> ``"L3.mlp"`` (before the MLP), ``hook_resid_post`` -> ``"L3.out"`` (after the layer)."""
    m = _HOOK.fullmatch(hook_name)
    if m is None:
        raise ValueError(f"{hook_name!r} is not a residual-stream hook name (blocks.<l>.hook_resid_pre|mid|post)")
    return f"L{m[1]}.{_SHORT[m[2]]}"


def sublayer_labels(n_layers: int) -> list[str]:
    """``["L0.attn", "L0.mlp", "L1.attn", ...]``: the short labels of the ``2 * n_layers`` sublayers."""
    return [short_label(h) for h in hook_names(n_layers)]


# --------------------------------------------------------------------------------------------------
# Where an architecture keeps its layers and norms
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """Where a decoder-only model keeps its residual stream.

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
    """Where ``model`` keeps its layers and norms (:data:`ARCHITECTURES` by ``config.model_type``, else found by
    name: the ``ModuleList`` with one entry per hidden layer, and the usual norm names)."""
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
        "transformer_dynamics.residual.ARCHITECTURES (layer list path, pre-attention and pre-MLP norm names).")


# --------------------------------------------------------------------------------------------------
# A loaded model's facts
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ResidualModel:
    """A loaded model's residual-stream facts, resolved once by :func:`of`.

    model: the causal LM as loaded (config, LM head); base: its decoder stack without the LM head (calling it
    computes no logits); layers: the ``L`` decoder layers in order; norms: ``(2L,)`` the modules whose *inputs*
    are the sublayers, ``norms[2l]`` layer ``l``'s norm before attention, ``norms[2l + 1]`` its norm before the MLP;
    architecture: the attribute names behind them; d_model: the stream's width ``D``; device, dtype: of the input
    embedding (where a forward starts); pad_id: the token that right-pads a batch (the tokenizer's pad token, else
    its end-of-text token, else 0: :func:`pad_token`, the one rule).
    """

    model: torch.nn.Module
    base: torch.nn.Module
    layers: torch.nn.ModuleList
    norms: tuple[torch.nn.Module, ...]
    architecture: Architecture
    d_model: int
    device: torch.device
    dtype: torch.dtype
    pad_id: int

    @property
    def config(self) -> Any:
        """The transformers config of :attr:`model`."""
        return self.model.config

    @property
    def n_layers(self) -> int:
        """``L``, the decoder layers."""
        return len(self.layers)

    @property
    def n_sublayers(self) -> int:
        """``2L``: the points before each layer's attention and before its MLP (a captured array's second axis)."""
        return 2 * len(self.layers)

    @property
    def n_points(self) -> int:
        """``2L + 1``: the sublayers and the stack's output."""
        return 2 * len(self.layers) + 1

    @property
    def hook_names(self) -> list[str]:
        """``(2L + 1,)`` the points' TransformerLens names (:func:`hook_names` with the output)."""
        return hook_names(self.n_layers, output=True)

    @property
    def labels(self) -> list[str]:
        """``(2L,)`` the sublayers' short labels (:func:`sublayer_labels`)."""
        return sublayer_labels(self.n_layers)


def pad_token(tokenizer: Any) -> int:
    """The token that right-pads a batch: the tokenizer's pad token, else its end-of-text token, else 0 (the one
    rule; :func:`of` gives it to the model's :class:`ResidualModel`)."""
    if not hasattr(tokenizer, "pad_token_id") or not hasattr(tokenizer, "eos_token_id"):
        raise ValueError(f"tokenizer must be the model's tokenizer (from load_model); got {type(tokenizer).__name__}")
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0))


def of(model: Any, tokenizer: Any = None, *, pad_id: int | None = None) -> ResidualModel:
    """``model``'s :class:`ResidualModel`, its pad id that of ``tokenizer`` (both from
    :func:`transformer_dynamics.models.load_model`): the tokenizer's pad token, else its end-of-text token, else 0
    (the one rule). Without a tokenizer, ``pad_id`` (default 0). Resolve it once per loaded model (a random
    initialisation is another model) and pass it on; a ``ResidualModel`` given is returned as it is. A model without
    decoder layers is refused."""
    if isinstance(model, ResidualModel):
        return model
    arch = architecture(model)
    if tokenizer is not None:
        pad = pad_token(tokenizer)
    else:
        pad = 0 if pad_id is None else pad_id
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or int(pad) < 0:
        raise ValueError(f"pad_id must be an int >= 0, got {pad!r}")
    layers = _get(model, arch.layers)
    if len(layers) == 0:
        raise ValueError(f"{type(model).__name__} has no decoder layers: a residual stream needs at least one "
                         "(check the model's num_hidden_layers)")
    emb = model.get_input_embeddings()
    weight = emb.weight if emb is not None else next(model.parameters())
    return ResidualModel(
        model=model, base=_get(model, arch.base) if arch.base else model, layers=layers,
        norms=tuple(getattr(layer, name) for layer in layers for name in (arch.attn_norm, arch.mlp_norm)),
        architecture=arch, d_model=int(weight.shape[1]), device=weight.device, dtype=weight.dtype, pad_id=int(pad))
