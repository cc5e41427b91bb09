"""Cold and warm ``make book``: every chapter of a run profile from an EMPTY cache, one after another, then the HTML
build and the browser check, each timed on its own; then the same steps again with nothing changed (warm).

    .venv/bin/python benchmarks/bench_book.py --profile full          # the published book (hours on 2 cores)
    .venv/bin/python benchmarks/bench_book.py --profile ci            # the test profile (~15 min)
    .venv/bin/python benchmarks/bench_book.py --profile full --nice 19 --only 01,02
    .venv/bin/python benchmarks/bench_book.py --profile full --cache-dir /big/cold --resume   # after a stop
    .venv/bin/python benchmarks/bench_book.py --profile full --cache-dir /big/cold --floor    # + the capture floor

"Cold" means: a fresh activation/model cache (models converted from their GGUF files again, every capture
recomputed) and a fresh ``torch.compile`` cache. Each step runs as ``python -m transformer_dynamics.build
run --only NN`` in its own process, as ``make book`` runs them in turn, and gets two times: wall seconds and
CPU seconds (user + system of the step's process tree, from ``getrusage(RUSAGE_CHILDREN)``). On a shared
machine, or under ``--nice``, the wall time mostly measures the other work; the CPU time does not, and on 2
idle cores a step's wall time lies between CPU / 2 (both cores busy throughout) and CPU (one core).
The JSON (``results/book_cold_<profile>.json``) is rewritten after every step, so an interrupted run keeps the
steps it finished, and ``--resume`` (with the same ``--cache-dir``) runs only the steps not yet done
(the cache then holds what the finished steps left, as it would have in one uninterrupted run).
``OMP_WAIT_POLICY`` is PASSIVE unless set, as ``make book`` sets it: spinning OpenMP threads would count their
waiting as CPU time. Each step records the commit it ran and its slowest cells. ``--floor`` adds, for a finished
run, the captures' FLOP floor (:func:`capture_floor`): the seconds its captures need at the matmul peak measured
then, a bound no change of the analysis can lower, per capture and per step (the captures a step made: the
cache's entries that appeared while it ran), with each step's share of its wall time; and for the full profile
chapter 7's float64 eigenvalue problems at the one-core rate measured then, over every core (:func:`eigen_floor`).
Their sum (``book_floor_s``) is work the profile asks for that no change of the code removes.

Warm: once every cold step finished, each step runs again in the same order on the same cache and build folder
(``make book`` a second time with nothing changed): every chapter should be reused, not executed (the runner's
warm rebuild), and each row gets ``warm_wall_s``, ``warm_cpu_s`` and ``warm_reused`` (``--no-warm``: cold only;
``--warm-only``: only the warm pass, over a finished cold run's ``--cache-dir``).

Goals (issue 27, on 2 idle cores, in the result's ``goal_*`` fields: :data:`GOALS`): the cold full book with
everything the calibration adds 30 minutes, the warm book 3 minutes, ``make test`` 10 minutes (conversions
cached), the paper-scale KDE MI 10 s (``bench_metrics.py``), the capture floor 524 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Issue 27's goals, seconds on 2 idle cores: the cold and the warm full book, ``make test`` (model conversions
#: cached), the paper-scale KDE MI (``bench_metrics.py``) and the captures' floor (the cold full book's).
GOALS = {"goal_s": 30 * 60, "goal_warm_s": 3 * 60, "goal_make_test_s": 10 * 60, "goal_kde_mi_paper_scale_s": 10,
         "goal_capture_floor_s": 524}
#: The goals of the cold (``goal_s``) and warm book apply to this profile only.
GOAL_PROFILE = "full"


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _captures(cache: Path) -> set[str]:
    """The complete activation entries in ``cache`` (their folder names)."""
    out = set()
    for meta in cache.glob("activations/*/meta.json"):
        try:
            if json.loads(meta.read_text()).get("complete"):
                out.add(meta.parent.name)
        except (OSError, ValueError):
            pass
    return out


def _step(cmd: list[str], env: dict[str, str], log: Path, nice: int, cache: Path | None = None) -> dict:
    """Run one step -> ``{wall_s, cpu_s, ok, load_start, load_end, log}`` and, with ``cache``, ``captures``: the
    activation entries that appeared while it ran."""
    load0 = os.getloadavg()
    before = _captures(cache) if cache is not None else set()
    cpu0, t0 = _cpu_children(), time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call((["nice", "-n", str(nice)] if nice else []) + cmd, cwd=ROOT, env=env, stdout=fh,
                             stderr=subprocess.STDOUT)
    row = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_children() - cpu0, 1),
           "ok": rc == 0, "load_start": [round(v, 2) for v in load0],
           "load_end": [round(v, 2) for v in os.getloadavg()], "log": str(log)}
    if cache is not None:
        row["captures"] = sorted(_captures(cache) - before)
    return row


def reused_chapters(timings: Path) -> dict[str, bool]:
    """``{chapter: reused}`` of a build's timings file (the runner marks a chapter it did not execute)."""
    try:
        entries = json.loads(timings.read_text()).get("notebooks", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: bool(v.get("reused")) for k, v in entries.items() if isinstance(v, dict)}


