"""Figures of the local dynamics (chapter 7): measures of the per-sublayer Jacobians over depth, eigenvalues in
the complex plane, per-text values by reference, Lyapunov exponents against perturbation recovery, jPCA planes.
One function per panel, arrays in, figures out; :func:`measure_grid` lays a measure out for several models.
References are labelled as :data:`transformer_dynamics.dynamics.REFERENCE_LABELS` names them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .style import CROSS_COLOR, WITHIN_COLOR, fig_ax, grid, sublayer_cmap, sublayer_ticks

__all__ = ["REFERENCE_COLORS", "measure_grid", "plot_benettin_convergence", "plot_by_reference", "plot_eigenvalues",
           "plot_exponents", "plot_exponents_vs_recovery", "plot_jpca_control", "plot_jpca_plane", "plot_measure"]

#: One colour per reference: the trained model on its texts and on token-shuffled texts, and the two random inits.
REFERENCE_COLORS = {"trained": "#1f77b4", "trained, shuffled texts": "#ff7f0e", "random init": "#7f7f7f",
                    "random init (matched)": "#bcbd22"}
_KIND_STYLE = {"attn": dict(ls="-", marker="o"), "mlp": dict(ls="--", marker="s")}


def _band(ax, x, values, color, label, style):
    """Median over texts (line; NaN columns leave a gap) and interquartile band of ``values: (n, len(x))``."""
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN columns: sublayers not measured
        mid = np.nanmedian(values, axis=0)
        ax.plot(x, mid, color=color, label=label, ms=3, lw=1.2, **style)
        if values.shape[0] > 1:
            lo, hi = np.nanpercentile(values, [25, 75], axis=0)
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def plot_measure(values: Mapping[str, np.ndarray], *, title: str = "", ylabel: str = "", labels=None,
                 kinds: Sequence[str] = ("attn", "mlp"), ax=None):
    """A per-sublayer measure over depth, attention sublayers (even, solid circles) and MLP sublayers (odd,
    dashed squares) apart, one colour per reference.

    values: ``{reference: (n_texts, n_sublayers)}`` (NaN at sublayers not measured: a gap); the line is the
    median over texts, the band the interquartile range. labels: ``(n_sublayers,)`` sublayer names for the ticks.
    """
    fig, ax = fig_ax(ax, figsize=(6.0, 3.8))
    n = None
    for ref, v in values.items():
        v = np.asarray(v)
        n = v.shape[1]
        color = REFERENCE_COLORS.get(ref, None)
        for kind in kinds:
            idx = np.arange(n)[(np.arange(n) % 2) == (0 if kind == "attn" else 1)]
            _band(ax, idx, v[:, idx], color, f"{ref} ({kind})", _KIND_STYLE[kind])
    if n is not None:
        sublayer_ticks(ax, n, labels)
    ax.set_xlabel("sublayer s (J_s: s -> s + 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_eigenvalues(eigenvalues: Mapping[str, np.ndarray], *, update: bool = True, ax=None, max_points=20000):
    """Eigenvalues of ``J_s`` in the complex plane at a few depths.

    eigenvalues: ``{depth label: (n,) complex}`` (pooled over texts). update: plot ``lambda - 1`` (the
    eigenvalues of the update ``J - I``: the residual connection shifts all of them by 1).
    """
    fig, ax = fig_ax(ax, figsize=(4.6, 4.2))
    cmap = sublayer_cmap()
    for i, (name, lam) in enumerate(eigenvalues.items()):
        lam = np.asarray(lam).ravel()[:max_points]
        lam = lam - 1 if update else lam
        ax.scatter(lam.real, lam.imag, s=3, alpha=0.5, color=cmap(i / max(1, len(eigenvalues) - 1)), label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Re (λ − 1)" if update else "Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title("eigenvalues of the update J − I" if update else "eigenvalues of J")
    ax.legend(fontsize=7, markerscale=3)
    return fig


def plot_exponents(exponents: Mapping[str, np.ndarray], *, names: Sequence[str] | None = None, title: str = "",
                   ylabel: str = "λ₁ per sublayer", ax=None):
    """The top finite-time Lyapunov exponent from each start to the end, per reference.

    exponents: ``{reference: (n_texts, n_starts)}`` (absolute, or relative to the RS's growth); names:
    ``(n_starts,)`` the starts' names (e.g. the perturbed depths). Below 0: a perturbation there shrinks by the end.
    """
    fig, ax = fig_ax(ax, figsize=(5.0, 3.8))
    n = None
    for ref, v in exponents.items():
        v = np.asarray(v)
        n = v.shape[1]
        _band(ax, np.arange(n), v, REFERENCE_COLORS.get(ref), ref, dict(ls="-", marker="o"))
    ax.axhline(0, color="k", lw=0.6)
    if n is not None:
        ax.set_xticks(np.arange(n), list(names) if names is not None else np.arange(n))
    ax.set_xlabel("start (input of the perturbed layer)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def plot_by_reference(values: Mapping[str, np.ndarray], *, ylabel: str = "", threshold: float | None = None,
                      title: str = "", ax=None):
    """One per-text value per reference: every text a point, the mean over texts a bar.

    values: ``{reference: (n_texts,)}``; threshold: a claim's threshold, drawn as a dotted line.
    """
    fig, ax = fig_ax(ax, figsize=(4.8, 3.6))
    rng = np.random.default_rng(0)
    for i, (ref, v) in enumerate(values.items()):
        v = np.asarray(v, dtype=np.float64)
        color = REFERENCE_COLORS.get(ref, f"C{i}")
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=8, alpha=0.5, color=color)
        ax.hlines(np.nanmean(v), i - 0.3, i + 0.3, color=color, lw=2)
    if threshold is not None:
        ax.axhline(threshold, color="k", lw=0.6, ls=":")
    ax.set_xticks(range(len(values)), list(values), rotation=20, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def measure_grid(by_model: Mapping[str, Mapping[str, np.ndarray]], *, labels: Mapping[str, Sequence[str]],
                 ylabel: str = "", title: str = ""):
    """:func:`plot_measure` for several models, one row each (:func:`~.style.grid`).

    by_model: ``{model: {reference: (n_texts, n_sublayers)}}``; labels: ``{model: (n_sublayers,)}`` sublayer names.
    """
    return grid(plot_measure, {(m, title or ylabel): (v,) for m, v in by_model.items()},
                row_kwargs={m: {"labels": labels[m]} for m in by_model}, ylabel=ylabel, title=title, width=6.5)


def plot_exponents_vs_recovery(names: Sequence[str], predicted: np.ndarray, measured: np.ndarray, *,
                               ax=None, title: str = ""):
    """At the perturbed depths: the linear prediction of noise recovery (from the Jacobians) against the
    measured recovery (chapter 5's relative distance at the end over that at the perturbed point).

    names: ``(m,)`` depth names; predicted, measured: ``(m,)``. The diagonal is perfect prediction; below 1:
    damped.
    """
    fig, ax = fig_ax(ax, figsize=(4.4, 4.0))
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    ax.scatter(predicted, measured, color=CROSS_COLOR, zorder=3)
    for n_, x, y in zip(names, predicted, measured):
        ax.annotate(n_, (x, y), fontsize=8, xytext=(4, 2), textcoords="offset points")
    both = np.concatenate([predicted, measured])
    both = both[np.isfinite(both) & (both > 0)]
    if both.size:
        lo, hi = both.min() / 1.5, both.max() * 1.5
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.axhline(1, color=WITHIN_COLOR, lw=0.6)
    ax.set_xlabel("predicted by the Jacobians (linear)")
    ax.set_ylabel("measured noise recovery (chapter 5)")
    ax.set_title(title)
    return fig


def plot_jpca_plane(Z: np.ndarray, plane: np.ndarray, frequency: float | None = None, *, max_texts: int = 60,
                    ax=None, title: str = ""):
    """Trajectories over sublayers projected on jPCA's first rotational plane, coloured by depth.

    Z: ``(n_texts, n_sublayers, k)`` (:func:`dynamics.jpca_projection`); plane: ``(k, 2)``; frequency: its angular
    frequency (radians per sublayer), for the title.
    """
    fig, ax = fig_ax(ax, figsize=(4.6, 4.2))
    P = np.asarray(Z)[:max_texts] @ np.asarray(plane)
    cmap = sublayer_cmap()
    S = P.shape[1]
    for traj in P:
        ax.plot(traj[:, 0], traj[:, 1], color="0.8", lw=0.4, zorder=1)
    sc = ax.scatter(P[..., 0].ravel(), P[..., 1].ravel(), c=np.tile(np.arange(S), len(P)), cmap=cmap, s=4,
                    zorder=2)
    fig.colorbar(sc, ax=ax, label="sublayer")
    ax.set_xlabel("jPC 1")
    ax.set_ylabel("jPC 2")
    freq = "" if frequency is None else f" (ω = {frequency:.2f} rad/sublayer)"
    ax.set_title(f"{title}{freq}")
    return fig


def plot_jpca_control(values: Mapping[str, float], controls: Mapping[str, np.ndarray], *,
                      ylabel: str = "R² of the rotation (skew-symmetric fit)", ax=None, title=""):
    """A jPCA fit per run (a point) against the same fit on the layer-shuffled orders (a box).

    values: ``{run: value}`` (e.g. the skew fit's R²); controls: ``{run: (n_shuffles,)}`` the shuffled orders'.
    """
    fig, ax = fig_ax(ax, figsize=(4.6, 3.6))
    names = list(values)
    for i, name in enumerate(names):
        c = np.asarray(controls.get(name, []), float)
        if c.size:
            ax.boxplot([c], positions=[i], widths=0.5, showfliers=False)
        ax.scatter([i], [values[name]], color=REFERENCE_COLORS.get(name.split(" (seed")[0], "C3"), zorder=3, s=40,
                   label="observed" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "jPCA: observed vs layer-shuffled (box)")
    ax.legend(fontsize=7)
    return fig


def plot_benettin_convergence(convergence: Mapping[str, object], *, tolerance: float, ax=None, title: str = ""):
    """Benettin's largest exponent over growing lengths of the run as its deviation from the literature value
    (%): thin lines single trajectories, thick their mean, a grey band the ``tolerance`` (relative).

    convergence: one system of :func:`transformer_dynamics.dynamics.systems.benettin_convergence`: ``lengths:
    (n,)``, ``estimates: (n, n_trajectories)``, ``known`` (the literature value), ``unit`` (of the lengths).
    """
    fig, ax = fig_ax(ax, figsize=(5.0, 3.6))
    lengths, known = np.asarray(convergence["lengths"], float), float(convergence["known"])
    deviation = 100 * (np.asarray(convergence["estimates"], float) / known - 1)
    ax.semilogx(lengths, deviation, color=CROSS_COLOR, lw=0.6, alpha=0.35)
    ax.semilogx(lengths, deviation.mean(1), color=CROSS_COLOR, lw=2, label="mean")
    ax.axhspan(-100 * tolerance, 100 * tolerance, color="k", alpha=0.1, lw=0, label=f"±{tolerance:.0%}")
    ax.axhline(0, color="k", ls="--", lw=1)
    ax.set(xlabel=f"length ({convergence['unit']})", ylabel="largest exponent − literature (%)", ylim=(-25, 25),
           title=title or f"literature {known:g}")
    ax.legend(frameon=False)
    return fig
