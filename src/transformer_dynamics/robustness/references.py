"""The trained stream's curves beside those of its references (the same architecture untrained): what learning
adds. streams: ``{"<kind>:<seed>": rs}`` (:meth:`transformer_dynamics.chapter.Chapter.reference_streams`), each
``rs: (n_samples, n_sublayers, d_model)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .curves import stream_curves

__all__ = ["reference_curves", "learning_curves", "LEARNING_LABELS", "PRELAYERNORM_LABEL"]


def reference_curves(streams: Mapping[str, Any], groups: Sequence[str],
                     **kwargs: Any) -> dict[str, dict[str, np.ndarray]]:
    """The full-data curves of reference streams averaged over their seeds, per kind.

    streams: {run: rs} with runs named ``"<kind>:<seed>"`` (e.g. :meth:`transformer_dynamics.chapter.Chapter.
    reference_streams`); groups and keywords as :func:`stream_curves`. -> {kind: {key: mean over seeds}}.
    """
    by_kind: dict[str, list[dict[str, np.ndarray]]] = {}
    for run, rs in streams.items():
        by_kind.setdefault(run.split(":")[0], []).append(stream_curves(rs, groups, **kwargs))
    return {kind: {k: np.nanmean(np.stack([np.asarray(c[k], dtype=np.float64) for c in cs]), axis=0)
                   for k in cs[0] if np.asarray(cs[0][k]).ndim <= 1}
            for kind, cs in by_kind.items()}


#: The references of :func:`learning_curves`, by random-init kind (:mod:`transformer_dynamics.random_init`).
LEARNING_LABELS = {"default": "random init", "matched": "matched-scale random init", "permuted": "permuted weights"}
#: The label of the architecture's prediction at initialisation (:func:`transformer_dynamics.nulls.
#: prelayernorm_prediction`) among :func:`learning_curves`.
PRELAYERNORM_LABEL = "pre-LN at init (Xiong et al.)"


def learning_curves(rs, streams: Mapping[str, Any], groups: Sequence[str] = ("r", "cos", "vel")
                    ) -> dict[str, dict[str, np.ndarray]]:
    """What learning adds (chapter 2): the trained stream's full-data curves beside those of the same architecture
    untrained. rs: the trained model's (n_samples, n_sublayers, d_model); streams: its reference streams
    ``{"<kind>:<seed>": rs}`` (:meth:`transformer_dynamics.chapter.Chapter.reference_streams`). -> ``{label: {key:
    curve}}``: ``"trained"`` first, then each kind's curves averaged over seeds (:data:`LEARNING_LABELS`), then
    the pre-LN prediction measured on the first ``default`` seed (:data:`PRELAYERNORM_LABEL`; absent without one).
    """
    from ..nulls import prelayernorm_prediction  # noqa: PLC0415

    out = {"trained": stream_curves(rs, groups)}
    out |= {LEARNING_LABELS.get(k, k): c for k, c in reference_curves(streams, groups).items()}
    default = [x for run, x in streams.items() if run.split(":")[0] == "default"]
    if default:
        out[PRELAYERNORM_LABEL] = prelayernorm_prediction(default[0])
    return out
