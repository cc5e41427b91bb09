"""Figure 3 B–D (compressing autoencoder) and Figure 4 A–C (PCA): trajectories in a reduced space, the
distance between successive sublayers, and explained variance. Arrays in, a matplotlib figure out.

Conventions: ``traj: (n_samples, n_sublayers, 2)``; transition ``t`` goes from sublayer ``t`` to ``t + 1``,
even ``t`` within-layer (attn -> mlp, green), odd ``t`` cross-layer (mlp -> next attn, blue). Functions that
take one curve also take a mapping ``{label: curve}`` (e.g. original and shuffled) and draw one line each.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..arrays import within_mask
from .style import CROSS_COLOR, WITHIN_COLOR, fig_ax, sublayer_cmap, sublayer_ticks

__all__ = [
    "plot_training_history",
    "plot_bottleneck_trajectory",
    "plot_successive_distance",
    "plot_explained_variance_per_sublayer",
    "plot_cae_explained_variance",
    "plot_pca_trajectories",
    "plot_cumulative_explained_variance",
    "plot_pca_explained_variance_per_sublayer",
    "plot_components_for_variance",
]


def _curves(data) -> dict[str, np.ndarray]:
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v, dtype=float) for k, v in data.items()}
    return {"": np.asarray(data, dtype=float)}


def _traj(traj: np.ndarray, name: str = "traj") -> np.ndarray:
    traj = np.asarray(traj, dtype=float)
    if traj.ndim == 2:
        traj = traj[None]
    if traj.ndim != 3 or traj.shape[-1] < 2 or traj.shape[1] < 2:
        raise ValueError(f"{name} must be (n_samples, n_sublayers, >=2) or (n_sublayers, >=2); got {traj.shape}")
    return traj[..., :2]


def _draw_mean_path(ax, mean: np.ndarray, *, cmap_name: str = "viridis", lw: float = 2.0, size: float = 30,
                    colorbar: bool = True):
    """Mean path: segments coloured within/cross, points coloured by sublayer depth."""
    s = mean.shape[0]
    segs = np.stack([mean[:-1], mean[1:]], axis=1)
    colors = [WITHIN_COLOR if t % 2 == 0 else CROSS_COLOR for t in range(s - 1)]
    styles = ["-" if t % 2 == 0 else "--" for t in range(s - 1)]
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=lw, linestyles=styles, zorder=2))
    sc = ax.scatter(mean[:, 0], mean[:, 1], c=np.arange(s), cmap=sublayer_cmap(cmap_name), s=size, zorder=3,
                    edgecolors="k", linewidths=0.3)
    ax.scatter(mean[0, 0], mean[0, 1], marker="*", s=size * 5, c="k", zorder=4, label="first sublayer")
    if colorbar:
        ax.figure.colorbar(sc, ax=ax, label="sublayer", shrink=0.8)
    handles = [Line2D([], [], color=WITHIN_COLOR, lw=lw, ls="-", label="within layer (attn→mlp)"),
               Line2D([], [], color=CROSS_COLOR, lw=lw, ls="--", label="cross layer (mlp→next attn)")]
    return handles


def plot_training_history(history, *, ax=None, title: str = "CAE training",
                          ylabel: str = "MSE (standardised units)") -> Figure:
    """Fig 3A (training): loss per epoch, ``history: {"train_loss": (n_epochs,), "val_loss": (n_epochs,)}``
    (a :class:`~transformer_dynamics.reduce.CAEResult`'s ``.history``) or ``{label: history}`` (e.g. original
    and shuffled); train solid, validation dashed in the same colour, log y axis."""
    runs = history if isinstance(history, Mapping) and "train_loss" not in history else {"": history}
    fig, ax = fig_ax(ax, (5.5, 3.5))
    for label, h in runs.items():
        train = np.asarray(h["train_loss"], dtype=float)
        if train.ndim != 1:
            raise ValueError(f"train_loss must be (n_epochs,); got {train.shape}")
        prefix = f"{label} " if label else ""
        line = ax.plot(np.arange(train.shape[0]), train, label=f"{prefix}train")[0]
        if "val_loss" in h:
            val = np.asarray(h["val_loss"], dtype=float)
            ax.plot(np.arange(val.shape[0]), val, ls="--", color=line.get_color(), label=f"{prefix}validation")
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log", title=title)
    ax.legend(fontsize=7)
    return fig


def plot_bottleneck_trajectory(traj: np.ndarray, *, ax=None, title: str = "CAE bottleneck: mean trajectory",
                               xlabel: str = "bottleneck 1", ylabel: str = "bottleneck 2") -> Figure:
    """Fig 3B: the mean over samples of ``traj: (n_samples, n_sublayers, 2)`` (or an already averaged
    ``(n_sublayers, 2)``), points coloured by sublayer, within-layer steps solid green, cross-layer dashed blue."""
    traj = _traj(traj)
    fig, ax = fig_ax(ax, (4.5, 4.0))
    mean = traj.mean(axis=0)
    handles = _draw_mean_path(ax, mean)
    ax.autoscale_view()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def plot_successive_distance(dist, *, ax=None, title: str = "Distance between successive sublayers",
                             ylabel: str = "distance in reduced space") -> Figure:
    """Fig 3C: ``dist: (n_samples, n_sublayers-1)`` (or ``(n_sublayers-1,)``, or ``{label: ...}``); mean over
    samples ± s.e.m. against the transition index, markers green (within-layer) / blue (cross-layer)."""
    fig, ax = fig_ax(ax, (5.5, 3.5))
    for i, (label, d) in enumerate(_curves(dist).items()):
        d = d[None] if d.ndim == 1 else d
        if d.ndim != 2:
            raise ValueError(f"dist must be (n_samples, n_transitions) or (n_transitions,); got {d.shape}")
        t = np.arange(d.shape[1])
        m = d.mean(0)
        sem = d.std(0, ddof=1) / np.sqrt(d.shape[0]) if d.shape[0] > 1 else np.zeros_like(m)
        line = ax.plot(t, m, color="0.3" if i == 0 else None, lw=1, label=label or None, zorder=1)[0]
        ax.fill_between(t, m - sem, m + sem, color=line.get_color(), alpha=0.2, lw=0)
        w = within_mask(len(t))
        ax.scatter(t[w], m[w], color=WITHIN_COLOR, s=14, zorder=2, marker="o" if i == 0 else "s")
        ax.scatter(t[~w], m[~w], color=CROSS_COLOR, s=14, zorder=2, marker="o" if i == 0 else "s")
    handles = [Line2D([], [], color=WITHIN_COLOR, marker="o", ls="", label="within layer"),
               Line2D([], [], color=CROSS_COLOR, marker="o", ls="", label="cross layer")]
    handles += [h for h in ax.get_lines() if h.get_label() and not h.get_label().startswith("_")]
    ax.legend(handles=handles, fontsize=7)
    ax.set(xlabel="transition t (sublayer t → t+1)", ylabel=ylabel, title=title)
    return fig


def plot_explained_variance_per_sublayer(ev, *, ax=None, title: str = "Explained variance per sublayer",
                                         ylabel: str = "explained variance", ylim=None, labels=None) -> Figure:
    """Explained variance per sublayer: ``ev: (n_sublayers,)`` or ``{label: (n_sublayers,)}``; attn sublayers
    (even) as circles, mlp sublayers (odd) as squares. With ``ylim=(low, high)``, values below ``low`` are
    drawn as downward triangles on the bottom edge (explained variance can be very negative where texts
    barely differ). ``labels``: the sublayers' names (length ``n_sublayers``) for the x ticks."""
    fig, ax = fig_ax(ax, (5.5, 3.5))
    low = None if ylim is None else ylim[0]
    for label, e in _curves(ev).items():
        if e.ndim != 1:
            raise ValueError(f"ev must be (n_sublayers,); got {e.shape}")
        s = np.arange(e.shape[0])
        shown = e if low is None else np.where(e < low, np.nan, e)
        line = ax.plot(s, shown, lw=1.2, label=label or None)[0]
        attn = s % 2 == 0  # sublayer 2l is before attention, 2l + 1 before the MLP
        ax.scatter(s[attn], shown[attn], color=line.get_color(), s=12, marker="o")
        ax.scatter(s[~attn], shown[~attn], color=line.get_color(), s=12, marker="s")
        if low is not None and np.any(e < low):
            below = s[e < low]
            ax.scatter(below, np.full(below.shape, low), color=line.get_color(), s=30, marker="v", clip_on=False)
    ax.set(xlabel="sublayer (even: before attn, odd: before mlp)", ylabel=ylabel, title=title)
    if labels is not None:
        sublayer_ticks(ax, max(e.shape[0] for e in _curves(ev).values()), labels)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if any(_curves(ev)):
        ax.legend(fontsize=7)
    return fig


