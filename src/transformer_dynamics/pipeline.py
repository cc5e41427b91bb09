"""What notebooks call: texts -> model -> captured residual stream, through the on-disk cache.

This module only wires the rooms together (data, models, capture, cache); it holds no analysis.

>>> rs = residual_stream("smollm2-135m", n=1000, seed=0, condition="original")   # doctest: +SKIP
>>> rs.shape                                                                        # doctest: +SKIP
(1000, 60, 576)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__, cache, capture, data, models, random_init
from .validation import check_positive_int, check_seed

__all__ = ["CONDITIONS", "ALL_CONDITIONS", "CAPTURE_VERSION", "capture_identity", "load_model", "load_texts", "model_list", "SHARD_BYTES", "shard_texts",
           "residual_stream", "residual_stream_store", "STRIP", "trained_cae", "trained_caes"]

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

_MODELS: dict[tuple, tuple[str, Any, Any]] = {}  # load arguments -> (fingerprint, model, tokenizer)


#: Target size of one activation shard (float32). Capture holds about three shards' worth at a time (the
#: chunk, its serialised bytes and the capture's buffers), so this bounds the streaming capture's memory.
SHARD_BYTES = 256 * 2**20


def shard_texts(n_sublayers: int, d_model: int, shard_bytes: int = SHARD_BYTES) -> int:
    """Texts per shard so that a shard of ``(texts, n_sublayers, d_model)`` float32 fills ``shard_bytes``."""
    n_sublayers, d_model = check_positive_int(n_sublayers, "n_sublayers"), check_positive_int(d_model, "d_model")
    shard_bytes = check_positive_int(shard_bytes, "shard_bytes")
    return max(1, shard_bytes // (n_sublayers * d_model * 4))


def model_list(models: str | Sequence[str]) -> list[str]:
    """A notebook's ``MODELS`` parameter as a list: one name (short name, hub id or folder) or several,
    duplicates dropped, order kept. An empty list is an error (a chapter needs a model)."""
    names = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    names = [str(m) for m in dict.fromkeys(names)]
    if not names:
        raise ValueError("MODELS is empty: give at least one model, e.g. MODELS = ['smollm2-135m']")
    return names


def load_texts(n: int, seed: int = 0, *, splits: Sequence[str] = data.DEFAULT_SPLITS,
               data_dir: str | os.PathLike | None = None) -> list[str]:
    """``n`` WikiText-2 rows passing the paper's filter, sampled with ``seed`` (see :mod:`.data`)."""
    return data.load_texts(n, seed, splits=splits, data_dir=data_dir)[0]


def load_model(name: str = models.DEFAULT_MODEL, *, dtype: str = "float32", quantization: str | None = None,
               device: str | None = None, cache_dir: str | os.PathLike | None = None, **kwargs: Any):
    """``(model, tokenizer)``, loaded once per process for the same arguments (see :func:`models.load_model`)
    and the same files: a folder edited in place is loaded again (the outdated model is dropped first)."""
    key = (name, dtype, quantization, device, str(cache_dir), tuple(sorted(kwargs.items())))
    held = _MODELS.get(key)
    if held is None or held[0] != models.source_fingerprint(name, cache_dir):
        _MODELS.pop(key, None)
        loaded = models.load_model(name, dtype=dtype, quantization=quantization, device=device,
                                   cache_dir=cache_dir, **kwargs)
        # fingerprinted after loading: a hub model's snapshot (its commit) exists only once downloaded
        _MODELS[key] = (models.source_fingerprint(name, cache_dir), *loaded)
    return _MODELS[key][1], _MODELS[key][2]


