"""Figure 1 and 2 statistics out of core: time and peak memory from a sharded cache entry at large N.

The entry is written synthetically (a random walk over sublayers with a massive unit, float32, SmolLM2's
shape 60 x 576 by default) into a temporary cache folder with ``cache.ShardWriter``, the writer the capture
uses, because a real capture of 100 000 texts takes 10+ minutes (the streaming capture itself is measured
by ``bench_memory.py --cycle-texts``). Then one subprocess per N opens the entry and computes every
statistic from it shard by shard, recording each one's time and peak resident memory (``VmHWM``, reset
before each statistic via ``/proc/self/clear_refs``)::

    .venv/bin/python benchmarks/bench_outofcore.py --ns 10000,100000

Writes ``benchmarks/results/outofcore.json``. Memory should be flat in N: one shard (``--shard-size``
texts) plus the outputs, which are per sample for cosine/velocity/rotations per sample (N x 59 float64).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "outofcore.json"
IDENTITY = {"benchmark": "outofcore"}


def write_entry(root: Path, n: int, n_sublayers: int, d_model: int, shard_size: int, seed: int = 0) -> float:
    from transformer_dynamics import cache

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with cache.ShardWriter(root, {**IDENTITY, "n": n}) as w:
        for start in range(0, n, shard_size):
            m = min(shard_size, n - start)
            a = rng.standard_normal((m, n_sublayers, d_model), dtype=np.float32)
            np.cumsum(a, axis=1, out=a)
            a[:, :, 0] *= 100.0
            w.write(start, a)
    return time.perf_counter() - t0


def _rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(root: str, n: int, stats: list[str]) -> None:
    from transformer_dynamics import cache, metrics as M, mutual_info as MI, phase

    store = cache.open_store(root, {**IDENTITY, "n": n}, verify=False)
    fns = {"mean_activations": M.mean_activations, "successive_correlation": M.successive_correlation,
           "pairwise_correlation": M.pairwise_correlation, "cosine_similarity": M.cosine_similarity,
           "centered_cosine_similarity": M.centered_cosine_similarity, "velocity": M.velocity,
           "massive_units": M.massive_units, "rotations_per_sample": phase.rotations_per_sample,
           "rotations_mean_trajectory": lambda s: phase.rotations_per_unit(s, "mean"),
           "mutual_information gcmi (8 units)": lambda s: MI.mutual_information(s, "gcmi", units=range(8))}
    rows = []
    for name in stats:
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss("VmRSS")
        t0 = time.perf_counter()
        out = fns[name](store)
        dt = time.perf_counter() - t0
        rows.append({"statistic": name, "seconds": round(dt, 2), "rss_before_mib": round(before, 1),
                     "peak_mib": round(_rss("VmHWM"), 1), "output_mib": round(np.asarray(out).nbytes / 2**20, 2)})
        print(json.dumps(rows[-1]), flush=True)
    print("RESULT " + json.dumps(rows))


STATS = ["mean_activations", "successive_correlation", "pairwise_correlation", "cosine_similarity",
         "centered_cosine_similarity", "velocity", "massive_units", "rotations_per_sample",
         "rotations_mean_trajectory", "mutual_information gcmi (8 units)"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ns", default="10000", help="comma-separated N (e.g. 10000,100000)")
    p.add_argument("--sublayers", type=int, default=60)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--shard-size", type=int, default=1942, help="texts per shard (the pipeline's default "
                   "for SmolLM2 is 1942 = 256 MiB)")
    p.add_argument("--stats", default=",".join(STATS))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    stats = args.stats.split(",")
    if args.child:
        return child(args.child[0], int(args.child[1]), stats)
    load_start = os.getloadavg()
    runs = []
    for n in [int(v) for v in args.ns.split(",")]:
        root = Path(tempfile.mkdtemp(prefix="td-outofcore-"))
        try:
            t_write = write_entry(root, n, args.sublayers, args.d_model, args.shard_size)
            gib = n * args.sublayers * args.d_model * 4 / 2**30
            print(f"N={n}: wrote {gib:.2f} GiB in {t_write:.0f}s")
            res = subprocess.run([sys.executable, __file__, "--child", str(root), str(n), "--stats", args.stats],
                                 capture_output=True, text=True, env={**os.environ})
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            print(res.stdout)
            rows = json.loads(res.stdout.split("RESULT ", 1)[1])
            runs.append({"n": n, "array_gib": round(gib, 2), "write_seconds": round(t_write, 1),
                         "shard_mib": round(args.shard_size * args.sublayers * args.d_model * 4 / 2**20, 1),
                         "rows": rows})
        finally:
            shutil.rmtree(root, ignore_errors=True)
    result = {"benchmark": "outofcore", "shape_per_text": [args.sublayers, args.d_model],
              "data": "synthetic random walk written with cache.ShardWriter (not a capture)",
              "shard_size": args.shard_size,
              "machine": machine(load_start, peak_measure="VmHWM, reset before each statistic"),
              "runs": runs}
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
