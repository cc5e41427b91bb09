"""Time every Figure 1 metric at the paper's shape, (N=1000 texts, 64 sublayers, 4096 units), float32.

    .venv/bin/python benchmarks/bench_metrics.py                 # KDE MI on 512 units, extrapolated
    .venv/bin/python benchmarks/bench_metrics.py --mi-units 4096 # KDE MI at full scale
    .venv/bin/python benchmarks/bench_metrics.py --skip-other --out benchmarks/results/metrics_kde.json
    .venv/bin/python benchmarks/bench_metrics.py --ksg 64 --out benchmarks/results/metrics_ksg.json

Writes ``benchmarks/results/metrics.json`` (read by the book's benchmarks page) and prints a table.

KDE MI (the paper's estimator): the default "kde" (gridded kernel sums, ``mutual_info.gauss_sums``) against
"kde_exact" (exact O(N^2) sums) and a loop of ``scipy.stats.gaussian_kde`` (the paper's reference
computation), per unit pair at N = 1000: speed-ups, the largest relative error against the exact
estimator on the constructed hard pairs (``tests/mi_cases.py``) and on SmolLM2's residual
stream (``--real``: the N = 1000 capture, cached after its first run; every transition), and the
paper-scale time (63 transitions x 4096 units) extrapolated from the units timed. Goals (issue 17): >= 50x
(goal 100x) the scipy loop, within 1e-3 relative of "kde_exact" on real pairs; paper scale <= 10 s on 2 cores
(issue 27; it was < 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import gaussian_kde

from _common import TESTS, machine, write_result

from transformer_dynamics import metrics as M
from transformer_dynamics import mutual_info as MI
from transformer_dynamics.bootstrap import bootstrap, bootstrap_correlation

sys.path.insert(0, str(TESTS))
from mi_cases import constructed_pairs  # noqa: E402  (the tests' constructed pairs)

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.json"
#: The paper-scale KDE MI's goal, seconds of wall time on 2 cores (issue 27; issue 17's was 60 s).
KDE_PAPER_SCALE_GOAL_S = 10.0


def synthetic_rs(n=1000, n_sublayers=64, d_model=4096, seed=0) -> np.ndarray:
    """A random walk over sublayers with a few massive units: (n, n_sublayers, d_model) float32."""
    rng = np.random.default_rng(seed)
    rs = np.empty((n, n_sublayers, d_model), dtype=np.float32)
    rs[:, 0] = rng.standard_normal((n, d_model), dtype=np.float32)
    for l in range(1, n_sublayers):
        rs[:, l] = rs[:, l - 1] + 0.3 * rng.standard_normal((n, d_model), dtype=np.float32)
    rs[:, :, :4] *= 100.0
    return rs


def scipy_kde_mi(x, y) -> float:
    xy = np.vstack([x, y])
    return float(np.mean(np.log(gaussian_kde(xy)(xy) + 1e-10) - np.log(gaussian_kde(x)(x) + 1e-10)
                         - np.log(gaussian_kde(y)(y) + 1e-10)))


def real_pairs_check(n_units: int) -> dict:
    """"kde" vs "kde_exact" on SmolLM2's residual stream (N = 1000, every transition): ``n_units`` random units
    (all when >= d_model) plus the massive ones (heavy tails, outliers) and the most nearly constant ones,
    each estimator timed (the capture is made first if it is not cached)."""
    from transformer_dynamics import pipeline

    rs = pipeline.residual_stream("smollm2-135m", n=1000, progress=False)  # a read once cached
    D = rs.shape[2]
    massive = M.massive_units(rs, k=4)
    flat = np.argsort(rs.std(axis=0).min(axis=0))[:4]
    units = np.unique(np.r_[M.subsample_units(D, min(n_units, D), seed=0), massive, flat])
    fast, t_fast, c_fast = clocked(MI.mutual_information, rs, "kde", units=units)
    exact, t_exact, c_exact = clocked(MI.mutual_information, rs, "kde_exact", units=units)
    rel = np.abs(fast / exact - 1)
    pairs = int(np.isfinite(rel).sum())
    out = {"model": "smollm2-135m", "n": int(rs.shape[0]), "transitions": int(rs.shape[1] - 1),
           "units": int(units.size), "pairs": pairs, "pairs_nan": int(np.isnan(exact).sum()),
           "massive_units": massive.tolist(), "flattest_units": flat.tolist(),
           "max_rel_diff": float(np.nanmax(rel)), "median_rel_diff": float(np.nanmedian(rel)),
           "max_abs_diff_nats": float(np.nanmax(np.abs(fast - exact))),
           "max_rel_diff_massive": float(np.nanmax(rel[:, np.isin(units, massive)])),
           "max_rel_diff_flattest": float(np.nanmax(rel[:, np.isin(units, flat)])),
           "mi_range_nats": [float(np.nanmin(exact)), float(np.nanmax(exact))],
           "seconds_kde": round(t_fast, 2), "seconds_exact": round(t_exact, 2),
           "per_pair_ms_kde": t_fast / rel.size * 1e3, "per_pair_ms_exact": t_exact / rel.size * 1e3,
           "cpu_per_pair_ms_kde": c_fast / rel.size * 1e3, "cpu_per_pair_ms_exact": c_exact / rel.size * 1e3,
           "paper_scale_seconds_kde": round(t_fast / rel.size * 63 * 4096, 1),
           "paper_scale_cpu_seconds_kde": round(c_fast / rel.size * 63 * 4096, 1),
           "paper_scale_note": f"extrapolated x{63 * 4096 / rel.size:.1f} from every SmolLM2 pair timed"}
    print(f"real pairs ({pairs}): kde vs exact max rel {out['max_rel_diff']:.1e} (massive units "
          f"{out['max_rel_diff_massive']:.1e}, flattest {out['max_rel_diff_flattest']:.1e}); "
          f"{out['per_pair_ms_kde']:.3f} vs {out['per_pair_ms_exact']:.3f} ms/pair")
    return out


def constructed_check() -> dict:
    """"kde" vs "kde_exact" (and the scipy reference) on the constructed hard pairs at N = 1000."""
    x, y = constructed_pairs(n=1000)
    names = ["gaussian", "bimodal", "heavy_tailed", "massive_outlier", "near_constant", "near_constant_spikes",
             "nonlinear"]
    fast = MI.mutual_information_pairs(x, y, "kde")
    exact = MI.mutual_information_pairs(x, y, "kde_exact")
    ref = np.array([scipy_kde_mi(x[:, u], y[:, u]) for u in range(x.shape[1])])
    rel = np.abs(fast / exact - 1)
    out = {"n": 1000, "pairs": names, "mi_exact": exact.tolist(), "rel_diff_vs_exact": rel.tolist(),
           "max_rel_diff": float(rel.max()), "max_rel_diff_exact_vs_scipy": float(np.max(np.abs(exact / ref - 1))),
           "max_rel_diff_kde_vs_scipy": float(np.max(np.abs(fast / ref - 1)))}
    print(f"constructed pairs: kde vs exact max rel {out['max_rel_diff']:.1e}; exact vs scipy "
          f"{out['max_rel_diff_exact_vs_scipy']:.1e}")
    return out


def ksg_speed(n_units: int, sklearn_pairs: int = 8) -> dict:
    """KSG MI on SmolLM2's residual stream (N = 1000, every transition of ``n_units`` random units): the C
    kernel's sorted sweep (``ksg_counts.c``) against the O(N^2) distance matrix (``_ksg(brute=True)``) on the same
    pairs, in one run, with whether the estimates are bit-identical; scikit-learn's
    ``mutual_info_regression`` on ``sklearn_pairs`` of them for scale."""
    from sklearn.feature_selection import mutual_info_regression

    from transformer_dynamics import pipeline

    rs = pipeline.residual_stream("smollm2-135m", n=1000, seed=0)
    units = np.sort(np.random.default_rng(0).choice(rs.shape[2], n_units, replace=False))
    v = torch.from_numpy(np.ascontiguousarray(rs[:, :, units].transpose(1, 2, 0), dtype=np.float64))
    x, y = v[:-1].reshape(-1, rs.shape[0]), v[1:].reshape(-1, rs.shape[0])
    MI._ksg(x[:8], y[:8])  # build / load the kernel (one-off)
    fast, t_fast, cpu_fast = clocked(MI._ksg, x, y)
    brute, t_brute, cpu_brute = clocked(MI._ksg, x, y, brute=True)
    t0 = time.perf_counter()
    for i in range(sklearn_pairs):
        mutual_info_regression(x[i, :, None].numpy(), y[i].numpy(), n_neighbors=3, random_state=0)
    t_sk = (time.perf_counter() - t0) / sklearn_pairs
    pairs = x.shape[0]
    return {"pairs": pairs, "n": rs.shape[0], "units": n_units, "threads": torch.get_num_threads(),
            "kernel_per_pair_ms": t_fast / pairs * 1e3, "brute_per_pair_ms": t_brute / pairs * 1e3,
            "kernel_cpu_per_pair_ms": cpu_fast / pairs * 1e3, "brute_cpu_per_pair_ms": cpu_brute / pairs * 1e3,
            "sklearn_per_pair_ms": t_sk * 1e3, "speedup_vs_brute": t_brute / t_fast,
            "speedup_vs_sklearn": t_sk / (t_fast / pairs),
            "bit_identical": bool(np.array_equal(fast.numpy(), brute.numpy(), equal_nan=True)),
            "paper_scale_seconds_estimate": round(t_fast / pairs * 63 * 4096, 1)}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def clocked(fn, *args, **kwargs):
    """(out, wall seconds, CPU seconds of this process): on a loaded machine the CPU time is what the work
    itself took, the wall time what it took here."""
    c0 = time.process_time()
    out, wall = timed(fn, *args, **kwargs)
    return out, wall, time.process_time() - c0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sublayers", type=int, default=64)
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--mi-units", type=int, default=512, help="units for the KDE MI timing (all: full scale)")
    p.add_argument("--other-mi-units", type=int, default=16, help="units for the KSG timing")
    p.add_argument("--scipy-pairs", type=int, default=16, help="unit pairs for the scipy reference loop")
    p.add_argument("--exact-units", type=int, default=64, help="units for the exact KDE timing")
    p.add_argument("--real", type=int, default=576,
                   help="units of SmolLM2 (N=1000, cached capture; 576 = all) for kde-vs-exact errors (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch (and grid kernel) threads (default: cores)")
    p.add_argument("--skip-other", action="store_true", help="time only the KDE mutual information")
    p.add_argument("--ksg", type=int, default=0, metavar="UNITS",
                   help="only the KSG kernel vs brute force on UNITS units of SmolLM2 (N = 1000, every transition)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


class Rows(list):
    """The timed statistics: ``add(name, seconds, goal, note)`` appends a row and prints it."""

    def add(self, name, seconds, goal=None, note=""):
        self.append({"metric": name, "seconds": round(seconds, 3), "goal_s": goal,
                     "meets_goal": None if goal is None else bool(seconds < goal), "note": note})
        print(f"{name:38s} {seconds:9.2f} s  {note}")


def time_other_statistics(rs: np.ndarray, args, rows: Rows) -> None:
    """Every Figure 1 statistic but the KDE MI at the paper's shape (goal: a minute each), the bootstraps, GCMI
    on every unit and KSG on a few."""
    for name, fn in [("mean_activations", M.mean_activations), ("unit_order", M.unit_order),
                     ("successive_correlation", M.successive_correlation),
                     ("pairwise_correlation", M.pairwise_correlation),
                     ("cosine_similarity", M.cosine_similarity),
                     ("centered_cosine_similarity", M.centered_cosine_similarity),
                     ("velocity", M.velocity), ("massive_units", M.massive_units)]:
        out, dt = timed(fn, rs)
        rows.add(name, dt, 60.0)
        if name == "pairwise_correlation":
            _, dt = timed(M.correlation_histogram, out)
            rows.add("correlation_histogram", dt, 60.0)
        if name == "velocity":
            _, dt = timed(bootstrap, "mean", out, n_boot=1000)
            rows.add("bootstrap('mean') of velocity", dt, 60.0, "1000 resamples, all transitions")
    _, dt = timed(bootstrap_correlation, rs[:, 0], rs[:, 1], n_boot=1000)
    rows.add("bootstrap_correlation (median r, 1 transition)", dt, 60.0, "1000 resamples, vectorised")
    _, dt = timed(MI.mutual_information, rs, "gcmi")
    rows.add("mutual_information gcmi (full)", dt, 300.0)
    ksg_units = np.arange(args.other_mi_units)
    _, dt = timed(MI.mutual_information, rs, "ksg", units=ksg_units)
    rows.add(f"mutual_information ksg ({ksg_units.size} units)", dt, None,
             f"extrapolated to {rs.shape[2]} units: {dt * rs.shape[2] / ksg_units.size:.0f}s")


def time_kde(rs: np.ndarray, args, rows: Rows) -> dict:
    """The paper's estimator: the compiled kernels warmed up (compilation is a one-off cost), then "kde" on
    ``--mi-units`` units extrapolated to the paper's scale (``--d-model`` units, however narrow ``rs`` is), "kde_exact"
    on ``--exact-units`` and the scipy loop on ``--scipy-pairs`` unit pairs at the same N. -> the numbers behind
    the result's ``kde_mi``."""
    L, D = rs.shape[1], args.d_model
    _, t_compile = timed(MI.mutual_information, rs[:, :2], "kde_exact", units=np.arange(64))
    _, t_compile2 = timed(MI.mutual_information, rs[:, :2], "kde", units=np.arange(64))
    rows.add("kde_exact + kde warm-up (compilation, one-off)", t_compile + t_compile2, None)
    units = np.arange(min(args.mi_units, rs.shape[2]))
    mi_fast, dt, cpu = clocked(MI.mutual_information, rs, "kde", units=units)
    full = units.size == D
    n_pairs = (L - 1) * units.size
    per_pair_ours = dt / n_pairs
    est_full = per_pair_ours * (L - 1) * D
    rows.add(f"mutual_information kde ({units.size} units)", dt, None if not full else KDE_PAPER_SCALE_GOAL_S,
             f"{n_pairs} unit-pairs, {per_pair_ours * 1e3:.3f} ms/pair")
    rows.add("mutual_information kde (paper scale)", est_full, KDE_PAPER_SCALE_GOAL_S,
             "measured" if full else f"extrapolated x{D / units.size:.0f} from {units.size} units x {L - 1} "
                                     "transitions")
    ex_units = units[:min(args.exact_units, units.size)]
    mi_exact, dt_ex, cpu_ex = clocked(MI.mutual_information, rs, "kde_exact", units=ex_units)
    per_pair_exact = dt_ex / ((L - 1) * ex_units.size)
    rel_synth = float(np.nanmax(np.abs(mi_fast[:, :ex_units.size] / mi_exact - 1)))
    rows.add(f"mutual_information kde_exact ({ex_units.size} units)", dt_ex, None,
             f"{per_pair_exact * 1e3:.2f} ms/pair; kde/exact max rel diff {rel_synth:.1e}")
    k = args.scipy_pairs
    t_src = min(10, L - 2)
    pairs = [(rs[:, t_src, u].astype(np.float64), rs[:, t_src + 1, u].astype(np.float64)) for u in range(k)]
    ref, dt_scipy, cpu_scipy = clocked(lambda: [scipy_kde_mi(a, b) for a, b in pairs])
    per_pair_scipy = dt_scipy / k
    ours = MI.mutual_information_pairs(rs[:, t_src, :k], rs[:, t_src + 1, :k], "kde")
    max_rel = float(np.max(np.abs(ours / np.asarray(ref) - 1)))
    ratio = per_pair_scipy / per_pair_ours
    rows.add("scipy gaussian_kde loop, per unit-pair", per_pair_scipy, None,
             f"{k} pairs; kde {per_pair_ours * 1e3:.3f} ms/pair, exact {per_pair_exact * 1e3:.2f} ms/pair; "
             f"max rel diff {max_rel:.1e}")
    print(f"\nKDE MI per-pair speed-up over the scipy loop: {ratio:.0f}x kde, "
          f"{per_pair_scipy / per_pair_exact:.0f}x exact (goal >= 50x, 100x); "
          f"paper-scale estimate {est_full:.0f}s (goal <= {KDE_PAPER_SCALE_GOAL_S:.0f} s; "
          f"CPU time {cpu / n_pairs * (L - 1) * D:.0f}s)")
    return {"method": "kde (default: gridded sums, mutual_info.gauss_sums) vs kde_exact vs scipy loop",
            "grid_h": MI.GRID_H, "grid_error_bound_2d": MI.grid_error_bound(MI.GRID_H, 2),
            "units_timed": int(units.size), "transitions_timed": L - 1, "seconds": round(dt, 2),
            "paper_scale_seconds": round(est_full, 1), "paper_scale_goal_s": KDE_PAPER_SCALE_GOAL_S,
            "extrapolated": not full,
            "paper_scale_note": "measured" if full else
            f"extrapolated from {units.size} units x {L - 1} transitions of the synthetic stream",
            "per_pair_ms": per_pair_ours * 1e3, "exact_per_pair_ms": per_pair_exact * 1e3,
            "scipy_per_pair_ms": per_pair_scipy * 1e3,
            "cpu_per_pair_ms": cpu / n_pairs * 1e3,
            "exact_cpu_per_pair_ms": cpu_ex / ((L - 1) * ex_units.size) * 1e3,
            "scipy_cpu_per_pair_ms": cpu_scipy / k * 1e3,
            "paper_scale_cpu_seconds": round(cpu / n_pairs * (L - 1) * D, 1),
            # on idle cores the threads split the units evenly: about the CPU time over the threads (a loaded
            # machine's wall time mostly measures the other work)
            "paper_scale_idle_wall_estimate_s": round(cpu / n_pairs * (L - 1) * D / torch.get_num_threads(), 1),
            "speedup_vs_exact": per_pair_exact / per_pair_ours, "speedup_vs_scipy": ratio,
            "cpu_speedup_vs_scipy": (cpu_scipy / k) / (cpu / n_pairs),
            "exact_speedup_vs_scipy": per_pair_scipy / per_pair_exact,
            "max_rel_diff_vs_scipy": max_rel, "max_rel_diff_vs_exact_synthetic": rel_synth}


