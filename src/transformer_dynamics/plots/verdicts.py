"""Chapters 6 and 8: the claims' values and verdicts as figures -- each claim's value with its interval over texts
per model or precision (:func:`plot_claim_intervals`), against the number of texts (:func:`plot_n_dependence`),
and the verdict under every open choice (:func:`plot_verdict_grid`).

Tables in (:func:`transformer_dynamics.robustness.evidence_frame` rows, :func:`~transformer_dynamics.robustness.
n_dependence`, :func:`~transformer_dynamics.robustness.setting_changes`), a matplotlib figure out; each claim's
threshold and headline reading from the registry (:mod:`transformer_dynamics.claims`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import claims as _claims
from .style import category_colors, subplots

__all__ = ["CHANGE_MARKS", "plot_claim_intervals", "plot_n_dependence", "plot_verdict_grid"]


def _grid(n: int, ncols: int, size=(2.6, 2.2)):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), layout="constrained",
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _by_claim(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of an evidence frame indexed by claim: the headline reading of each claim, one row per claim."""
    if "claim" not in frame.columns:
        if frame.index.name == "claim":
            return frame
        raise ValueError("expected robustness.evidence_frame rows (a 'claim' column)")
    f = frame
    if "reading" in f.columns:
        f = f[f["reading"] == f["claim"].map(lambda k: _claims.get(k).headline)]
    return f.drop_duplicates("claim").set_index("claim")


def _threshold(ax, key: str) -> None:
    if key in _claims.REGISTRY:
        ax.axhline(_claims.get(key).threshold, color="0.45", ls="--", lw=0.9)


