"""Data-parallel capture across processes and GPUs (``torch.distributed``, started by ``torchrun``).

Every rank captures a disjoint set of the entry's shards (shard k holds texts ``k*S … (k+1)*S - 1``;
rank r takes the shards k with ``k % world_size == r``) into one shared temporary folder; after a barrier,
rank 0 gathers the shard records, writes ``meta.json`` last and renames the folder into place, so the cache
entry is the same one, with the same identity, as :func:`pipeline.residual_stream_store` writes, and it
appears only when complete. Shards are batched exactly as the single-process capture batches them (one
shard = one length-sorted chunk), so on the same device and thread count the array is bit for bit the same.
The cache folder must be visible to every rank (one node, or a shared file system).

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
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from . import cache, capture, data, models, pipeline

__all__ = ["rank_shards", "capture_store", "main"]


def rank_shards(n: int, shard_size: int, rank: int, world_size: int) -> list[tuple[int, int, int]]:
    """The shards rank ``rank`` of ``world_size`` captures: ``[(index, start, stop)]`` (round robin)."""
    if shard_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need shard_size >= 1 and 0 <= rank < world_size; got {shard_size}, {rank}, {world_size}")
    return [(k, s, min(s + shard_size, n)) for k, s in enumerate(range(0, n, shard_size)) if k % world_size == rank]


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


def capture_store(model: str = models.DEFAULT_MODEL, *, n: int = 1000, seed: int = 0,
                  condition: str = "original", splits: Sequence[str] = data.DEFAULT_SPLITS,
                  data_dir=None, cache_dir=None, add_bos: bool = True, strip: bool = pipeline.STRIP,
                  batch_size: int = 16, dtype: str = "float32", quantization: str | None = None,
                  device: str | None = None, shard_size: int | None = None, backend: str | None = None,
                  recompute: bool = False, progress: bool = False, **model_kwargs: Any) -> cache.ActivationStore:
    """The entry :func:`pipeline.residual_stream_store` would write, captured by every rank of the process
    group together (call it on every rank; without torchrun it runs alone). Returns the verified entry on
    every rank. Arguments as :func:`pipeline.residual_stream_store`; ``device``: None = ``cuda:LOCAL_RANK``
    when CUDA is there, else CPU; ``model_kwargs`` go to the model loader (e.g. ``device_map="auto"``).
    """
    if condition not in pipeline.CONDITIONS:
        raise ValueError(f"condition must be one of {pipeline.CONDITIONS}, got {condition!r}")
    rank, world, started = _init(backend, device)
    try:
        if device is None and torch.cuda.is_available() and "device_map" not in model_kwargs:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        texts, source = data.load_texts(n, seed, splits=splits, data_dir=data_dir)
        root = models.cache_root(cache_dir)
        identity = pipeline.capture_identity(model, texts, source, seed=seed, condition=condition, dtype=dtype,
                                             quantization=quantization, add_bos=add_bos, strip=strip,
                                             cache_dir=cache_dir)
        if not recompute:
            hit = cache.open_store(root, identity, verify=rank == 0)
            if all(_gather(hit is not None, world)):
                return hit
        lm, tok = pipeline.load_model(model, dtype=dtype, quantization=quantization, device=device,
                                      cache_dir=cache_dir, **model_kwargs)
        labels = capture.sublayer_labels(len(models.layer_modules(lm)))
        if shard_size is None:
            shard_size = pipeline.shard_texts(len(labels), lm.config.hidden_size)
        final = cache._entry_dir(root, "activations", identity)
        # one folder of a unique name for this run's ranks (rank 0 names it): two runs never share one
        tmp = Path(_gather(str(final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.distributed.partial"))
                           if rank == 0 else None, world)[0])
        if rank == 0:
            tmp.mkdir(parents=True)
        _barrier(world)
        mine = rank_shards(len(texts), shard_size, rank, world)
        ids = None
        if condition == "shuffled":  # one permutation stream over all texts in order, as the single capture
            ids = capture.tokenize(tok, texts, add_bos=add_bos, strip=strip)
            bos = tok.bos_token_id
            ids = data.shuffle_token_ids(ids, seed=seed, keep_first=[bos is not None and s[0] == bos for s in ids])
        records = []
        for k, start, stop in mine:
            src = dict(token_ids=ids[start:stop]) if ids is not None else dict(texts=texts[start:stop])
            (_, rs), = capture.iter_residual_stream(lm, tok, **src, batch_size=batch_size, chunk_size=stop - start,
                                                    add_bos=add_bos, strip=strip, progress=progress)
            blob = cache.shard_bytes(rs, start)
            name = f"shard-{k:05d}.safetensors"
            (tmp / name).write_bytes(blob)
            records.append({"file": name, "start": start, "stop": stop, "sha256": cache._sha256(blob),
                            "tail": list(rs.shape[1:])})
        every = [r for part in _gather(records, world) for r in part]
        _barrier(world)  # every shard is on disk
        if rank == 0:
            every.sort(key=lambda r: r["start"])
            tails = {tuple(r.pop("tail")) for r in every}
            if len(tails) != 1 or [r["start"] for r in every] != list(range(0, len(texts), shard_size)):
                raise cache.CacheError(f"distributed capture is incomplete or inconsistent: {len(every)} shards")
            meta = {"format": cache.FORMAT_VERSION, "complete": True, "identity": identity,
                    "shape": [len(texts), *tails.pop()], "dtype": "float32", "shards": every,
                    "sublayer_labels": labels, "world_size": world}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            # another run may have finished first: its verified entry is kept and ours discarded
            cache.publish(tmp, final, lambda p: cache.open_store(root, identity, verify=True))
        _barrier(world)  # the entry is in place
        store = cache.open_store(root, identity, verify=rank == 0)
        if store is None:
            raise cache.CacheError(f"the distributed capture did not produce a valid entry at {final}")
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
    p.add_argument("--condition", default="original", choices=pipeline.CONDITIONS)
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
