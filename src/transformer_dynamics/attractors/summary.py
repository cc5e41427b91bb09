"""Summaries of attractor sweeps per layer, and another chapter's ledger read from inside a build (see
:mod:`transformer_dynamics.attractors`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..claims import ATTRACTOR_SIZE
from .sweep import AttractorSweep

__all__ = ["chapter_ledger", "ledger_entry", "SUMMARY_CURVES", "basin_reach", "spectra_summary", "layer_summary"]

# --------------------------------------------------------------------------------------------------
# Another chapter's ledger, from inside a build
# --------------------------------------------------------------------------------------------------
def chapter_ledger(notebook: str, directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ledger of chapter ``notebook`` (e.g. ``"07_local_dynamics"``) beside this chapter's ledger folder
    ``directory``, or None when that chapter has not run. Inside a book build a chapter records into
    ``<out>/ledger/.partial/<profile>/<stem>`` while the finished chapters' ledgers are in
    ``<out>/ledger/<profile>``: both places are looked at."""
    from ..ledger import book_directory, load  # noqa: PLC0415

    d = Path(directory)
    places = list(dict.fromkeys([d / f"{notebook}.json", book_directory(d) / f"{notebook}.json"]))
    for path in places:
        if path.is_file():
            try:
                return load(path)
            except (ValueError, json.JSONDecodeError):
                return None
    return None


def ledger_entry(data: Mapping[str, Any] | None, key: str, model: str) -> dict[str, Any] | None:
    """The entry ``key`` for ``model`` of a loaded ledger (:func:`chapter_ledger`), or None (no ledger, or the key not
    recorded there: another chapter's keys may change)."""
    for e in (data or {}).get("entries", []):
        if e.get("key") == key and e.get("model", "") == model:
            return e
    return None


# --------------------------------------------------------------------------------------------------
# Summaries per layer
# --------------------------------------------------------------------------------------------------
#: The per-layer columns of :func:`layer_summary` read from :meth:`AttractorSweep.curves` (means over prompts).
SUMMARY_CURVES = ("flow:plane", "flow:random", "flow:swap", "basin:plane", "recovery:plane", "validity:plane",
                  "kl:plane", "kl_delete", "kl_swap", "top1_delete", "top1_swap")


def basin_reach(sizes: np.ndarray, basin: np.ndarray) -> np.ndarray:
    """The basin's reach: the size at which basin stability ``basin: (..., S)`` (e.g. the mean over prompts per
    layer) first falls below one half, interpolated linearly in the stability and logarithmically in the size
    between the grid's sizes -> ``(...)``. Censored at the grid's ends: ``sizes[0]`` where it is below one half
    there already, ``sizes[-1]`` where it never falls below; NaN where it is undefined at the first size."""
    sizes = np.asarray(sizes, dtype=np.float64)
    b = np.asarray(basin, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(np.diff(sizes) <= 0) or b.shape[-1] != sizes.size:
        raise ValueError(f"sizes must be (S >= 2,) increasing and basin (..., S); got {sizes.shape}, {b.shape}")
    below = b < 0.5
    first = np.where(below.any(-1), below.argmax(-1), sizes.size)
    k = np.clip(first, 1, sizes.size - 1)
    b0 = np.take_along_axis(b, (k - 1)[..., None], -1)[..., 0]
    b1 = np.take_along_axis(b, k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((b0 - 0.5) / (b0 - b1), 0.0, 1.0)
    ls = np.log(sizes)
    r = np.exp(ls[k - 1] + frac * (ls[k] - ls[k - 1]))
    r = np.where(first == 0, sizes[0], np.where(first == sizes.size, sizes[-1], r))
    return np.where(np.isnan(b[..., 0]), np.nan, r)


def spectra_summary(spectra: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, means over texts of :func:`window_spectra`'s scaled singular values: ``top`` (the largest, of the
    map), ``rms`` (of the map: the linear recovery of a uniformly random direction), ``share_below_1`` (of the map's
    values: directions that shrink relative to the stream) and ``rms_update`` -> ``{name: (n_layers,)}``."""
    full, update = np.asarray(spectra["full"]), np.asarray(spectra["update"])
    return {"top": full[..., 0].mean(0), "rms": np.sqrt((full ** 2).mean(-1)).mean(0),
            "share_below_1": (full < 1).mean(-1).mean(0), "rms_update": np.sqrt((update ** 2).mean(-1)).mean(0)}


def layer_summary(sweeps: Mapping[str, AttractorSweep], names: Sequence[str],
                  size: float = ATTRACTOR_SIZE) -> Any:
    """One row per layer and run kind (``"trained"``, ``"default"``, ``"matched"``: the seeds of a kind averaged):
    the means over prompts of :data:`SUMMARY_CURVES` at ``size``, the basin's reach (:func:`basin_reach` of the plane
    directions) and :func:`spectra_summary` where spectra were computed -> DataFrame indexed by (layer, run)."""
    import pandas as pd  # noqa: PLC0415

    rows = []
    for run, sw in sweeps.items():
        c = sw.curves(size)
        reach = basin_reach(sw.sizes, np.nanmean(c["basin_size:plane"], 0)) if "basin_size:plane" in c else None
        spec = spectra_summary(sw.spectra) if sw.spectra else {}
        for i, (name, l) in enumerate(zip(names, sw.layers)):
            row = {"layer": f"{name} ({l})", "run": run.split(":")[0]}
            row |= {k: float(np.nanmean(c[k][:, i])) for k in SUMMARY_CURVES if k in c}
            if reach is not None:
                row["basin reach"] = float(reach[i])
            row |= {f"spectrum {k}": float(v[i]) for k, v in spec.items()}
            rows.append(row)
    out = pd.DataFrame(rows).groupby(["layer", "run"], sort=False).mean()
    order = pd.MultiIndex.from_product([list(dict.fromkeys(r["layer"] for r in rows)),
                                        list(dict.fromkeys(r["run"] for r in rows))], names=["layer", "run"])
    return out.reindex([i for i in order if i in out.index])
