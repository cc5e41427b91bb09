"""Notebooks 06 and 08: models side by side, precision, the statistics of the headline numbers, and the
verdicts under the open choices.

Arrays in (the outputs of :mod:`transformer_dynamics.robustness`), a matplotlib figure out. Models of different
depth line up on a *relative depth* axis (sublayer / n_sublayers, :func:`robustness.relative_depth`). In the
per-transition panels within-layer transitions (attn -> mlp) are solid lines with circles, cross-layer ones
(mlp -> next attn) dashed with squares; colour = model (or condition / precision).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..robustness import relative_depth
from .style import fig_ax

__all__ = [
    "plot_depth_profile",
    "plot_successive_r",
    "plot_cosine",
    "plot_velocity",
    "plot_mutual_information",
    "plot_rotations",
    "plot_cumulative_ev",
    "plot_headline_intervals",
    "plot_n_dependence",
    "plot_relative_error",
    "plot_first_transitions",
    "plot_verdict_grid",
]

_KINDS = {"within": ("-", "o", "within (attn→mlp)"), "cross": ("--", "s", "cross (mlp→attn)")}




def _colors(n: int):
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _check_curves(curves_by_label: Mapping[str, Mapping[str, Any]], key: str) -> None:
    if not curves_by_label:
        raise ValueError("curves_by_label is empty: pass {label: robustness.curves(rs)}")
    missing = [lab for lab, c in curves_by_label.items() if key not in c]
    if missing:
        raise ValueError(f"{key!r} missing from the curves of {missing}; compute robustness.curves with its group")


def plot_depth_profile(curves_by_label: Mapping[str, Mapping[str, Any]], key: str, *, ax=None, ylabel: str = "",
                       title: str = "", log: bool = False, normalise: bool = False) -> Figure:
    """A per-transition curve of several models on the relative-depth axis.

    curves_by_label: {label: :func:`robustness.curves` output}; key: ``"r_median"``, ``"cos_mean"``, ``"vel_mean"``
    or ``"mi_mean"`` (each ``(n_sublayers - 1,)``). ``normalise``: divide each curve by its mean (compares
    shapes of curves whose scales differ between models, e.g. velocity).
    """
    _check_curves(curves_by_label, key)
    fig, ax = fig_ax(ax)
    for color, (label, c) in zip(_colors(len(curves_by_label)), curves_by_label.items()):
        y = np.asarray(c[key], dtype=float)
        if y.ndim != 1:
            raise ValueError(f"{key} must be (n_transitions,); got {y.shape} for {label!r}")
        if normalise:
            y = y / np.nanmean(y)
        x = relative_depth(y.size, transitions=True)
        for i, (kind, (ls, marker, kind_label)) in enumerate(_KINDS.items()):
            t = np.arange(i, y.size, 2)
            ax.plot(x[t], y[t], ls=ls, marker=marker, ms=3, lw=1.4, color=color,
                    label=f"{label}, {kind_label}")
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="relative depth (sublayer / n_sublayers)", ylabel=ylabel + (" / mean" if normalise else ""),
           title=title, xlim=(0, 1))
    ax.legend(fontsize=6)
    return fig


def plot_successive_r(curves_by_label, *, ax=None, title: str = "Median successive r (1C)") -> Figure:
    """Fig 1C per model: median over units of each unit's r between successive sublayers."""
    return plot_depth_profile(curves_by_label, "r_median", ax=ax, ylabel="median r over units", title=title)


def plot_cosine(curves_by_label, *, ax=None, title: str = "Cosine of successive RS vectors (1E)") -> Figure:
    """Fig 1E per model: mean over texts of the raw cosine similarity of successive RS vectors."""
    return plot_depth_profile(curves_by_label, "cos_mean", ax=ax, ylabel="mean cosine", title=title)


def plot_velocity(curves_by_label, *, ax=None, normalise: bool = True, log: bool = False,
                  title: str = "Velocity (1F)") -> Figure:
    """Fig 1F per model: mean over texts of ``||h_{t+1} - h_t||``; by default each model's curve divided by its
    mean (the models' activation scales differ)."""
    return plot_depth_profile(curves_by_label, "vel_mean", ax=ax, ylabel="mean velocity", title=title,
                              normalise=normalise, log=log)


def plot_mutual_information(curves_by_label, *, ax=None, title: str = "Mean MI over units (1H)") -> Figure:
    """Fig 1H per model: mean over the MI units of each unit's MI between successive sublayers (nats)."""
    return plot_depth_profile(curves_by_label, "mi_mean", ax=ax, ylabel="mean MI (nats)", title=title)


