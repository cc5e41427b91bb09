"""Time the Figure 2 computations at the paper's shape (4096 units, 64 sublayers, 1000 shuffles; per-sample
mode on (1000, 64, 4096)), float32.

    .venv/bin/python benchmarks/bench_phase.py
    .venv/bin/python benchmarks/bench_phase.py --n 200 --d-model 1024   # quicker

Writes ``benchmarks/results/phase.json`` and prints a table. Goals: the 1000-shuffle null of 4096 units in
< 30 s; counting every sample's own rotations at (1000, 64, 4096) in < 60 s. For scale, a per-unit Python
loop with ``numpy.unwrap`` (the straightforward implementation of the methods) is timed too; the
vectorised null is about 15x faster per unit-shuffle on 2 cores. The per-sample null costs ``n_samples``
times the mean-mode null and is extrapolated from ``--per-sample-shuffles`` shuffles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from transformer_dynamics import phase as P

RESULTS = Path(__file__).resolve().parent / "results" / "phase.json"


def synthetic_rs(n=1000, n_sublayers=64, d_model=4096, seed=0) -> np.ndarray:
    """A random walk over sublayers: (n, n_sublayers, d_model) float32."""
    rng = np.random.default_rng(seed)
    rs = rng.standard_normal((n, n_sublayers, d_model), dtype=np.float32)
    np.cumsum(rs, axis=1, out=rs)
    return rs


def loop_reference(traj: np.ndarray, n_shuffles: int, seed: int = 0) -> np.ndarray:
    """Per-unit, per-shuffle Python loop: traj (U, n) -> (n_shuffles, U)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_shuffles, traj.shape[0]))
    for s in range(n_shuffles):
        for u, a in enumerate(traj):
            a = a[rng.permutation(a.size)]
            g = np.gradient(a)
            th = np.unwrap(np.arctan2(np.diff(g), np.diff(a)))
            out[s, u] = (th[-1] - th[0]) / (2 * np.pi)
    return out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="samples (per-sample mode)")
    p.add_argument("--sublayers", type=int, default=64)
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--shuffles", type=int, default=1000)
    p.add_argument("--per-sample-shuffles", type=int, default=4,
                   help="shuffles timed for the per-sample null (extrapolated to --shuffles)")
    p.add_argument("--loop-units", type=int, default=256, help="units in the Python-loop reference")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    n, L, D, K = args.n, args.sublayers, args.d_model, args.shuffles
    rs, t_make = timed(synthetic_rs, n, L, D)
    traj = np.ascontiguousarray(rs.mean(0).T)  # (D, L)
    print(f"synthetic rs {rs.shape} float32 ({rs.nbytes / 2**30:.2f} GiB) in {t_make:.1f}s; "
          f"cpus {os.cpu_count()}, load {os.getloadavg()}")
    rows = []

    def add(name, seconds, goal=None, note=""):
        rows.append({"step": name, "seconds": round(seconds, 3), "goal_s": goal,
                     "meets_goal": None if goal is None else bool(seconds < goal), "note": note})
        print(f"{name:44s} {seconds:9.3f} s  {note}")

    _, t = timed(P.count_rotations, traj)
    add(f"count_rotations ({D}, {L})", t)
    _, t = timed(P.rotations_per_unit, rs, "mean")
    add(f"rotations_per_unit mean ({n}, {L}, {D})", t, note="includes the mean over samples")
    null, t_null = timed(P.shuffle_null, traj, K, 0, what="sublayers")
    add(f"shuffle_null sublayers {K} x ({D}, {L})", t_null, goal=30.0)
    _, t = timed(P.shuffle_null, traj, K, 0, what="points")
    add(f"shuffle_null points {K} x ({D}, {L})", t, goal=30.0)
    _, t = timed(P.rotations_per_unit, rs, "per_sample")
    add(f"rotations_per_unit per_sample ({n}, {L}, {D})", t, goal=60.0)
    k = args.per_sample_shuffles
    _, t = timed(P.null_per_unit, rs, "per_sample", k, 0)
    add(f"null_per_unit per_sample {k} shuffles", t, note=f"-> {t / k * K / 3600:.1f} h for {K} shuffles")

    lu = min(args.loop_units, D)
    ref, t_loop = timed(loop_reference, traj[:lu], 4)
    per_loop = t_loop / (4 * lu)
    per_vec = t_null / (K * D)
    add(f"python loop reference 4 x ({lu}, {L})", t_loop,
        note=f"{per_vec * 1e6:.2f} us vs {per_loop * 1e6:.1f} us per unit-shuffle: {per_loop / per_vec:.0f}x")
    # the loop's counts agree in distribution with ours (different random permutations)
    ours = null[:4, :lu]
    print(f"  loop null mean {ref.mean():.2f} vs ours {ours.mean():.2f}")

    result = {"shape": {"n_samples": n, "n_sublayers": L, "d_model": D, "n_shuffles": K},
              "speedup_vs_loop": round(per_loop / per_vec, 1),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "numpy": np.__version__, "loadavg": os.getloadavg()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\n{'step':44s} {'seconds':>9s} {'goal':>6s}")
    for r in rows:
        goal = "" if r["goal_s"] is None else f"<{r['goal_s']:g}" + (" ok" if r["meets_goal"] else " MISS")
        print(f"{r['step']:44s} {r['seconds']:9.2f} {goal}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
