"""Helpers shared by the benchmark scripts (not a benchmark itself: ``run_all.py`` runs ``bench_*.py`` only)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

#: The repository's tests folder (shared test cases, e.g. ``mi_cases``).
TESTS = Path(__file__).resolve().parent.parent / "tests"


def machine(load_start: tuple[float, float, float], **extra) -> dict:
    """The machine a result was measured on: platform, cores, the load average at the start and now."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()), **extra}


def write_result(path: Path, result: dict) -> dict:
    """Write ``result`` as indented JSON to ``path`` (folders created) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return result
