"""workers: independent jobs side by side in spawned processes, one thread each."""

from __future__ import annotations

import math
import threading

import pytest

from transformer_dynamics import workers


def test_map_jobs_keeps_order_in_processes_and_in_process():
    jobs = [(2, 3), (3, 2), (5, 0)]
    assert workers.map_jobs(pow, jobs, workers=2) == workers.map_jobs(pow, jobs, workers=1) == [8, 9, 1]


def test_map_jobs_raises_a_jobs_error():
    with pytest.raises(ValueError, match="math domain error"):
        workers.map_jobs(math.sqrt, [(4.0,), (-1.0,)], workers=2)


def test_default_workers():
    assert workers.default_workers(1) == 1
    assert 1 <= workers.default_workers(64) <= 64


def test_default_workers_respects_memory(monkeypatch):
    monkeypatch.setattr(workers, "available_memory", lambda: 10 * 2**30)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert workers.default_workers(16) == 8
    assert workers.default_workers(16, job_bytes=3 * 2**30) == 3  # 10 GiB hold three 3-GiB jobs
    assert workers.default_workers(16, job_bytes=64 * 2**30) == 1
    monkeypatch.setattr(workers, "available_memory", lambda: None)
    assert workers.default_workers(16, job_bytes=64 * 2**30) == 8  # unknown memory: no cap


def test_thread_pool_is_kept_for_the_process():
    from transformer_dynamics.workers import thread_pool

    pool = thread_pool(2)
    assert thread_pool(2) is pool and thread_pool(3) is not pool          # kept, one per size
    names = set(pool.map(lambda _: threading.current_thread().name, range(8)))
    assert names and all(n.startswith("td-2") for n in names)
    assert len(set(pool.map(lambda _: threading.current_thread().name, range(8))) | names) <= 2   # no new threads
