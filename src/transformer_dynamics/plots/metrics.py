"""Figure 1 B–H: mean activations, per-unit correlations, cosine similarity, velocity and mutual
information over the sublayers. Arrays in (the outputs of :mod:`transformer_dynamics.metrics`), a
matplotlib figure out; every function takes an optional ``ax`` to draw into.

Conventions: transition ``t`` goes from sublayer ``t`` to ``t + 1``; even ``t`` is within-layer
(attn -> mlp, green), odd ``t`` cross-layer (mlp -> next attn, blue). ``labels`` are sublayer names such
as ``capture.sublayer_labels(n_layers)``; without them axes show indices.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..arrays import cross_mask, within_mask
from .style import CROSS_COLOR, WITHIN_COLOR, fig_ax, sublayer_ticks

__all__ = [
    "plot_mean_activations",
    "plot_successive_correlation",
    "plot_correlation_histogram",
    "plot_cosine_similarity",
    "plot_velocity",
    "plot_mi_units",
    "plot_mi_mean",
]

_KIND_LABEL = {"within": "within layer (attn→mlp)", "cross": "cross layer (mlp→next attn)"}


def _as2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D; got shape {x.shape}")
    return x


@contextlib.contextmanager
def _quiet_nan():
    """Silence numpy's warnings about all-NaN slices: an undefined transition (e.g. a first sublayer that is
    constant over the texts) is drawn as a gap, which is expected, not worth a warning in the book."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        with np.errstate(all="ignore"):
            yield


def _transition_ticks(ax, n_transitions: int, labels: Sequence[str] | None):
    """Transition t is labelled by its source sublayer ``labels[t]`` (the arrow goes to t + 1)."""
    sublayer_ticks(ax, n_transitions, None if labels is None else list(labels)[:n_transitions])
    ax.set_xlabel("transition t → t+1" + (" (source sublayer)" if labels is not None else ""))


def _split_idx(n_transitions: int):
    t = np.arange(n_transitions)
    return {"within": t[within_mask(n_transitions)], "cross": t[cross_mask(n_transitions)]}


def plot_mean_activations(mean, order=None, *, labels: Sequence[str] | None = None, ax=None,
                          vmax: float | None = None, title: str = "Mean activation") -> Figure:
    """Fig 1B: heat map of ``mean: (n_sublayers, d_model)`` (from ``metrics.mean_activations``), units
    (rows) sorted by ``order`` (``metrics.unit_order``; None: as given), sublayers along x. Diverging colours
    symmetric about 0, clipped at ``vmax`` (default: the 99th percentile of ``|mean|``, so that a few massive
    units do not wash out the rest)."""
    mean = _as2d(mean, "mean")
    if order is not None:
        mean = mean[:, np.asarray(order)]
    fig, ax = fig_ax(ax)
    if vmax is None:
        vmax = float(np.nanpercentile(np.abs(mean), 99)) or 1.0
    im = ax.imshow(mean.T, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                   origin="lower")
    fig.colorbar(im, ax=ax, label="mean activation", shrink=0.8)
    sublayer_ticks(ax, mean.shape[0], labels)
    ax.set_xlabel("sublayer")
    ax.set_ylabel("unit (sorted by last-sublayer mean)" if order is not None else "unit")
    ax.set_title(title)
    return fig


def _per_unit_lines(ax, values: np.ndarray, color: str, t_idx: np.ndarray, max_lines: int, seed: int = 0):
    """Faint per-unit lines over the transitions ``t_idx``; values: (n_t, n_units)."""
    n_units = values.shape[1]
    pick = np.arange(n_units)
    if n_units > max_lines:
        pick = np.sort(np.random.default_rng(seed).choice(n_units, max_lines, replace=False))
    segs = [np.column_stack([t_idx, values[:, u]]) for u in pick]
    ax.add_collection(LineCollection(segs, colors=color, linewidths=0.4, alpha=0.15, zorder=1))


