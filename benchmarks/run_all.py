"""Run every ``benchmarks/bench_*.py``, one after another, so that ``make benchmarks`` regenerates
``benchmarks/results/*.json`` (the book's benchmarks page renders those files).

    .venv/bin/python benchmarks/run_all.py                 # quick settings: about 20-30 min on 2 idle cores
    .venv/bin/python benchmarks/run_all.py --full          # paper-scale settings (an hour or more on 2 cores)
    .venv/bin/python benchmarks/run_all.py --only capture,memory

Each benchmark runs in its own process with the flags below (``QUICK`` by default, ``FULL`` with
``--full``); a benchmark not listed runs with its own defaults. ``bench_capture.py`` runs with
``benchmarks/.venv-peers/bin/python`` when that virtual environment exists (it holds nnsight and
TransformerLens, see ``requirements-peers.txt``), otherwise with this interpreter and the peers' rows say
"not installed". A summary (flags, wall time, exit status per benchmark) goes to
``benchmarks/results/run_all.json``. The exit status is non-zero if any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"

#: Flags per benchmark (the part of the file name after ``bench_``).
QUICK: dict[str, list[str]] = {
    "capture": ["--n", "256"],            # all eight methods on 256 texts -> results/capture.json
    "memory": ["--max-tokens", "16"],     # N = 128, 512, 1000; texts cut to 16 tokens (same array sizes)
    "metrics": [],                        # KDE MI timed on 512 units, extrapolated to 4096
    "phase": [],                          # already at the paper's shape
    "reduce": ["--quick"],                # PCA on 1/8 of the texts
    "dynamics": [],                       # Jacobians of 8 SmolLM2 texts timed, extrapolated to 64
    "evidence": ["--n", "200", "--out", str(HERE / "results" / "evidence_n200.json")],  # one run's evidence
    "book": ["--profile", "ci"],          # the cold make book on the ci profile (~15 min)
}
FULL: dict[str, list[str]] = {
    "capture": ["--n", "1000", "--out", str(HERE / "results" / "capture_n1000.json")],  # the paper's N
    "memory": [],
    "metrics": ["--mi-units", "4096"],
    "phase": [],
    "reduce": ["--sklearn"],
    "dynamics": ["--n", "64"],            # all Jacobians of 64 texts timed
    "evidence": [],                       # one run's evidence, SmolLM2, N = 1000 (results/evidence.json)
    "book": ["--profile", "full"],        # the cold make book, full profile (hours on 2 cores: run it idle)
}


def discover() -> list[str]:
    """Benchmark names, ``bench_<name>.py`` in ``benchmarks/``, sorted."""
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def python_for(name: str, override: str | None) -> str:
    if override:
        return override
    if name == "capture" and PEERS_PYTHON.exists():
        return str(PEERS_PYTHON)
    return sys.executable


def _in_repo(path: str) -> str:
    """``path`` relative to the repository root when it lies under it, else unchanged."""
    return os.path.relpath(path, ROOT) if path.startswith(str(ROOT)) else path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="paper-scale settings (FULL) instead of QUICK")
    p.add_argument("--only", default="", help="comma-separated benchmark names (e.g. capture,memory)")
    p.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    p.add_argument("--python", default=None, help="interpreter for every benchmark (default: see above)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)

    names = discover()
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = (only | skip) - set(names)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; available: {', '.join(names)}")
    names = [n for n in names if (not only or n in only) and n not in skip]
    flags = FULL if args.full else QUICK

    summary = []
    t_all = time.perf_counter()
    for name in names:
        cmd = [python_for(name, args.python), str(HERE / f"bench_{name}.py"), *flags.get(name, [])]
        print(f"\n=== {name}: {' '.join(cmd)}  (load {os.getloadavg()[0]:.1f})", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        dt = time.perf_counter() - t0
        print(f"=== {name}: exit {rc} after {dt:.0f} s", flush=True)
        summary.append({"benchmark": f"bench_{name}.py",
                        "flags": " ".join(_in_repo(f) for f in flags.get(name, [])) or "(defaults)",
                        "seconds": round(dt, 1), "ok": rc == 0, "interpreter": _in_repo(cmd[0])})
    if args.dry_run:
        return 0
    total = time.perf_counter() - t_all
    out = HERE / "results" / "run_all.json"
    if not only and not skip:  # a partial run keeps the summary of the last complete one
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"settings": "full" if args.full else "quick", "total_seconds": round(total, 1),
                                   "cpus": os.cpu_count(), "platform": platform.platform(),
                                   "runs": summary}, indent=1) + "\n")
    print(f"\nall done in {total:.0f} s: " + ", ".join(f"{r['benchmark']} {'ok' if r['ok'] else 'FAILED'}"
                                                  for r in summary))
    return 0 if all(r["ok"] for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
