"""The one batching loop (:func:`batches`): token id lists in, the residual stream at each text's last token out,
batch by batch. Capture, perturb's reruns and its clean runs all run texts through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch

from ..residual import ResidualModel
from ..validation import check_positive_int
from .hooks import forward_until_stop, forwards_replaced, recording
from .packing import can_pack, pack_ids, packed

__all__ = ["batches", "pad_right"]


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


def batches(rm: ResidualModel, token_ids: Sequence[Sequence[int]], *, batch_size: int = 16,
            points: int | None = None, pack: bool | None = None, compile: bool = False,
            edit: tuple[int, Callable[[torch.Tensor, np.ndarray], torch.Tensor]] | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The one batching loop: ``token_ids`` (one non-empty id list per text) through ``rm``'s decoder stack, the
    residual stream recorded at each text's last token.

    The contract: the texts are sorted by length, longest first (a stable sort), and cut into batches of
    ``batch_size``, so the same texts always form the same batches; each batch runs once, through the decoder
    stack only (the LM head never runs), its forward ending once the last point asked for is recorded
    (:mod:`.hooks`, hooks of its own). Yields ``(sel, rec)`` per batch: ``sel: (B,)`` int, the batch's indices into
    ``token_ids``; ``rec: (B, points, d_model)`` float32, a new array, points ``0 … points - 1`` (default
    ``rm.n_sublayers``; ``rm.n_points`` adds the stack's output).

    pack: None (default) packs each batch into one padding-free row where the attention allows it
    (:func:`.packing.can_pack`); False right-pads with ``rm.pad_id``; True packs or raises.
    compile: run every layer's MLP and norms through ``torch.compile`` (opt-in: a one-off compile of tens of seconds;
    values equal the eager ones to float32 round-off, not bit for bit, so a cache must key on it).
    edit: ``(layer, fn)``: the vectors entering decoder layer ``layer`` at the batch's last tokens, ``h: (B, D)``,
    replaced by ``fn(h, sel) -> (B, D)``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    points = rm.n_sublayers if points is None else points
    packable = can_pack(rm)
    if pack and not packable:
        raise ValueError("pack=True needs the model's attention to be transformers' 'sdpa'; load it with "
                         "attn_implementation='sdpa' or pass pack=False")
    pack = packable if pack is None else pack
    order = np.argsort([-len(s) for s in token_ids], kind="stable")
    for b0 in range(0, len(token_ids), batch_size):
        sel = order[b0:b0 + batch_size]
        seqs = [token_ids[i] for i in sel]
        out = torch.empty((len(sel), points, rm.d_model), dtype=torch.float32)
        fn = None if edit is None else (edit[0], lambda h, sel=sel: edit[1](h, sel))
        with ExitStack() as stack:
            if compile:
                stack.enter_context(_compiled(rm))
            if pack:
                input_ids, position_ids, last, lengths = pack_ids(seqs)
                stack.enter_context(packed(rm, lengths))
                stack.enter_context(recording(rm, torch.zeros(len(sel), dtype=torch.long), last, out, edit=fn))
                forward_until_stop(rm, input_ids=input_ids.to(rm.device), position_ids=position_ids.to(rm.device))
            else:
                input_ids, mask, last = pad_right(seqs, rm.pad_id)
                stack.enter_context(recording(rm, torch.arange(len(sel)), last, out, edit=fn))
                forward_until_stop(rm, input_ids=input_ids.to(rm.device), attention_mask=mask.to(rm.device))
        yield sel, out.numpy()


def _compiled_forward(module: torch.nn.Module):
    """``torch.compile(module.forward, dynamic=True)``, made once per module and kept on it."""
    if "_td_compiled_forward" not in module.__dict__:
        module.__dict__["_td_compiled_forward"] = torch.compile(type(module).forward.__get__(module), dynamic=True)
    return module.__dict__["_td_compiled_forward"]


@contextmanager
def _compiled(rm: ResidualModel) -> Iterator[None]:
    """For the duration, every layer's MLP and its two norms run ``torch.compile``d forwards (the element-wise work
    around the matmuls fused); only ``forward`` is swapped, so the norms' pre-hooks (the recording and any editing
    hooks) still run eagerly around them."""
    mods = [m for l, layer in enumerate(rm.layers)
            for m in (getattr(layer, "mlp", None), rm.norms[2 * l], rm.norms[2 * l + 1]) if m is not None]
    with forwards_replaced(mods, _compiled_forward):
        yield