def plot_successive_correlation(r, *, labels: Sequence[str] | None = None, ax=None, max_lines: int = 200,
                                title: str = "Successive-sublayer correlation") -> Figure:
    """Fig 1C: Pearson r of each unit between sublayers t and t + 1, ``r: (n_transitions, d_model)``
    (``metrics.successive_correlation``). Faint lines: up to ``max_lines`` units; thick lines: the median
    over units, within-layer transitions green, cross-layer blue; band: interquartile range."""
    r = _as2d(r, "r")
    fig, ax = fig_ax(ax)
    for kind, t_idx in _split_idx(r.shape[0]).items():
        if t_idx.size == 0:
            continue
        color = WITHIN_COLOR if kind == "within" else CROSS_COLOR
        vals = r[t_idx]
        _per_unit_lines(ax, vals, color, t_idx, max_lines)
        with _quiet_nan():
            q1, med, q3 = np.nanpercentile(vals, [25, 50, 75], axis=1)
        ax.fill_between(t_idx, q1, q3, color=color, alpha=0.25, lw=0, zorder=2)
        ax.plot(t_idx, med, "-o", color=color, ms=3, lw=2, zorder=3, label=f"{_KIND_LABEL[kind]}, median")
    ax.autoscale_view()
    ax.set_ylabel("Pearson r (unit, t vs t+1)")
    _transition_ticks(ax, r.shape[0], labels)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    return fig


def plot_correlation_histogram(density, edges, order=None, *, ax=None,
                               title: str = "Per-unit distribution of correlations") -> Figure:
    """Fig 1D: per-unit density of correlations, ``density: (d_model, n_bins)`` and ``edges: (n_bins+1,)``
    from ``metrics.correlation_histogram``. Heat map, units as rows (sorted by ``order``; None: by their
    median correlation), correlation bins along x; a white line shows the density pooled over units."""
    density = _as2d(density, "density")
    edges = np.asarray(edges, dtype=float)
    if edges.shape != (density.shape[1] + 1,):
        raise ValueError(f"edges must have n_bins + 1 = {density.shape[1] + 1} entries; got {edges.shape}")
    if order is None:
        centres = (edges[:-1] + edges[1:]) / 2
        cdf = np.nancumsum(density * np.diff(edges), axis=1)
        order = np.argsort(centres[np.minimum((cdf < 0.5).sum(1), centres.size - 1)], kind="stable")
    d = density[np.asarray(order)]
    fig, ax = fig_ax(ax)
    im = ax.imshow(d, aspect="auto", cmap="magma", origin="lower", interpolation="nearest",
                   extent=(edges[0], edges[-1], 0, d.shape[0]))
    fig.colorbar(im, ax=ax, label="density", shrink=0.8)
    pooled = np.nanmean(density, axis=0)
    ax2 = ax.twinx()
    ax2.plot((edges[:-1] + edges[1:]) / 2, pooled, color="w", lw=2)
    ax2.set_ylim(0, max(float(np.nanmax(pooled)) * 1.1, 1e-9) if np.isfinite(pooled).any() else 1)
    ax2.set_yticks([])
    ax.set_xlabel("Pearson r")
    ax.set_ylabel("unit")
    ax.set_title(title)
    return fig


def _named_curves(values, what: str) -> list[tuple[str, str, np.ndarray]]:
    """``(line style, name, 2-D array)`` per curve of ``values``: one array (name "") or {name: array}."""
    curves = values if isinstance(values, Mapping) else {"": values}
    return [(("-", "--", ":", "-.")[i % 4], name, _as2d(v, what)) for i, (name, v) in enumerate(curves.items())]