def capture_identity(model: str, texts: Sequence[str], source: data.TextSource, *, seed: int, condition: str,
                     dtype: str, quantization: str | None, add_bos: bool, strip: bool,
                     cache_dir: str | os.PathLike | None = None, init: str | None = None,
                     init_seed: int = 0) -> dict[str, Any]:
    """Everything a cached capture depends on; a cache hit needs all of it to match. ``init``: a random
    initialisation of the model's architecture (:mod:`.random_init`) with ``init_seed``, None for the weights
    as loaded (the key is left out then, so that entries made before it existed still match)."""
    extra = {} if init is None else {"init": f"{init}:{int(init_seed)}"}
    return {
        "model": model,
        "weights": models.source_fingerprint(model, cache_dir),
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
    disk, so N may exceed memory;
    read it back whole with ``.to_numpy()`` or in chunks with ``.iter_chunks()``. ``init`` (``"default"``,
    ``"matched"``, ``"permuted"``; None: the weights as loaded) captures the model's architecture at a random
    initialisation instead (:func:`.random_init.random_init_model` with ``init_seed``). A cache hit is verified
    (every shard's sha256) before it is returned; ``verify=False`` leaves that to the reads, which check each
    shard they read anyway (:func:`residual_stream` reads once and recomputes on a :class:`cache.CacheError`).
    """
    if condition not in ALL_CONDITIONS:
        raise ValueError(f"condition must be one of {ALL_CONDITIONS}, got {condition!r}")
    _check_arguments(n=n, seed=seed, add_bos=add_bos, strip=strip, batch_size=batch_size, shard_size=shard_size,
                     init_seed=init_seed)
    models.resolve(model)  # a name of the wrong type, or a folder that is not a model: said before any work
    if init is not None:
        random_init.check_kind(init)
        if quantization is not None:
            raise ValueError(f"init={init!r} draws new weights: it cannot be combined with quantization="
                             f"{quantization!r}; capture the random-init reference unquantised")
    texts, source = data.load_texts(n, seed, splits=splits, data_dir=data_dir)
    root = models.cache_root(cache_dir)
    identity = capture_identity(model, texts, source, seed=seed, condition=condition, dtype=dtype,
                                quantization=quantization, add_bos=add_bos, strip=strip, cache_dir=cache_dir,
                                init=init, init_seed=init_seed)
    if not recompute:
        store = cache.open_store(root, identity, verify=verify)
        if store is None and str(root) in _SCRATCH:  # computed earlier in this process, uncached
            store = cache.open_store(_SCRATCH[str(root)], identity, verify=verify)
        if store is not None:
            return store
    lm, tokenizer = load_model(model, dtype=dtype, quantization=quantization, device=device, cache_dir=cache_dir)
    loaded_fp = models.source_fingerprint(model, cache_dir)
    if loaded_fp != identity["weights"]:
        if models.resolve(model).kind != "hub":
            raise RuntimeError(f"the files of model {model!r} changed while it was being loaded; rerun")
        identity = {**identity, "weights": loaded_fp}  # downloaded by this load: its commit is known now
        hit = None if recompute else cache.open_store(root, identity, verify=verify)
        if hit is not None:
            return hit
    if init is not None:
        lm = random_init.random_init_model(lm, init, init_seed)
    labels = capture.sublayer_labels(len(models.layer_modules(lm)))
    if shard_size is None:
        shard_size = shard_texts(len(labels), lm.config.hidden_size)
    if not cache.writable(root):
        root = _scratch_root(root)
    with cache.ShardWriter(root, identity, extra_meta={"sublayer_labels": labels}) as writer:
        for start, chunk in capture.iter_residual_stream(
                lm, tokenizer, texts, batch_size=batch_size, chunk_size=shard_size,
                shuffle_tokens=condition.startswith("shuffled"), seed=seed, add_bos=add_bos, strip=strip,
                progress=progress, keep_last=condition == "shuffled_keep_last"):
            writer.write(start, chunk)
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
    return _read_or_recompute(store, model, n=n, seed=seed, condition=condition, **kwargs)


def _read_or_recompute(store: cache.ActivationStore, model: str, **kwargs: Any) -> np.ndarray:
    """``store.to_numpy()`` (each shard's sha256 checked as it is read); a corrupt shard is reported and the
    entry recomputed with ``kwargs`` (the arguments of :func:`residual_stream_store`)."""
    try:
        return store.to_numpy()
    except cache.CacheError as err:
        warnings.warn(f"{err}; it will be recomputed", cache.CacheWarning, stacklevel=3)
        return residual_stream_store(model, **{**kwargs, "recompute": True}).to_numpy()


#: Bump when CAE training semantics change: every cached CAE made before is then stale.
CAE_VERSION = 1
_CAE_RUNTIME_ARGS = {"device", "num_threads", "progress", "chunk_samples"}  # change speed, not the result


def _cae_entry(model: str, *, n: int = 1000, seed: int = 0, condition: str = "original",
               cache_dir: str | os.PathLike | None = None, quantization: str | None = None,
               recompute: bool = False, progress: bool = True, init: str | None = None, init_seed: int = 0,
               cae_seed: int | None = None, **cae_kwargs: Any) -> tuple:
    """:func:`trained_cae`'s arguments, split as it uses them -> ``(capture keywords, training keywords,
    capture store, module identity, cache root)``: the one place a CAE's cache key is made."""
    capture_kw = dict(n=n, seed=seed, condition=condition, cache_dir=cache_dir, quantization=quantization,
                      progress=progress, **({} if init is None else {"init": init, "init_seed": init_seed}))
    store = residual_stream_store(model, verify=False, **capture_kw)  # a cached CAE needs no read of it
    cae_kwargs["seed"] = seed if cae_seed is None else cae_seed
    identity = {"activations": store.identity, "cae_version": CAE_VERSION,
                "cae": {k: v for k, v in sorted(cae_kwargs.items()) if k not in _CAE_RUNTIME_ARGS}}
    return capture_kw, cae_kwargs, store, identity, models.cache_root(cache_dir)


def _cae_cached(model: str, kwargs: dict[str, Any]) -> bool:
    """Whether :func:`trained_cae` ``(model, **kwargs)`` would load its CAE from the cache."""
    *_, identity, root = _cae_entry(model, **kwargs)
    return cache.load_module(root, identity) is not None


def trained_cae(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0, condition: str = "original",
                cache_dir: str | os.PathLike | None = None, quantization: str | None = None,
                recompute: bool = False, progress: bool = True, init: str | None = None, init_seed: int = 0,
                cae_seed: int | None = None, **cae_kwargs: Any):
    """A compressing autoencoder trained on the cached capture (see :func:`reduce.fit_cae`), itself cached.

    ``init``, ``init_seed``: the capture of a random-init model (:func:`residual_stream_store`); ``cae_seed``: the
    training seed (initial weights, the split of the texts, the batches; default ``seed``). The CAE is keyed by the
    capture's identity plus every training argument that changes the result (``k``, ``epochs``, ``patience``,
    ``lr``, ``batch_size``, ``scaling``, the split fractions and the training seed); a rerun with the same arguments
    loads it instead of training. Returns a :class:`reduce.CAEResult`.
    """
    from . import reduce  # noqa: PLC0415  (torch-heavy; only needed here)

    capture_kw, cae_kwargs, store, identity, root = _cae_entry(
        model, n=n, seed=seed, condition=condition, cache_dir=cache_dir, quantization=quantization,
        progress=progress, init=init, init_seed=init_seed, cae_seed=cae_seed, **cae_kwargs)
    if not recompute:
        hit = cache.load_module(root, identity)
        if hit is not None:
            return reduce.CAEResult.from_state(*hit)
    result = reduce.fit_cae(_read_or_recompute(store, model, **capture_kw), progress=progress, **cae_kwargs)
    tensors, meta = result.to_state()
    cache.save_module(root, identity, tensors, meta)
    return result


def _train_in_worker(model: str, kwargs: dict[str, Any]) -> None:
    """A worker process's job in :func:`trained_caes`: train one CAE into the module cache."""
    trained_cae(model, **kwargs)


def trained_caes(runs: Sequence[tuple], *, per_run: dict | None = None, workers: int | None = None,
                 **kwargs: Any) -> dict:
    """:func:`trained_cae` for every run of ``runs`` (keywords as there), the CAEs not yet cached trained side by
    side in ``workers`` processes (:func:`workers.map_jobs`; None: one per CPU core when they train on the CPU with
    ``num_threads=1``, the fastest setting for these small networks; else 1).

    runs: tuples ``(model, condition, ...)`` (more entries may name the run, e.g. a training seed); per_run: {run:
    keywords overriding ``kwargs`` for that run (``cae_seed``, ``init``, ``init_seed``, ``n``...)}. Each CAE is the
    same as when trained alone (its own seed and generator, one thread); ``recompute=True`` retrains them all.
    -> {run: CAEResult}.
    """
    from . import workers as _workers  # noqa: PLC0415

    runs = list(dict.fromkeys(runs))
    per_run = per_run or {}
    jobs = {r: (r[0], {**kwargs, "condition": r[1], **per_run.get(r, {})}) for r in runs}
    if workers is None:
        on_cpu = kwargs.get("device") in (None, "cpu") and kwargs.get("num_threads") == 1
        workers = _workers.default_workers(len(runs)) if on_cpu else 1
    todo = [r for r in runs if kwargs.get("recompute") or not _cae_cached(*jobs[r])] \
        if workers > 1 and len(runs) > 1 else []
    if len(todo) > 1:
        _workers.map_jobs(_train_in_worker, [(jobs[r][0], {**jobs[r][1], "progress": False}) for r in todo],
                          workers)
        jobs = {r: (m, {**kw, "recompute": False}) for r, (m, kw) in jobs.items()}  # trained just now: load them
    return {r: trained_cae(m, **kw) for r, (m, kw) in jobs.items()}