def per_step_floor(record: dict) -> None:
    """Put each cold step's capture floor (``floor_s``: the floors of the captures it made) and its share of the
    step's wall time (``floor_share``) into ``record["rows"]``, from ``record["capture_floor"]``."""
    floors = {c.get("entry"): c.get("floor_s") for c in record.get("capture_floor", {}).get("captures", [])}
    for r in record["rows"]:
        mine = [floors.get(e) for e in r.get("captures") or []]
        if "captures" not in r:
            continue
        r["floor_s"] = round(sum(f for f in mine if f is not None), 1)
        r["floor_share"] = round(r["floor_s"] / r["wall_s"], 3) if r["wall_s"] else None


def _commit() -> str:
    """The commit the step ran (``+dirty`` with uncommitted changes): a long run may span several."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", "src") else "")


def slowest_cells(notebook: Path, top: int = 3) -> str:
    """The ``top`` slowest cells of an executed notebook (papermill's per-cell durations), as
    ``"669 s: <first line of the cell> · ..."``: where the time went."""
    if not notebook.exists():
        return ""
    rows = []
    for c in json.loads(notebook.read_text())["cells"]:
        d = c.get("metadata", {}).get("papermill", {}).get("duration")
        src = (c["source"] if isinstance(c["source"], str) else "".join(c["source"])).strip()
        if d:
            rows.append((d, src.splitlines()[0][:60] if src else ""))
    return " · ".join(f"{d:.0f} s: {first}" for d, first in sorted(rows, reverse=True)[:top])


def capture_floor(cache: Path) -> dict:
    """The captures' share of the book that no code change can remove: every complete capture in ``cache``
    (a cold build's), its real tokens (the texts tokenised as captured) and FLOPs (2 x parameters touched x
    tokens), and the seconds they need at this machine's float32 (bfloat16) matmul peak, measured now with all
    cores. 4-bit captures are listed without a floor (dequantisation, not matmuls, bounds them on a CPU)."""
    import torch

    from transformer_dynamics import capture, pipeline

    sys.path.insert(0, str(HERE))
    from bench_capture import matmul_peak, params_touched  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    peak = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    loaded, rows = {}, []
    for meta in sorted(cache.glob("activations/*/meta.json")):
        m = json.loads(meta.read_text())
        if not m.get("complete"):
            continue
        i = m["identity"]
        if i["model"] not in loaded:
            model, tok = pipeline.load_model(i["model"], cache_dir=cache)
            loaded[i["model"]] = (params_touched(model), tok)
            del model
        p, tok = loaded[i["model"]]
        ids = capture.tokenize(tok, pipeline.load_texts(i["n"], seed=i["seed"]), add_bos=i["add_bos"],
                               strip=i["strip"])
        tokens = sum(map(len, ids))
        dtype = "4bit" if i.get("quantization") == "4bit" else i["dtype"]
        flops = 2.0 * p * tokens
        rows.append({"entry": meta.parent.name} | {k: i.get(k) for k in ("model", "n", "condition", "add_bos",
                                                                           "strip")} | {
            "dtype": dtype, "tokens": tokens, "tflop": round(flops / 1e12, 3),
            "floor_s": round(flops / peak[dtype], 1) if dtype in peak else None})
    floors = [r["floor_s"] for r in rows if r["floor_s"] is not None]
    return {"peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()}, "captures": rows,
            "fp32_tflop": round(sum(r["tflop"] for r in rows if r["dtype"] == "float32"), 2),
            "floor_s": round(sum(floors), 1)}


def eig_seconds(d: int, repeats: int = 3) -> float:
    """Seconds of one float64 non-symmetric eigenvalue problem of a ``d x d`` matrix (LAPACK geev, eigenvalues only,
    as chapter 7 computes them) on one core: the median of ``repeats`` random matrices, measured now."""
    import numpy as np
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    times = []
    with threadpool_limits(1):
        for _ in range(repeats):
            a = rng.standard_normal((d, d)) / np.sqrt(d)
            t0 = time.perf_counter()
            scipy.linalg.eigvals(a, check_finite=False)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def model_shapes(names, cache: Path) -> dict[str, tuple[int, int]]:
    """``{name: (n_sublayers, d_model)}`` of the models, loaded from ``cache``."""
    from transformer_dynamics import pipeline

    out = {}
    for name in names:
        rm, _ = pipeline.load_model(name, cache_dir=cache)
        out[name] = (rm.n_sublayers, rm.d_model)
    return out


def eigen_floor(profile: str, shapes: dict[str, tuple[int, int]], seconds=eig_seconds) -> dict:
    """Chapter 7's float64 eigenvalue problems, the book's other work no code change removes: per model of the
    profile's chapter 7 (``shapes``: :func:`model_shapes`), ``(conditions + inits x seeds)`` runs x ``N_JACOBIAN``
    texts x the sublayers its claims read (:func:`transformer_dynamics.dynamics.claim_sublayers` at
    ``LAYER_STRIDE``), each a ``D x D`` problem (``seconds(D)``: :func:`eig_seconds`, measured now), spread over
    every core. Not counted: the Jacobians and products around them, and chapter 4's symmetric per-sublayer
    spectra."""
    from transformer_dynamics import dynamics, profiles

    p = profiles.load_profile(profile, "07_local_dynamics")
    runs = len(p["CONDITIONS"]) + len(p["REFERENCE_INITS"]) * len(p["REFERENCE_SEEDS"])
    cores = os.cpu_count() or 1
    rows, each = [], {}
    for name in p["MODELS"]:
        n_sub, d = shapes[name]
        if d not in each:
            each[d] = seconds(d)
        n = runs * int(p["N_JACOBIAN"]) * len(dynamics.claim_sublayers(n_sub, layer_stride=int(p["LAYER_STRIDE"])))
        rows.append({"model": name, "d_model": d, "problems": n, "s_each": round(each[d], 4),
                     "floor_s": round(n * each[d] / cores, 1)})
    return {"chapter": "07_local_dynamics", "cores": cores, "models": rows,
            "floor_s": round(sum(r["floor_s"] for r in rows), 1)}


def stems(profile: str, only: list[str] | None) -> list[str]:
    from transformer_dynamics.build.notebooks import notebook_stems

    return notebook_stems(ROOT / "notebooks", only)


def set_goals(record: dict, profile: str) -> None:
    """Put :data:`GOALS` into ``record`` (the book's own, ``goal_s`` and ``goal_warm_s``, only for
    :data:`GOAL_PROFILE`; None for another profile)."""
    record.update(GOALS)
    if profile != GOAL_PROFILE:
        record.update(goal_s=None, goal_warm_s=None)


def completeness(rows: list[dict], whole: list[str], ok: str = "ok") -> dict:
    """``{"complete", "missing"}`` of a run's ``rows`` against ``whole``, every step of the book (each chapter of the
    profile, the HTML, the browser check): a run of ``--only`` some chapters or ``--no-html`` measures part of the
    book, and is complete only once every step of the whole is recorded, each ``ok`` (or ``warm_ok``)."""
    done = {r["step"] for r in rows if r.get(ok)}
    missing = [s for s in whole if s not in done]
    return {"complete": not missing and all(r.get(ok) for r in rows), "missing": missing}


def judge(record: dict) -> None:
    """``meets_goal`` (cold: met only if even one busy core would make it, missed if two could not, else None),
    ``meets_goal_warm`` (the warm wall time itself: little of it is parallel work) and the capture floor's
    ``meets_goal``, from the record's totals and goals."""
    if record.get("goal_s") and "idle_wall_estimate_s" in record:
        lo, hi = record["idle_wall_estimate_s"]
        record["meets_goal"] = (False if lo > record["goal_s"] else
                                True if record.get("complete") and hi <= record["goal_s"] else None)
    if record.get("goal_warm_s") and "warm_total_wall_s" in record:
        record["meets_goal_warm"] = (record["warm_total_wall_s"] <= record["goal_warm_s"]  # None: part of the book
                                     if record.get("warm_complete") else None)
    floor = record.get("capture_floor")
    if isinstance(floor, dict) and floor.get("floor_s") is not None and record.get("goal_capture_floor_s"):
        floor["meets_goal"] = floor["floor_s"] <= record["goal_capture_floor_s"]
        if record.get("goal_s"):
            record["capture_floor_share_of_goal"] = round(floor["floor_s"] / record["goal_s"], 3)
    eig = record.get("eigen_floor")
    if isinstance(floor, dict) and floor.get("floor_s") is not None and isinstance(eig, dict) and record.get("goal_s"):
        # the two floors together: the work the profile asks for that no change of the code can remove
        record["book_floor_s"] = round(floor["floor_s"] + eig["floor_s"], 1)
        record["book_floor_share_of_goal"] = round(record["book_floor_s"] / record["goal_s"], 3)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-warm", action="store_true", help="only the cold pass (no second, warm pass)")
    p.add_argument("--warm-only", action="store_true",
                   help="only the warm pass, over the finished cold run in --cache-dir and its results file")
    p.add_argument("--profile", default="full")
    p.add_argument("--only", default=None, help="comma-separated chapter prefixes (default: every chapter)")
    p.add_argument("--cache-dir", default=None,
                   help="the (empty) cache to fill (default: a fresh temp dir, removed after)")
    p.add_argument("--nice", type=int, default=0, help="run each step under nice -n NICE (CPU times stay comparable)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML build and the browser check")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: keep --cache-dir and the steps already recorded in --out")
    p.add_argument("--floor", action="store_true",
                   help="only add the floors (capture_floor, eigen_floor) of the finished run in --cache-dir to --out")
    p.add_argument("--goals", action="store_true",
                   help="only set the goal fields of --out to this version's GOALS and judge it again "
                        "(its measurements untouched)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _amend(a: argparse.Namespace, out: Path) -> int:
    """--goals / --floor: amend a finished run's results file, measuring nothing new."""
    if a.goals:
        record = json.loads(out.read_text())
        set_goals(record, record.get("profile", a.profile))
        judge(record)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"[bench_book] goals of {out}: " + ", ".join(f"{k} {record[k]}" for k in GOALS))
        return 0
    if a.floor:
        if not (a.cache_dir and out.exists()):
            sys.exit(f"--floor needs the finished run's --cache-dir and its results file ({out})")
        record = json.loads(out.read_text())
        record["capture_floor"] = capture_floor(Path(a.cache_dir))
        if record.get("profile", a.profile) == GOAL_PROFILE:
            from transformer_dynamics import profiles  # noqa: PLC0415

            names = profiles.load_profile(a.profile, "07_local_dynamics")["MODELS"]
            record["eigen_floor"] = eigen_floor(a.profile, model_shapes(names, Path(a.cache_dir)))
        set_goals(record, record.get("profile", a.profile))
        per_step_floor(record)
        judge(record)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"[bench_book] capture floor {record['capture_floor']['floor_s']} s, eigenvalue floor "
              f"{record.get('eigen_floor', {}).get('floor_s')} s; wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _arguments(argv)
    only = a.only.split(",") if a.only else None
    out = Path(a.out or HERE / "results" / f"book_cold_{a.profile}.json")
    if a.goals or a.floor:
        return _amend(a, out)
    cache = Path(a.cache_dir) if a.cache_dir else Path(tempfile.mkdtemp(prefix="td-cold-"))
    if (a.resume or a.warm_only) and not (a.cache_dir and out.exists()):
        sys.exit(f"--resume and --warm-only need the earlier run's --cache-dir and its results file ({out})")
    if not (a.resume or a.warm_only) and cache.exists() and any(cache.iterdir()):
        sys.exit(f"--cache-dir {cache} is not empty: a cold build needs an empty folder (or omit the flag)")
    cache.mkdir(parents=True, exist_ok=True)
    build_out = cache / "_build"
    logs = cache / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, TRANSFORMER_DYNAMICS_CACHE=str(cache), TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    py = [sys.executable, "-m", "transformer_dynamics.build"]
    record = {"benchmark": "book_cold", "profile": a.profile, "nice": a.nice, "cache": "empty at start",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "rows": []}
    set_goals(record, a.profile)
    if a.resume or a.warm_only:
        previous = json.loads(out.read_text())
        record["rows"] = [r for r in previous["rows"] if r.get("ok")]
        if "capture_floor" in previous:
            record["capture_floor"] = previous["capture_floor"]

    whole = stems(a.profile, None) + ["html", "browser check"]  # every step of the book, whatever --only picks

    def save() -> None:
        record["total_wall_s"] = round(sum(r["wall_s"] for r in record["rows"]), 1)
        record["total_cpu_s"] = round(sum(r["cpu_s"] for r in record["rows"]), 1)
        record.update(completeness(record["rows"], whole))
        record["idle_wall_estimate_s"] = [round(record["total_cpu_s"] / 2, 1), record["total_cpu_s"]]
        warm = [r for r in record["rows"] if "warm_wall_s" in r]
        if warm:
            record["warm_total_wall_s"] = round(sum(r["warm_wall_s"] for r in warm), 1)
            record["warm_total_cpu_s"] = round(sum(r["warm_cpu_s"] for r in warm), 1)
            record["warm_complete"] = completeness(warm, whole, "warm_ok")["complete"]
            record["warm_chapters_executed"] = [r["step"] for r in warm if r.get("warm_reused") is False]
        judge(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")

    steps = [(s, py + ["run", "--profile", a.profile, "--only", s[:2], "--cache-dir", str(cache),
                       "--out", str(build_out), "--no-progress"]) for s in stems(a.profile, only)]
    if not a.no_html:
        steps += [("html", py + ["html", "--profile", a.profile, "--out", str(build_out)]),
                  ("browser check", py + ["check", "--out", str(build_out)])]
    timings = build_out / f"timings-{a.profile}.json"
    try:
        done = {r["step"] for r in record["rows"]}
        for name, cmd in ([] if a.warm_only else steps):
            if name in done:
                continue
            print(f"[bench_book] {name} ...", flush=True)
            row = {"step": name, "omp_wait_policy": env["OMP_WAIT_POLICY"], "commit": _commit(),
                   **_step(cmd, env, logs / f"{name.replace(' ', '_')}.log", a.nice,
                           cache if name[:2].isdigit() else None)}
            row["slowest_cells"] = slowest_cells(build_out / "executed" / a.profile / f"{name}.ipynb")
            record["rows"].append(row)
            save()
            print(f"[bench_book] {name}: {row['wall_s']} s wall, {row['cpu_s']} s CPU, ok={row['ok']}", flush=True)
        cold_ok = len(record["rows"]) == len(steps) and all(r.get("ok") for r in record["rows"])
        if not a.no_warm and cold_ok:  # the same steps again, nothing changed: make book a second time
            rows = {r["step"]: r for r in record["rows"]}
            for name, cmd in steps:
                print(f"[bench_book] warm {name} ...", flush=True)
                w = _step(cmd, env, logs / f"warm_{name.replace(' ', '_')}.log", a.nice)
                rows[name].update(warm_wall_s=w["wall_s"], warm_cpu_s=w["cpu_s"], warm_ok=w["ok"])
                if name[:2].isdigit():
                    rows[name]["warm_reused"] = reused_chapters(timings).get(name)
                save()
                print(f"[bench_book] warm {name}: {w['wall_s']} s wall, {w['cpu_s']} s CPU, "
                      f"reused={rows[name].get('warm_reused')}", flush=True)
    finally:
        if not a.cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"[bench_book] wrote {out}")
    return 0 if all(r["ok"] for r in record["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