def _say_undefined(ax, drawn: bool) -> None:
    """A panel with no defined value says so (instead of an empty frame)."""
    if not drawn:
        ax.text(0.5, 0.5, "undefined", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")


def plot_claim_intervals(frames: Mapping[str, pd.DataFrame], keys: Sequence[str] | None = None, *,
                         ncols: int = 5, title: str = "The claims' values with 95% bootstrap intervals") -> Figure:
    """One small panel per claim: the value of each label (model, precision...) with its interval over texts, and
    the claim's threshold (dashed).

    frames: {label: :func:`robustness.evidence_frame` rows (``claim``, ``reading``, ``value``, ``low``,
    ``high``); the headline reading of each claim is drawn}. keys: which claims (default: those of the first frame).
    """
    if not frames:
        raise ValueError("frames is empty: pass {label: robustness.evidence_frame(evidence)}")
    tables = {lab: _by_claim(f) for lab, f in frames.items()}
    keys = list(keys) if keys is not None else list(next(iter(tables.values())).index)
    if not keys:
        raise ValueError("no claims to draw")
    fig, axes = _grid(len(keys), ncols)
    colors = category_colors(len(tables))
    for ax, key in zip(axes, keys):
        drawn = False
        for i, (color, (label, df)) in enumerate(zip(colors, tables.items())):
            if key not in df.index:
                continue
            est, lo, hi = (float(df.loc[key, c]) for c in ("value", "low", "high"))
            ok = np.isfinite(lo) and np.isfinite(hi) and np.isfinite(est)
            err = [[max(est - lo, 0.0)], [max(hi - est, 0.0)]] if ok else None
            ax.errorbar([i], [est], yerr=err, fmt="o", color=color, capsize=3, ms=4, label=label)
            drawn |= bool(np.isfinite(est))
        _threshold(ax, key)
        _say_undefined(ax, drawn)
        ax.set_title(key, fontsize=7)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        ax.set_xlim(-0.7, len(tables) - 0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(max(len(labels), 1), 4), fontsize=8)
    fig.suptitle(title + " (dashed: the claim's threshold)", fontsize=10)
    return fig


def plot_n_dependence(table: pd.DataFrame | Mapping[str, pd.DataFrame], keys: Sequence[str] | None = None, *,
                      intervals: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None, ncols: int = 5,
                      title: str = "The claims' values against the number of texts N") -> Figure:
    """Each claim's headline value against N (log axis), one small panel per claim, with its threshold (dashed).

    table: :func:`robustness.n_dependence` output (index N, one column per claim), or {label (model):
    such a table}, one colour each. ``intervals``: :func:`robustness.evidence_frame` rows at the largest N
    (``claim``, ``low``, ``high``), or {label: such rows}, drawn as a band of the label's colour.
    """
    tables = dict(table) if isinstance(table, Mapping) else {"": table}
    bands = (None if intervals is None else
             {k: _by_claim(v) for k, v in (intervals.items() if isinstance(intervals, Mapping)
                                          else [(next(iter(tables)), intervals)])})
    if not tables or any(t.empty for t in tables.values()):
        raise ValueError("table is empty: pass robustness.n_dependence(rs, ns)")
    keys = list(keys) if keys is not None else list(dict.fromkeys(k for t in tables.values() for k in t.columns))
    if not keys:
        raise ValueError("table is empty: pass robustness.n_dependence(rs, ns)")
    fig, axes = _grid(len(keys), ncols)
    colors = ["k"] if len(tables) == 1 else category_colors(len(tables))
    ns = sorted({float(v) for t in tables.values() for v in t.index})
    for ax, key in zip(axes, keys):
        drawn = False
        for color, (label, t) in zip(colors, tables.items()):
            if key in t.columns:
                y = t[key].to_numpy(dtype=float)
                ax.plot(np.asarray(t.index, dtype=float), y, "o-", ms=3, lw=1.2, color=color, label=label or None)
                drawn |= bool(np.isfinite(y).any())
            band = bands.get(label) if bands else None
            if band is not None and key in band.index:
                lo, hi = float(band.loc[key, "low"]), float(band.loc[key, "high"])
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.axhspan(lo, hi, color=color if len(tables) > 1 else "0.8", alpha=0.25 if len(tables) > 1
                               else 0.6, lw=0)
        _threshold(ax, key)
        _say_undefined(ax, drawn)
        ax.set_xscale("log")
        ax.set_xlim(ns[0] / 1.15, ns[-1] * 1.15)
        ax.set_xticks(ns, [f"{v:g}" for v in ns])
        ax.minorticks_off()
        ax.set_title(key, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[-ncols:]:
        ax.set_xlabel("N texts", fontsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    fig.suptitle(title + " (band: the interval at the largest N; dashed: the threshold)", fontsize=10)
    return fig


_VERDICT_CODE = {"holds": 1.0, "undecided": 0.0, "fails": -1.0}
#: the mark each change draws in its cell (robustness.setting_changes' "change")
CHANGE_MARKS = {"flip": "F", "loses power": "↓", "gains": "↑", "undefined": "–"}


def plot_verdict_grid(changes: pd.DataFrame, *, model: str, title: str | None = None) -> Figure:
    """The verdict of every claim (rows; its headline reading) under every setting (columns: the headline, the
    other settings, then the claim's other readings on the headline run, named after the claim in brackets) for
    one model: green holds, red fails, grey undecided, white undefined; the cell's mark says what happened against
    the setting's reference (:data:`CHANGE_MARKS`: F a flip, ↓ lost significance, ↑ decided where the reference is
    not, – undefined); an outlined cell is a reference (the headline, or the row a choice is compared with at
    equal N).

    changes: :func:`robustness.setting_changes` output (``model``, ``claim``, ``reading``, ``choice``,
    ``setting``, ``verdict``, ``reason``, ``change``).
    """
    fig, ax = subplots(figsize=_grid_size(*_grid_cells(changes, model)[1:3]), layout="constrained")
    _draw_verdict_grid(ax, changes, model, title)
    return fig


def plot_verdict_grids(changes: pd.DataFrame, models: Sequence[str]) -> Figure:
    """:func:`plot_verdict_grid` of each of ``models``, one above the other in one figure (one figure, one
    number in the book)."""
    cells = [_grid_cells(changes, m) for m in models]
    sizes = [_grid_size(keys, cols) for _, keys, cols, _ in cells]
    fig, axes = subplots(len(models), 1, figsize=(max(w for w, _ in sizes), sum(h for _, h in sizes)),
                         height_ratios=[h for _, h in sizes], layout="constrained", squeeze=False)
    for ax, m in zip(axes[:, 0], models):
        _draw_verdict_grid(ax, changes, m, None)
    return fig


def _grid_size(keys, cols) -> tuple[float, float]:
    return 3.6 + 0.42 * len(cols), 1.2 + 0.26 * len(keys)


def _grid_cells(changes: pd.DataFrame, model: str):
    """(rows of ``model``'s headline readings, claims, columns, each claim's other readings shown)."""
    from ..robustness.lines import HEADLINE, READING_CHOICE  # noqa: PLC0415

    v = changes[changes["model"] == model]
    if v.empty:
        raise ValueError(f"no rows for model {model!r}; models: {sorted(set(changes['model']))}")
    v = v[v["reading"] == v["claim"].map(lambda k: _claims.get(k).headline)].copy()
    v["setting"] = v["setting"].astype(str)
    keys = [k for k in _claims.REGISTRY if k in set(v["claim"])]
    # the other readings go into numbered slots, so that the grid stays narrow
    other = v["choice"] == READING_CHOICE
    shown = {k: [r for r in _claims.get(k).reading_names if r in set(v.loc[other & (v["claim"] == k), "setting"])]
             for k in keys}
    v.loc[other, "setting"] = [f"other reading {shown[k].index(r) + 1}" for k, r in
                               zip(v.loc[other, "claim"], v.loc[other, "setting"])]
    cols = list(dict.fromkeys(zip(v["choice"], v["setting"])))
    cols.sort(key=lambda cs: (cs[0] != HEADLINE, cs[0] == READING_CHOICE, cs[1] if cs[0] == READING_CHOICE else ""))
    return v, keys, cols, shown


def _draw_verdict_grid(ax, changes: pd.DataFrame, model: str, title: str | None) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    from ..robustness.lines import HEADLINE, READING_CHOICE, _undefined

    v, keys, cols, shown = _grid_cells(changes, model)
    grid = np.full((len(keys), len(cols)), np.nan)
    for _, r in v.iterrows():
        i, j = keys.index(r["claim"]), cols.index((r["choice"], r["setting"]))
        undefined = r["change"] == "undefined" or _undefined(r["verdict"], r["reason"])
        if not undefined:
            grid[i, j] = _VERDICT_CODE[r["verdict"]]
        mark = CHANGE_MARKS.get(r["change"], CHANGE_MARKS["undefined"] if undefined else "")
        if mark:
            ax.text(j, i, mark, ha="center", va="center", fontsize=7, fontweight="bold",
                    color="white" if r["change"] == "flip" else "k")
        if r["change"] in ("headline", "reference"):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.0, ec="k"))
    cmap = ListedColormap(["#d62728", "#c7c7c7", "#2ca02c"])
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-1.5, vmax=1.5, aspect="auto", interpolation="none")
    ax.set_facecolor("white")
    ax.set_yticks(range(len(keys)), [f"{k} [{', '.join(shown[k])}]" if shown[k] else k for k in keys], fontsize=7)
    ax.set_xticks(range(len(cols)), [c if c in (HEADLINE,) else s if c == READING_CHOICE else f"{c}: {s}"
                                     for c, s in cols], rotation=60, ha="right", fontsize=7)
    ax.set_xticks(np.arange(len(cols) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(keys) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    handles = [Patch(color=c, label=lab) for c, lab in (("#2ca02c", "holds"), ("#d62728", "fails"),
                                                        ("#c7c7c7", "undecided"))]
    handles.append(Patch(facecolor="white", edgecolor="0.5", label="undefined"))
    handles += [Patch(color="none", label=f"{m}: {ch}") for ch, m in CHANGE_MARKS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.set_title(title or f"{model}: the verdicts under every setting (other readings: in brackets)", fontsize=9)
