"""What notebooks call: texts -> model -> captured residual stream, through the on-disk cache.

This module only wires the rooms together (data, models, residual, capture, cache); it holds no analysis. One
capture is one flow: :func:`capture_request` (the arguments checked, the model's files fingerprinted, the texts
loaded, the cache identity made), a cache hit, or :func:`load_for_capture` (the model loaded, its
:class:`~transformer_dynamics.residual.ResidualModel` resolved once) and :func:`write_shards` (each shard of
:func:`shard_ranges` captured as one length-sorted chunk into a :class:`cache.ShardWriter`).
:func:`residual_stream_store` runs it in this process; :func:`transformer_dynamics.distributed.capture_store` runs it
on several ranks, each writing its own shards.

>>> rs = residual_stream("smollm2-135m", n=1000, seed=0, condition="original")   # doctest: +SKIP
>>> rs.shape                                                                        # doctest: +SKIP
(1000, 60, 576)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, cache, capture, data, models, random_init, residual
from .validation import check_positive_int, check_seed

__all__ = ["CONDITIONS", "ALL_CONDITIONS", "CAPTURE_VERSION", "STRIP", "SHARD_BYTES", "CaptureRequest",
           "capture_identity", "capture_request", "entry_meta", "load_for_capture", "load_model", "load_texts",
           "read_or_recompute", "residual_stream", "residual_stream_store", "shard_ranges", "shard_texts",
           "write_shards"]

CONDITIONS = ("original", "shuffled")
#: every condition a capture accepts: CONDITIONS, and the control that keeps the last token in place too
#: (tokens after BOS and before the last permuted; only the order changes: the verdict-robustness chapter)
ALL_CONDITIONS = CONDITIONS + ("shuffled_keep_last",)
#: The book's last token: rows stripped of WikiText's trailing " \n", so that the last token is the text's last
#: word rather than the same newline for every text (the methods page compares the two; rows as given are the
#: robustness chapter's other setting).
STRIP = True
#: Bump when capture semantics change: every cached array made before is then stale.
CAPTURE_VERSION = 1

_MODELS: dict[tuple, tuple[str, residual.ResidualModel, Any]] = {}  # load arguments -> (fingerprint, rm, tokenizer)


#: Target size of one activation shard (float32). Capture holds about three shards' worth at a time (the
#: chunk, its serialised bytes and the capture's buffers), so this bounds the streaming capture's memory.
SHARD_BYTES = 256 * 2**20


def shard_texts(rm: residual.ResidualModel, shard_bytes: int = SHARD_BYTES) -> int:
    """Texts per shard so that a shard of ``rm``'s residual stream, ``(texts, rm.n_sublayers, rm.d_model)`` float32,
    fills ``shard_bytes`` (at least one text)."""
    shard_bytes = check_positive_int(shard_bytes, "shard_bytes")
    return max(1, shard_bytes // (rm.n_sublayers * rm.d_model * 4))


def load_texts(n: int, seed: int = 0, *, splits: Sequence[str] = data.DEFAULT_SPLITS,
               data_dir: str | os.PathLike | None = None) -> list[str]:
    """``n`` WikiText-2 rows passing the paper's filter, sampled with ``seed`` (see :mod:`.data`)."""
    return data.load_texts(n, seed, splits=splits, data_dir=data_dir)[0]


def load_model(name: str = models.DEFAULT_MODEL, *, dtype: str = "float32", quantization: str | None = None,
               device: str | None = None, cache_dir: str | os.PathLike | None = None, **kwargs: Any
               ) -> tuple[residual.ResidualModel, Any]:
    """``(rm, tokenizer)``: the model loaded (see :func:`models.load_model`) as its
    :class:`~transformer_dynamics.residual.ResidualModel` (layers, norms, width, sublayers, pad id... resolved here,
    once), once per process for the same arguments and the same files: a folder edited in place is loaded again
    (the outdated model is dropped first). ``rm.model`` is the transformers model."""
    key = (name, dtype, quantization, device, str(cache_dir), tuple(sorted(kwargs.items())))
    held = _MODELS.get(key)
    if held is None or held[0] != models.source_fingerprint(name, cache_dir):
        _MODELS.pop(key, None)
        lm, tokenizer = models.load_model(name, dtype=dtype, quantization=quantization, device=device,
                                          cache_dir=cache_dir, **kwargs)
        # fingerprinted after loading: a hub model's snapshot (its commit) exists only once downloaded
        _MODELS[key] = (models.source_fingerprint(name, cache_dir), residual.of(lm, tokenizer), tokenizer)
    return _MODELS[key][1], _MODELS[key][2]


