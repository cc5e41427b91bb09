"""Residual-stream capture at each text's last token, with forward pre-hooks on the two norms per layer.

For decoder layer ``l`` the array holds at sublayer ``2l`` the input of the pre-attention norm
(TransformerLens's ``blocks.l.hook_resid_pre``) and at ``2l + 1`` the input of the pre-MLP norm
(``blocks.l.hook_resid_mid``). Texts are tokenised explicitly (``add_bos``, ``strip``), sorted by length
inside each chunk to cut padding, batched, and run through the decoder stack only: the LM head never runs,
and the forward stops after the last layer. Only the last real token's vectors leave the hooks.

A batch is *packed* where the model's attention is transformers' ``"sdpa"`` (the default): its texts are
concatenated into one row with positions restarting at 0 for each text, so the linear layers (most of
the time) multiply real tokens only; the attention alone unpacks queries, keys and values into the
right-padded ``(B, H, width, dh)`` layout and runs transformers' sdpa attention there with the padded
batch's own mask (causal, keys inside the text, sliding window where the layer has one). The captured
values are those of a right-padded batch to float32 round-off (bit for bit in our SmolLM2 and Gemma 3 runs;
with 2+ threads a matmul of another shape may sum in another order: 2e-8 absolute on tiny GPT-2, tested); ``pack=False`` runs right-padded batches
(so positions and causal attention of real tokens are unchanged), as do models with other attention kernels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from .data import shuffle_token_ids
from .models import architecture, base_model, layer_modules
from .validation import check_int, check_positive_int, check_seed

__all__ = [
    "StopForward",
    "batches",
    "hook_names",
    "pack_ids",
    "can_pack",
    "record_last_token",
    "iter_residual_stream",
    "n_sublayers",
    "pad_right",
    "residual_stream",
    "sublayer_labels",
    "tokenize",
    "use_attention",
]


def sublayer_labels(n_layers: int) -> list[str]:
    """``["L0.attn", "L0.mlp", "L1.attn", ...]``: sublayer ``2l`` is before attention, ``2l+1`` before the MLP."""
    return [f"L{l}.{kind}" for l in range(n_layers) for kind in ("attn", "mlp")]


def hook_names(n_layers: int) -> list[str]:
    """TransformerLens names of the same points: ``blocks.l.hook_resid_pre`` / ``blocks.l.hook_resid_mid``."""
    return [f"blocks.{l}.hook_resid_{kind}" for l in range(n_layers) for kind in ("pre", "mid")]


def n_sublayers(model: torch.nn.Module) -> int:
    """``2 * n_layers`` of ``model``."""
    return 2 * len(layer_modules(model))


def tokenize(tokenizer, texts: Sequence[str], *, add_bos: bool = True, strip: bool = False) -> list[list[int]]:
    """Token ids per text, made explicit rather than left to the tokenizer's defaults.

    add_bos: put the tokenizer's BOS token first (the paper's ``t_0``). SmolLM2's tokenizer adds none by
    itself, Llama 3's does: here it is added exactly once either way.
    strip: strip surrounding whitespace first. WikiText rows end in ``" \\n"``, so without stripping the
    last token is a newline.
    """
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError("this tokenizer has no BOS token; pass add_bos=False")
    texts = [t.strip() if strip else t for t in texts]
    if any(len(t) == 0 for t in texts):
        raise ValueError("empty text after stripping; filter out blank rows first (data.filter_rows)")
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [([bos] + list(seq)) if add_bos else list(seq) for seq in ids]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into a batch: ``(input_ids, attention_mask, last)``, the first two
    ``(B, max_len)`` long tensors, ``last: (B,)`` the index of each sequence's last real token.

    Right padding keeps every real token's position and (causal) attention exactly as unpadded.
    """
    lengths = torch.tensor([len(s) for s in seqs])
    input_ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, seq in enumerate(seqs):
        input_ids[r, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[r, :len(seq)] = 1
    return input_ids, mask, lengths - 1


# --------------------------------------------------------------------------------------------------
# Packed (padding-free) batches: the texts of a batch concatenated into one row, so that every linear
# layer multiplies real tokens only; attention alone unpacks them into today's right-padded layout.
# --------------------------------------------------------------------------------------------------
#: Name under which the packed attention is registered with transformers (attention and mask interfaces).
PACKED_ATTENTION = "td_packed"
_PACKING: ContextVar[_Packing | None] = ContextVar("transformer_dynamics_packing", default=None)


class _Packing:
    """Where each text of a packed batch lies. ``lengths: (B,)`` tokens per text; the packed row holds
    text 0's tokens, then text 1's, ... (``T = lengths.sum()`` positions). ``flat: (T,)`` each packed
    position's index in the right-padded ``(B, width)`` layout flattened; ``gather: (B * width,)`` the packed
    position each padded slot reads (a padding slot reads its text's first token: finite, and masked)."""

    def __init__(self, lengths: torch.Tensor):
        self.lengths = lengths
        self.width = int(lengths.max())
        starts = torch.cumsum(lengths, 0) - lengths
        slot = torch.arange(self.width)[None, :]
        self.valid = slot < lengths[:, None]  # (B, width)
        self.flat = torch.nonzero(self.valid.reshape(-1)).squeeze(1)  # row-major: text by text
        self.gather = (starts[:, None] + torch.where(self.valid, slot, 0)).reshape(-1)
        self._cache: dict = {}  # (what, device) -> tensor: layers split over devices get their own copies

    def _at(self, name: str, device: torch.device) -> torch.Tensor:
        if (name, device) not in self._cache:
            self._cache[(name, device)] = getattr(self, name).to(device)
        return self._cache[(name, device)]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, H, T, dh)`` packed -> ``(B, H, width, dh)`` right-padded (one gather), laid out as a padded
        batch's ``proj(x).view(B, width, H, dh).transpose(1, 2)``."""
        _, h, _, dh = x.shape
        rows = x[0].transpose(0, 1).index_select(0, self._at("gather", x.device))  # (B * width, H, dh)
        return rows.view(len(self.lengths), self.width, h, dh).transpose(1, 2)

    def pack(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, width, H, dh)`` attention output -> ``(1, T, H, dh)``: the real positions only."""
        b, w, h, dh = out.shape
        return out.reshape(b * w, h, dh).index_select(0, self._at("flat", out.device))[None]

    def mask(self, sliding_window: int | None, device: torch.device) -> torch.Tensor | None:
        """The boolean ``(B, 1, width, width)`` mask transformers' ``sdpa_mask`` builds for the right-padded
        batch (causal, keys inside the text, inside ``sliding_window``), or None where it skips it."""
        key = ("mask", sliding_window, device)
        if key not in self._cache:
            w = self.width
            if bool(self.valid.all()) and (sliding_window is None or w < sliding_window):
                self._cache[key] = None  # no padding: sdpa's is_causal, as transformers does
            else:
                q = torch.arange(w)
                allowed = (q[None, :] <= q[:, None])[None] & self.valid[:, None, :]  # (B, q, kv)
                if sliding_window is not None:
                    allowed = allowed & (q[None, :] > q[:, None] - sliding_window)[None]
                self._cache[key] = allowed[:, None].to(device)
        return self._cache[key]


def _packed_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers attention function for packed batches: unpack ``query/key/value: (1, H, T, dh)`` into the
    right-padded batch, run transformers' own sdpa attention on it with the padded batch's mask (the same
    arithmetic as an unpacked capture), pack the output back: ``(1, T, H, dh)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: PLC0415

    packing = _PACKING.get()
    if packing is None:
        raise RuntimeError(f"attention implementation {PACKED_ATTENTION!r} runs only inside capture.batches("
                           "..., pack=True)")
    mask = packing.mask(kwargs.pop("sliding_window", None), query.device)
    out, weights = sdpa_attention_forward(module, packing.unpack(query), packing.unpack(key),
                                          packing.unpack(value), mask, **kwargs)
    return packing.pack(out), weights


def _no_mask(*args, **kwargs):
    """Mask function of the packed attention: the attention builds its own per-text masks."""
    return None


def _register_packed_attention() -> None:
    from transformers import AttentionInterface  # noqa: PLC0415
    from transformers.masking_utils import AttentionMaskInterface  # noqa: PLC0415

    AttentionInterface.register(PACKED_ATTENTION, _packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, _no_mask)


def can_pack(model: torch.nn.Module) -> bool:
    """Whether :func:`batches` can pack ``model``'s batches: its attention is transformers' ``"sdpa"``
    (the packed attention reuses it; eager or other kernels run padded batches)."""
    return all(getattr(c, "_attn_implementation", None) == "sdpa" for c in _configs(model))


def _configs(model: torch.nn.Module) -> list:
    """Every distinct config object held by ``model``'s modules (a multimodal model's text config too)."""
    found = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            found[id(cfg)] = cfg
    return list(found.values())


@contextmanager
def use_attention(model: torch.nn.Module, name: str):
    """Switch every config of ``model`` to the attention implementation ``name`` (registered with transformers'
    attention and mask interfaces) for the duration; restored after."""
    configs = _configs(model)
    before = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = name
        yield
    finally:
        for c, b in zip(configs, before):
            c._attn_implementation = b


@contextmanager
def _packed(model: torch.nn.Module):
    """Switch ``model``'s attention to the packed implementation for the duration (restored after)."""
    _register_packed_attention()
    with use_attention(model, PACKED_ATTENTION):
        yield


