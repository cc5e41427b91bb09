"""Where one run's claim evidence goes: :func:`transformer_dynamics.robustness.claim_evidence` on a real stream,
curve group by curve group, at chapter 8's settings (those of chapters 2-4's headline runs), one thread as in a
worker of ``claim_evidence_runs``.

    .venv/bin/python benchmarks/bench_evidence.py                       # SmolLM2, N = 1000 (captured once, cached)
    .venv/bin/python benchmarks/bench_evidence.py --model gemma-3-270m

The fast groups (means, r, cosines, velocities) are timed whole (``--n-boot`` bootstrap resamples and the
leave-one-out). The slow ones (MI per estimator, rotations with their surrogates, PCA) are recomputed on each of
``--n-boot-slow`` half-samples and on the few leave-outs of outlying texts; each is timed on 0, ``--probe`` and
twice ``--probe`` half-samples, which gives its cost per half-sample and per leave-out and so the run's cost at
``--n-boot-slow`` (``predicted_s``). PCA's half-sample is split into its parts (the fit with every component, the
per-sublayer curve of the kept ones, each sublayer's own spectrum: its Gram matrices and their eigenvalues), with
the LAPACK drivers' times for one such eigenvalue problem. Writes ``benchmarks/results/evidence.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")       # before numpy and torch: one thread, as a worker has

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import machine, write_result  # noqa: E402
from transformer_dynamics import bootstrap, claims, metrics, pipeline, reduce  # noqa: E402
from transformer_dynamics.robustness import curves as cv  # noqa: E402
from transformer_dynamics.robustness.evidence import rs_readings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "evidence.json"
METHODS = ("kde", "ksg", "gcmi")


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def group_rows(rs: np.ndarray, args) -> list[dict]:
    """One row per curve group (per estimator for the MI): measured and predicted seconds."""
    pairs = rs_readings(None, mi_methods=METHODS)
    keys = {k for key, name in pairs for k in claims.get(key).reading(name).keys}
    base = dict(massive=metrics.massive_units(rs), mi_units=metrics.subsample_units(rs.shape[2], args.mi_units, seed=0),
                n_shuffles=args.n_shuffles, variance=0.9, pca_components=args.pca_components, seed=0)
    rows = []
    for g in cv.GROUPS:
        for method in METHODS if g == "mi" else (None,):
            wanted = frozenset(k for k in keys if cv.group_of(k) == g and (
                method is None or not k.startswith(("mi:", "mi_a:")) or k.endswith(":" + method)))
            opts = cv.CurveOptions(**base, mi_methods=(method or "kde",), keys=wanted)
            name = g if method is None else f"mi:{method}"
            if g in cv.FAST:
                t = timed(cv.rs_curves, rs, [g], opts, n_boot=args.n_boot, seed=0)
                rows.append({"group": name, "predicted_s": round(t, 2), "measured_s": round(t, 2),
                             "note": f"{args.n_boot} bootstrap resamples and the leave-one-out, whole"})
            else:
                k = args.probe
                t0 = timed(cv.rs_curves, rs, [g], opts, n_boot=1, n_boot_slow=0, seed=0)
                tk = timed(cv.rs_curves, rs, [g], opts, n_boot=1, n_boot_slow=k, seed=0)
                t2k = timed(cv.rs_curves, rs, [g], opts, n_boot=1, n_boot_slow=2 * k, seed=0)
                half = max((t2k - tk) / k, 0.0)
                leave = max((tk - t0 - k * half) / cv.SLOW_LEAVE_OUT, 0.0)
                pred = t0 + args.n_boot_slow * half + cv.SLOW_LEAVE_OUT * leave
                rows.append({"group": name, "predicted_s": round(pred, 1), "measured_s": round(t0 + tk + t2k, 1),
                             "full_s": round(t0, 3), "per_half_sample_s": round(half, 3),
                             "per_leave_out_s": round(leave, 3),
                             "note": f"{args.n_boot_slow} half-samples and {cv.SLOW_LEAVE_OUT} leave-outs"})
            print(f"{name:10s} {rows[-1]['predicted_s']:8.1f} s  {rows[-1]['note']}", flush=True)
    return rows


def pca_parts(rs: np.ndarray, args) -> dict:
    """One half-sample's PCA curves, part by part (best of two), and one of its eigenvalue problems per driver."""
    import scipy.linalg  # noqa: PLC0415

    x = rs[bootstrap.half_samples(rs.shape[0], 1, 0)[0]]
    n, L, D = x.shape

    def best(fn):
        return round(min(timed(fn) for _ in range(2)), 3)

    pca = reduce.PCA(n_components=min(n * L, D)).fit(x)
    xs = torch.as_tensor(x, dtype=torch.float64).transpose(0, 1)
    xs = xs - xs.mean(1, keepdim=True)
    grams = (xs @ xs.transpose(1, 2) if n <= D else xs.transpose(1, 2) @ xs).numpy()
    parts = {"fit_every_component_s": best(lambda: reduce.PCA(n_components=min(n * L, D)).fit(x)),
             "curve_kept_components_s": best(lambda: reduce.explained_variance_curve_per_sublayer(
                 pca, x, args.pca_components)),
             "own_spectra_s": best(lambda: reduce.sublayer_explained_variance_ratio(x)),
             "own_grams_s": best(lambda: xs @ xs.transpose(1, 2) if n <= D else xs.transpose(1, 2) @ xs),
             "own_eigenvalues_s": best(lambda: [scipy.linalg.eigvalsh(g, driver="evd", check_finite=False)
                                                for g in grams]),
             "eigenproblem": f"{L} of {grams.shape[1]} x {grams.shape[2]}",
             "one_eigenproblem_s_by_driver": {d: round(min(timed(scipy.linalg.eigvalsh, grams[0], driver=d,
                                                                 check_finite=False) for _ in range(5)), 4)
                                              for d in ("ev", "evd", "evr", "evx")}}
    print("pca parts", parts, flush=True)
    return parts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=1000, help="texts (chapter 8's last-token runs: 1000)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--n-boot-slow", type=int, default=200)
    p.add_argument("--mi-units", type=int, default=64)
    p.add_argument("--n-shuffles", type=int, default=20)
    p.add_argument("--pca-components", type=int, default=100)
    p.add_argument("--probe", type=int, default=3, help="half-samples timed per slow group (and twice as many)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    t0 = time.perf_counter()
    rs = pipeline.residual_stream(args.model, n=args.n, strip=True, add_bos=True)   # the headline stream
    t_stream = time.perf_counter() - t0
    print(f"{args.model} rs {rs.shape} in {t_stream:.1f} s (a cache read once captured)", flush=True)
    rows = group_rows(rs, args)
    parts = pca_parts(rs, args)
    run = sum(r["predicted_s"] for r in rows if r["group"] not in ("mi:ksg", "mi:gcmi"))
    result = {"benchmark": "evidence", "model": args.model, "shape": list(rs.shape), "threads": 1,
              "settings": {k: getattr(args, k) for k in ("n_boot", "n_boot_slow", "mi_units", "n_shuffles",
                                                           "pca_components", "probe")},
              "stream_s": round(t_stream, 1),
              "run_predicted_s": round(run, 1),
              "run_note": "one run with the first MI estimator (kde), as chapter 8's runs other than the headline; "
                          "the headline's other estimators (mi:ksg, mi:gcmi) are chapter 2's, read from the store",
              "rows": rows, "pca_half_sample": parts, "machine": machine(load)}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