def capture_identity(model: str, weights: str, texts: Sequence[str], source: data.TextSource, *, seed: int,
                     condition: str, dtype: str, quantization: str | None, add_bos: bool, strip: bool,
                     init: str | None = None, init_seed: int = 0) -> dict[str, Any]:
    """Everything a cached capture depends on; a cache hit needs all of it to match. ``weights``: the fingerprint of
    the model's files (:func:`models.source_fingerprint`). ``init``: a random initialisation of the model's
    architecture (:mod:`.random_init`) with ``init_seed``, None for the weights as loaded (the key is left out then,
    so that entries made before it existed still match)."""
    extra = {} if init is None else {"init": f"{init}:{int(init_seed)}"}
    return {
        "model": model,
        "weights": weights,
        "data": f"wikitext-2-raw-v1:{'+'.join(source.splits)}",
        "rows_sha256": data.rows_hash(texts),
        "n": len(texts),
        "seed": seed,
        "condition": condition,
        "dtype": dtype,
        "quantization": quantization,
        "add_bos": add_bos,
        "strip": strip,
        "capture_version": CAPTURE_VERSION,
        "package_version": __version__,
        **extra,
    }


def _check_arguments(**kwargs: Any) -> None:
    """One-line errors for capture arguments of the wrong type or range (before anything is loaded)."""
    for name, value in kwargs.items():
        if name in ("add_bos", "strip"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
        elif name in ("seed", "init_seed"):
            check_seed(value, name)
        else:
            check_positive_int(value, name, none=name == "shard_size")


@dataclass
class CaptureRequest:
    """One capture, its arguments checked and its texts loaded: what :func:`write_shards` captures and under which
    identity (:func:`capture_identity`) the cache keeps it. Made by :func:`capture_request`."""

    model: str
    texts: list[str]
    identity: dict[str, Any]
    root: Path
    seed: int
    condition: str
    add_bos: bool
    strip: bool
    batch_size: int
    dtype: str
    quantization: str | None
    cache_dir: str | os.PathLike | None
    init: str | None
    init_seed: int


def capture_request(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0,
                    condition: str = "original", splits: Sequence[str] = data.DEFAULT_SPLITS,
                    data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                    add_bos: bool = True, strip: bool = STRIP, batch_size: int = 16, dtype: str = "float32",
                    quantization: str | None = None, init: str | None = None, init_seed: int = 0) -> CaptureRequest:
    """The arguments of :func:`residual_stream_store` checked (one-line errors before anything is loaded), the
    model's files fingerprinted (a model name of the wrong type, or a folder that is not a model, said first), its
    ``n`` texts loaded and its cache identity made."""
    if condition not in ALL_CONDITIONS:
        raise ValueError(f"condition must be one of {ALL_CONDITIONS}, got {condition!r}")
    _check_arguments(n=n, seed=seed, add_bos=add_bos, strip=strip, batch_size=batch_size, init_seed=init_seed)
    weights = models.source_fingerprint(model, cache_dir)
    if init is not None:
        random_init.check_kind(init)
        if quantization is not None:
            raise ValueError(f"init={init!r} draws new weights: it cannot be combined with quantization="
                             f"{quantization!r}; capture the random-init reference unquantised")
    texts, source = data.load_texts(n, seed, splits=splits, data_dir=data_dir)
    identity = capture_identity(model, weights, texts, source, seed=seed, condition=condition, dtype=dtype,
                                quantization=quantization, add_bos=add_bos, strip=strip, init=init,
                                init_seed=init_seed)
    return CaptureRequest(model, texts, identity, Path(models.cache_root(cache_dir)), seed, condition, add_bos, strip,
                          batch_size, dtype, quantization, cache_dir, init, init_seed)


def load_for_capture(req: CaptureRequest, device: str | None = None, **model_kwargs: Any
                     ) -> tuple[residual.ResidualModel, Any, CaptureRequest]:
    """``(rm, tokenizer, request)``: the model of ``req`` loaded (:func:`load_model`; at its random initialisation
    when ``req.init`` is set) as its :class:`~transformer_dynamics.residual.ResidualModel`; the request's identity
    carries the weights as loaded (a hub model downloaded by this load is known by its commit only now). Files of a
    local model that changed while it loaded are an error."""
    rm, tokenizer = load_model(req.model, dtype=req.dtype, quantization=req.quantization, device=device,
                               cache_dir=req.cache_dir, **model_kwargs)
    rm = residual.of(rm, tokenizer)
    loaded_fp = models.source_fingerprint(req.model, req.cache_dir)
    if loaded_fp != req.identity["weights"]:
        if not loaded_fp.startswith("hub:"):
            raise RuntimeError(f"the files of model {req.model!r} changed while it was being loaded; rerun")
        req = replace(req, identity={**req.identity, "weights": loaded_fp})
    if req.init is not None:
        rm = residual.of(random_init.random_init_model(rm.model, req.init, req.init_seed), tokenizer)
    return rm, tokenizer, req


def shard_ranges(n: int, shard_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, int, int]]:
    """The shards of an entry of ``n`` texts that writer ``rank`` of ``world_size`` captures:
    ``[(index, start, stop)]``, shard k holding texts ``k * shard_size .. (k + 1) * shard_size - 1``, taken round
    robin (rank r: the shards k with ``k % world_size == r``; one writer: all of them)."""
    if shard_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need shard_size >= 1 and 0 <= rank < world_size; got {shard_size}, {rank}, {world_size}")
    return [(k, s, min(s + shard_size, n)) for k, s in enumerate(range(0, n, shard_size)) if k % world_size == rank]


