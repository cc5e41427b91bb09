"""First look at a capture: the residual stream's norm over sublayers, per condition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .style import fig_ax, sublayer_ticks

__all__ = ["rs_norm", "similarity_to_reference"]


def rs_norm(rs_by_condition: Mapping[str, np.ndarray], labels: Sequence[str] | None = None, *, ax=None,
            log: bool = True):
    """Mean ± sd over samples of ``||h_s||_2`` per sublayer, one line per condition.

    rs_by_condition: name -> ``rs: (n_samples, n_sublayers, d_model)``; labels: sublayer labels for ticks.
    """
    fig, ax = fig_ax(ax, (8, 3.5))
    for name, rs in rs_by_condition.items():
        norms = np.linalg.norm(rs, axis=-1)  # (n_samples, n_sublayers)
        mean, sd = norms.mean(0), norms.std(0)
        x = np.arange(norms.shape[1])
        ax.plot(x, mean, label=f"{name} (n = {norms.shape[0]})")
        ax.fill_between(x, np.maximum(mean - sd, 1e-6), mean + sd, alpha=0.2)
    if labels is not None:
        sublayer_ticks(ax, len(labels), labels)
    ax.set_xlabel("sublayer")
    ax.set_ylabel(r"$\|h\|_2$ at the last token")
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return fig



def similarity_to_reference(similarity: Mapping[str, np.ndarray], labels: Sequence[str] | None = None, *, ax=None):
    """Mean over samples of a per-sublayer similarity, one line per variant.

    similarity: name -> ``(n_samples, n_sublayers)`` (e.g. :func:`metrics.paired_cosine` of each
    variant's capture with the reference capture).
    """
    fig, ax = fig_ax(ax, (8, 3.5))
    for name, sim in similarity.items():
        ax.plot(np.nanmean(sim, axis=0), label=name)
    if labels is not None:
        sublayer_ticks(ax, len(labels), labels)
    ax.set_xlabel("sublayer")
    ax.set_ylabel("cosine to the reference")
    ax.legend(frameon=False, fontsize=8)
    return fig
