"""The paper's claims measured on residual streams, and how robust their verdicts are: the curves behind them
for the data and every bootstrap resample, the evidence and verdicts against the references (the accumulation
null, random initialisations), nested subsamples of the texts and numerical precision.

- :mod:`.curves`: the curves of one stream for the full data and for resamples of the texts;
- :mod:`.references`: the trained stream's curves beside its random-init references (:func:`learning_curves`);
- :mod:`.evidence`: each claim's value and replicates (:func:`claim_evidence`, :func:`claim_evidence_runs`),
  one model's verdicts against its references (:func:`stream_verdicts`), :func:`evidence_frame`;
- :mod:`.resampling`: nested subsamples and the claims' values against N;
- :mod:`.precision`: two captures of the same texts at two precisions compared;
- :mod:`.lines`: what each verdict does under the open choices (flip, loses power, undefined), one line per claim,
  reading and model, and their counts;
- :mod:`.tables`: the claims' values with their intervals side by side (:func:`value_table`).
"""

from .curves import FAST, GROUPS, ROTATION_NULLS, CurveOptions, cae_curves, mean_curves, rs_curves, stream_curves
from .references import LEARNING_LABELS, PRELAYERNORM_LABEL, learning_curves, reference_curves
from .evidence import (cae_verdicts, claim_evidence, claim_evidence_runs, evidence_frame, evidence_from_curves,
                       first_transitions_table, rs_readings, stream_verdicts)
from .lines import (CHANGES, HEADLINE, N_CHOICE, READING_CHOICE, STATUSES, choice_evidence, choice_frame,
                    counts_sentence, hinge_counts, robustness_counts, robustness_lines, setting_changes)
from .precision import headline_change, precision_difference, precision_kwargs
from .resampling import n_dependence, nested_subsamples
from .tables import value_table

__all__ = ["GROUPS", "FAST", "ROTATION_NULLS", "CurveOptions", "rs_curves", "stream_curves", "mean_curves",
           "cae_curves", "reference_curves", "learning_curves", "LEARNING_LABELS", "PRELAYERNORM_LABEL", "cae_verdicts",
           "claim_evidence", "claim_evidence_runs", "evidence_frame", "evidence_from_curves", "first_transitions_table",
           "rs_readings", "stream_verdicts", "precision_kwargs", "precision_difference", "headline_change",
           "n_dependence", "nested_subsamples", "HEADLINE", "N_CHOICE", "READING_CHOICE", "CHANGES", "STATUSES",
           "choice_evidence",
           "choice_frame", "setting_changes", "robustness_lines", "robustness_counts", "hinge_counts",
           "counts_sentence", "value_table"]