def plot_rotations(curves_by_label, *, ax=None, per_sublayer: bool = True, bins: int = 40,
                   title: str = "Rotations per unit vs shuffle null (2B)") -> Figure:
    """Fig 2B per model: histogram over units of the rotation count R (solid) and of its layer-order shuffle
    null pooled over shuffles (dotted). ``per_sublayer``: R / n_sublayers, so models of different depth compare.
    curves_by_label: {label: :func:`robustness.curves` output with ``"rot"`` (and ``"rot_null"``)}."""
    _check_curves(curves_by_label, "rot")
    fig, ax = fig_ax(ax)
    scale = {lab: (c["n_sublayers"] if per_sublayer else 1) for lab, c in curves_by_label.items()}
    allv = np.concatenate([np.ravel(c["rot"]) / scale[lab] for lab, c in curves_by_label.items()] +
                          [np.ravel(c["rot_null"]) / scale[lab] for lab, c in curves_by_label.items()
                           if "rot_null" in c])
    edges = np.linspace(np.nanmin(allv), np.nanmax(allv) + 1e-12, bins + 1)
    for color, (label, c) in zip(_colors(len(curves_by_label)), curves_by_label.items()):
        ax.hist(np.ravel(c["rot"]) / scale[label], bins=edges, density=True, histtype="step", lw=1.6,
                color=color, label=f"{label} (mean |R| {np.abs(c['rot']).mean():.2f})")
        if "rot_null" in c:
            ax.hist(np.ravel(c["rot_null"]) / scale[label], bins=edges, density=True, histtype="step", lw=1.2,
                    ls=":", color=color, label=f"{label}: null (mean |R| {np.abs(c['rot_null']).mean():.2f})")
    ax.set(xlabel="R / n_sublayers" if per_sublayer else "rotations R", ylabel="density", title=title)
    ax.legend(fontsize=6)
    return fig


def plot_cumulative_ev(curves_by_label, *, ax=None, threshold: float | None = 0.9,
                       title: str = "PCA: cumulative explained variance (4B)") -> Figure:
    """Fig 4B per model: cumulative explained-variance ratio of the global PCA against the number of
    components (log axis). curves_by_label: {label: :func:`robustness.curves` output with ``"ev_ratio"``}."""
    _check_curves(curves_by_label, "ev_ratio")
    fig, ax = fig_ax(ax)
    for color, (label, c) in zip(_colors(len(curves_by_label)), curves_by_label.items()):
        r = np.asarray(c["ev_ratio"], dtype=float)
        ax.plot(np.arange(1, r.size + 1), np.cumsum(r), color=color, lw=1.6, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="0.5", ls=":", lw=1, label=f"{threshold:.0%}")
    ax.set_xscale("log")
    ax.set(xlabel="number of components", ylabel="cumulative explained variance", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7)
    return fig