def _plot_transition_profile(values, *, labels, ax, ylabel, title, stat: str = "median") -> Figure:
    """values: (n_samples, n_transitions), or a mapping {name: such array} drawn with different line styles.
    Median (or mean) over samples with the interquartile band, coloured by transition kind."""
    fig, ax = fig_ax(ax)
    n_t = None
    for style, name, v in _named_curves(values, "values"):
        n_t = v.shape[1]
        with _quiet_nan():
            q1, q3 = np.nanpercentile(v, [25, 75], axis=0)
            centre = np.nanmedian(v, axis=0) if stat == "median" else np.nanmean(v, axis=0)
        for kind, t_idx in _split_idx(n_t).items():
            if t_idx.size == 0:
                continue
            color = WITHIN_COLOR if kind == "within" else CROSS_COLOR
            label = _KIND_LABEL[kind] + (f" — {name}" if name else "")
            ax.fill_between(t_idx, q1[t_idx], q3[t_idx], color=color, alpha=0.2, lw=0)
            ax.plot(t_idx, centre[t_idx], style, marker="o", ms=3, color=color, lw=1.8, label=label)
    ax.set_ylabel(ylabel)
    _transition_ticks(ax, n_t, labels)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def plot_cosine_similarity(cos, *, labels: Sequence[str] | None = None, ax=None,
                           title: str = "Cosine of successive RS vectors") -> Figure:
    """Fig 1E: ``cos: (n_samples, n_transitions)`` (``metrics.cosine_similarity`` or its centred version),
    or a mapping {name: array} (e.g. raw and centred). Median over samples with the interquartile band;
    within-layer green, cross-layer blue."""
    return _plot_transition_profile(cos, labels=labels, ax=ax, ylabel="cosine similarity", title=title)


def plot_velocity(vel, *, labels: Sequence[str] | None = None, ax=None, log: bool = False,
                  title: str = "Velocity ||h(t+1) − h(t)||") -> Figure:
    """Fig 1F: ``vel: (n_samples, n_transitions)`` from ``metrics.velocity`` (or {name: array}). Median
    over samples with the interquartile band; within-layer green, cross-layer blue."""
    fig = _plot_transition_profile(vel, labels=labels, ax=ax, ylabel="velocity (L2)", title=title)
    if log:
        fig.axes[0].set_yscale("log") if ax is None else ax.set_yscale("log")
    return fig


def plot_mi_units(mi, order=None, *, labels: Sequence[str] | None = None, ax=None, vmax: float | None = None,
                  title: str = "MI per unit, t vs t+1") -> Figure:
    """Fig 1G: heat map of ``mi: (n_transitions, n_units)`` in nats (``mutual_info.mutual_information``),
    units as rows sorted by ``order`` (None: as given), transitions along x."""
    mi = _as2d(mi, "mi")
    if order is not None:
        mi = mi[:, np.asarray(order)]
    fig, ax = fig_ax(ax)
    if vmax is None:
        vmax = float(np.nanpercentile(mi, 99)) if np.isfinite(mi).any() else 1.0
    im = ax.imshow(mi.T, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, origin="lower",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="MI (nats)", shrink=0.8)
    _transition_ticks(ax, mi.shape[0], labels)
    ax.set_ylabel("unit")
    ax.set_title(title)
    return fig


def plot_mi_mean(mi, *, labels: Sequence[str] | None = None, ax=None,
                 title: str = "MI averaged over units") -> Figure:
    """Fig 1H: mean over units of ``mi: (n_transitions, n_units)`` per transition, or a mapping
    {name: mi} (e.g. one per estimator) drawn with different line styles. Within-layer green points,
    cross-layer blue, joined by a grey line in transition order."""
    fig, ax = fig_ax(ax)
    n_t = None
    for i, (style, name, m) in enumerate(_named_curves(mi, "mi")):
        n_t = m.shape[0]
        with _quiet_nan():
            mean = np.nanmean(m, axis=1)
        ax.plot(np.arange(n_t), mean, style, color="0.5", lw=1, label=name or None)
        for kind, t_idx in _split_idx(n_t).items():
            color = WITHIN_COLOR if kind == "within" else CROSS_COLOR
            ax.plot(t_idx, mean[t_idx], "o", ms=4, color=color, label=_KIND_LABEL[kind] if i == 0 else None)
    ax.set_ylabel("mean MI over units (nats)")
    _transition_ticks(ax, n_t, labels)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig
