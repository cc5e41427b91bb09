"""Data-parallel capture across processes and GPUs (``torch.distributed``, started by ``torchrun``).

Every rank captures a disjoint set of the entry's shards (:func:`pipeline.shard_ranges`: shard k holds texts
``k*S … (k+1)*S - 1``; rank r takes the shards k with ``k % world_size == r``) through the same flow as one process
(:func:`pipeline.capture_request`, :func:`pipeline.load_for_capture`, :func:`pipeline.write_shards`) into one
shared temporary folder (a :class:`cache.ShardWriter` per rank on that folder); after a barrier, rank 0 takes every
rank's shard records, writes ``meta.json`` last and moves the folder into place. So the cache entry is the one
:func:`pipeline.residual_stream_store` writes, with the same identity, and it appears only when complete; on the
same device and thread count the array is bit for bit the same. The cache folder must be visible to every rank
(one node, or a shared file system).

One node with 8 GPUs (NCCL), or CPU processes (gloo)::

    torchrun --nproc_per_node 8 -m transformer_dynamics.distributed --model smollm2-135m --texts 100000
    torchrun --nproc_per_node 2 -m transformer_dynamics.distributed --texts 1000 --device cpu

Then any process reads it as usual: ``pipeline.residual_stream_store(model, n=...)`` is a cache hit. A
model too large for one GPU is loaded with ``device_map`` through ``--device-map auto`` (accelerate):
then start one process per node and let each spread its model over that node's GPUs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import cache, data, models, pipeline
from .validation import check_positive_int

__all__ = ["capture_store", "main"]


def _init(backend: str | None, device: str | None) -> tuple[int, int, bool]:
    """Join (or start) the process group. -> (rank, world_size, we_started_it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if "WORLD_SIZE" not in os.environ:  # not under torchrun: a group of one
        return 0, 1, False
    cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"), timeout=timedelta(hours=2))
    return dist.get_rank(), dist.get_world_size(), True


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _hit_everywhere(req: pipeline.CaptureRequest, rank: int, world: int) -> cache.ActivationStore | None:
    """The entry of ``req`` when every rank finds it (rank 0 verifies it), else None."""
    hit = cache.open_store(req.root, req.identity, verify=rank == 0)
    return hit if all(_gather(hit is not None, world)) else None


def capture_store(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0,
                  condition: str = "original", splits: Sequence[str] = data.DEFAULT_SPLITS,
                  data_dir=None, cache_dir=None, add_bos: bool = True, strip: bool = pipeline.STRIP,
                  batch_size: int = 16, dtype: str = "float32", quantization: str | None = None,
                  device: str | None = None, shard_size: int | None = None, backend: str | None = None,
                  recompute: bool = False, progress: bool = False, init: str | None = None, init_seed: int = 0,
                  **model_kwargs: Any) -> cache.ActivationStore:
    """The entry :func:`pipeline.residual_stream_store` would write, captured by every rank of the process
    group together (call it on every rank; without torchrun it runs alone). Returns the verified entry on
    every rank. Arguments as :func:`pipeline.residual_stream_store`; ``device``: None = ``cuda:LOCAL_RANK``
    when CUDA is there, else CPU; ``model_kwargs`` go to the model loader (e.g. ``device_map="auto"``).
    """
    shard_size = check_positive_int(shard_size, "shard_size", none=True)
    req = pipeline.capture_request(model, n=n, seed=seed, condition=condition, splits=splits, data_dir=data_dir,
                                   cache_dir=cache_dir, add_bos=add_bos, strip=strip, batch_size=batch_size,
                                   dtype=dtype, quantization=quantization, init=init, init_seed=init_seed)
    rank, world, started = _init(backend, device)
    try:
        hit = None if recompute else _hit_everywhere(req, rank, world)
        if hit is not None:
            return hit
        if device is None and torch.cuda.is_available() and "device_map" not in model_kwargs:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        rm, tok, req = pipeline.load_for_capture(req, device, **model_kwargs)
        hit = None if recompute else _hit_everywhere(req, rank, world)
        if hit is not None:
            return hit
        if shard_size is None:
            shard_size = pipeline.shard_texts(rm)
        # one folder of a unique name for this run's ranks (rank 0 names it): two runs never share one
        tmp = Path(_gather(str(cache.ShardWriter.partial_folder(req.root, req.identity)) if rank == 0 else None,
                           world)[0])
        with cache.ShardWriter(req.root, req.identity, extra_meta={**pipeline.entry_meta(rm), "world_size": world},
                               folder=tmp, publish=rank == 0) as writer:
            pipeline.write_shards(writer, rm, tok, req, pipeline.shard_ranges(n, shard_size, rank, world),
                                  shard_size, progress=progress)
            every = [r for part in _gather(writer.shards, world) for r in part]
            _barrier(world)  # every shard is on disk
            writer.shards = every  # rank 0 writes meta.json from every rank's records and publishes on exit
        _barrier(world)  # the entry is in place
        store = cache.open_store(req.root, req.identity, verify=rank == 0)
        if store is None:
            raise cache.CacheError(f"the distributed capture did not produce a valid entry at {writer.final}")
        return store
    finally:
        if started:
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transformer_dynamics.distributed`` (under torchrun): capture, print the entry as JSON on rank 0.
    Every flag is checked by argparse; every error is one line (``--traceback``: the whole of it)."""
    from .cli import Parser, add_common, folder, guarded, integer, parse

    p = Parser(prog="python -m transformer_dynamics.distributed",
                                description="Data-parallel residual-stream capture (run under torchrun).")
    add_common(p)
    p.add_argument("--model", default=models.DEFAULT_MODEL, help="short name, Hugging Face id or local folder")
    p.add_argument("--texts", type=integer(1), default=1000, help="N, the number of texts")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--condition", default="original", choices=pipeline.ALL_CONDITIONS)
    p.add_argument("--batch-size", type=integer(1), default=16)
    p.add_argument("--shard-size", type=integer(1), default=None, help="texts per shard (default: from the model)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device", default=None)
    p.add_argument("--device-map", default=None, help="e.g. auto: spread one model over this node's GPUs")
    p.add_argument("--cache-dir", type=folder, default=None)
    p.add_argument("--threads", type=integer(1), default=None, help="torch threads per process")
    p.add_argument("--recompute", action="store_true", help="capture even if the entry is cached")
    a = parse(p, argv)
    if isinstance(a, int):
        return a

    def run() -> int:
        if a.threads:
            torch.set_num_threads(a.threads)
        kw = {"device_map": a.device_map} if a.device_map else {}
        store = capture_store(a.model, n=a.texts, seed=a.seed, condition=a.condition, batch_size=a.batch_size,
                              shard_size=a.shard_size, dtype=a.dtype, device=a.device, cache_dir=a.cache_dir,
                              recompute=a.recompute, **kw)
        if int(os.environ.get("RANK", 0)) == 0:
            print(json.dumps({"path": str(store.path), "shape": store.shape, "shards": len(store.meta["shards"])}))
        return 0

    return guarded(run, traceback=a.traceback)


if __name__ == "__main__":
    raise SystemExit(main())
