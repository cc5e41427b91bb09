"""Chapter 11's figures: attractors measured (:mod:`transformer_dynamics.attractors`). Arrays in, a figure out.

The inputs are the per-prompt curves of :meth:`transformer_dynamics.attractors.AttractorSweep.curves` per run
(``"trained"``, random inits ``"default:0"`` ...), each with the bootstrap replicates of its mean over prompts
(:func:`transformer_dynamics.robustness.mean_curves`): ``{run: (per_prompt {key: (n, L[, S])}, replicates {key:
(B, L[, S])} or None)}``.

- :func:`plot_size_profile` / :func:`plot_size_profiles`: a measure against the perturbation size at one layer, one
  line per direction kind (trained: mean over prompts with its 95 % band) and the random inits' plane kind (mean
  over seeds), with the claims' size and the texts' spread marked; rows = models, columns = layers.
- :func:`plot_by_layer`: a measure against size, one line per layer (basin stability, the linearisation's error).
- :func:`plot_layer_measure`: a measure per layer, trained against the random inits.
- :func:`plot_recovery_vs_kl`: each layer's recovery against its next-token KL.
- :func:`plot_spectra`: the window Jacobian's scaled singular values, full map and update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .perturb import REFERENCE_STYLE, plot_teleport_curve
from .style import fig_ax, grid, sublayer_cmap

__all__ = ["KIND_COLORS", "LABELS", "plot_size_profile", "plot_size_profiles", "plot_by_layer", "plot_layer_measure",
           "plot_recovery_vs_kl", "plot_spectra", "plot_spectra_grid", "plot_mixed_grid"]

#: The direction kinds' colours (the random inits keep chapter 5's reference colours).
KIND_COLORS = {"plane": "k", "random": "tab:blue", "swap": "tab:brown"}
#: Axis labels of the curves (key before the colon).
LABELS = {"flow": "inward-flow fraction", "flow_raw": "inward-flow fraction (raw distance)",
          "basin": "basin stability", "recovery": "recovery ratio (after / at)",
          "error": "linearisation error (relative)", "kl": "next-token KL (nats)", "kl_delete": "KL, layer deleted",
          "kl_swap": "KL, layer swapped", "validity": "log10 validity radius"}
#: Reference lines per measure: an even split of inward and outward, no change, the linearisation's tolerance.
LINES = {"flow": 0.5, "recovery": 1.0}


def _tidy(fig: Figure) -> Figure:
    """Panel titles without the empty lead :func:`~transformer_dynamics.plots.style.grid` leaves before " — "."""
    for ax in fig.axes:
        ax.set_title(ax.get_title().removeprefix(" — "))
    return fig


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _size_axes(ax, key: str, title: str, log_y: bool) -> None:
    """A panel against perturbation size: log size axis (and log ``key`` axis with ``log_y``), labels, title."""
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("perturbation size / stream norm")
    ax.set_ylabel(_label(key))
    ax.set_title(title)


def _label(key: str) -> str:
    head = key.split(":")[0].removesuffix("_size")
    return LABELS.get(head, head)


def _band(ax, x, per, reps, color, label, ls="-", alpha=0.05, lw=1.8):
    mean = np.nanmean(per, axis=0)
    ax.plot(x, mean, ls, color=color, lw=lw, label=label, zorder=3)
    if reps is not None and len(reps):
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanpercentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0, zorder=2)


def _refs(runs: Mapping[str, Any], key: str) -> dict[str, np.ndarray]:
    """Each random-init kind's per-seed means of ``key``: ``{kind: (n_seeds, ...)}``."""
    out: dict[str, list[np.ndarray]] = {}
    for run, (per, _) in runs.items():
        if run != "trained" and key in per:
            out.setdefault(run.split(":")[0], []).append(np.nanmean(np.asarray(per[key], dtype=float), axis=0))
    return {k: np.stack(v) for k, v in out.items()}


