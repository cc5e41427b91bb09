"""Notebooks 06 and 08: the residual stream's curves of models side by side, the precision's error, and the first
transitions under the token variants (the claims' values and verdicts:
:mod:`transformer_dynamics.plots.verdicts`).

Arrays and tables in (the outputs of :mod:`transformer_dynamics.robustness`), a matplotlib figure out. Models of
different depth line up on a *relative depth* axis (sublayer / n_sublayers, :func:`relative_depth`). In the
per-transition panels within-layer transitions (attn -> mlp) are solid lines with circles, cross-layer ones
(mlp -> next attn) dashed with squares; colour = model (or condition / precision). Curves come from
:func:`robustness.stream_curves` (keys ``"r"``, ``"cos"``, ``"ccos"``, ``"vel"``, ``"mi:<method>"`` per transition;
``"mag"``, ``"pcs"`` per sublayer; ``"rot_abs"``, ``"rot_null_abs:<kind>"``, ``"rot_exceed:<kind>"``, ``"ev_ratio"``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..robustness.curves import ROTATION_NULLS
from .style import category_colors, fig_ax, subplots

__all__ = [
    "relative_depth",
    "plot_depth_profile",
    "plot_successive_r",
    "plot_cosine",
    "plot_velocity",
    "plot_mutual_information",
    "plot_magnitude",
    "plot_norm",
    "plot_learning",
    "plot_rotations",
    "plot_rotation_exceed",
    "plot_cumulative_ev",
    "plot_pcs",
    "plot_relative_error",
    "plot_first_transitions",
]

_KINDS = {"within": ("-", "o", "within (attn→mlp)"), "cross": ("--", "s", "cross (mlp→attn)")}
_ROT_NAMES = {"sublayers": "layers shuffled", "points": "points shuffled", "steps": "steps shuffled"}


def relative_depth(n: int, *, transitions: bool = False) -> np.ndarray:
    """x-coordinates that line up models of different depth.

    Sublayers (``transitions=False``): ``s / n_sublayers`` for s = 0 .. n-1 -> (n,) in [0, 1).
    Transitions (``transitions=True``, ``n = n_transitions``): the midpoint of sublayers t and t + 1,
    ``(t + 0.5) / (n + 1)`` -> (n,).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need n >= 1; got {n}")
    if transitions:
        return (np.arange(n) + 0.5) / (n + 1)
    return np.arange(n) / n


def _check_curves(curves_by_label: Mapping[str, Mapping[str, Any]], key: str) -> None:
    if not curves_by_label:
        raise ValueError("curves_by_label is empty: pass {label: robustness.stream_curves(rs, groups)}")
    missing = [lab for lab, c in curves_by_label.items() if key not in c]
    if missing:
        raise ValueError(f"{key!r} missing from the curves of {missing}; compute robustness.stream_curves with its "
                         "group")


def plot_depth_profile(curves_by_label: Mapping[str, Mapping[str, Any]], key: str, *, ax=None, ylabel: str = "",
                       title: str = "", log: bool = False, normalise: bool = False) -> Figure:
    """A per-transition curve of several models on the relative-depth axis.

    curves_by_label: {label: :func:`robustness.stream_curves` output}; key: ``"r"``, ``"cos"``, ``"ccos"``,
    ``"vel"`` or ``"mi:<method>"`` (each ``(n_sublayers - 1,)``). ``normalise``: divide each curve by its mean
    (compares shapes of curves whose scales differ between models, e.g. velocity).
    """
    _check_curves(curves_by_label, key)
    fig, ax = fig_ax(ax)
    for color, (label, c) in zip(category_colors(len(curves_by_label)), curves_by_label.items()):
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
    """Fig 1C per model: median over units of each unit's r between successive sublayers (key ``"r"``)."""
    return plot_depth_profile(curves_by_label, "r", ax=ax, ylabel="median r over units", title=title)