def main(argv=None):
    args = _parser().parse_args(argv)
    n, L, D = args.n, args.sublayers, args.d_model
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    if args.ksg:
        res = ksg_speed(args.ksg)
        print(json.dumps(res, indent=1))
        return write_result(args.out, {"benchmark": "ksg_mi", "machine": machine(load_start), **res})
    # with --skip-other only the units KDE MI times are made (the same random walk per unit)
    rs, t_make = timed(synthetic_rs, n, L, min(D, max(args.mi_units, args.exact_units, 64)) if args.skip_other else D)
    print(f"synthetic rs {rs.shape} float32 ({rs.nbytes / 2**30:.2f} GiB) in {t_make:.1f}s; "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load {os.getloadavg()}")
    rows = Rows()
    if not args.skip_other:
        time_other_statistics(rs, args, rows)
    kde = time_kde(rs, args, rows)
    constructed = constructed_check()
    real = real_pairs_check(args.real) if args.real else None
    kde.update(constructed_pairs=constructed, real_pairs=real,
               meets_goals=bool(kde["paper_scale_seconds"] <= KDE_PAPER_SCALE_GOAL_S and kde["speedup_vs_scipy"] >= 50
                                and constructed["max_rel_diff"] <= 1e-3
                                and (real is None or real["max_rel_diff"] <= 1e-3)))
    result = {
        "benchmark": "metrics",
        "shape": [n, L, D], "dtype": "float32",
        "machine": machine(load_start, torch_threads=torch.get_num_threads(), torch=torch.__version__,
                           note="a shared machine: compare the ratios measured inside this run"),
        "rows": list(rows),
        "kde_mi": kde,
        "non_mi_meet_60s": None if args.skip_other else bool(all(r["meets_goal"] for r in rows
                                                                 if r["goal_s"] == 60.0)),
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
