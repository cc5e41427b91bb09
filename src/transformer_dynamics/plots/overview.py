"""First look at a capture: the residual stream's norm over sublayers per condition, and how far each
tokenisation variant's capture lies from the reference one. One panel per model (see :func:`.style.grid`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..arrays import check_rs
from .style import fig_ax, sublayer_ticks

__all__ = ["rs_norm", "similarity_to_reference"]


def rs_norm(rs_by_condition: Mapping[str, np.ndarray], labels: Sequence[str] | None = None, *, ax=None,
            log: bool = True, band: tuple[float, float] = (10, 90), title: str = "RS norm per sublayer"):
    """Mean over samples of ``||h_s||_2`` per sublayer, one line per condition, with a band from the
    ``band[0]``-th to the ``band[1]``-th percentile over samples (a percentile band stays positive on the log
    axis, where mean − sd of a heavy-tailed norm would not).

    rs_by_condition: name -> ``rs: (n_samples, n_sublayers, d_model)`` (all with the same ``n_sublayers``);
    labels: sublayer labels for ticks (length ``n_sublayers``); band: the percentiles (0–100) that bound the
    shaded band; title: the panel's title (:func:`.style.grid` appends the model's name).
    """
    fig, ax = fig_ax(ax, (8, 3.5))
    for name, rs in rs_by_condition.items():
        norms = np.linalg.norm(check_rs(rs, name=f"rs_by_condition[{name!r}]"), axis=-1)  # (n_samples, n_sublayers)
        low, high = np.percentile(norms, band, axis=0)
        x = np.arange(norms.shape[1])
        (line,) = ax.plot(x, norms.mean(0), label=f"{name} (n = {norms.shape[0]})")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    if labels is not None:
        sublayer_ticks(ax, len(labels), labels)
    ax.set_xlabel("sublayer")
    ax.set_ylabel(r"$\|h\|_2$ at the last token")
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(frameon=False, title=f"mean; band: {band[0]:g}–{band[1]:g}th percentile", title_fontsize=8)
    return fig


def similarity_to_reference(similarity: Mapping[str, np.ndarray], labels: Sequence[str] | None = None, *, ax=None,
                            title: str = "Cosine to the reference capture", ylim: tuple[float, float] | None = None):
    """Mean over samples of a per-sublayer similarity, one line per variant.

    similarity: name -> ``(n_samples, n_sublayers)`` (e.g. :func:`metrics.paired_cosine` of each
    variant's capture with the reference capture); labels: sublayer labels (length ``n_sublayers``);
    title: the panel's title; ylim: ``(low, high)`` of the y axis, or None for matplotlib's choice (several
    models' panels share one with ``style.grid(..., sharey=True)``).
    """
    fig, ax = fig_ax(ax, (8, 3.5))
    for name, sim in similarity.items():
        ax.plot(np.nanmean(sim, axis=0), label=name)
    if labels is not None:
        sublayer_ticks(ax, len(labels), labels)
    ax.set_xlabel("sublayer")
    ax.set_ylabel("cosine to the reference")
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(frameon=False, fontsize=8)
    return fig

