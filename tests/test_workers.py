"""workers: independent jobs side by side in spawned processes, one thread each."""

from __future__ import annotations

import math

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