def plot_size_profile(runs: Mapping[str, tuple[Mapping[str, np.ndarray], Any]], sizes: np.ndarray, *, layer: int,
                      key: str = "flow_size", kinds: Sequence[str] = ("plane", "random", "swap"),
                      claim_size: float | None = None, spread: float | None = None, swap_size: float | None = None,
                      log_y: bool = False, ax=None, title: str = "") -> Figure:
    """``key`` (``"<measure>_size"``, per prompt ``(n, L, S)``) at layer index ``layer`` against the perturbation size:
    one line per direction kind for the trained run (mean over prompts, 95 % bootstrap band) and the random inits'
    ``kinds[0]`` (mean over seeds, dashed, the seeds' range shaded). claim_size / spread / swap_size: vertical marks
    at the claims' size, the texts' spread over the norm and the full activation swap's size."""
    fig, ax = fig_ax(ax, figsize=(4.2, 3.4))
    per, reps = runs["trained"]
    x = np.asarray(sizes, dtype=float)
    for kind in kinds:
        k = f"{key}:{kind}"
        if k in per:
            _band(ax, x, np.asarray(per[k])[:, layer], None if reps is None else np.asarray(reps[k])[:, layer],
                  KIND_COLORS.get(kind, "0.4"), f"trained, {kind}")
    for kind, means in _refs(runs, f"{key}:{kinds[0]}").items():
        color, ls = REFERENCE_STYLE.get(kind, ("tab:gray", "--"))
        m = means[:, layer]
        ax.plot(x, m.mean(0), ls, color=color, lw=1.3, label=f"random init, {kind} ({kinds[0]}, {_seeds(len(means))})")
        ax.fill_between(x, m.min(0), m.max(0), color=color, alpha=0.12, lw=0)
    for v, style, what in ((claim_size, ":", "claims' size"), (spread, "--", "texts' spread"),
                           (swap_size, "-.", "full swap")):
        if v is not None and np.isfinite(v):
            ax.axvline(v, color="0.5", lw=0.9, ls=style, label=what)
    head = key.removesuffix("_size")
    if head in LINES:
        ax.axhline(LINES[head], color="0.3", lw=0.7, ls="-", alpha=0.5)
    _size_axes(ax, key, title, log_y)
    return fig


def plot_size_profiles(data: Mapping[str, Mapping[str, tuple[Mapping[str, np.ndarray], Any]]], *,
                       sizes: Mapping[str, np.ndarray], names: Mapping[str, Sequence[str]],
                       key: str = "flow_size", spread: Mapping[str, np.ndarray] | None = None,
                       swap_size: Mapping[str, np.ndarray] | None = None, claim_size: float | None = None,
                       log_y: bool = False, panel_size: float = 3.3) -> Figure:
    """:func:`plot_size_profile` for several models and every layer: rows = models, columns = layers by depth
    position. data: ``{model: runs}``; sizes / names / spread / swap_size: ``{model: ...}`` (spread and swap_size
    per layer). One legend, under the first panel."""
    if not data:
        raise ValueError("need at least one model")
    panels, rows = {}, {}
    for m, runs in data.items():
        for i, name in enumerate(names[m]):
            panels[m, name] = (runs, sizes[m])
            rows[m, name] = {"layer": i, "spread": None if spread is None else float(spread[m][i]),
                             "swap_size": None if swap_size is None else float(swap_size[m][i])}
    return _grid_at(panels, rows, key=key, claim_size=claim_size, log_y=log_y, panel_size=panel_size)


def _grid_at(panels, per_panel, *, panel_size: float, **kw) -> Figure:
    """:func:`~transformer_dynamics.plots.style.grid` of :func:`plot_size_profile` with per-panel keywords."""
    def panel(runs, s, at, ax=None, **k):
        return plot_size_profile(runs, s, ax=ax, **{**k, **per_panel[at]})

    fig = grid(panel, {at: (*args, at) for at, args in panels.items()}, width=panel_size,
               height=panel_size * 0.85, **kw)
    axes = [a for a in fig.axes if a.axison]
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=7, frameon=False)
    return _tidy(fig)


def plot_by_layer(per: np.ndarray, reps: np.ndarray | None, sizes: np.ndarray, *, names: Sequence[str],
                  key: str, hline: float | None = None, log_y: bool = False, ax=None, title: str = "") -> Figure:
    """A measure against the perturbation size, one line per layer (coloured by depth): per ``(n, L, S)``, its
    bootstrap replicates ``(B, L, S)`` (95 % bands); hline: a reference level (e.g. a tolerance)."""
    fig, ax = fig_ax(ax, figsize=(4.4, 3.4))
    per = np.asarray(per, dtype=float)
    cmap = sublayer_cmap()
    L = per.shape[1]
    for i in range(L):
        _band(ax, sizes, per[:, i], None if reps is None else np.asarray(reps)[:, i], cmap(i / max(L - 1, 1)),
              names[i])
    if hline is not None:
        ax.axhline(hline, color="0.3", lw=0.8, ls=":")
    _size_axes(ax, key, title, log_y)
    ax.legend(fontsize=7, frameon=False, title="layer", title_fontsize=7)
    return fig


def plot_layer_measure(runs: Mapping[str, tuple[np.ndarray, np.ndarray | None]], *, key: str,
                       names: Sequence[str], layers: Sequence[int], log: bool = False, ax=None,
                       title: str = "") -> Figure:
    """A per-layer measure (``(n, L)`` per prompt) of the trained run (prompts, mean, 95 % band) against each
    random-init kind (mean over seeds, their range shaded): chapter 5's panel
    (:func:`~transformer_dynamics.plots.perturb.plot_teleport_curve`) with this chapter's labels."""
    fig = plot_teleport_curve(runs, curve=key, names=names, layers=layers, ax=ax, log=log, title=title)
    ax = ax or fig.axes[0]
    ax.set_xlabel("perturbed layer")
    ax.set_ylabel(_label(key))
    return fig


