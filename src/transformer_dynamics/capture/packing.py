"""Packed (padding-free) batches: the texts of a batch concatenated into one row, positions restarting at 0 for
each text, so that the linear layers (most of the time) multiply real tokens only.

Only the attention needs the texts apart: :func:`packed` switches the model to an attention registered with
transformers (:data:`PACKED_ATTENTION`) that unpacks queries, keys and values into the right-padded
``(B, H, width, dh)`` layout and runs transformers' own sdpa attention there with the padded batch's mask
(causal, keys inside the text, sliding window where the layer has one), then packs the output back. The values
are those of a right-padded batch to float32 round-off (bit for bit in our SmolLM2 and Gemma 3 runs; with 2+
threads a matmul of another shape may sum in another order: 2e-8 absolute on tiny GPT-2, tested). The packing of
the batch being run reaches that attention function through a context variable, set only for its forward.

:func:`use_attention` switches a model's attention implementation for a while (perturb's keys-and-values reuse
uses it too); :func:`can_pack` says whether a model's attention is the sdpa that packing reuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from ..residual import ResidualModel

__all__ = ["PACKED_ATTENTION", "can_pack", "pack_ids", "packed", "use_attention"]

#: Name under which the packed attention is registered with transformers (attention and mask interfaces).
PACKED_ATTENTION = "td_packed"
_PACKING: ContextVar[_Packing | None] = ContextVar("transformer_dynamics_packing", default=None)


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


def _configs(rm: ResidualModel) -> list:
    """Every distinct config object held by the model's modules (a multimodal model's text config too)."""
    found = {}
    for m in rm.model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            found[id(cfg)] = cfg
    return list(found.values())


def can_pack(rm: ResidualModel) -> bool:
    """Whether the model's batches can be packed: its attention is transformers' ``"sdpa"`` (the packed
    attention reuses it; eager or other kernels run padded batches)."""
    return all(getattr(c, "_attn_implementation", None) == "sdpa" for c in _configs(rm))


@contextmanager
def use_attention(rm: ResidualModel, name: str) -> Iterator[None]:
    """Switch every config of the model to the attention implementation ``name`` (registered with transformers'
    attention and mask interfaces) for the duration; restored after."""
    configs = _configs(rm)
    before = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = name
        yield
    finally:
        for c, b in zip(configs, before):
            c._attn_implementation = b


@contextmanager
def packed(rm: ResidualModel, lengths: torch.Tensor) -> Iterator[None]:
    """For one forward of a packed row of texts of ``lengths: (B,)`` tokens (:func:`pack_ids`): the model's
    attention is the packed one, reading this batch's packing; both restored after."""
    _register_packed_attention()
    token = _PACKING.set(_Packing(lengths))
    try:
        with use_attention(rm, PACKED_ATTENTION):
            yield
    finally:
        _PACKING.reset(token)
