"""Residual-stream capture, in three rooms and their entry:

=================  ==================================================================================
module             what
=================  ==================================================================================
:mod:`.hooks`      :func:`recording`: the one context manager that puts the recording (and editing) hooks
                   on a model for one forward and takes them off; :func:`forward_until_stop`
:mod:`.batching`   :func:`batches`: the one loop (length-sorted batches, packed or right-padded, its
                   contract in its docstring); :func:`pad_right`
:mod:`.packing`    packed (padding-free) batches: :func:`pack_ids`, :func:`packed`, :func:`can_pack`;
                   :func:`use_attention`
:mod:`.stream`     texts in, ``rs: (n_texts, 2L, d_model)`` out: :func:`tokenize`,
                   :func:`iter_residual_stream`, :func:`residual_stream`
=================  ==================================================================================

The rooms take the model as its :class:`~transformer_dynamics.residual.ResidualModel` (resolved once:
``residual.of(model, tokenizer)``); :mod:`.stream`'s entries, which take the tokenizer too, also accept the model as
loaded. The points and their names (:func:`hook_names`, TransformerLens's) and short labels (:func:`sublayer_labels`,
derived from them) are :mod:`transformer_dynamics.residual`'s.
``from transformer_dynamics import capture; capture.residual_stream(...)``: every public name is reached from here.
"""

from ..residual import hook_names, short_label, sublayer_labels
from .batching import batches, pad_right
from .hooks import LayerInputEdit, StopForward, forward_until_stop, forwards_replaced, recording
from .packing import PACKED_ATTENTION, can_pack, pack_ids, packed, use_attention
from .stream import iter_residual_stream, residual_stream, tokenize

__all__ = ["PACKED_ATTENTION", "LayerInputEdit", "StopForward", "batches", "can_pack", "forward_until_stop",
           "forwards_replaced", "hook_names", "iter_residual_stream", "pack_ids", "packed", "pad_right", "recording",
           "residual_stream", "short_label", "sublayer_labels", "tokenize", "use_attention"]
