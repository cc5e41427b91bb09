"""The compressing autoencoders of chapter 4, trained on a cached capture and cached themselves.

:func:`trained_cae` finds the capture (:func:`pipeline.residual_stream_store`), and trains the autoencoder
(:func:`reduce.fit_cae`) only when the module cache (:func:`cache.load_module`) has none under its identity: the
capture's identity plus every training argument that changes the result. :func:`trained_caes` does it for many runs,
those not cached side by side in worker processes.

>>> cae = trained_caes([("smollm2-135m", "original")], k=10, epochs=100)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import cache, models, pipeline, reduce
from . import workers as _workers

__all__ = ["CAE_VERSION", "trained_cae", "trained_caes"]

#: Bump when CAE training semantics change: every cached CAE made before is then stale.
CAE_VERSION = 1
_CAE_RUNTIME_ARGS = {"device", "num_threads", "progress", "chunk_samples"}  # change speed, not the result


def _entry(model: str, *, n: int = 1000, seed: int = 0, condition: str = "original",
           cache_dir: str | os.PathLike | None = None, quantization: str | None = None,
           recompute: bool = False, progress: bool = True, init: str | None = None, init_seed: int = 0,
           cae_seed: int | None = None, **cae_kwargs: Any) -> tuple:
    """:func:`trained_cae`'s arguments, split as it uses them -> ``(capture keywords, training keywords,
    capture store, module identity, cache root)``: the one place a CAE's cache key is made."""
    capture_kw = dict(n=n, seed=seed, condition=condition, cache_dir=cache_dir, quantization=quantization,
                      progress=progress, **({} if init is None else {"init": init, "init_seed": init_seed}))
    store = pipeline.residual_stream_store(model, verify=False, **capture_kw)  # a cached CAE needs no read of it
    cae_kwargs["seed"] = seed if cae_seed is None else cae_seed
    identity = {"activations": store.identity, "cae_version": CAE_VERSION,
                "cae": {k: v for k, v in sorted(cae_kwargs.items()) if k not in _CAE_RUNTIME_ARGS}}
    return capture_kw, cae_kwargs, store, identity, models.cache_root(cache_dir)


def _cached(model: str, kwargs: dict[str, Any]) -> bool:
    """Whether :func:`trained_cae` ``(model, **kwargs)`` would load its CAE from the cache."""
    *_, identity, root = _entry(model, **kwargs)
    return cache.load_module(root, identity) is not None


def trained_cae(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0, condition: str = "original",
                cache_dir: str | os.PathLike | None = None, quantization: str | None = None,
                recompute: bool = False, progress: bool = True, init: str | None = None, init_seed: int = 0,
                cae_seed: int | None = None, **cae_kwargs: Any):
    """A compressing autoencoder trained on the cached capture (see :func:`reduce.fit_cae`), itself cached.

    ``init``, ``init_seed``: the capture of a random-init model (:func:`pipeline.residual_stream_store`); ``cae_seed``:
    the training seed (initial weights, the split of the texts, the batches; default ``seed``). The CAE is keyed by the
    capture's identity plus every training argument that changes the result (``k``, ``epochs``, ``patience``, ``lr``,
    ``batch_size``, ``scaling``, the split fractions and the training seed); a rerun with the same arguments loads it
    instead of training. Returns a :class:`reduce.CAEResult`.
    """
    capture_kw, cae_kwargs, store, identity, root = _entry(
        model, n=n, seed=seed, condition=condition, cache_dir=cache_dir, quantization=quantization,
        progress=progress, init=init, init_seed=init_seed, cae_seed=cae_seed, **cae_kwargs)
    if not recompute:
        hit = cache.load_module(root, identity)
        if hit is not None:
            return reduce.CAEResult.from_state(*hit)
    result = reduce.fit_cae(pipeline.read_or_recompute(store, model, **capture_kw), progress=progress, **cae_kwargs)
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
    runs = list(dict.fromkeys(runs))
    per_run = per_run or {}
    jobs = {r: (r[0], {**kwargs, "condition": r[1], **per_run.get(r, {})}) for r in runs}
    if workers is None:
        on_cpu = kwargs.get("device") in (None, "cpu") and kwargs.get("num_threads") == 1
        workers = _workers.default_workers(len(runs)) if on_cpu else 1
    todo = [r for r in runs if kwargs.get("recompute") or not _cached(*jobs[r])] \
        if workers > 1 and len(runs) > 1 else []
    if len(todo) > 1:
        _workers.map_jobs(_train_in_worker, [(jobs[r][0], {**jobs[r][1], "progress": False}) for r in todo],
                          workers)
        jobs = {r: (m, {**kw, "recompute": False}) for r, (m, kw) in jobs.items()}  # trained just now: load them
    return {r: trained_cae(m, **kw) for r, (m, kw) in jobs.items()}