def plot_cae_explained_variance(ev, *, ax=None, title: str = "CAE: explained variance on the test set",
                                **kwargs) -> Figure:
    """Fig 3D: CAE reconstruction EV per sublayer on the test texts, ``(n_sublayers,)`` or ``{label: ...}``;
    keywords as :func:`plot_explained_variance_per_sublayer` (``ylim``, ``ylabel``)."""
    return plot_explained_variance_per_sublayer(ev, ax=ax, title=title, **kwargs)


def plot_pca_trajectories(traj: np.ndarray, *, ax=None, max_samples: int = 1000, seed: int = 0,
                          title: str = "PCA trajectories", alpha: float | None = None) -> Figure:
    """Fig 4A: every sample's trajectory ``traj: (n_samples, n_sublayers, 2)`` as a thin grey line (at most
    ``max_samples``, a seeded random subset) and the per-sublayer mean coloured by sublayer, within-layer
    steps solid green, cross-layer dashed blue."""
    traj = _traj(traj)
    fig, ax = fig_ax(ax, (5.0, 4.2))
    n = traj.shape[0]
    pick = np.random.default_rng(seed).choice(n, size=min(n, max_samples), replace=False) if n > max_samples \
        else np.arange(n)
    a = alpha if alpha is not None else float(np.clip(20.0 / max(len(pick), 1), 0.03, 0.6))
    ax.add_collection(LineCollection(list(traj[pick]), colors="0.2", linewidths=0.4, alpha=a, zorder=1))
    handles = _draw_mean_path(ax, traj.mean(0))
    ax.autoscale_view()
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    handles.append(Line2D([], [], color="0.2", lw=0.6, label=f"individual texts ({len(pick)})"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def plot_cumulative_explained_variance(ratio, *, ax=None, threshold: float | None = 0.9,
                                       max_components: int | None = None,
                                       title: str = "PCA: cumulative explained variance") -> Figure:
    """Fig 4B: cumulative explained-variance ratio against the number of components. ``ratio: (K,)`` the
    per-component ``explained_variance_ratio_`` (or ``{label: ...}``); a dotted line marks ``threshold``."""
    fig, ax = fig_ax(ax, (5.0, 3.5))
    for label, r in _curves(ratio).items():
        if r.ndim != 1:
            raise ValueError(f"ratio must be (n_components,); got {r.shape}")
        r = r[:max_components] if max_components else r
        ax.plot(np.arange(1, r.shape[0] + 1), np.cumsum(r), lw=1.5, label=label or None)
    if threshold is not None:
        ax.axhline(threshold, color="0.5", ls=":", lw=1, label=f"{threshold:.0%}")
    ax.set_xscale("log")
    ax.set(xlabel="number of components", ylabel="cumulative explained variance", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return fig


def plot_pca_explained_variance_per_sublayer(ev, *, ax=None, n_components: int | None = 100, **kwargs) -> Figure:
    """Fig 4C: per-sublayer explained variance with the first ``n_components`` PCs, ``(n_sublayers,)`` or
    ``{label: ...}``; keywords as :func:`plot_explained_variance_per_sublayer`."""
    title = f"PCA: EV per sublayer ({n_components} PCs)" if n_components else "PCA: EV per sublayer"
    return plot_explained_variance_per_sublayer(ev, ax=ax, title=kwargs.pop("title", title), **kwargs)


def plot_components_for_variance(n_pcs, n_kept: int | None = None, *, ax=None, threshold: float | None = 0.9,
                                 title: str | None = None, labels=None) -> Figure:
    """Number of PCs each sublayer needs to reach ``threshold`` explained variance, ``n_pcs: (n_sublayers,)``
    or ``{label: ...}``. NaN (undefined) is a gap; ``inf`` (not reached with the components kept) an upward
    triangle on the top edge, which sits at ``n_kept`` when given (the legend then says so; positional too, so
    that a grid of panels can give it per panel). ``title``: default "PCs needed for <threshold> of each
    sublayer's variance"; ``labels``: the sublayers' names (length ``n_sublayers``) for the x ticks."""
    fig, ax = fig_ax(ax, (5.5, 3.5))
    curves = _curves(n_pcs)
    finite = [k[np.isfinite(k)] for k in curves.values()]
    top = max([f.max() for f in finite if f.size], default=1.0) * 1.08
    top = max(top, n_kept) if n_kept else top
    for label, k in curves.items():
        if k.ndim != 1:
            raise ValueError(f"n_pcs must be (n_sublayers,); got {k.shape}")
        s = np.arange(k.shape[0])
        line = ax.plot(s, np.where(np.isfinite(k), k, np.nan), marker="o", ms=3, lw=1.2, label=label or None)[0]
        if np.isposinf(k).any():
            ax.scatter(s[np.isposinf(k)], np.full(np.isposinf(k).sum(), top), marker="^", s=25,
                       color=line.get_color(), clip_on=False)
    not_reached = any(np.isposinf(k).any() for k in curves.values())
    if not_reached:
        ax.set_ylim(0, top)
    what = f"{threshold:.0%}" if threshold is not None else "a share"
    ax.set(xlabel="sublayer", ylabel=f"PCs for {what} of the variance",
           title=title if title is not None else f"PCs needed for {what} of each sublayer's variance")
    if labels is not None:
        sublayer_ticks(ax, max(k.shape[0] for k in curves.values()), labels)
    handles = [h for h in ax.get_lines() if h.get_label() and not h.get_label().startswith("_")]
    if not_reached:
        handles.append(Line2D([], [], color="0.4", marker="^", ls="",
                              label=f"not reached with {n_kept} PCs" if n_kept else "not reached"))
    if handles:
        ax.legend(handles=handles, fontsize=7)
    return fig
