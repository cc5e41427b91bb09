"""Data-parallel capture: 2 CPU processes (gloo, torchrun) write the same entry as one process, bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from transformer_dynamics import pipeline


def test_shard_ranges_partition_the_texts():
    parts = [pipeline.shard_ranges(50, 8, r, 3) for r in range(3)]
    covered = sorted((s, e) for part in parts for _, s, e in part)
    assert covered == [(s, min(s + 8, 50)) for s in range(0, 50, 8)]
    assert [k for k, _, _ in parts[1]] == [1, 4]
    with pytest.raises(ValueError, match="rank"):
        pipeline.shard_ranges(10, 4, 2, 2)


@pytest.mark.parametrize("condition", ["original", "shuffled"])
def test_two_process_capture_equals_one_process(condition):
    n, shard, seed = 20, 6, 4242  # 4 shards: rank 0 takes 0 and 2, rank 1 takes 1 and 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = pipeline.residual_stream_store(n=n, seed=seed, condition=condition, shard_size=shard,
                                             recompute=True, progress=False)
        single = one.to_numpy()
    finally:
        torch.set_num_threads(threads)
    shutil.rmtree(one.path)  # else the distributed run finds a complete entry in place and keeps it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "transformer_dynamics.distributed", "--texts", str(n), "--seed", str(seed), "--condition", condition,
           "--shard-size", str(shard), "--device", "cpu", "--threads", "1", "--recompute"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    store = pipeline.residual_stream_store(n=n, seed=seed, condition=condition, shard_size=shard, progress=False)
    assert store.meta.get("world_size") == 2 and len(store.meta["shards"]) == 4
    np.testing.assert_array_equal(store.to_numpy(), single)