def plot_cosine(curves_by_label, *, ax=None, centred: bool = False,
                title: str = "Cosine of successive RS vectors (1E)") -> Figure:
    """Fig 1E per model: mean over texts of the raw (key ``"cos"``) or, ``centred``, the centred (``"ccos"``)
    cosine similarity of successive RS vectors."""
    return plot_depth_profile(curves_by_label, "ccos" if centred else "cos", ax=ax,
                              ylabel="mean centred cosine" if centred else "mean cosine", title=title)


def plot_velocity(curves_by_label, *, ax=None, normalise: bool = True, log: bool = False,
                  title: str = "Velocity (1F)") -> Figure:
    """Fig 1F per model: mean over texts of ``||h_{t+1} - h_t||`` (key ``"vel"``); by default each model's curve
    divided by its mean (the models' activation scales differ)."""
    return plot_depth_profile(curves_by_label, "vel", ax=ax, ylabel="mean velocity", title=title,
                              normalise=normalise, log=log)


def plot_mutual_information(curves_by_label, *, ax=None, method: str = "kde",
                            title: str = "Mean MI over units (1H)") -> Figure:
    """Fig 1H per model: mean over the MI units of each unit's MI between successive sublayers (nats), key
    ``"mi:<method>"``."""
    return plot_depth_profile(curves_by_label, f"mi:{method}", ax=ax, ylabel=f"mean MI ({method}, nats)",
                              title=title)


def _sublayer_profile(curves_by_label, key: str, *, ax=None, ylabel: str = "", title: str = "",
                      log: bool = False, normalise: bool = False) -> Figure:
    _check_curves(curves_by_label, key)
    fig, ax = fig_ax(ax)
    for color, (label, c) in zip(category_colors(len(curves_by_label)), curves_by_label.items()):
        y = np.asarray(c[key], dtype=float)
        if y.ndim != 1:
            raise ValueError(f"{key} must be (n_sublayers,); got {y.shape} for {label!r}")
        if normalise:
            y = y / np.nanmean(y[np.isfinite(y)])
        x = relative_depth(y.size)
        ax.plot(x, np.where(np.isfinite(y), y, np.nan), "o-", ms=3, lw=1.4, color=color, label=label)
        bad = ~np.isfinite(y)
        if bad.any():       # not reached with the kept components: marked at the top of the axis
            ax.plot(x[bad], np.full(bad.sum(), 1.0), "^", ms=5, color=color, clip_on=False,
                    transform=ax.get_xaxis_transform())
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="relative depth (sublayer / n_sublayers)", ylabel=ylabel + (" / mean" if normalise else ""),
           title=title, xlim=(0, 1))
    ax.legend(fontsize=7)
    return fig


def plot_magnitude(curves_by_label, *, ax=None, normalise: bool = True, log: bool = False,
                   title: str = "Mean |activation| per sublayer (1B)") -> Figure:
    """Fig 1B per model: mean over units of ``|mean over texts|`` per sublayer (key ``"mag"``); by default divided by
    each model's mean."""
    return _sublayer_profile(curves_by_label, "mag", ax=ax, ylabel="mean |activation|", title=title,
                             normalise=normalise, log=log)


def plot_norm(curves_by_label, *, ax=None, normalise: bool = True, log: bool = False,
              title: str = "Norm of the RS vector per sublayer") -> Figure:
    """Mean over texts of ``||h_s||`` per sublayer (key ``"norm"``); by default each curve divided by its mean (random
    inits and trained models differ in scale)."""
    return _sublayer_profile(curves_by_label, "norm", ax=ax, ylabel="mean norm", title=title, normalise=normalise,
                             log=log)


