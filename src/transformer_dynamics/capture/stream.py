"""Texts to the residual stream at each text's last token: :func:`tokenize` (made explicit), then the one loop
(:func:`.batching.batches`) chunk by chunk: :func:`iter_residual_stream`, :func:`residual_stream`.

For decoder layer ``l`` the array holds at sublayer ``2l`` the input of the pre-attention norm (TransformerLens's
``blocks.l.hook_resid_pre``) and at ``2l + 1`` the input of the pre-MLP norm (``blocks.l.hook_resid_mid``). Texts are
tokenised explicitly (``add_bos``, ``strip``), sorted by length inside each chunk to cut padding, batched (packed
where the attention allows it: :mod:`.packing`), and run through the decoder stack only: the LM head never runs,
and the forward stops after the last layer's pre-MLP norm input. A captured chunk holding NaN or inf is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..data import shuffle_token_ids
from .. import residual
from ..residual import ResidualModel, sublayer_labels
from ..validation import check_positive_int, check_seed
from .batching import batches

__all__ = ["iter_residual_stream", "residual_stream", "tokenize"]


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


def iter_residual_stream(rm: ResidualModel, tokenizer, texts: Sequence[str] | None = None, *,
                         token_ids: Sequence[Sequence[int]] | None = None, batch_size: int = 16,
                         chunk_size: int = 4096, shuffle_tokens: bool = False, seed: int = 0,
                         add_bos: bool = True, strip: bool = False, progress: bool = True,
                         keep_last: bool = False, pack: bool | None = None,
                         compile: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Stream the residual stream in chunks: yields ``(start, rs_chunk)`` with
    ``rs_chunk: (m, 2 * n_layers, d_model)`` float32 for texts ``start … start + m - 1`` in input order.

    rm: the model (as loaded, or its :func:`transformer_dynamics.residual.of`); tokenizer: its tokenizer. Within a
    chunk of
    ``chunk_size`` texts, batches are formed from length-sorted texts; pass either ``texts`` or pre-tokenised
    ``token_ids``. See :func:`residual_stream` for the other arguments and :func:`.batching.batches` for ``pack``
    and ``compile``.
    """
    if (texts is None) == (token_ids is None):
        raise ValueError("pass exactly one of texts or token_ids")
    batch_size, chunk_size = check_positive_int(batch_size, "batch_size"), check_positive_int(chunk_size, "chunk_size")
    seed = check_seed(seed)
    n_texts = len(token_ids) if token_ids is not None else len(texts)
    if not hasattr(tokenizer, "bos_token_id"):
        raise ValueError(f"tokenizer must be the model's tokenizer (from load_model); got {type(tokenizer).__name__}")
    rm = residual.of(rm, tokenizer)  # a model of the wrong type: one line, before anything runs
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

    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=n_texts, desc="capture", unit="text")
    try:
        with torch.inference_mode():
            for start in range(0, n_texts, chunk_size):
                chunk = chunk_ids(start)
                out = np.empty((len(chunk), rm.n_sublayers, rm.d_model), dtype=np.float32)
                for sel, rec in batches(rm, chunk, batch_size=batch_size, pack=pack, compile=compile):
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


def residual_stream(rm: ResidualModel, tokenizer, texts: Sequence[str], *, batch_size: int = 16,
                    shuffle_tokens: bool = False, seed: int = 0, progress: bool = True,
                    add_bos: bool = True, strip: bool = False, keep_last: bool = False,
                    pack: bool | None = None, compile: bool = False) -> np.ndarray:
    """The residual stream at each text's last real token.

    rm: the model (as loaded, or its :func:`transformer_dynamics.residual.of`); tokenizer: its tokenizer.
    Returns ``rs: (n_texts, 2 * n_layers, d_model)`` float32: ``rs[:, 2l]`` is the input of layer l's
    pre-attention norm (``hook_resid_pre``), ``rs[:, 2l + 1]`` the input of its pre-MLP norm
    (``hook_resid_mid``).

    shuffle_tokens: the paper's control: BOS stays first, the rest of each text's tokens are permuted
    (``numpy.random.default_rng(seed)``); with ``keep_last`` the last token stays in place too.
    add_bos / strip: see :func:`tokenize`. pack: padding-free batches (see :func:`.batching.batches`; same values).
    compile: ``torch.compile`` the layers' MLPs and norms (opt-in; round-off differences: see
    :func:`.batching.batches`).
    """
    out = None
    for start, chunk in iter_residual_stream(rm, tokenizer, texts, batch_size=batch_size,
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