def entry_meta(rm: residual.ResidualModel) -> dict[str, Any]:
    """What a capture entry records beside its arrays and identity: the sublayers' short labels (``rm.labels``)."""
    return {"sublayer_labels": rm.labels}


def write_shards(writer: cache.ShardWriter, rm: residual.ResidualModel, tokenizer: Any, req: CaptureRequest,
                 shards: Sequence[tuple[int, int, int]], shard_size: int, *, progress: bool = True) -> None:
    """Capture the shards ``[(index, start, stop)]`` of ``req`` (:func:`shard_ranges`) into ``writer``, each batched
    as one length-sorted chunk, so an entry is the same bit for bit whichever writers capture which shards.

    The shuffled-token conditions draw every text's permutation from one stream in text order (seeded by
    ``req.seed``), so each shard's texts are tokenised and shuffled in order, captured only where ``shards`` has
    them: memory stays flat in N."""
    mine = {start: (k, stop) for k, start, stop in shards}
    shuffle = req.condition.startswith("shuffled")
    rng = np.random.default_rng(req.seed)
    bos = tokenizer.bos_token_id
    for _, start, stop in shard_ranges(len(req.texts), shard_size):
        if not shuffle and start not in mine:
            continue
        src: dict[str, Any] = {"texts": req.texts[start:stop]}
        if shuffle:
            ids = capture.tokenize(tokenizer, req.texts[start:stop], add_bos=req.add_bos, strip=req.strip)
            src = {"token_ids": data.shuffle_token_ids(ids, seed=rng, keep_first=[bos is not None and s[0] == bos
                                                                                   for s in ids],
                                                       keep_last=req.condition == "shuffled_keep_last")}
        if start not in mine:
            continue
        (_, rs), = capture.iter_residual_stream(rm, tokenizer, **src, batch_size=req.batch_size,
                                                chunk_size=stop - start, add_bos=req.add_bos, strip=req.strip,
                                                progress=progress)
        writer.write(start, rs, index=mine[start][0])


_SCRATCH: dict[str, str] = {}


def _scratch_root(root: os.PathLike) -> str:
    """A temporary cache folder (removed at exit) for a cache that cannot be written, with a warning."""
    import atexit  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if str(root) not in _SCRATCH:
        _SCRATCH[str(root)] = tempfile.mkdtemp(prefix="transformer-dynamics-")
        atexit.register(shutil.rmtree, _SCRATCH[str(root)], ignore_errors=True)
    warnings.warn(f"cache folder {root} is not writable: computing without caching (the result lives in "
                  f"{_SCRATCH[str(root)]} until this process exits); pass a writable cache_dir / --cache-dir "
                  "to keep it", cache.CacheWarning, stacklevel=3)
    return _SCRATCH[str(root)]