def plot_recovery_vs_kl(runs: Mapping[str, tuple[Mapping[str, np.ndarray], Any]], *, names: Sequence[str],
                        recovery: str = "recovery:plane", kl: str = "kl:plane", alpha: float = 0.05, ax=None,
                        title: str = "") -> Figure:
    """Each layer's mean recovery ratio against its mean next-token KL (log), with 95 % bootstrap intervals over
    prompts (trained, labelled by depth position) and the random inits' means (small markers, by kind)."""
    fig, ax = fig_ax(ax, figsize=(4.4, 3.6))
    per, reps = runs["trained"]
    r, k = np.nanmean(per[recovery], 0), np.nanmean(per[kl], 0)
    if reps is not None:
        with np.errstate(invalid="ignore"):
            rl, rh = np.nanpercentile(reps[recovery], [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
            kl_, kh = np.nanpercentile(reps[kl], [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        ax.errorbar(r, k, xerr=[r - rl, rh - r], yerr=[k - kl_, kh - k], fmt="none", ecolor="0.6", lw=1, zorder=1)
    cmap = sublayer_cmap()
    for i, name in enumerate(names):
        ax.scatter(r[i], k[i], color=cmap(i / max(len(names) - 1, 1)), s=40, zorder=3, edgecolor="k", lw=0.5)
        ax.annotate(name, (r[i], k[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for kind, rm in _refs(runs, recovery).items():
        km = _refs(runs, kl)[kind]
        color, _ = REFERENCE_STYLE.get(kind, ("tab:gray", "--"))
        ax.plot(rm.mean(0), km.mean(0), "s", color=color, ms=4, alpha=0.8, label=f"random init, {kind}")
    ax.axvline(1.0, color="0.3", lw=0.7, ls=":")
    if np.all(k[np.isfinite(k)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel(_label(recovery))
    ax.set_ylabel(_label(kl))
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_spectra(spectra: Mapping[str, Mapping[str, np.ndarray]], *, layer: int, ax=None, title: str = "") -> Figure:
    """The scaled singular values of the window map's Jacobian (solid) and of its update ``J - I`` (dashed) at layer
    index ``layer``, in decreasing order against their rank over the width: the trained run (black, mean over texts)
    and each random-init kind (mean over texts and seeds). spectra: ``{run: {"full": (n, L, D), "update": (n, L,
    D)}}``. Below the dotted line a direction shrinks relative to the stream."""
    fig, ax = fig_ax(ax, figsize=(4.2, 3.4))
    groups: dict[str, dict[str, list[np.ndarray]]] = {}
    for run, sp in spectra.items():
        if not sp:
            continue
        kind = "trained" if run == "trained" else run.split(":")[0]
        for part in ("full", "update"):
            groups.setdefault(kind, {}).setdefault(part, []).append(np.asarray(sp[part])[:, layer].mean(0))
    for kind, parts in groups.items():
        color = "k" if kind == "trained" else REFERENCE_STYLE.get(kind, ("tab:gray", "--"))[0]
        for part, ls in (("full", "-"), ("update", "--")):
            if part in parts:
                v = np.mean(parts[part], axis=0)
                ax.plot(np.arange(1, v.size + 1) / v.size, v, ls, color=color, lw=1.4,
                        label=f"{kind}, {'map' if part == 'full' else 'update'}")
    ax.axhline(1.0, color="0.3", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("rank / width")
    ax.set_ylabel("singular value × ‖x_in‖ / ‖x_out‖")
    ax.set_title(title)
    ax.legend(fontsize=6, frameon=False)
    return fig


def plot_spectra_grid(data: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *,
                      names: Mapping[str, Sequence[str]], panel_size: float = 3.3) -> Figure:
    """:func:`plot_spectra` for several models and every layer: rows = models, columns = layers.
    data: ``{model: {run: spectra}}``."""
    panels = {(m, name): (spectra,) for m, spectra in data.items() for name in names[m]}
    index = {(m, name): i for m in data for i, name in enumerate(names[m])}

    def panel(spectra, ax=None, at=None):
        return plot_spectra(spectra, layer=index[at], ax=ax)

    return _tidy(grid(lambda spectra, at, ax=None: panel(spectra, ax=ax, at=at),
                      {k: (v[0], k) for k, v in panels.items()}, width=panel_size, height=panel_size * 0.85))


def plot_mixed_grid(panels: Mapping[tuple[str, str], tuple[Any, tuple, Mapping[str, Any]]], *, width: float = 4.4,
                    height: float = 3.6) -> Figure:
    """Panels of different kinds in one grid (rows = models, columns = what each shows): ``{(row, column):
    (panel_function, args, kwargs)}``, each drawn as ``panel_function(*args, ax=ax, **kwargs)``
    (:func:`~transformer_dynamics.plots.style.grid`)."""
    return _tidy(grid(lambda f, args, kw, ax=None: f(*args, ax=ax, **kw), dict(panels), width=width, height=height))