def _grid(n: int, ncols: int, size=(2.6, 2.2)):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), layout="constrained",
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def plot_headline_intervals(tables: Mapping[str, pd.DataFrame], keys: Sequence[str] | None = None, *,
                            ncols: int = 5, title: str = "Headline numbers with 95% bootstrap intervals") -> Figure:
    """One small panel per headline number: the estimate of each label (model, precision…) with its interval.

    tables: {label: :func:`robustness.bootstrap_headlines` output (index key; columns estimate, low, high)}.
    keys: which headline numbers (default: every key of the first table).
    """
    if not tables:
        raise ValueError("tables is empty: pass {label: robustness.bootstrap_headlines(rs)}")
    keys = list(keys) if keys is not None else list(next(iter(tables.values())).index)
    fig, axes = _grid(len(keys), ncols)
    colors = _colors(len(tables))
    for ax, key in zip(axes, keys):
        for i, (color, (label, df)) in enumerate(zip(colors, tables.items())):
            if key not in df.index:
                continue
            est, lo, hi = (float(df.loc[key, c]) for c in ("estimate", "low", "high"))
            err = [[max(est - lo, 0.0)], [max(hi - est, 0.0)]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([i], [est], yerr=err, fmt="o", color=color, capsize=3, ms=4, label=label)
        ax.set_title(key, fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        ax.set_xlim(-0.7, len(tables) - 0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_n_dependence(table: pd.DataFrame, keys: Sequence[str] | None = None, *, intervals: pd.DataFrame | None = None,
                      ncols: int = 5, title: str = "Headline numbers against the number of texts N") -> Figure:
    """Each headline number against N (log axis), one small panel per number.

    table: :func:`robustness.n_dependence` output (index N, one column per key). ``intervals``: optional
    :func:`robustness.bootstrap_headlines` table at the largest N, drawn as a grey band.
    """
    keys = list(keys) if keys is not None else list(table.columns)
    if table.empty or not keys:
        raise ValueError("table is empty: pass robustness.n_dependence(rs, ns)")
    fig, axes = _grid(len(keys), ncols)
    n = np.asarray(table.index, dtype=float)
    for ax, key in zip(axes, keys):
        ax.plot(n, table[key].to_numpy(dtype=float), "o-", ms=3, lw=1.2, color="k")
        if intervals is not None and key in intervals.index:
            lo, hi = float(intervals.loc[key, "low"]), float(intervals.loc[key, "high"])
            if np.isfinite(lo) and np.isfinite(hi):
                ax.axhspan(lo, hi, color="0.8", alpha=0.6, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(n, [f"{v:g}" for v in n])
        ax.minorticks_off()
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-ncols:]:
        ax.set_xlabel("N texts", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_relative_error(errors: Mapping[str, np.ndarray], *, ax=None, log: bool = True,
                        title: str = "Relative error of the RS against float32") -> Figure:
    """Per-sublayer relative error ``||b - a|| / ||a||`` of each precision against the reference, on the
    relative-depth axis. errors: {label: (n_sublayers,)}, e.g. ``precision_difference(...)["rel_error"]``."""
    if not errors:
        raise ValueError("errors is empty: pass {label: precision_difference(a, b)['rel_error']}")
    fig, ax = fig_ax(ax)
    for color, (label, e) in zip(_colors(len(errors)), errors.items()):
        e = np.asarray(e, dtype=float)
        if e.ndim != 1:
            raise ValueError(f"errors must be (n_sublayers,); got {e.shape} for {label!r}")
        ax.plot(relative_depth(e.size), e, "o-", ms=3, lw=1.4, color=color, label=label)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="relative depth (sublayer / n_sublayers)", ylabel="relative L2 error", title=title, xlim=(0, 1))
    ax.legend(fontsize=7)
    return fig


def plot_first_transitions(tables: Mapping[str, pd.DataFrame], *, title: str = "The first transitions under the "
                           "four BOS / strip variants") -> Figure:
    """Median r (top) and mean KDE MI (bottom) at the first transitions, one column per model, one line per
    variant; an undefined value (constant sublayer) is marked with an x on the axis.

    tables: {model: :func:`robustness.first_transitions_table` output}.
    """
    if not tables:
        raise ValueError("tables is empty: pass {model: robustness.first_transitions_table(...)}")
    fig, axes = plt.subplots(2, len(tables), figsize=(3.4 * len(tables), 5.2), squeeze=False,
                             layout="constrained")
    for j, (model, df) in enumerate(tables.items()):
        variants = list(dict.fromkeys(df["variant"]))
        for i, (col, ylabel) in enumerate((("r_median", "median r"), ("mi_mean", "mean MI (nats)"))):
            ax = axes[i, j]
            for color, v in zip(_colors(len(variants)), variants):
                d = df[df["variant"] == v]
                y = d[col].to_numpy(dtype=float)
                ax.plot(d["transition"], y, "-o", color=color, ms=4, label=v)
                bad = ~np.isfinite(y)
                if bad.any():
                    ax.plot(d["transition"].to_numpy()[bad], np.zeros(bad.sum()), "x", color=color, ms=8,
                            clip_on=False)
            ax.set_xticks(sorted(set(df["transition"])))
            ax.set_xticklabels([f"{t}\n{k}" for t, k in
                                dict(zip(df["transition"], df["kind"])).items()], fontsize=7)
            ax.set_ylabel(ylabel, fontsize=8)
            if i == 0:
                ax.set_title(model, fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(title + " (x on the axis: undefined)", fontsize=10)
    return fig


_VERDICT_CODE = {"holds": 1.0, "undecided": 0.0, "fails": -1.0}


def plot_verdict_grid(verdicts: pd.DataFrame, *, model: str, title: str | None = None) -> Figure:
    """Verdict of every claim (rows) under every open choice (columns) for one model: green holds, red fails,
    grey undecided; a dot marks the book's headline setting.

    verdicts: :func:`robustness.verdict_table` output with ``model``, ``choice``, ``setting`` columns (headline
    readings only are drawn; other readings appear as their own columns).
    """
    from matplotlib.colors import ListedColormap

    from ..claims import REGISTRY

    v = verdicts[verdicts["model"] == model].copy()
    if v.empty:
        raise ValueError(f"no verdicts for model {model!r}; models: {sorted(set(verdicts['model']))}")
    head = v["claim"].map(lambda k: REGISTRY[k].headline)
    other = (v["choice"] == "baseline") & (v["reading"] != head)
    v.loc[other, "choice"], v.loc[other, "setting"] = "reading", v.loc[other, "reading"]
    v = v[(v["reading"] == head) | (v["choice"] == "reading")]
    cols = list(dict.fromkeys(zip(v["choice"], v["setting"].astype(str))))
    claims = [k for k in REGISTRY if k in set(v["claim"])]
    grid = np.full((len(claims), len(cols)), np.nan)
    for _, r in v.iterrows():
        grid[claims.index(r["claim"]), cols.index((r["choice"], str(r["setting"])))] = _VERDICT_CODE[r["verdict"]]
    fig, ax = plt.subplots(figsize=(1.2 + 0.42 * len(cols), 1.0 + 0.28 * len(claims)), layout="constrained")
    cmap = ListedColormap(["#d62728", "#c7c7c7", "#2ca02c"])
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-1.5, vmax=1.5, aspect="auto")
    ax.set_yticks(range(len(claims)), claims, fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{c}={s}" if c != "baseline" else "headline" for c, s in cols],
                  rotation=70, ha="right", fontsize=7)
    if ("baseline", str(v.loc[v["choice"] == "baseline", "setting"].iloc[0])) in cols:
        j = [c for c, _ in cols].index("baseline")
        ax.plot(np.full(len(claims), j), range(len(claims)), ".", color="k", ms=3)
    ax.set_title(title or f"{model}: verdicts (green holds, red fails, grey undecided)", fontsize=9)
    return fig
