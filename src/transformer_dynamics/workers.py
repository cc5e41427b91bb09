"""Independent jobs side by side: one spawned worker process per CPU core, one thread each (:func:`map_jobs`); and
the threads of this process kept for the work that releases the GIL (:func:`thread_pool`).

Much of the book's CPU work is a list of independent jobs whose single job does not keep two cores busy: a
small CAE trains fastest on one thread, and a claim's evidence (bootstrap, permutation tests, PCA refits)
spends much of its time in one-threaded numpy. Run as processes with one thread each, two such jobs take
about the time of one. The result of each job is what it gives when run alone on one thread.

>>> from transformer_dynamics import workers
>>> workers.map_jobs(pow, [(2, 3), (3, 2)])   # doctest: +SKIP
[8, 9]
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

__all__ = ["available_memory", "default_workers", "map_jobs", "thread_pool"]

_THREAD_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux: ``MemAvailable`` of /proc/meminfo), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_workers(n_jobs: int, job_bytes: int | None = None) -> int:
    """One worker per CPU core, at most one per job, and (given ``job_bytes``, the memory one job needs) no
    more than the available memory holds."""
    n = max(1, min(os.cpu_count() or 1, int(n_jobs)))
    free = available_memory() if job_bytes else None
    return n if free is None else max(1, min(n, free // max(int(job_bytes), 1)))


def _one_thread() -> None:
    """A worker's initializer: one torch thread and one BLAS/OpenMP thread."""
    import threadpoolctl  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)


def thread_pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` threads kept for this process (one per ``n``; a forked child makes its own), for calls that
    release the GIL (C kernels through ctypes, LAPACK): a pool made per call starts its threads every time, which
    on busy cores costs as much as a small call's work."""
    key = (os.getpid(), int(n))
    if key not in _THREAD_POOLS:
        _THREAD_POOLS[key] = ThreadPoolExecutor(int(n), thread_name_prefix=f"td-{int(n)}")
    return _THREAD_POOLS[key]


def map_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int | None = None) -> list:
    """``[fn(*job) for job in jobs]``, the jobs spread over ``workers`` spawned processes (None:
    :func:`default_workers`) with one thread each; with one worker (or one job) in this process, as it is.

    ``fn`` must be importable (a module-level function) and its arguments and result picklable. A job's
    error is raised here, after the jobs already started have finished.
    """
    jobs = list(jobs)
    workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))
    if workers == 1 or len(jobs) < 2:
        return [fn(*job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch's threads
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_one_thread) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        return [f.result() for f in futures]
