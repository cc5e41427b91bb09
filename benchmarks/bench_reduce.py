"""Benchmark of transformer_dynamics.reduce: PCA fit (full, and streamed with partial_fit) at the paper's
scale of one Llama-sized capture (N=1000 texts x 64 sublayers x 4096 dims) and CAE training time per epoch at
the default CPU model's scale (N=1000 x 60 sublayers x 576 dims).

    python benchmarks/bench_reduce.py [--quick] [--sklearn]
    python benchmarks/bench_reduce.py --versus-sklearn N_TEXTS   # only the PCA-vs-scikit-learn rows

Writes ``benchmarks/results/reduce.json`` and prints a table. ``--quick`` shrinks the PCA data 8x (for a
smoke run); ``--sklearn`` adds scikit-learn's ``PCA(svd_solver="covariance_eigh")`` as a reference.
``--versus-sklearn N`` times, on one array ``(N, --sublayers, --d-model)`` (default ``(N, 64, 4096)``) and
in one run, our PCA (``fit`` in memory and ``partial_fit`` streamed in chunks of 100 texts) against
scikit-learn's ``PCA(svd_solver="covariance_eigh")`` and ``IncrementalPCA`` (same chunks), one BLAS/torch
thread each; the rows go under ``"versus_sklearn_NxSxD"`` in ``reduce.json`` (the other rows are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from transformer_dynamics import reduce as R

RESULTS = Path(__file__).resolve().parent / "results" / "reduce.json"


def synthetic_rs(n: int, s: int, d: int, seed: int = 0, rank: int = 64) -> np.ndarray:
    """Low-rank-plus-noise data with a norm growing over depth, float32 ``(n, s, d)``, built in chunks."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d)).astype(np.float32) / np.sqrt(rank)
    growth = np.linspace(1, 20, s, dtype=np.float32)[None, :, None]
    out = np.empty((n, s, d), dtype=np.float32)
    for a in range(0, n, 100):
        b = min(n, a + 100)
        z = rng.standard_normal((b - a, s, rank), dtype=np.float32)
        out[a:b] = (z @ basis + 0.1 * rng.standard_normal((b - a, s, d), dtype=np.float32)) * growth
    return out


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def versus_sklearn(n: int, *, s: int = 64, d: int = 4096, k: int = 100, chunk: int = 100) -> dict:
    """Our PCA vs scikit-learn's at ``(n, s, d)``: seconds, seconds over ours, and the largest difference of
    the explained-variance ratios from our float64 fit (the reference)."""
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.decomposition import IncrementalPCA
    from threadpoolctl import threadpool_limits

    rs = synthetic_rs(n, s, d)
    rows_ = rs.reshape(-1, d)

    def ours_streamed():
        pca = R.PCA(n_components=k)
        for a in range(0, n, chunk):
            pca.partial_fit(rs[a:a + chunk])
        pca.components_  # noqa: B018  (forces the final eigendecomposition)
        return pca

    def sk_incremental():
        ipca = IncrementalPCA(n_components=k)
        for a in range(0, n, chunk):
            ipca.partial_fit(rows_[a * s:(a + chunk) * s])
        return ipca

    runs = [("ours: PCA.fit (covariance, float64, in memory)", lambda: R.PCA(n_components=k).fit(rs)),
            ("ours: PCA.partial_fit (streamed, 100 texts/chunk)", ours_streamed),
            ("sklearn: PCA(svd_solver='covariance_eigh') (in memory)",
             lambda: SkPCA(n_components=k, svd_solver="covariance_eigh").fit(rows_)),
            ("sklearn: IncrementalPCA (streamed, 100 texts/chunk)", sk_incremental)]
    out = []
    with threadpool_limits(1):
        for name, fn in runs:
            t, fit = timed(fn)
            out.append({"task": name, "shape": [n, s, d], "seconds": t,
                        "evr": np.asarray(fit.explained_variance_ratio_, dtype=np.float64)})
    ref = out[0]["evr"]
    for r in out:
        r["seconds_over_ours_fit"] = r["seconds"] / out[0]["seconds"]
        r["max_abs_diff_evr_vs_ours_fit"] = float(np.abs(r.pop("evr") - ref).max())
    return {"rows": out, "loadavg": os.getloadavg(), "note": "one run, interleaved, 1 thread each; shared machine"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="PCA on 1/8 of the texts")
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's PCA")
    ap.add_argument("--cae-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a small shared CPU, more threads can be far slower)")
    ap.add_argument("--versus-sklearn", type=int, metavar="N_TEXTS", default=None,
                    help="only time our PCA against scikit-learn's at (N_TEXTS, SUBLAYERS, D_MODEL)")
    ap.add_argument("--sublayers", type=int, default=64, help="with --versus-sklearn (default 64, Llama 3.1 8B)")
    ap.add_argument("--d-model", type=int, default=4096, help="with --versus-sklearn (default 4096)")
    args = ap.parse_args()
    if args.versus_sklearn:
        torch.set_num_threads(1)
        res = versus_sklearn(args.versus_sklearn, s=args.sublayers, d=args.d_model)
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        key = f"versus_sklearn_{args.versus_sklearn}x{args.sublayers}x{args.d_model}"
        RESULTS.write_text(json.dumps({**old, key: res}, indent=1))
        for r in res["rows"]:
            print(f"{r['task']:58s} {str(tuple(r['shape'])):>18s} {r['seconds']:8.2f} s "
                  f"x{r['seconds_over_ours_fit']:.2f}  dEVR {r['max_abs_diff_evr_vs_ours_fit']:.1e}")
        print(f"-> {RESULTS}")
        return
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    rows = []
    n_pca = 125 if args.quick else 1000
    rs = synthetic_rs(n_pca, 64, 4096)
    shape = list(rs.shape)

    t, full = timed(lambda: R.PCA(n_components=100).fit(rs))
    rows.append({"task": "PCA fit (covariance, in memory)", "shape": shape, "seconds": t})

    def streamed():
        pca = R.PCA(n_components=100)
        for a in range(0, rs.shape[0], 100):
            pca.partial_fit(rs[a:a + 100])
        pca.components_  # noqa: B018  (forces the final eigendecomposition)
        return pca

    t, inc = timed(streamed)
    rows.append({"task": "PCA partial_fit (100 texts/chunk)", "shape": shape, "seconds": t,
                 "max_abs_diff_ratio_vs_fit": float(np.abs(inc.explained_variance_ratio_
                                                           - full.explained_variance_ratio_).max())})
    t, _ = timed(lambda: R.explained_variance_per_sublayer(full, rs, n_components=100))
    rows.append({"task": "EV per sublayer (100 PCs)", "shape": shape, "seconds": t})
    if args.sklearn:
        from sklearn.decomposition import PCA as SkPCA
        t, sk = timed(lambda: SkPCA(n_components=100, svd_solver="covariance_eigh").fit(rs.reshape(-1, 4096)))
        rows.append({"task": "sklearn PCA covariance_eigh (reference)", "shape": shape, "seconds": t,
                     "max_abs_diff_ratio_vs_ours": float(np.abs(sk.explained_variance_ratio_
                                                                - full.explained_variance_ratio_).max())})
    del rs

    rs = synthetic_rs(1000, 60, 576, seed=1)
    for threads in sorted({args.threads, default_threads}):
        epochs = args.cae_epochs if threads == args.threads else 1
        res = R.fit_cae(rs, k=10, epochs=epochs, patience=epochs, batch_size=256, seed=0,
                        progress=False, num_threads=threads)
        epochs = len(res.history["train_loss"])
        rows.append({"task": f"CAE train, k=10, batch 256, {threads} thread(s)", "shape": list(rs.shape),
                     "seconds": res.train_time_s / epochs, "per": "epoch", "epochs": epochs,
                     "test_ev": res.test_ev})

    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch_threads": args.threads, "torch": torch.__version__,
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
           "quick": args.quick, "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    print(f"{'task':45s} {'shape':>20s} {'seconds':>9s}")
    for r in rows:
        per = f"/{r['per']}" if "per" in r else ""
        print(f"{r['task']:45s} {str(tuple(r['shape'])):>20s} {r['seconds']:9.2f}{per}")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
