"""The paper's claims measured on residual-stream arrays, and how robust their verdicts are: across models,
precisions, bootstrap resamples of the texts, the number of texts N and the pipeline's open choices.

- :mod:`.statistics`: the headline statistics of one array (:func:`curves`, :func:`headlines_from_curves`,
  :data:`STATISTICS`);
- :mod:`.resampling`: bootstrap intervals over texts and nested subsamples (:func:`bootstrap_headlines`,
  :func:`n_dependence`);
- :mod:`.precision`: two captures of the same texts at two precisions compared;
- :mod:`.evidence`: each claim's value with its interval or p-value, the verdicts and one robustness line per
  claim and model (:func:`claim_evidence`, :func:`claim_evidence_runs` for many runs side by side,
  :func:`verdict_table`, :func:`robustness_lines`).

``from transformer_dynamics import robustness; robustness.curves(rs)`` and every other public name work from here.
"""

from .evidence import (claim_evidence, claim_evidence_runs, first_transitions_table, robustness_lines, rotation_evidence,
                       teleport_evidence, verdict_table)
from .precision import headline_change, precision_difference, precision_kwargs
from .resampling import bootstrap_headlines, n_dependence, nested_subsamples
from .statistics import (FAST_GROUPS, GROUPS, STATISTICS, Statistic, curves, first_transitions, headline_numbers,
                         headlines_from_curves, relative_depth)

__all__ = [
    "GROUPS",
    "FAST_GROUPS",
    "STATISTICS",
    "Statistic",
    "claim_evidence",
    "claim_evidence_runs",
    "rotation_evidence",
    "teleport_evidence",
    "verdict_table",
    "robustness_lines",
    "first_transitions",
    "first_transitions_table",
    "relative_depth",
    "precision_kwargs",
    "curves",
    "headlines_from_curves",
    "headline_numbers",
    "bootstrap_headlines",
    "nested_subsamples",
    "n_dependence",
    "precision_difference",
    "headline_change",
]