def _compiled_forward(module: torch.nn.Module):
    """``torch.compile(module.forward, dynamic=True)``, made once per module and kept on it."""
    if "_td_compiled_forward" not in module.__dict__:
        module.__dict__["_td_compiled_forward"] = torch.compile(type(module).forward.__get__(module), dynamic=True)
    return module.__dict__["_td_compiled_forward"]


@contextmanager
def _compiled(model: torch.nn.Module):
    """For the duration, every layer's MLP and its two norms run ``torch.compile``d forwards (the
    element-wise work around the matmuls fused); only ``forward`` is swapped, so the norms' pre-hooks
    (the recording and any editing hooks) still run eagerly around them."""
    arch = architecture(model)
    mods = [m for layer in layer_modules(model)
            for m in (getattr(layer, "mlp", None), getattr(layer, arch.attn_norm), getattr(layer, arch.mlp_norm))
            if m is not None]
    saved = [m.__dict__.get("forward") for m in mods]
    try:
        for m in mods:
            m.forward = _compiled_forward(m)
        yield
    finally:
        for m, before in zip(mods, saved):
            if before is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = before


def pack_ids(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate token id lists into one packed row: ``(input_ids, position_ids, last, lengths)``, the
    first two ``(1, T)`` long tensors (``T`` = total tokens; positions restart at 0 for each text), ``last:
    (B,)`` each text's last token's index in the row, ``lengths: (B,)`` tokens per text."""
    lengths = torch.tensor([len(s) for s in seqs])
    if int(lengths.min()) < 1:
        raise ValueError("a text has no tokens")
    input_ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long)[None]
    starts = torch.cumsum(lengths, 0) - lengths
    position_ids = (torch.arange(input_ids.shape[1]) - torch.repeat_interleave(starts, lengths))[None]
    return input_ids, position_ids, starts + lengths - 1, lengths


class StopForward(Exception):
    """Raised after the last layer's hooks have fired: nothing after them is needed."""


@contextmanager
def record_last_token(model: torch.nn.Module, state: dict, *, stop: bool = True, output: bool = False):
    """Forward pre-hooks on every layer's two norms recording the residual stream at chosen positions.

    Before each forward set ``state["rows"]: (B,)`` and ``state["last"]: (B,)`` (long tensors: the batch
    row and token position to read) and ``state["out"]: (B, 2 * n_layers, d_model)`` (a float tensor the
    hooks write into: ``out[:, s] = x[rows, last]`` for sublayer ``s``). With ``stop=True`` the last hook
    raises :class:`StopForward`, so the forward ends there; catch it around the call.

    output: also record the decoder stack's output (the residual stream after the last layer, the final
    norm's input) as point ``2 * n_layers``: ``state["out"]`` is then ``(B, 2 * n_layers + 1, d_model)``
    (a forward hook on the last layer; with ``stop=True`` the forward ends after it).
    """
    arch = architecture(model)
    layers = layer_modules(model)
    n_sub = 2 * len(layers)
    handles = []

    def write(s: int, x: torch.Tensor) -> None:
        out = state["out"]
        out[:, s] = x[state["rows"].to(x.device), state["last"].to(x.device)].to(out.device, out.dtype)

    def make(s: int):
        def hook(module, args, kwargs):
            write(s, args[0] if args else next(iter(kwargs.values())))
            if stop and not output and s == n_sub - 1:
                raise StopForward
        return hook

    def last_layer(module, args, kwargs, result):
        write(n_sub, result[0] if isinstance(result, tuple) else result)
        if stop:
            raise StopForward

    try:
        for l, layer in enumerate(layers):
            for j, norm_name in enumerate((arch.attn_norm, arch.mlp_norm)):
                norm = getattr(layer, norm_name)
                handles.append(norm.register_forward_pre_hook(make(2 * l + j), with_kwargs=True))
        if output:
            handles.append(layers[-1].register_forward_hook(last_layer, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _input_device(model: torch.nn.Module) -> torch.device:
    emb = model.get_input_embeddings()
    return emb.weight.device if emb is not None else next(model.parameters()).device


def _d_model(model: torch.nn.Module) -> int:
    return model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd


def batches(model: torch.nn.Module, token_ids: Sequence[Sequence[int]], state: dict, *, batch_size: int = 16,
            pad_id: int = 0, pack: bool | None = None, compile: bool = False, output: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The one batching loop: run ``token_ids`` through the decoder stack in length-sorted batches (packed
    or right-padded: see ``pack``), each forward ending where a hook raises :class:`StopForward`; yields
    ``(sel, rec)`` per batch.

    Call it inside :func:`record_last_token` ``(model, state)`` (plus any editing hooks). Before each forward
    it sets ``state["rows"]``, ``state["last"]`` (the batch's last real tokens), ``state["idx"] = sel`` (the
    batch's indices into ``token_ids``) and ``state["out"]``. ``sel: (B,)`` int indices, ``rec: (B,
    2 * n_layers, d_model)`` float32, what the hooks recorded. The same texts always form the same batches.

    pack: None (default) packs each batch into one padding-free row where :func:`can_pack` (``state["rows"]``
    is then all 0 and ``state["last"]`` indexes the row); False right-pads; True packs or raises.
    compile: run every layer's MLP and norms through ``torch.compile`` (opt-in: a one-off compile of tens
    of seconds; values equal the eager ones to float32 round-off, not bit for bit, so a cache must key on it).
    output: ``rec`` has one more point, the stack's output (with :func:`record_last_token` ``(output=True)``).
    """
    batch_size, pad_id = check_positive_int(batch_size, "batch_size"), check_int(pad_id, "pad_id", low=0)
    packable = can_pack(model)
    if pack and not packable:
        raise ValueError("pack=True needs the model's attention to be transformers' 'sdpa'; load it with "
                         "attn_implementation='sdpa' or pass pack=False")
    pack = packable if pack is None else pack
    n_sub = 2 * len(layer_modules(model))
    d = _d_model(model)
    base = base_model(model)
    device = _input_device(model)
    order = np.argsort([-len(s) for s in token_ids], kind="stable")
    for b0 in range(0, len(token_ids), batch_size):
        sel = order[b0:b0 + batch_size]
        seqs = [token_ids[i] for i in sel]
        out = torch.empty((len(sel), n_sub + int(output), d), dtype=torch.float32)
        with ExitStack() as stack:
            if compile:
                stack.enter_context(_compiled(model))
            if pack:
                input_ids, position_ids, last, lengths = pack_ids(seqs)
                state.update(rows=torch.zeros(len(sel), dtype=torch.long), last=last, idx=sel, out=out)
                token = _PACKING.set(_Packing(lengths))
                stack.callback(_PACKING.reset, token)
                stack.enter_context(_packed(model))
                _forward(base, input_ids=input_ids.to(device), position_ids=position_ids.to(device))
            else:
                input_ids, mask, last = pad_right(seqs, pad_id)
                state.update(rows=torch.arange(len(sel)), last=last, idx=sel, out=out)
                _forward(base, input_ids=input_ids.to(device), attention_mask=mask.to(device))
        yield sel, state["out"].numpy()


def _forward(base: torch.nn.Module, **inputs: torch.Tensor) -> None:
    """Run the decoder stack until a recording hook raises :class:`StopForward`."""
    try:
        base(**inputs, use_cache=False)
    except StopForward:
        return
    raise RuntimeError("the recording hooks did not reach the stopping sublayer")  # pragma: no cover


def iter_residual_stream(model, tokenizer, texts: Sequence[str] | None = None, *,
                         token_ids: Sequence[Sequence[int]] | None = None, batch_size: int = 16,
                         chunk_size: int = 4096, shuffle_tokens: bool = False, seed: int = 0,
                         add_bos: bool = True, strip: bool = False, progress: bool = True,
                         keep_last: bool = False, pack: bool | None = None,
                         compile: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Stream the residual stream in chunks: yields ``(start, rs_chunk)`` with
    ``rs_chunk: (m, 2 * n_layers, d_model)`` float32 for texts ``start … start + m - 1`` in input order.

    Within a chunk of ``chunk_size`` texts, batches are formed from length-sorted texts; pass either
    ``texts`` or pre-tokenised ``token_ids``. See :func:`residual_stream` for the other arguments and
    :func:`batches` for ``pack`` and ``compile``.
    """
    if (texts is None) == (token_ids is None):
        raise ValueError("pass exactly one of texts or token_ids")
    batch_size, chunk_size = check_positive_int(batch_size, "batch_size"), check_positive_int(chunk_size, "chunk_size")
    seed = check_seed(seed)
    n_texts = len(token_ids) if token_ids is not None else len(texts)
    layer_modules(model)  # a model of the wrong type: one line, before anything runs
    if not hasattr(tokenizer, "bos_token_id"):
        raise ValueError(f"tokenizer must be the model's tokenizer (from load_model); got {type(tokenizer).__name__}")
    rng = np.random.default_rng(seed)  # one stream for all chunks: same permutations as a one-shot shuffle
    bos = tokenizer.bos_token_id

    def chunk_ids(start: int) -> list[list[int]]:
        """Token ids of texts start … start + chunk_size - 1 (tokenised per chunk: memory stays flat in N)."""
        ids = ([list(s) for s in token_ids[start:start + chunk_size]] if token_ids is not None
               else tokenize(tokenizer, texts[start:start + chunk_size], add_bos=add_bos, strip=strip))
        if any(len(s) == 0 for s in ids):
            raise ValueError("a text has no tokens")
        if shuffle_tokens:
            ids = shuffle_token_ids(ids, seed=rng, keep_first=[bos is not None and s[0] == bos for s in ids],
                                    keep_last=keep_last)
        return ids

    n_layers = len(layer_modules(model))
    d_model = _d_model(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=n_texts, desc="capture", unit="text")
    state: dict = {}
    try:
        with record_last_token(model, state), torch.inference_mode():
            for start in range(0, n_texts, chunk_size):
                chunk = chunk_ids(start)
                out = np.empty((len(chunk), 2 * n_layers, d_model), dtype=np.float32)
                for sel, rec in batches(model, chunk, state, batch_size=batch_size, pad_id=pad_id, pack=pack,
                                        compile=compile):
                    out[sel] = rec
                    if bar is not None:
                        bar.update(len(sel))
                _check_finite(out, start)
                yield start, out
    finally:
        if bar is not None:
            bar.close()


def _check_finite(rs: np.ndarray, start: int) -> None:
    """A RuntimeError when the captured chunk ``rs: (m, n_sublayers, d_model)`` (texts ``start …``) holds NaN
    or inf: such a stream is never used, and never cached (one float64 sum; the exact search only on failure)."""
    if np.isfinite(rs.sum(dtype=np.float64)):
        return
    bad = ~np.isfinite(rs)
    if not bad.any():  # a sum beyond float64's range, every value finite
        return
    texts = np.flatnonzero(bad.any(axis=(1, 2))) + start
    sub = np.flatnonzero(bad.any(axis=(0, 2)))
    raise RuntimeError(
        f"the captured residual stream has NaN or inf in {texts.size} text(s) (first: text {texts[0]}) from sublayer "
        f"{sub[0]} ({sublayer_labels(rs.shape[1] // 2)[sub[0]]}) on; nothing was cached. A float16 overflow? Load the "
        "model in bfloat16 or float32 (dtype=...). NaN weights? Check the model's files")


def residual_stream(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16,
                    shuffle_tokens: bool = False, seed: int = 0, progress: bool = True,
                    add_bos: bool = True, strip: bool = False, keep_last: bool = False,
                    pack: bool | None = None, compile: bool = False) -> np.ndarray:
    """The residual stream at each text's last real token.

    Returns ``rs: (n_texts, 2 * n_layers, d_model)`` float32: ``rs[:, 2l]`` is the input of layer l's
    pre-attention norm (``hook_resid_pre``), ``rs[:, 2l + 1]`` the input of its pre-MLP norm
    (``hook_resid_mid``).

    shuffle_tokens: the paper's control: BOS stays first, the rest of each text's tokens are permuted
    (``numpy.random.default_rng(seed)``); with ``keep_last`` the last token stays in place too.
    add_bos / strip: see :func:`tokenize`. pack: padding-free batches (see :func:`batches`; same values).
    compile: ``torch.compile`` the layers' MLPs and norms (opt-in; round-off differences: see :func:`batches`).
    """
    out = None
    for start, chunk in iter_residual_stream(model, tokenizer, texts, batch_size=batch_size,
                                             shuffle_tokens=shuffle_tokens, seed=seed, add_bos=add_bos,
                                             strip=strip, progress=progress, keep_last=keep_last, pack=pack,
                                             compile=compile):
        if start == 0 and len(chunk) == len(texts):  # one chunk: it is the result
            out = chunk
            continue
        if out is None:  # several: filled chunk by chunk, so the array is never held twice
            out = np.empty((len(texts), *chunk.shape[1:]), dtype=np.float32)
        out[start:start + len(chunk)] = chunk
    return out
