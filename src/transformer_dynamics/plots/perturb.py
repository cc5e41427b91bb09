"""Figure 4 D (teleporting the residual stream in the plane of the first two principal components) and the
two perturbations beyond the paper (noise injection, activation swap). Arrays in, a matplotlib figure out.

The functions take the result objects of :mod:`transformer_dynamics.perturb` but only read their arrays
(duck typing; nothing here touches a model):

- teleport results: ``layer``, ``grid (n_points, 2)``, ``sublayers (n_follow + 1,)``, ``control (n_sublayers,
  2)``, ``perturbed (n_points, n_follow + 1, 2)`` and per-point metrics such as ``recovery_pc (n_points,)``;
- the teleport's per-prompt curves (:data:`transformer_dynamics.perturb.CURVES`): ``{curve: (n_prompts,
  n_layers)}`` per run (``"trained"``, random inits ``"default:0"`` ...) with their bootstrap replicates of the mean
  over prompts ``{curve: (B, n_layers)}``;
- noise / swap results: ``layer``, ``sublayers``, ``distance_own (n_texts, n_follow + 1)``, optionally
  ``distance_donor`` and ``scale``.

Several models side by side (one row per model, :func:`transformer_dynamics.plots.style.grid`):
:func:`plot_teleport_grid` (Fig 4 D, columns = teleport layers by depth position), :func:`plot_noise_grid`
(columns = noise scales), :func:`plot_swap_grid` (columns = distance to own / donor run) and
:func:`plot_teleport_curves` (columns = the per-prompt curves the teleport claims read).

Quiver arrows (Fig 4 D) go from each teleport point to where its trajectory is after the following
sublayers (``arrow="end"``, the default: the net displacement over the next 12 sublayers) or to the mean of
its following positions (``arrow="mean"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import fig_ax, grid, sublayer_cmap

__all__ = [
    "plot_teleport_quiver",
    "plot_teleport_grid",
    "plot_teleport_curve",
    "plot_teleport_curves",
    "plot_perturbation_distance",
    "plot_noise_panel",
    "plot_noise_grid",
    "plot_swap_panel",
    "plot_swap_grid",
]

CONTROL_COLOR = "0.55"
RECOVERY_LABEL = "recovery in the plane (end / start distance)"
#: Axis labels of the teleport's per-prompt curves (transformer_dynamics.perturb.CURVES).
CURVE_LABELS = {"recovery": "recovery ratio (distance after / at teleport)",
                "rel_mse": "MSE to control / controls' spread²",
                "end_spread": "end-point spread / controls' spread",
                "end_far": "end distance to control / controls' spread"}
#: Reference lines: 1 = no recovery, the texts' own spread.
CURVE_LINES = {"recovery": 1.0, "end_spread": 1.0, "end_far": 1.0}
LOG_CURVES = ("rel_mse", "end_spread", "end_far")
REFERENCE_STYLE = {"default": ("tab:orange", "--"), "matched": ("tab:green", ":"), "permuted": ("tab:purple", "-.")}


def _check_teleport(res: Any) -> None:
    pert = np.asarray(res.perturbed)
    if pert.ndim != 3 or pert.shape[-1] != 2 or pert.shape[1] < 2:
        raise ValueError(f"perturbed must be (n_points, n_follow + 1 >= 2, 2), got {pert.shape}")
    if np.asarray(res.control).ndim != 2:
        raise ValueError("control must be (n_sublayers, 2)")


def _arrow_ends(res: Any, arrow: str) -> np.ndarray:
    pert = np.asarray(res.perturbed, dtype=float)
    if arrow == "end":
        return pert[:, -1]
    if arrow == "mean":
        return pert[:, 1:].mean(axis=1)
    raise ValueError(f"arrow must be 'end' or 'mean', got {arrow!r}")


def _color_norm(results: Sequence[Any], color_by: str | None):
    """One colour scale for all panels: TwoSlopeNorm around 1 for recovery, else min-max."""
    if color_by is None:
        return None
    values = np.concatenate([np.asarray(getattr(r, color_by), dtype=float).ravel() for r in results])
    finite = values[np.isfinite(values)]
    if color_by.startswith("recovery"):
        lo = min(float(finite.min()) if finite.size else 0.5, 0.99)
        hi = max(float(finite.max()) if finite.size else 1.5, 1.01)
        return TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)


def plot_teleport_quiver(res: Any, *, ax=None, arrow: str = "end", color_by: str | None = "recovery_pc",
                         show_paths: bool = False, title: str | None = None, colorbar: bool = True,
                         norm=None) -> Figure:
    """One Fig 4 D panel: the grey control trajectory over all sublayers (PC1, PC2), its point at the
    teleport sublayer (black star) and after the following sublayers (open circle), and one arrow per grid
    point from the teleport point to its trajectory's end (``arrow="end"``) or mean following position
    (``arrow="mean"``), drawn to scale in data units.

    color_by: a per-point attribute of ``res`` to colour arrows by (``"recovery_pc"`` / ``"recovery"``: distance to
    the control at the end over that at the start, in the plane / the full stream, diverging around 1; any other
    attribute on a sequential map), or
    ``None`` for black arrows. show_paths: also draw each perturbed trajectory as a faint line.
    norm: a matplotlib colour norm (default: from this panel's values; :func:`plot_teleport_grid` shares one).
    """
    _check_teleport(res)
    fig, ax = fig_ax(ax, (4.5, 4.0))
    control = np.asarray(res.control, dtype=float)
    sub = np.asarray(res.sublayers)
    pert = np.asarray(res.perturbed, dtype=float)
    ax.plot(control[:, 0], control[:, 1], "-", color=CONTROL_COLOR, lw=2, zorder=1)
    ax.scatter(control[:, 0], control[:, 1], s=8, color=CONTROL_COLOR, zorder=1)
    if show_paths:
        for p in pert:
            ax.plot(p[:, 0], p[:, 1], "-", color="tab:orange", lw=0.5, alpha=0.4, zorder=2)
    start = pert[:, 0]
    delta = _arrow_ends(res, arrow) - start
    kwargs = dict(angles="xy", scale_units="xy", scale=1, width=0.004, zorder=3)
    if color_by is not None:
        values = np.asarray(getattr(res, color_by), dtype=float)
        norm = _color_norm([res], color_by) if norm is None else norm
        q = ax.quiver(start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], values,
                      cmap="coolwarm" if color_by.startswith("recovery") else "viridis", norm=norm,
                      edgecolor="0.35", linewidth=0.2, **kwargs)  # outlined: pale (recovery ~ 1) arrows stay visible
        if colorbar:
            fig.colorbar(q, ax=ax, shrink=0.8, label=_color_label(color_by))
    else:
        ax.quiver(start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], color="k", **kwargs)
    i0 = int(sub[0])
    ax.scatter(*control[i0], marker="*", s=160, c="k", zorder=4)
    ax.scatter(*control[int(sub[-1])], marker="o", s=60, facecolors="none", edgecolors="k", zorder=4)
    # make sure arrows' heads and the control are inside the view
    pts = np.concatenate([control, start, start + delta])
    pad = 0.05 * (pts.max(0) - pts.min(0) + 1e-12)
    ax.set_xlim(pts[:, 0].min() - pad[0], pts[:, 0].max() + pad[0])
    ax.set_ylim(pts[:, 1].min() - pad[1], pts[:, 1].max() + pad[1])
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    nf = len(sub) - 1
    ax.set_title(title if title is not None else f"layer {res.layer} (+{nf} sublayers)")
    return fig


def _color_label(color_by: str) -> str:
    return {"recovery_pc": RECOVERY_LABEL, "recovery": CURVE_LABELS["recovery"]}.get(color_by, color_by)


def _teleport_legend(fig: Figure, arrow: str, ncols: int = 4) -> None:
    """The shared legend of the Fig 4 D panels, below them."""
    handles = [Line2D([], [], color=CONTROL_COLOR, lw=2, label="control trajectory (all sublayers)"),
               Line2D([], [], marker="*", color="k", ls="", ms=10, label="control at teleport sublayer"),
               Line2D([], [], marker="o", mfc="none", color="k", ls="", ms=7,
                      label="control after following sublayers"),
               Line2D([], [], marker=r"$\rightarrow$", color="k", ls="", ms=12,
                      label="teleport point → " + ("trajectory end" if arrow == "end" else "mean following position"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(ncols, len(handles)), fontsize=9, frameon=False)


def plot_teleport_grid(data: Mapping[tuple[str, str], Any], *, arrow: str = "end",
                       color_by: str | None = "recovery_pc", show_paths: bool = False,
                       panel_size: float = 3.6) -> Figure:
    """Figure 4 D for several models: one :func:`plot_teleport_quiver` panel per ``(model, position)`` key of
    ``data`` (positions: teleport layers by depth, e.g. ``perturb.depth_names``), drawn by
    :func:`transformer_dynamics.plots.style.grid` with the depth positions as rows and the models as columns,
    so that the figure stays a page wide (a column per model, not per layer) and its labels legible there. All
    panels share one colour scale (one horizontal colour bar below the grid; the recovery is scale-free, so one
    scale serves every model) and the legend below it. Panel titles: "layer l (+n sublayers)" over
    "model, position".

    data: ``{(model, position): teleport result}``. Returns the figure.
    """
    data = dict(data)
    if not data:
        raise ValueError("need at least one teleport result")
    norm = _color_norm(list(data.values()), color_by)
    by_depth = {(pos, m): r for (m, pos), r in data.items()}  # rows: depth positions; columns: models
    fig = grid(plot_teleport_quiver, by_depth, width=panel_size, height=0.9 * panel_size, arrow=arrow,
               color_by=color_by, show_paths=show_paths, colorbar=False, norm=norm)
    rows = list(dict.fromkeys(p for p, _ in by_depth))
    cols = list(dict.fromkeys(m for _, m in by_depth))
    drawn = iter(ax for ax in fig.axes if ax.axison)
    for pos in rows:
        for m in cols:
            if (pos, m) in by_depth:
                ax = next(drawn)
                ax.set_title(f"{ax.get_title().split(' — ')[0]}\n{m}, {pos}", fontsize=10)
    panels = [ax for ax in fig.axes if ax.axison]
    if color_by is not None:
        sm = ScalarMappable(norm=norm, cmap="coolwarm" if color_by.startswith("recovery") else "viridis")
        fig.colorbar(sm, ax=panels, location="bottom", shrink=0.8, aspect=40, pad=0.02, label=_color_label(color_by))
    _teleport_legend(fig, arrow, ncols=2 if len(cols) < 3 else 4)
    return fig


def plot_teleport_curve(runs: Mapping[str, tuple[np.ndarray, np.ndarray | None]], *, curve: str = "recovery",
                        names: Sequence[str] | None = None, layers: Sequence[int] | None = None, ax=None,
                        log: bool | None = None, alpha: float = 0.05, title: str = "teleport") -> Figure:
    """One teleport curve against the teleport layer: the trained model's per-prompt values (thin grey lines), their
    mean over prompts (the curve the claims read) with its bootstrap percentile band, and each random-init kind's
    mean over its seeds (its seeds' range shaded).

    runs: ``{run: (per_prompt (n_prompts, n_layers), replicates (B, n_layers) or None)}``, run ``"trained"`` and
    ``"<kind>:<seed>"``; curve: its name (label and reference line: 1 for the ratios to the controls' spread and
    for the recovery); names / layers: the layers' depth positions and indices, for the ticks; log: log y (None:
    for the curves in :data:`LOG_CURVES`, ratios to the controls' spread that span decades)."""
    if "trained" not in runs:
        raise ValueError(f"runs needs the 'trained' run; got {list(runs)}")
    fig, ax = fig_ax(ax, figsize=(4.6, 3.6))
    per, reps = (np.asarray(a, dtype=float) if a is not None else None for a in runs["trained"])
    k = per.shape[1]
    x = np.arange(k)
    for row in per:
        ax.plot(x, row, "-", color="0.75", lw=0.6, zorder=1)
    mean = np.nanmean(per, axis=0)
    ax.plot(x, mean, "o-", color="k", lw=2, ms=4, label=f"trained (mean of {per.shape[0]} prompts)", zorder=3)
    if reps is not None and len(reps):
        lo, hi = np.nanpercentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        ax.fill_between(x, lo, hi, color="k", alpha=0.15, lw=0, zorder=2)
    kinds: dict[str, list[np.ndarray]] = {}
    for run, (p, _) in runs.items():
        if run != "trained":
            kinds.setdefault(run.split(":")[0], []).append(np.nanmean(np.asarray(p, dtype=float), axis=0))
    for kind, means in kinds.items():
        m = np.stack(means)
        color, ls = REFERENCE_STYLE.get(kind, ("tab:blue", "--"))
        seeds = f"{len(means)} seed{'s' if len(means) > 1 else ''}"
        ax.plot(x, m.mean(0), ls, color=color, lw=1.5, label=f"random init, {kind} ({seeds})", zorder=2)
        ax.fill_between(x, m.min(0), m.max(0), color=color, alpha=0.15, lw=0, zorder=1)
    if curve in CURVE_LINES:
        ax.axhline(CURVE_LINES[curve], color="k", lw=0.8, ls=":")
    ticks = [str(l) for l in layers] if layers is not None else [str(i) for i in x]
    if names is not None:
        if len(names) != k:
            raise ValueError(f"got {len(names)} names for {k} teleport layers")
        ticks = [f"{t}\n{n}" for t, n in zip(ticks, names)]
    ax.set_xticks(x, ticks)
    ax.set_xlabel("teleport layer")
    ax.set_ylabel(CURVE_LABELS.get(curve, curve))
    if (curve in LOG_CURVES if log is None else log) and np.all(per[np.isfinite(per)] > 0):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_teleport_curves(data: Mapping[str, Mapping[str, tuple[Mapping[str, np.ndarray], Any]]], *,
                         curves: Sequence[str] = tuple(CURVE_LABELS), names: Mapping[str, Sequence[str]] | None = None,
                         layers: Mapping[str, Sequence[int]] | None = None, panel_size: float = 3.8) -> Figure:
    """The teleport's per-prompt curves for several models: rows = models, columns = ``curves``, each panel a
    :func:`plot_teleport_curve`.

    data: ``{model: {run: (per_prompt {curve: (n_prompts, n_layers)}, replicates {curve: (B, n_layers)} or
    None)}}``; names / layers: ``{model: [...]}`` the teleport layers' depth positions and indices."""
    if not data:
        raise ValueError("need at least one model")
    panels = {(m, c): ({run: (per[c], None if reps is None else reps[c]) for run, (per, reps) in runs.items()},)
              for m, runs in data.items() for c in curves}
    rows = {m: {"names": (names or {}).get(m), "layers": (layers or {}).get(m)} for m in data}
    return grid(plot_teleport_curve, panels, row_kwargs=rows, col_kwargs={c: {"curve": c} for c in curves},
                width=panel_size, height=panel_size * 0.85)


def _band(ax, x, d, color, label, ls="-"):
    med = np.nanmedian(d, axis=0)
    lo, hi = np.nanpercentile(d, [25, 75], axis=0)
    ax.plot(x, med, ls, color=color, lw=2, label=label, marker="o" if len(x) <= 3 else None, ms=4)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def plot_perturbation_distance(results: Sequence[Any], *, which: str = "own", x: str = "absolute", ax=None,
                               title: str | None = None, log: bool = False) -> Figure:
    """Distance (relative to the reference run's norm) of perturbed runs to their own unperturbed run
    (``which="own"``) or to the donor's run (``"donor"``), median over texts with the interquartile band,
    against the sublayer: one line per perturbed layer, coloured by depth.

    x: ``"absolute"`` (sublayer index: each curve starts at its layer's ``2l``) or ``"relative"`` (sublayers
    after the perturbation, 0 = the perturbed point itself).
    """
    results = list(results)
    if not results:
        raise ValueError("need at least one perturbation result")
    if which not in ("own", "donor"):
        raise ValueError(f"which must be 'own' or 'donor', got {which!r}")
    if x not in ("absolute", "relative"):
        raise ValueError(f"x must be 'absolute' or 'relative', got {x!r}")
    fig, ax = fig_ax(ax, figsize=(5.5, 3.8))
    cmap = sublayer_cmap()
    layers = [r.layer for r in results]
    top = max(max(layers), 1)
    for r in results:
        d = getattr(r, f"distance_{which}")
        if d is None:
            raise ValueError(f"result for layer {r.layer} has no distance_{which} (only swap has a donor)")
        sub = np.asarray(r.sublayers)
        xs = sub if x == "absolute" else sub - sub[0]
        _band(ax, xs, np.asarray(d, dtype=float), cmap(r.layer / top), f"layer {r.layer}")
    ax.set_xlabel("sublayer" if x == "absolute" else "sublayers after the perturbation")
    ax.set_ylabel(f"‖perturbed − {which} run‖ / ‖{which} run‖")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8, frameon=False)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_noise_panel(results: Sequence[Any], *, scale: float, x: str = "absolute", log: bool = True, ax=None,
                     title: str = "distance to own run") -> Figure:
    """One noise scale: the relative distance to the unperturbed run per sublayer, one line per perturbed layer
    (:func:`plot_perturbation_distance`), and the scale as a dotted line (the distance at the perturbed
    point). results: noise results of that scale (others are an error)."""
    group = sorted(results, key=lambda r: r.layer)
    if not group:
        raise ValueError("need at least one noise result")
    if any(float(r.scale) != float(scale) for r in group):
        raise ValueError(f"results of scale {sorted({float(r.scale) for r in group})} given for scale {scale}")
    fig = plot_perturbation_distance(group, which="own", x=x, ax=ax, title=title, log=log)
    (ax if ax is not None else fig.axes[0]).axhline(float(scale), color="k", lw=0.8, ls=":")
    return fig


def plot_noise_grid(data: Mapping[str, Sequence[Any]], *, x: str = "absolute", log: bool = True,
                    panel_size: float = 4.0) -> Figure:
    """Noise injection for several models: rows = models (keys of ``data``), columns = noise scales, each panel
    a :func:`plot_noise_panel`; one y range for all panels (the distances are relative, so models compare).

    data: ``{model: [noise result, ...]}`` (every (layer, scale) of that model)."""
    data = {m: list(rs) for m, rs in data.items()}
    if not data or not all(data.values()):
        raise ValueError("need at least one noise result per model")
    scales = sorted({float(r.scale) for rs in data.values() for r in rs})
    panels = {(m, f"scale {s:g}"): [r for r in rs if float(r.scale) == s]
              for m, rs in data.items() for s in scales if any(float(r.scale) == s for r in rs)}
    return grid(plot_noise_panel, panels, col_kwargs={f"scale {s:g}": {"scale": s} for s in scales}, sharey=True,
                width=panel_size * 1.1, height=panel_size * 0.85, x=x, log=log, title="noise")


def plot_swap_panel(results: Sequence[Any], *, which: str = "own", x: str = "absolute", ax=None,
                    title: str | None = None) -> Figure:
    """Activation swap, one side: the swapped runs' distance to their own text's run (``which="own"``, with the
    distance between the two unperturbed runs, ``distance_own_donor``, as dotted lines: the scale to read
    against) or to the donor's run (``"donor"``), one line per swap layer. title: default says which."""
    results = sorted(results, key=lambda r: r.layer)
    if not results:
        raise ValueError("need at least one swap result")
    if title is None:
        title = "distance to own run" if which == "own" else "distance to donor's run"
    fig = plot_perturbation_distance(results, which=which, x=x, ax=ax, title=title)
    ax = ax if ax is not None else fig.axes[0]
    if which == "own":
        cmap = sublayer_cmap()
        top = max(max(r.layer for r in results), 1)
        for r in results:
            if getattr(r, "distance_own_donor", None) is not None:
                sub = np.asarray(r.sublayers)
                xs = sub if x == "absolute" else sub - sub[0]
                ax.plot(xs, np.nanmedian(r.distance_own_donor, axis=0), ":", color=cmap(r.layer / top), lw=1)
    return fig


def plot_swap_grid(data: Mapping[str, Sequence[Any]], *, x: str = "absolute", panel_size: float = 4.2) -> Figure:
    """Activation swap for several models: rows = models (keys of ``data``), columns = distance to the own run
    and to the donor's run (:func:`plot_swap_panel`); one y range for all panels.

    data: ``{model: [swap result per layer]}``."""
    data = {m: list(rs) for m, rs in data.items()}
    if not data or not all(data.values()):
        raise ValueError("need at least one swap result per model")
    cols = {"own": "to own run", "donor": "to donor's run"}
    panels = {(m, cols[w]): rs for m, rs in data.items() for w in cols}
    return grid(plot_swap_panel, panels, col_kwargs={c: {"which": w} for w, c in cols.items()}, sharey=True,
                width=panel_size, height=panel_size * 0.85, x=x, title="distance")
