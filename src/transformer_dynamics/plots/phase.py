"""Figure 2 A–C: activation-gradient phase portraits of single units and their rotation counts against the
sublayer-shuffle null. Arrays in (the outputs of :mod:`transformer_dynamics.phase`), a matplotlib figure
out; every function takes an optional ``ax`` / ``axes`` to draw into.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .. import phase
from .style import fig_ax, figure, sublayer_cmap, subplots

__all__ = ["plot_phase_portraits", "plot_phase_portraits_by_model", "plot_rotation_histogram",
           "plot_rotations_sorted"]

OBS_COLOR = "#d62728"
NULL_COLOR = "0.55"




def _check_obs_null(observed, null) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(observed, dtype=float)
    nul = np.asarray(null, dtype=float)
    if obs.ndim != 1:
        raise ValueError(f"observed must be 1-D (d_model,); got shape {obs.shape}")
    if nul.ndim != 2 or nul.shape[1] != obs.shape[0]:
        raise ValueError(f"null must have shape (n_shuffles, {obs.shape[0]}); got {nul.shape}")
    return obs, nul


def plot_phase_portraits(traj, units: Sequence[int] | None = None, *, rotations=None, ncols: int = 4,
                         axes=None, cmap: str = "viridis", labels: Sequence[str] | None = None,
                         suptitle: str | None = "Activation-gradient portraits") -> Figure:
    """Fig 2A: a grid of phase portraits ``(x_l, y_l)`` (activation vs its gradient over sublayers, both
    centred at sublayer 0), one panel per unit, the path coloured by sublayer.

    traj: (n_sublayers, d_model) trajectories (e.g. ``rs.mean(0)``); units: which columns to draw
    (default: the first 16); rotations: optional (d_model,) counts to show in the titles (default:
    computed with :func:`phase.count_rotations`); axes: optional array of at least ``len(units)`` axes;
    labels: sublayer names for the colour bar's end ticks.
    """
    traj = np.asarray(traj, dtype=float)
    if traj.ndim != 2:
        raise ValueError(f"traj must be 2-D (n_sublayers, d_model); got shape {traj.shape}")
    n, D = traj.shape
    units = list(range(min(16, D))) if units is None else [int(u) for u in units]
    if not units or min(units) < 0 or max(units) >= D:
        raise ValueError(f"units must be a non-empty list of indices in [0, {D}); got {units}")
    sel = traj[:, units].T  # (k, n)
    x, y = phase.phase_portrait(sel)
    rot = phase.count_rotations(sel) if rotations is None else np.asarray(rotations)[units]
    if axes is None:
        nrows = int(np.ceil(len(units) / ncols))
        fig, axes = subplots(nrows, min(ncols, len(units)), figsize=(2.4 * min(ncols, len(units)),
                                                                           2.3 * nrows),
                                 layout="constrained", squeeze=False)
    axes = np.asarray(axes).ravel()
    if axes.size < len(units):
        raise ValueError(f"got {axes.size} axes for {len(units)} units")
    fig = axes[0].figure
    cm = sublayer_cmap(cmap)
    norm = Normalize(0, n - 1)
    for ax, u, xi, yi, r in zip(axes, units, x, y, rot):
        pts = np.stack([xi, yi], axis=-1)
        segs = np.stack([pts[:-1], pts[1:]], axis=1)  # (n-1, 2, 2)
        lc = LineCollection(segs, cmap=cm, norm=norm, linewidths=1.2)
        lc.set_array(np.arange(n - 1) + 0.5)
        ax.add_collection(lc)
        ax.scatter(xi, yi, c=np.arange(n), cmap=cm, norm=norm, s=6, zorder=3)
        ax.plot(xi[0], yi[0], marker="o", mfc="none", mec="k", ms=6, zorder=4)
        ax.autoscale_view()
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.axvline(0, color="0.85", lw=0.6, zorder=0)
        ax.set_title(f"unit {u}  R={float(r):+.1f}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.locator_params(nbins=3)
    for ax in axes[len(units):]:
        ax.set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cm, norm=norm)
    cb = fig.colorbar(sm, ax=list(axes[: len(units)]), shrink=0.6, label="sublayer")
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} sublayers")
        cb.set_ticks([0, n - 1], labels=[labels[0], labels[-1]])
    axes[0].figure.supxlabel("activation $a_l - a_0$", fontsize=9)
    axes[0].figure.supylabel("gradient $\\nabla a_l - \\nabla a_0$", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def plot_phase_portraits_by_model(trajs: dict, units: dict, *, rotations: dict | None = None,
                                  labels: dict | None = None, ncols: int = 8, panel_size=(2.0, 2.0),
                                  cmap: str = "viridis", suptitle: str | None = None) -> Figure:
    """Fig 2A for several models: one row of portraits (a subfigure) per model, each drawn by
    :func:`plot_phase_portraits` with its own sublayer colour bar (models differ in depth and width).

    trajs: ``{name: (n_sublayers, d_model)}`` (shapes may differ between names); units: ``{name: indices}``
    into that model's ``d_model``; rotations: optional ``{name: (d_model,)}`` counts for the titles;
    labels: optional ``{name: sublayer names}`` (length that model's ``n_sublayers``); ncols: portraits
    per line within a model's row. Each row is titled with its name. Returns the figure.
    """
    if not trajs:
        raise ValueError("trajs is empty: give at least one model's trajectories")
    missing = [name for name in trajs if name not in units]
    if missing:
        raise ValueError(f"no units given for {missing}")
    lines = {name: int(np.ceil(len(units[name]) / ncols)) for name in trajs}
    width = min(ncols, max(len(units[name]) for name in trajs))
    fig = figure(figsize=(panel_size[0] * width + 1.0, sum(panel_size[1] * k + 0.6 for k in lines.values())),
                     layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(trajs), 1, height_ratios=[k + 0.3 for k in lines.values()]))
    for sub, (name, traj) in zip(subfigs, trajs.items()):
        axes = sub.subplots(lines[name], width, squeeze=False)
        plot_phase_portraits(traj, units[name], axes=axes, cmap=cmap,
                             rotations=None if rotations is None else rotations[name],
                             labels=None if labels is None else labels[name], suptitle=None)
        sub.suptitle(str(name), fontsize=10, fontweight="bold")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def plot_rotation_histogram(observed, null, *, bins: int | Sequence[float] = 60, ax=None,
                            label: str = "RS units", null_label: str = "layer-shuffle null",
                            title: str = "Rotations per unit") -> Figure:
    """Fig 2B: density histograms of the observed rotation counts per unit and of the pooled null.

    observed: (d_model,); null: (n_shuffles, d_model). Dashed lines mark both means.
    """
    obs, nul = _check_obs_null(observed, null)
    fig, ax = fig_ax(ax)
    lo = min(obs.min(), np.percentile(nul, 0.1))
    hi = max(obs.max(), np.percentile(nul, 99.9))
    edges = np.linspace(lo, hi, bins + 1) if np.isscalar(bins) else np.asarray(bins)
    sns.histplot(x=nul.ravel(), bins=edges, stat="density", color=NULL_COLOR, alpha=0.6, linewidth=0, ax=ax,
                 label=null_label)
    sns.histplot(x=obs, bins=edges, stat="density", element="step", color=OBS_COLOR, alpha=0.55, ax=ax,
                 label=label)
    ax.axvline(obs.mean(), color=OBS_COLOR, ls="--", lw=1.2, label=f"mean {obs.mean():.2f}")
    ax.axvline(nul.mean(), color="0.3", ls="--", lw=1.2, label=f"null mean {nul.mean():.2f}")
    ax.set_xlabel("rotations R (counter-clockwise > 0)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_rotations_sorted(observed, null, *, percentiles: tuple[float, float] = (2.5, 97.5), ax=None,
                          title: str = "Rotations per unit vs shuffle null") -> Figure:
    """Fig 2C: the rotation count of every unit, units sorted by it, with each unit's null band
    (``percentiles`` of its own shuffles) and the null's median in the same order.

    observed: (d_model,); null: (n_shuffles, d_model).
    """
    obs, nul = _check_obs_null(observed, null)
    order = np.argsort(obs)
    lo, hi = phase.null_band(nul, percentiles)
    med = np.median(nul, axis=0)
    rank = np.arange(obs.size)
    fig, ax = fig_ax(ax, figsize=(6.0, 3.8))
    ax.fill_between(rank, lo[order], hi[order], color=NULL_COLOR, alpha=0.35, lw=0,
                    label=f"null {percentiles[0]:g}–{percentiles[1]:g}%")
    ax.plot(rank, med[order], color="0.35", lw=0.8, label="null median")
    ax.plot(rank, obs[order], color=OBS_COLOR, lw=1.4, label="RS units")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("unit (sorted by R)")
    ax.set_ylabel("rotations R")
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return fig