def _cached(req: CaptureRequest, verify: bool) -> cache.ActivationStore | None:
    """The entry of ``req`` in the cache (or in this process's scratch folder for an unwritable cache)."""
    store = cache.open_store(req.root, req.identity, verify=verify)
    if store is None and str(req.root) in _SCRATCH:  # computed earlier in this process, uncached
        store = cache.open_store(_SCRATCH[str(req.root)], req.identity, verify=verify)
    return store


def residual_stream_store(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0,
                          condition: str = "original", splits: Sequence[str] = data.DEFAULT_SPLITS,
                          data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                          add_bos: bool = True, strip: bool = STRIP, batch_size: int = 16,
                          dtype: str = "float32", quantization: str | None = None, device: str | None = None,
                          shard_size: int | None = None, recompute: bool = False, progress: bool = True,
                          verify: bool = True, init: str | None = None, init_seed: int = 0
                          ) -> cache.ActivationStore:
    """Capture (or find in the cache) the residual stream and return its :class:`cache.ActivationStore`.

    The capture streams shard by shard (``shard_size`` texts each; None: as many as fill
    :data:`SHARD_BYTES`, e.g. 1 942 texts of SmolLM2's 60 x 576 floats, 256 of Llama 3.1 8B's 64 x 4096) to
    disk, so N may exceed memory; read it back whole with ``.to_numpy()`` or in chunks with
    :func:`transformer_dynamics.arrays.chunks`. ``init`` (``"default"``, ``"matched"``, ``"permuted"``; None: the
    weights as loaded) captures the model's architecture at a random initialisation instead
    (:func:`.random_init.random_init_model` with ``init_seed``). A cache hit is verified (every shard's sha256)
    before it is returned; ``verify=False`` leaves that to the reads, which check each shard they read anyway
    (:func:`residual_stream` reads once and recomputes on a :class:`cache.CacheError`). Several processes capture
    one entry together with :func:`transformer_dynamics.distributed.capture_store` (the same flow: a
    :class:`CaptureRequest`, :func:`write_shards`).
    """
    _check_arguments(shard_size=shard_size)
    req = capture_request(model, n=n, seed=seed, condition=condition, splits=splits, data_dir=data_dir,
                          cache_dir=cache_dir, add_bos=add_bos, strip=strip, batch_size=batch_size, dtype=dtype,
                          quantization=quantization, init=init, init_seed=init_seed)
    hit = None if recompute else _cached(req, verify)
    if hit is not None:
        return hit
    rm, tokenizer, loaded = load_for_capture(req, device)
    if loaded.identity != req.identity and not recompute:
        hit = _cached(loaded, verify)
        if hit is not None:
            return hit
    if shard_size is None:
        shard_size = shard_texts(rm)
    root = loaded.root if cache.writable(loaded.root) else _scratch_root(loaded.root)
    with cache.ShardWriter(root, loaded.identity, extra_meta=entry_meta(rm)) as writer:
        write_shards(writer, rm, tokenizer, loaded, shard_ranges(n, shard_size), shard_size, progress=progress)
    return writer.store


def residual_stream(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0,
                    condition: str = "original", **kwargs: Any) -> np.ndarray:
    """The residual stream ``rs: (n, 2 * n_layers, d_model)`` float32 for ``n`` WikiText rows.

    condition: ``"original"``, ``"shuffled"`` (tokens after BOS permuted: the paper's control) or
    ``"shuffled_keep_last"`` (the last token kept in place too).
    Other keyword arguments as :func:`residual_stream_store` (cache_dir, add_bos, strip, dtype,
    quantization, batch_size, recompute…). Cached on disk: the second call with the same arguments
    reads the file.
    """
    store = residual_stream_store(model, n=n, seed=seed, condition=condition, verify=False, **kwargs)
    return read_or_recompute(store, model, n=n, seed=seed, condition=condition, **kwargs)


def read_or_recompute(store: cache.ActivationStore, model: str, **kwargs: Any) -> np.ndarray:
    """``store.to_numpy()`` (each shard's sha256 checked as it is read); a corrupt shard is reported and the
    entry recomputed with ``kwargs`` (the arguments of :func:`residual_stream_store`)."""
    try:
        return store.to_numpy()
    except cache.CacheError as err:
        warnings.warn(f"{err}; it will be recomputed", cache.CacheWarning, stacklevel=3)
        return residual_stream_store(model, **{**kwargs, "recompute": True}).to_numpy()