def plot_learning(curves_by_label, *, ax=None, key: str = "r") -> Figure:
    """One Fig 1 statistic (``key``: ``"r"``, ``"cos"``, ``"norm"`` or ``"vel"``) of the trained model beside its
    references (random inits, permuted weights, the architecture's prediction): what learning adds. One colour per
    label (the first, the trained model, drawn last and thickest); per-transition curves with within-layer
    transitions solid and cross-layer dashed; velocity and norm divided by each curve's mean (their scales differ by
    construction)."""
    names = {"r": ("median successive r", "Correlation (1C)"), "cos": ("mean cosine", "Cosine (1E)"),
             "norm": ("mean norm / mean", "Norm of the RS vector"), "vel": ("mean velocity / mean", "Velocity (1F)")}
    if key not in names:
        raise ValueError(f"key must be one of {sorted(names)}; got {key!r}")
    _check_curves(curves_by_label, key)
    fig, ax = fig_ax(ax)
    items = list(curves_by_label.items())
    colors = category_colors(len(items))
    for i in list(range(1, len(items))) + [0]:
        label, c = items[i]
        y = np.asarray(c[key], dtype=float)
        if key in ("norm", "vel"):
            y = y / np.nanmean(y)
        lw = 2.2 if i == 0 else 1.2
        if key == "norm":
            ax.plot(relative_depth(y.size), y, "-", lw=lw, color=colors[i], label=label)
            continue
        x = relative_depth(y.size, transitions=True)
        for j, ls in enumerate(("-", "--")):
            t = np.arange(j, y.size, 2)
            ax.plot(x[t], y[t], ls=ls, lw=lw, color=colors[i], label=label if j == 0 else None)
    ylabel, title = names[key]
    ax.set(xlabel="relative depth", ylabel=ylabel, xlim=(0, 1),
           title=title + ("" if key == "norm" else " (within solid, cross dashed)"))
    ax.legend(fontsize=7)
    return fig


def plot_pcs(curves_by_label, *, ax=None, own: bool = False, variance: float | None = None,
             title: str = "PCs for the variance of each sublayer (4C)") -> Figure:
    """Fig 4C per model: the global PCs (key ``"pcs"``; ``own``: each sublayer's own PCA, ``"pcs_own"``) each
    sublayer needs for the variance threshold; a triangle at the top: not reached with the kept components."""
    v = f"{variance:.0%} of " if variance is not None else ""
    return _sublayer_profile(curves_by_label, "pcs_own" if own else "pcs", ax=ax,
                             ylabel=f"PCs for {v}the variance", title=title)


def _n_sublayers(c: Mapping[str, Any]) -> int:
    for key, extra in (("mag", 0), ("pcs", 0), ("sign", 0), ("r", 1), ("cos", 1), ("vel", 1)):
        if key in c:
            return int(np.asarray(c[key]).shape[-1]) + extra
    raise ValueError("per_sublayer needs a per-sublayer or per-transition curve (mag, pcs, r, cos or vel) beside the "
                     "rotation curves; compute robustness.stream_curves with the 'mean' or 'r' group too")


def plot_rotations(curves_by_label, *, ax=None, per_sublayer: bool = True,
                   title: str = "Rotations per unit against the surrogates (2B)") -> Figure:
    """Fig 2B per model: the mean ``|R|`` per unit of the mean trajectory (key ``"rot_abs"``) and of each surrogate
    (``"rot_null_abs:<kind>"``: layers, points or steps shuffled), as grouped bars. ``per_sublayer``: divided by
    the number of sublayers, so that models of different depth compare."""
    _check_curves(curves_by_label, "rot_abs")
    fig, ax = fig_ax(ax)
    kinds = [k for k in ROTATION_NULLS if any(f"rot_null_abs:{k}" in c for c in curves_by_label.values())]
    groups = ["data"] + [_ROT_NAMES[k] for k in kinds]
    width = 0.8 / len(curves_by_label)
    for i, (color, (label, c)) in enumerate(zip(category_colors(len(curves_by_label)), curves_by_label.items())):
        scale = _n_sublayers(c) if per_sublayer else 1
        y = [float(np.asarray(c["rot_abs"])) / scale] + [
            float(np.asarray(c.get(f"rot_null_abs:{k}", np.nan))) / scale for k in kinds]
        ax.bar(np.arange(len(groups)) + (i - (len(curves_by_label) - 1) / 2) * width, y, width=width, color=color,
               label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set(ylabel="mean |R| / n_sublayers" if per_sublayer else "mean |R|", title=title)
    ax.legend(fontsize=7)
    return fig


def plot_rotation_exceed(curves_by_label, *, ax=None,
                         title: str = "Units beyond their own surrogate (2C)") -> Figure:
    """Fig 2C per model: the share of units whose ``|R|`` exceeds their own surrogate's 95th percentile, per surrogate
    (keys ``"rot_exceed:<kind>"``), with the majority line at 0.5."""
    if not curves_by_label:
        raise ValueError("curves_by_label is empty: pass {label: robustness.stream_curves(rs, ('rot',))}")
    kinds = [k for k in ROTATION_NULLS if any(f"rot_exceed:{k}" in c for c in curves_by_label.values())]
    if not kinds:
        raise ValueError("no 'rot_exceed:<kind>' curves; compute robustness.stream_curves with the 'rot' group")
    fig, ax = fig_ax(ax)
    width = 0.8 / len(curves_by_label)
    for i, (color, (label, c)) in enumerate(zip(category_colors(len(curves_by_label)), curves_by_label.items())):
        y = [float(np.asarray(c.get(f"rot_exceed:{k}", np.nan))) for k in kinds]
        ax.bar(np.arange(len(kinds)) + (i - (len(curves_by_label) - 1) / 2) * width, y, width=width, color=color,
               label=label)
    ax.axhline(0.5, color="0.4", ls=":", lw=1, label="majority")
    ax.set_xticks(range(len(kinds)), [_ROT_NAMES[k] for k in kinds], fontsize=7)
    ax.set(ylabel="share of units beyond the surrogate", ylim=(0, 1), title=title)
    ax.legend(fontsize=7)
    return fig


def plot_cumulative_ev(curves_by_label, *, ax=None, threshold: float | None = 0.9,
                       title: str = "PCA: cumulative explained variance (4B)") -> Figure:
    """Fig 4B per model: cumulative explained-variance ratio of the global PCA against the number of
    components (log axis). curves_by_label: {label: :func:`robustness.stream_curves` output with ``"ev_ratio"``}."""
    _check_curves(curves_by_label, "ev_ratio")
    fig, ax = fig_ax(ax)
    for color, (label, c) in zip(category_colors(len(curves_by_label)), curves_by_label.items()):
        r = np.asarray(c["ev_ratio"], dtype=float)
        ax.plot(np.arange(1, r.size + 1), np.cumsum(r), color=color, lw=1.6, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="0.5", ls=":", lw=1, label=f"{threshold:.0%}")
    ax.set_xscale("log")
    ax.set(xlabel="number of components", ylabel="cumulative explained variance", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7)
    return fig


def plot_relative_error(errors: Mapping[str, np.ndarray], *, ax=None, log: bool = True,
                        title: str = "Relative error of the RS against float32") -> Figure:
    """Per-sublayer relative error ``||b - a|| / ||a||`` of each precision against the reference, on the
    relative-depth axis. errors: {label: (n_sublayers,)}, e.g. ``precision_difference(...)["rel_error"]``."""
    if not errors:
        raise ValueError("errors is empty: pass {label: precision_difference(a, b)['rel_error']}")
    fig, ax = fig_ax(ax)
    for color, (label, e) in zip(category_colors(len(errors)), errors.items()):
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
    fig, axes = subplots(2, len(tables), figsize=(3.4 * len(tables), 5.2), squeeze=False,
                             layout="constrained")
    for j, (model, df) in enumerate(tables.items()):
        variants = list(dict.fromkeys(df["variant"]))
        for i, (col, ylabel) in enumerate((("r_median", "median r"), ("mi_mean", "mean MI (nats)"))):
            ax = axes[i, j]
            for color, v in zip(category_colors(len(variants)), variants):
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
